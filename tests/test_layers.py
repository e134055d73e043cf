"""The package's layers read top-down: no module imports a module of a later stage (at any depth of the code)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"

# The data flow, first to last; modules of one stage may import each other.
STAGES = [
    ("config", "runtime"),
    ("labels", "images"),
    ("data", "synth"),
    ("schedules", "model"),
    ("checkpoint", "reference"),
    ("train", "network_view"),
    ("sample",),
    ("metrics", "judge", "judge_training", "fid", "counting"),
    ("outputs", "figures", "evaluate", "mnist", "preflight", "exercises", "sampler_comparison"),
    ("widget_layout", "widgets", "lab", "colab", "plan", "mnist_cli", "experiments"),
    ("__main__", "__init__"),
]
STAGE = {name: index for index, names in enumerate(STAGES) for name in names}


def imports_of(path: Path) -> set[str]:
    """The labkit modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labkit"):
            if node.module == "labkit":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("labkit."))
    return found


def import_graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in sorted(PACKAGE.glob("*.py"))}


def later_stage_imports() -> list[str]:
    problems = []
    for module, imported in import_graph().items():
        for name in sorted(imported - {module}):
            if STAGE[name] > STAGE[module]:
                problems.append(f"{module} (stage {STAGE[module]}) imports {name} (stage {STAGE[name]})")
    return problems


def test_every_module_has_a_stage():
    assert sorted(set(import_graph()) - set(STAGE)) == []


def test_no_module_imports_a_later_stage():
    assert later_stage_imports() == []


if __name__ == "__main__":  # python tests/test_layers.py prints the graph
    for module, imported in sorted(import_graph().items(), key=lambda item: (STAGE.get(item[0], 99), item[0])):
        print(f"{STAGE.get(module, '?')!s:>2} {module:<15} imports {', '.join(sorted(imported - {module})) or '-'}")
    print("\n".join(later_stage_imports()) or "no module imports a module of a later stage")
