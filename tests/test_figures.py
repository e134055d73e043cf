"""The denoising strip: x_t and the predicted x̂0 at evenly spaced steps, also for short trajectories."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from labkit import figures  # noqa: E402
from labkit.images import resize_square  # noqa: E402
from labkit.sample import SampleResult  # noqa: E402


def _result(steps: int) -> SampleResult:
    trajectory = torch.randint(0, 256, (steps + 1, 2, 3, 16, 16), dtype=torch.uint8)
    pred_x0 = torch.randint(0, 256, (steps, 2, 3, 16, 16), dtype=torch.uint8)
    return SampleResult(images=torch.zeros(2, 3, 16, 16), timesteps=list(range(steps)), network_evaluations=steps,
                        wall_s=0.0, trajectory=trajectory, pred_x0=pred_x0)


@pytest.mark.parametrize("steps, frames, shown", [(20, 8, 8), (5, 8, 5), (4, 10, 4)])
def test_denoising_strip_shows_two_rows_of_at_most_the_available_frames(steps, frames, shown):
    fig = figures.denoising_strip(_result(steps), frames=frames, title="a title", size=32)
    assert len(fig.axes) == 2 * shown
    first = fig.axes[0].images[0].get_array()
    assert first.shape[:2] == (32, 32)  # enlarged to the evaluator's view size
    assert fig.axes[0].get_title(loc="left") == "x_t" and fig.axes[shown].get_title(loc="left") == "predicted x̂0"
    result = _result(steps)
    fig = figures.denoising_strip(result, frames=frames, size=32)
    last = torch.as_tensor(fig.axes[shown - 1].images[0].get_array().copy()).permute(2, 0, 1)  # rightmost x_t
    assert torch.equal(last, resize_square(result.trajectory[-1, 0], 32))  # the final image, noise on the left
