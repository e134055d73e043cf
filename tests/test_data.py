"""labkit.data: label space, condition files and their errors, the loader, the decode-once cache."""

from __future__ import annotations

import json
import os

import pytest
import torch

from factories import make_official_folder, write_json
from labkit import data
from labkit.config import get_config
from labkit.data import COLORS, SHAPES, ConditionError, LabelSpace


# ---- helpers --------------------------------------------------------------------------------------
def make_config(tmp_path, size: int = 16):
    config = get_config("smoke")
    config.data.root = str(tmp_path / "official")
    config.data.synthetic_dir = str(tmp_path / "synthetic")
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.image_size = size
    return config


# ---- label space -------------------------------------------------------------------------------------
def test_default_label_space_is_the_course_order():
    space = LabelSpace.default()
    assert len(space) == 24
    assert space.index["gray cube"] == 0 and space.index["red cube"] == 1
    assert space.index["gray sphere"] == 8 and space.index["yellow cylinder"] == 23
    for s, shape in enumerate(SHAPES):
        for c, color in enumerate(COLORS):
            assert space.index[f"{color} {shape}"] == s * 8 + c


def test_encode_decode_round_trip():
    space = LabelSpace.default()
    lists = [["red sphere"], ["yellow cylinder", "gray cube"], ["cyan cube", "purple sphere", "green cylinder"]]
    multi_hot = space.encode(lists)
    assert multi_hot.shape == (3, 24) and multi_hot.dtype == torch.float32
    assert multi_hot.sum(dim=1).tolist() == [1.0, 2.0, 3.0]
    assert multi_hot[1, space.index["yellow cylinder"]] == 1 and multi_hot[1, space.index["gray cube"]] == 1
    decoded = space.decode(multi_hot)
    by_index = [sorted(names, key=space.index.get) for names in lists]
    assert decoded == by_index
    assert space.decode(multi_hot[0]) == [["red sphere"]]  # a single (24,) vector


def test_objects_json_round_trip(tmp_path):
    space = LabelSpace.from_file(write_json(tmp_path / "objects.json", LabelSpace.default().index))
    assert space.names == LabelSpace.default().names


# ---- bad input gets a clear error -------------------------------------------------------------------
def test_unknown_name_names_the_name_the_file_and_the_closest(tmp_path):
    path = write_json(tmp_path / "test.json", [["red cube"], ["blue sphere", "red cub"]])
    with pytest.raises(ConditionError) as error:
        data.read_conditions(path)
    message = str(error.value)
    assert "'red cub'" in message and path in message and "entry 1" in message
    assert "red cube" in message.split("closest valid names:")[1]


def test_duplicate_object_is_refused(tmp_path):
    path = write_json(tmp_path / "test.json", [["red cube", "blue sphere", "red cube"]])
    with pytest.raises(ConditionError, match="'red cube' appears more than once") as error:
        data.read_conditions(path)
    assert path in str(error.value) and "entry 0" in str(error.value)


def test_empty_list_is_refused(tmp_path):
    path = write_json(tmp_path / "test.json", [["red cube"], []])
    with pytest.raises(ConditionError, match="0 objects") as error:
        data.read_conditions(path)
    assert "entry 1" in str(error.value) and "1 to 3 objects" in str(error.value)


def test_more_than_three_objects_is_refused(tmp_path):
    path = write_json(tmp_path / "test.json", [["red cube", "blue cube", "gray cube", "cyan cube"]])
    with pytest.raises(ConditionError, match="4 objects") as error:
        data.read_conditions(path)
    assert path in str(error.value)


@pytest.mark.parametrize(
    "filename, value, reader, expected",
    [
        ("test.json", {"a": ["red cube"]}, data.read_conditions, "non-empty JSON list"),
        ("test.json", [], data.read_conditions, "non-empty JSON list"),
        ("test.json", ["red cube"], data.read_conditions, "expected a list of object names"),
        ("train.json", [["red cube"]], data.read_train_labels, "mapping image file names"),
        ("train.json", {"a.png": "red cube"}, data.read_train_labels, "expected a list of object names"),
        ("objects.json", [["gray cube", 0]], LabelSpace.from_file, "mapping object names to integer"),
        ("objects.json", {"gray cube": 0, "red cube": 2}, LabelSpace.from_file, "no gaps or repeats"),
    ],
)
def test_wrong_json_shape_is_refused(tmp_path, filename, value, reader, expected):
    path = write_json(tmp_path / filename, value)
    with pytest.raises(ConditionError, match=expected) as error:
        reader(path)
    assert path in str(error.value)


def test_unknown_name_in_train_json_names_the_entry(tmp_path):
    path = write_json(tmp_path / "train.json", {"CLEVR_train_000001_0.png": ["magenta cube"]})
    with pytest.raises(ConditionError, match="'magenta cube'") as error:
        data.read_train_labels(path)
    assert "CLEVR_train_000001_0.png" in str(error.value) and path in str(error.value)


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('[["red cube"], ["blue sphere"')
    with pytest.raises(ConditionError, match="not valid JSON") as error:
        data.read_conditions(path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="new_test.json not found"):
        data.read_conditions(tmp_path / "new_test.json")


def test_encode_refuses_bad_lists():
    space = LabelSpace.default()
    with pytest.raises(ConditionError, match="label list 1: unknown object 'red cone'"):
        space.encode([["red cube"], ["red cone"]])
    with pytest.raises(ConditionError, match="expected a list of object names"):
        space.encode(["red cube"])


# ---- where the data comes from ----------------------------------------------------------------------
def test_resolve_source_prefers_official_files(tmp_path):
    config = make_config(tmp_path)
    make_official_folder(tmp_path / "official")
    source = data.resolve_source(config.data, render=False)
    assert source.kind == "official" and source.root == tmp_path / "official"
    assert source.conditions("test") == [["red cube"], ["blue sphere", "gray cylinder"]]


def test_resolve_source_errors(tmp_path):
    config = make_config(tmp_path)
    config.data.source = "official"
    with pytest.raises(data.DataError, match="does not hold iclevr/, train.json.*Copy the missing ones"):
        data.resolve_source(config.data, render=False)
    with pytest.raises(ValueError, match="auto, official or synthetic"):  # refused when set, before any work
        config.data.source = "somewhere"
    config.data.source = "auto"
    source = data.resolve_source(config.data, render=False)  # nothing there: the synthetic folder
    assert source.kind == "synthetic" and source.root == tmp_path / "synthetic"


# ---- preprocessing -------------------------------------------------------------------------------------
def test_resize_square_squashes_the_whole_frame():
    image = torch.zeros(3, 240, 320, dtype=torch.uint8)
    image[0, :, :160] = 200
    image[2, :, 160:] = 200
    small = data.resize_square(image, 16)
    assert small.shape == (3, 16, 16) and small.dtype == torch.uint8
    assert (small[0, :, :7] == 200).all() and (small[2, :, 9:] == 200).all()  # both halves kept: no crop
    assert data.resize_square(small[None], 16).equal(small[None])  # already square and sized: unchanged


def test_model_range_round_trip_and_evaluator_view():
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    scaled = data.to_model_range(images)
    assert scaled.min() >= -1 and scaled.max() <= 1
    assert data.to_uint8(scaled).equal(images)
    view = data.evaluator_view(images)
    assert view.shape == (2, 3, 64, 64) and view.dtype == torch.float32
    smooth = torch.full((1, 3, 64, 64), 100, dtype=torch.uint8)
    assert torch.allclose(data.evaluator_view(smooth), torch.full((1, 3, 64, 64), 100.0))


# ---- the loader and its cache ---------------------------------------------------------------------------
def test_loader_reads_the_official_layout_and_resizes(tmp_path):
    labels = make_official_folder(tmp_path / "official")
    config = make_config(tmp_path, size=16)
    training = data.load_training_set(config.data, progress=False)
    names = sorted(labels)
    assert training.names == names and len(training) == 6
    assert training.images.shape == (6, 3, 16, 16) and training.images.dtype == torch.uint8
    assert training.label_lists() == [sorted(labels[n], key=LabelSpace.default().index.get) for n in names]
    first = data.decode_png(tmp_path / "official" / "iclevr" / names[0])
    assert first.shape == (3, 240, 320)
    assert training.images[0].equal(data.resize_square(first, 16))
    assert (training.images[:, 0, 8:, :7] == 200).all()  # red left half kept by the squashed resize


def test_cache_is_used_on_the_second_run(tmp_path, monkeypatch):
    make_official_folder(tmp_path / "official")
    config = make_config(tmp_path, size=16)
    first = data.load_training_set(config.data, progress=False)
    source = data.resolve_source(config.data, render=False)
    cache = data.cache_path_for(config.data, source)
    assert cache.exists() and cache.parent == tmp_path / "cache"

    def no_decoding(path):
        raise AssertionError(f"{path} was decoded again although the cache exists")

    monkeypatch.setattr(data, "decode_png", no_decoding)
    second = data.load_training_set(config.data, progress=False)
    assert second.images.equal(first.images) and second.labels.equal(first.labels)
    with pytest.raises(AssertionError, match="decoded again"):  # without the cache it decodes
        data.load_training_set(config.data, progress=False, use_cache=False)


def test_cache_is_rebuilt_when_an_image_changes(tmp_path):
    make_official_folder(tmp_path / "official")
    config = make_config(tmp_path, size=16)
    data.load_training_set(config.data, progress=False)
    changed = tmp_path / "official" / "iclevr" / "CLEVR_train_000000_0.png"
    data.write_png(torch.full((3, 240, 320), 255, dtype=torch.uint8), changed)
    os.utime(changed, (1e9, 1e9))
    reloaded = data.load_training_set(config.data, progress=False)
    assert (reloaded.images[0] == 255).all()
    assert len(list((tmp_path / "cache").glob("official_16px_*.pt"))) == 2


def test_cache_key_depends_on_size_and_subset(tmp_path):
    make_official_folder(tmp_path / "official")
    config = make_config(tmp_path, size=16)
    source = data.resolve_source(config.data, render=False)
    paths = {data.cache_path_for(config.data, source)}
    config.data.image_size = 8
    paths.add(data.cache_path_for(config.data, source))
    config.data.max_train_images = 3
    paths.add(data.cache_path_for(config.data, source))
    assert len(paths) == 3
    subset = data.load_training_set(config.data, source=source, progress=False)
    assert len(subset) == 3 and subset.images.shape == (3, 3, 8, 8)


def test_synthetic_source_uses_its_first_num_scenes(tmp_path):
    root = tmp_path / "synthetic" / "iclevr"
    root.mkdir(parents=True)
    labels = {}
    for scene in range(3):
        for k in range(3):
            name = f"CLEVR_train_{scene:06d}_{k}.png"
            data.write_png(torch.full((3, 24, 32), 10 * scene, dtype=torch.uint8), root / name)
            labels[name] = ["red cube", "blue cube", "gray cube"][: k + 1]
    write_json(tmp_path / "synthetic" / "train.json", labels)
    config = make_config(tmp_path, size=8)
    config.data.num_scenes = 2  # the folder holds 3 scenes, e.g. rendered for a larger profile
    source = data.DataSource(tmp_path / "synthetic", "synthetic")
    training = data.load_training_set(config.data, source=source, progress=False)
    assert training.names == sorted(labels)[:6]


def test_missing_image_is_named(tmp_path):
    make_official_folder(tmp_path / "official")
    (tmp_path / "official" / "iclevr" / "CLEVR_train_000002_2.png").unlink()
    config = make_config(tmp_path)
    with pytest.raises(data.DataError, match="CLEVR_train_000002_2.png") as error:
        data.load_training_set(config.data, progress=False)
    assert "1 images missing" in str(error.value) and "course's download" in str(error.value)


def test_damaged_png_is_named(tmp_path):
    make_official_folder(tmp_path / "official")
    damaged = tmp_path / "official" / "iclevr" / "CLEVR_train_000004_1.png"
    damaged.write_bytes(damaged.read_bytes()[:100])
    config = make_config(tmp_path)
    with pytest.raises(data.DataError, match="CLEVR_train_000004_1.png: cannot (decode|read) it") as error:
        data.load_training_set(config.data, progress=False)
    assert "copy the file again from the course's iclevr/ folder" in str(error.value)
    assert "synthetic" not in str(error.value)  # an official image: no hint about the synthetic folder
