"""The exercises: the notebooks' solutions pass their checks, common mistakes fail with the message that names
them, the student notebooks are up to date with their generator, and a student notebook stops at its first
empty exercise with a helpful message but runs through once the solutions are pasted in."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch

from factories import load_script
from labkit import exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


make_student = load_script("notebooks/make_student.py")


def exercise_cells(notebook) -> list[str]:
    """The sources of the cells that define exercises (with a solution or a stub) and of their check cells."""
    return [
        cell.source for cell in notebook.cells
        if cell.cell_type == "code" and ("BEGIN SOLUTION" in cell.source or "YOUR CODE HERE" in cell.source
                                         or "from labkit.exercises import" in cell.source)
    ]


def run_cells(sources: list[str], capsys=None) -> dict:
    namespace = {"torch": torch, "math": math}
    for source in sources:
        exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


def solutions() -> dict:
    """Every exercise function as written in the (full) notebooks."""
    namespace = {"torch": torch, "math": math}
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        for source in exercise_cells(nbformat.read(path, as_version=4)):
            if "BEGIN SOLUTION" in source:
                exec(compile(source, str(path), "exec"), namespace)
    return namespace


CHECKS = {
    "beta_schedule": exercises.check_beta_schedule,
    "compute_alpha_bar": exercises.check_alpha_bar,
    "q_sample": exercises.check_q_sample,
    "posterior": exercises.check_posterior,
    "v_loss": exercises.check_v_loss,
    "guide": exercises.check_guide,
    "ddim_step": exercises.check_ddim_step,
    "top_k_hits": exercises.check_top_k_hits,
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_notebook_solutions_pass(name, capsys):
    CHECKS[name](solutions()[name])
    assert capsys.readouterr().out.startswith(f"✓ {name} correct")


# ---- common mistakes, each caught with the message that names it ----------------------------------
def _cosine_without_offset(name, T, beta_start=1e-4, beta_end=0.02):
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos(u * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def _q_alpha_not_bar_sqrt(x0, noise, timesteps, alpha_bar):
    a = alpha_bar[timesteps].reshape(-1, 1, 1, 1)
    return a * x0 + (1 - a).sqrt() * noise


def _q_first_timestep_only(x0, noise, timesteps, alpha_bar):
    a = alpha_bar[timesteps[0]]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _posterior_fixed_large(x0, x_t, timesteps, betas):
    mean, _ = solutions()["posterior"](x0, x_t, timesteps, betas)
    return mean, betas[timesteps].reshape(-1, 1, 1, 1)


def _posterior_alpha_bar_for_alpha(x0, x_t, timesteps, betas):
    a = torch.cumprod(1 - betas, 0)
    a_prev = torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    b, a_t, a_p = (v[timesteps].reshape(-1, 1, 1, 1) for v in (betas, a, a_prev))
    return a_p.sqrt() * b / (1 - a_t) * x0 + a_t.sqrt() * (1 - a_p) / (1 - a_t) * x_t, (1 - a_p) / (1 - a_t) * b


def _loss_epsilon_target(model, x0, labels, timesteps, noise, alpha_bar):
    a = alpha_bar[timesteps].reshape(-1, 1, 1, 1)
    prediction = model(a.sqrt() * x0 + (1 - a).sqrt() * noise, timesteps, labels)
    return ((prediction - noise) ** 2).mean(dim=(1, 2, 3))


def _loss_clean_input(model, x0, labels, timesteps, noise, alpha_bar):
    a = alpha_bar[timesteps].reshape(-1, 1, 1, 1)
    return ((model(x0, timesteps, labels) - (a.sqrt() * noise - (1 - a).sqrt() * x0)) ** 2).mean(dim=(1, 2, 3))


def _loss_scalar(model, x0, labels, timesteps, noise, alpha_bar):
    return solutions()["v_loss"](model, x0, labels, timesteps, noise, alpha_bar).mean()


def _ddim_no_sqrt(eps, x_t, alpha_bar_t, alpha_bar_prev):
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_prev * x0 + (1 - alpha_bar_prev) * eps, x0


def _ddim_wrong_sign(eps, x_t, alpha_bar_t, alpha_bar_prev):
    x0 = (x_t + (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps, x0


def _hits_threshold(probabilities, labels):
    return ((probabilities > 0.5).float() * labels).sum(dim=1)


def _hits_fraction(probabilities, labels):
    return solutions()["top_k_hits"](probabilities, labels) / labels.sum(dim=1)


MISTAKES = [
    (exercises.check_beta_schedule, _cosine_without_offset, "without the offset s = 0.008"),
    (exercises.check_beta_schedule, lambda name, T, *args: torch.linspace(0.02, 1e-4, T, dtype=torch.float64)
     if name == "linear" else None, "a decreasing schedule"),
    (exercises.check_alpha_bar, lambda betas: 1 - betas, "α_t = 1 − β_t"),
    (exercises.check_alpha_bar, lambda betas: torch.cumprod(betas, 0), "running product of the β_s"),
    (exercises.check_q_sample, _q_alpha_not_bar_sqrt, "ᾱ_t: the square root is missing"),
    (exercises.check_q_sample, lambda x0, noise, t, a: a[t].reshape(-1, 1, 1, 1).sqrt() * x0
     - (1 - a[t].reshape(-1, 1, 1, 1)).sqrt() * noise, "wrong sign"),
    (exercises.check_q_sample, _q_first_timestep_only, "timesteps[0] used for the whole batch"),
    (exercises.check_posterior, _posterior_fixed_large, "fixed_large"),
    (exercises.check_posterior, _posterior_alpha_bar_for_alpha, "α_t (one step), not ᾱ_t"),
    (exercises.check_v_loss, _loss_epsilon_target, "the ε target"),
    (exercises.check_v_loss, _loss_clean_input, "the network must see the noisy image"),
    (exercises.check_v_loss, _loss_scalar, "one loss per sample"),
    (exercises.check_guide, lambda c, u, w: c + w * (c - u), "(w + 1) convention"),
    (exercises.check_guide, lambda c, u, w: u + w * c, "subtract ε_u"),
    (exercises.check_ddim_step, _ddim_no_sqrt, "x_prev is wrong"),
    (exercises.check_ddim_step, _ddim_wrong_sign, "wrong sign"),
    (exercises.check_top_k_hits, _hits_threshold, "0.5 threshold"),
    (exercises.check_top_k_hits, _hits_fraction, "per-image accuracy"),
]


@pytest.mark.parametrize("check, wrong, message", MISTAKES, ids=[m[2][:30] for m in MISTAKES])
def test_a_common_mistake_fails_with_its_message(check, wrong, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(wrong)


def test_float32_arithmetic_passes_and_a_float32_posterior_is_named():
    def beta_schedule(name, T, beta_start=1e-4, beta_end=0.02):  # the solution in float32
        return solutions()["beta_schedule"](name, T, beta_start, beta_end).float()

    exercises.check_beta_schedule(beta_schedule)

    def posterior(x0, x_t, timesteps, betas):
        return solutions()["posterior"](x0, x_t, timesteps, betas.float())

    with pytest.raises(AssertionError, match="float32 rounding"):
        exercises.check_posterior(posterior)


def test_an_unwritten_exercise_says_where_to_write_it():
    def compute_alpha_bar(betas):
        raise NotImplementedError("torch.cumprod")

    with pytest.raises(AssertionError, match=r"compute_alpha_bar is not written yet.*hint: torch.cumprod"):
        exercises.check_alpha_bar(compute_alpha_bar)


# ---- the student notebooks ------------------------------------------------------------------------
def test_the_student_notebooks_are_up_to_date():
    assert make_student.outdated() == [], "run: python notebooks/make_student.py"


def test_the_student_notebooks_hold_no_solution_and_no_output():
    paths = sorted((NOTEBOOKS / "student").glob("*.ipynb"))
    assert [path.name for path in paths] == ["02_schedulers.ipynb", "04_training.ipynb", "05_sampling.ipynb",
                                              "06_evaluation.ipynb"]
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in notebook.cells)
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError(" in text
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_the_stub_keeps_the_indentation_and_the_hint():
    source = "def f(x):\n    # Hint: add one\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
    stub, blocks = make_student.clear_solutions(source)
    assert blocks == 1
    assert stub == "def f(x):\n    # Hint: add one\n    # YOUR CODE HERE\n    raise NotImplementedError('add one')\n"


@pytest.mark.parametrize("name", ["02_schedulers", "04_training", "05_sampling", "06_evaluation"])
def test_student_exercises_fail_unsolved_and_pass_with_the_solutions_pasted_in(name):
    student = nbformat.read(NOTEBOOKS / "student" / f"{name}.ipynb", as_version=4)
    full = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = exercise_cells(student)
    with pytest.raises(AssertionError, match="is not written yet: replace `raise NotImplementedError"):
        run_cells(cells)
    by_id = {cell.id: cell.source for cell in full.cells}
    pasted = [by_id[cell.id] if "YOUR CODE HERE" in cell.source else cell.source
              for cell in student.cells if cell.cell_type == "code" and cell.source in cells]
    run_cells(pasted)  # every check passes


def test_a_student_notebook_stops_at_its_first_check(tmp_path):
    """Run the student notebook 02 in a kernel (smoke profile): it stops at the first check, with the hint."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOKS / "student" / "02_schedulers.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS / "student")}})
    with pytest.raises(CellExecutionError) as failure:
        client.execute(env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))))
    assert "beta_schedule is not written yet" in str(failure.value)
    failed = [cell for cell in notebook.cells if any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    assert len(failed) == 1 and "check_beta_schedule(beta_schedule)" in failed[0].source
