"""The checkout's guarded folders, fingerprinted: what the test suite must leave untouched."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

GUARDED = ("data", "outputs", "report_figures", "runs")
SENTINEL = ".labkit-test-sentinel"  # each session's sentinels are named SENTINEL-<pid>-<random>
HASH_LIMIT = 1 << 20  # files up to 1 MiB are compared byte for byte; larger ones by size and mtime (ns)


def _fingerprint(path: Path) -> tuple:
    stat = path.stat()
    if stat.st_size <= HASH_LIMIT:
        return ("bytes", hashlib.sha256(path.read_bytes()).hexdigest())
    return ("stat", stat.st_size, stat.st_mtime_ns)


class CheckoutSnapshot:
    """Every file under the checkout's guarded folders, with a sentinel written into each folder.

    The sentinels carry this session's own name, and another session's sentinels are not part of the
    snapshot, so two test sessions in one checkout (say, one file rerun while the suite runs) do not
    report each other's sentinels as changes.
    """

    def __init__(self, root: Path, folders: tuple[str, ...] = GUARDED):
        self.root = root
        self.name = f"{SENTINEL}-{os.getpid()}-{secrets.token_hex(4)}"
        self.created: list[Path] = []  # folders that did not exist before the session
        self.sentinels: list[Path] = []
        for name in folders:
            folder = root / name
            if not folder.exists():
                folder.mkdir(parents=True)
                self.created.append(folder)
            sentinel = folder / self.name
            sentinel.write_text(f"written before the test session into {folder}; must survive it unchanged\n")
            self.sentinels.append(sentinel)
        self.folders = [root / name for name in folders]
        self.files = self.scan()

    def scan(self) -> dict[str, tuple]:
        files = {}
        for folder in self.folders:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink() and not self._foreign_sentinel(path):
                    files[str(path.relative_to(self.root))] = _fingerprint(path)
        return files

    def _foreign_sentinel(self, path: Path) -> bool:
        """Another test session's sentinel (it comes and goes with that session)."""
        return path.name.startswith(SENTINEL) and path.name != self.name

    def differences(self) -> list[str]:
        """What changed since the snapshot: added, removed and changed files (relative paths)."""
        now = self.scan()
        added = sorted(set(now) - set(self.files))
        removed = sorted(set(self.files) - set(now))
        changed = sorted(name for name in set(now) & set(self.files) if now[name] != self.files[name])
        return [f"added {name}" for name in added] + [f"removed {name}" for name in removed] + [
            f"changed {name}" for name in changed
        ]

    def remove_sentinels(self) -> None:
        for sentinel in self.sentinels:
            sentinel.unlink(missing_ok=True)
        for folder in reversed(self.created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
