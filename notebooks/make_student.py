"""Write the student version of the notebooks: ``python notebooks/make_student.py`` (``--check``: only compare).

A notebook here marks each exercise's solution with nbgrader's delimiters, as plain comments:

    # Hint: torch.cumprod
    ### BEGIN SOLUTION
    return torch.cumprod(1 - betas, dim=0)
    ### END SOLUTION

Every notebook with at least one such block becomes ``notebooks/student/<same name>.ipynb``: each block is
replaced by ``# YOUR CODE HERE`` and ``raise NotImplementedError("<the hint lines above it>")`` at the same
indentation (nbgrader's stub), all outputs are cleared, a note under the title says how to work through it,
and the first cell looks for the checkout one folder further up. Nothing else changes, so the check cells
(``labkit.exercises.check_<name>``) and the cells that use the student's functions stay as they are.
The student notebooks are generated: edit the notebooks here and run this script again
(``tests/test_exercises.py`` fails while they are out of date).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
STUDENT_DIR = HERE / "student"
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
HINT = "# Hint:"

BANNER = """**Student version.** The exercise cells below are empty: each ends in `raise NotImplementedError`
with a hint. Write the function there, run its cell, then run the check cell under it
(`labkit.exercises.check_...`): it compares your function with labkit's on random inputs and either
prints ✓ or says which term is wrong and by how much. Later cells use your functions where the lab
allows it (your loss trains the model in 04, your guidance and DDIM step sample in 05, your
accuracy scores the images in 06). The full notebook with a solution is `../{name}`;
this file is generated from it by `python notebooks/make_student.py`."""


def clear_solutions(source: str) -> tuple[str, int]:
    """``source`` with every solution block replaced by a stub; returns (new source, number of blocks)."""
    lines, out, blocks = source.split("\n"), [], 0
    inside = False
    for line in lines:
        if not inside and BEGIN in line:
            indent = line[: len(line) - len(line.lstrip())]
            hints = []
            for previous in reversed(out):
                if not previous.strip().startswith(HINT):
                    break
                hints.insert(0, previous.strip()[len(HINT):].strip())
            hint = " ".join(hints) or "write this part"
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({hint!r})"]
            inside, blocks = True, blocks + 1
        elif inside:
            if END in line:
                inside = False
        else:
            out.append(line)
    if inside:
        raise ValueError(f"a {BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out), blocks


def student_notebook(notebook, name: str):
    """The student version of ``notebook`` (a copy), or None when it has no exercise."""
    student = copy.deepcopy(notebook)
    total = 0
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        cell.source, blocks = clear_solutions(cell.source)
        total += blocks
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    if not total:
        return None
    first = next(cell for cell in student.cells if cell.cell_type == "code")
    first.source = first.source.replace('"../labkit"', '"../../labkit"').replace(
        'os.path.abspath("..")', 'os.path.abspath("../..")'
    )  # the checkout is one folder further up
    banner = nbformat.v4.new_markdown_cell(BANNER.format(name=name))
    banner.id = "student-version"
    student.cells.insert(1, banner)
    student.metadata.pop("widgets", None)
    return student


def expected() -> dict[Path, str]:
    """Each student notebook's path and text, from the notebooks in this folder."""
    result = {}
    for path in sorted(HERE.glob("0*.ipynb")):
        student = student_notebook(nbformat.read(path, as_version=4), path.name)
        if student is not None:
            result[STUDENT_DIR / path.name] = nbformat.writes(student) + "\n"
    return result


def outdated() -> list[str]:
    """The student notebooks that are missing, stale, or left over."""
    wanted = expected()
    problems = [path.name for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    problems += [f"{path.name} (no longer generated)" for path in STUDENT_DIR.glob("*.ipynb") if path not in wanted]
    return problems


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = outdated()
        print("student notebooks out of date: " + ", ".join(problems) if problems else "student notebooks up to date")
        return 1 if problems else 0
    STUDENT_DIR.mkdir(exist_ok=True)
    for path, text in expected().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
