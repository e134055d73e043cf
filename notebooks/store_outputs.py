"""Tidy a notebook executed under the ``cpu`` profile before committing its outputs.

    python notebooks/store_outputs.py notebooks/NN_name.ipynb [...] [--home PATH]

Keeps every output (the figures are the point) but: drops the saved widget state (widgets are
live only) and the execution metadata; re-encodes each PNG with a 256-colour palette when that is
smaller (the figures are flat colours and small renders; a palette keeps them sharp at a fraction
of the size); replaces the project home the notebook ran in (``--home``, default: ``LABKIT_HOME``)
by ``<project>`` the checkout by ``<checkout>`` and a temporary folder by
``<temporary folder>``, so no machine path is stored. Prints each notebook's size before and after.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import tempfile
from pathlib import Path

from PIL import Image


def smaller_png(encoded: str) -> str:
    """The PNG (base64) with a 256-colour palette when that is smaller, else as it was."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    paletted = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    paletted.save(buffer, format="PNG", optimize=True)
    candidate = base64.b64encode(buffer.getvalue()).decode("ascii")
    return candidate if len(candidate) < len(encoded) else encoded


CHECKOUT = str(Path(__file__).resolve().parents[1])  # the lab's checkout
TEMPORARY = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^/\s]+")  # a temporary folder a cell made


def hide_home(text, home: str):
    """``text`` (a string or a list of lines) with the project home replaced by ``<project>`` and any
    temporary folder (e.g. ``/tmp/labkit_resume_demo_x1y2``) by ``<temporary folder>``."""
    if isinstance(text, list):
        return [hide_home(line, home) for line in text]
    if home:
        text = text.replace(home, "<project>")
    text = text.replace(CHECKOUT, "<checkout>")  # e.g. the shipped judge's weights, reference/judge.pth
    return TEMPORARY.sub("<temporary folder>", text)


def tidy(path: Path, home: str) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    before = path.stat().st_size
    for cell in notebook["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = smaller_png(data["image/png"].replace("\n", ""))
            for key in ("text/plain", "text/html", "text/markdown"):
                if key in data:
                    data[key] = hide_home(data[key], home)
            if "text" in output:
                output["text"] = hide_home(output["text"], home)
    notebook.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{path}: {before / 1024:.0f} KiB -> {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--home", default=os.environ.get("LABKIT_HOME", ""))
    args = parser.parse_args()
    for notebook_path in args.notebooks:
        tidy(notebook_path, str(Path(args.home).resolve()) if args.home else "")
