"""The test suite never touches the checkout's data/, runs/, outputs/ or report_figures/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from factories import free_port
from labkit.config import get_config, project_root, resolve_path


def test_tests_run_in_a_temporary_project_home(test_home):
    checkout = Path(__file__).resolve().parents[1]
    assert Path(os.environ["LABKIT_HOME"]).resolve() == test_home.resolve()
    assert project_root() == test_home.resolve()
    assert resolve_path("outputs").parent == test_home.resolve()
    config = get_config("smoke")
    for path in (config.run_dir, resolve_path(config.data.synthetic_dir), resolve_path(config.data.cache_dir)):
        assert checkout not in path.parents, path


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        assert server.getsockname()[1] == port


def test_the_suite_leaves_the_checkout_untouched(checkout_snapshot):
    """Runs last (see the top-level conftest): the guarded folders are byte-identical to the session's start."""
    for sentinel in checkout_snapshot.sentinels:
        assert sentinel.is_file(), f"{sentinel} was removed during the test session"
    assert checkout_snapshot.differences() == []


def test_the_snapshot_sees_every_kind_of_change(tmp_path):
    from hermetic import SENTINEL, CheckoutSnapshot

    (tmp_path / "outputs" / "cpu").mkdir(parents=True)
    (tmp_path / "outputs" / "cpu" / "accuracy.txt").write_text("0.9\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("data\n")
    snapshot = CheckoutSnapshot(tmp_path)
    assert (tmp_path / "runs" / snapshot.name).is_file() and snapshot.name.startswith(SENTINEL)
    assert snapshot.differences() == []
    (tmp_path / "outputs" / "cpu" / "accuracy.txt").write_text("0.1\n")  # same size, other bytes
    (tmp_path / "report_figures" / "new.png").write_bytes(b"png")
    (tmp_path / "data" / "README.md").unlink()
    assert snapshot.differences() == [
        "added report_figures/new.png", "removed data/README.md", "changed outputs/cpu/accuracy.txt"
    ]
    snapshot.remove_sentinels()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs" / snapshot.name).exists()


def test_two_sessions_in_one_checkout_do_not_see_each_others_sentinels(tmp_path):
    from hermetic import CheckoutSnapshot

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "kept.txt").write_text("a student's file\n")
    first = CheckoutSnapshot(tmp_path)
    second = CheckoutSnapshot(tmp_path)  # started while the first runs
    assert first.name != second.name
    assert first.differences() == [] and second.differences() == []
    first.remove_sentinels()  # the first session ends
    assert second.differences() == [] and all(sentinel.is_file() for sentinel in second.sentinels)
    (tmp_path / "runs" / "kept.txt").write_text("overwritten\n")  # a real change still shows
    assert second.differences() == ["changed runs/kept.txt"]
    second.remove_sentinels()
