"""The object counter: its training set, its summary arithmetic, its cache, and that it learns to count."""

import torch

from labkit import counting
from labkit.config import get_config
from labkit.counting import MAX_COUNT, SCENE_OBJECTS, count_summary, load_counter, render_count_set


def test_count_set_holds_every_prefix_of_each_scene():
    images, counts = render_count_set(2, "count", seed=0)
    assert images.shape == (2 * SCENE_OBJECTS, 3, counting.COUNT_SIZE, counting.COUNT_SIZE)
    assert images.dtype == torch.uint8
    assert counts.tolist() == [1, 2, 3, 4, 4] * 2  # five objects count as "4 or more"
    # each prefix adds an object: the 1-object image differs from the 2-object one
    assert not torch.equal(images[0], images[1])
    again, _ = render_count_set(2, "count", seed=0)
    assert torch.equal(images, again)  # seeded


def test_count_summary_splits_exact_extra_and_missing():
    counts = torch.tensor([3, 4, 2, 1, 4])
    wanted = torch.tensor([3, 3, 3, 1, 2])
    summary = count_summary(counts, wanted)
    assert summary == {"exact": 2 / 5, "extra": 2 / 5, "missing": 1 / 5, "images": 5}


def test_counter_learns_to_count_and_is_cached(tmp_path, capsys):
    config = get_config("smoke")  # a tiny counter: 48 scenes, 60 steps
    config.data.cache_dir = str(tmp_path)
    counter = load_counter(config, device="cpu", progress=False)
    assert "trained the object counter" in capsys.readouterr().out
    assert counting.counter_path(config).exists()
    settings = config.counter
    images, counts = render_count_set(settings.num_holdout_scenes, "count-holdout", settings.seed)
    found = counter.count(images)
    assert found.shape == counts.shape and set(found.tolist()) <= set(range(1, MAX_COUNT + 1))
    accuracy = (found == counts).float().mean().item()
    assert abs(accuracy - counter.holdout_accuracy) < 1e-6  # the reported figure is this held-out accuracy
    assert accuracy > 0.7  # always answering "4 or more" scores 0.4; the smoke settings reach about 0.8
    assert counter.count(images.float() / 127.5 - 1).tolist() == found.tolist()  # float [-1, 1] input: same counts
    cached = load_counter(config, device="cpu", progress=False)
    assert capsys.readouterr().out == ""  # loaded, not retrained
    assert cached.holdout_accuracy == counter.holdout_accuracy
    assert torch.equal(cached.count(images), found)
