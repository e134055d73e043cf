"""benchmarks/learning_curve.py: the steps a curve needs to reach a threshold or another curve's best point."""

from __future__ import annotations

import pytest

from factories import load_script


@pytest.fixture(scope="module")
def learning_curve():
    return load_script("benchmarks/learning_curve.py")


def point(test: float, new_test: float) -> dict:
    return {"test": {"accuracy": test, "total": 72}, "new_test": {"accuracy": new_test, "total": 84}}


def test_steps_to_reach_and_to_match_need_both_files(learning_curve):
    ours = {250: point(0.30, 0.20), 500: point(0.45, 0.38), 1000: point(0.52, 0.41), 2000: point(0.60, 0.55)}
    theirs = {1000: point(0.20, 0.30), 2000: point(0.40, 0.40), 4000: point(0.35, 0.37)}
    assert learning_curve.steps_to_reach(ours, 0.5) == 2000  # 1000 reaches 0.5 on test.json only
    assert learning_curve.steps_to_reach(ours, 0.9) is None
    best = learning_curve.best_point(theirs)
    assert best == 2000
    assert learning_curve.steps_to_match(ours, theirs[best]) == 1000  # 500 is short on new_test.json (0.38 < 0.40)
    assert learning_curve.steps_to_match(theirs, ours[2000]) is None


def test_doubling_steps_keep_the_last_snapshot(learning_curve):
    assert learning_curve.doubling_steps([500, 1000, 1500, 2000, 2500]) == [1000, 2000, 2500]
    assert learning_curve.doubling_steps([], start=1000) == []


def test_a_sampler_per_run_is_parsed_or_refused(learning_curve):
    assert learning_curve.parse_sampler("own") == {}
    assert learning_curve.parse_sampler("ddim-50-1") == {"sampler": "ddim", "num_inference_steps": 50, "eta": 1.0}
    assert learning_curve.parse_sampler("dpmsolver++-20")["sampler"] == "dpmsolver++"
    for wrong in ("ddim", "ddim-x", "euler-20", "ddim-50-1-2"):
        with pytest.raises(SystemExit, match="NAME-STEPS"):
            learning_curve.parse_sampler(wrong)


def test_saved_points_keep_every_continuation_start(learning_curve):
    assert learning_curve.earlier_starts({"starts": [[14000, 3.86], [18000, 5.11]]}) == [[14000, 3.86], [18000, 5.11]]
    assert learning_curve.earlier_starts({"start": [14000, 3.86]}) == [[14000, 3.86]]  # a file written before
    assert learning_curve.earlier_starts({"start": None}) == [] == learning_curve.earlier_starts({})
