"""Keep the stored outputs of the nbval-checked cells only.

    python notebooks/strip_outputs.py notebooks/NN_name.ipynb [...]

Run after re-executing a notebook under the smoke profile: the cells marked
``# NBVAL_CHECK_OUTPUT`` keep their outputs (nbval compares them); every other cell's outputs,
the execution counts and the saved widget states are dropped, so the repository does not
store a smoke run's meaningless figures.
"""

import json
import sys


def strip(path: str) -> None:
    with open(path, encoding="utf-8") as file:
        notebook = json.load(file)
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        if "# NBVAL_CHECK_OUTPUT" not in "".join(cell["source"]):
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    notebook.get("metadata", {}).pop("widgets", None)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(notebook, file, indent=1, ensure_ascii=False)
        file.write("\n")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        strip(name)
        print(f"kept the checked cells' outputs only: {name}")
