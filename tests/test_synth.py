"""labkit.synth: scene sampling, the ray caster, the official layout on disk, extension, the held-out set."""

from __future__ import annotations

import json
import math

import pytest
import torch

from labkit import data, synth
from labkit.data import LabelSpace
from labkit.synth import ObjectSpec, Scene


def folder_bytes(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def two_scene_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "set"
    synth.render_dataset(root, num_scenes=2, seed=5, progress=False)
    return root


# ---- scenes ------------------------------------------------------------------------------------------
def test_sample_scene_is_seeded_and_valid():
    space = LabelSpace.default()
    for index in range(40):
        scene = synth.sample_scene(synth.scene_generator("train", 0, index))
        assert scene == synth.sample_scene(synth.scene_generator("train", 0, index))
        assert len(scene.objects) == 3 and len(set(scene.labels)) == 3
        space.check(scene.labels)
        for item in scene.objects:
            assert item.size in synth.SIZES and item.material in synth.MATERIALS
            assert max(abs(c) for c in item.position) <= synth.AREA
            assert item.shape != "sphere" or item.rotation == 0.0
            u0, v0, u1, v1 = synth._screen_box(item)
            assert -1 < u0 < u1 < 1 and -0.75 < v0 < v1 < 0.75  # inside the frame
        for a in range(3):
            for b in range(a + 1, 3):
                first, second = scene.objects[a], scene.objects[b]
                assert math.dist(first.position, second.position) >= first.reach + second.reach + synth.MIN_GAP
    scenes = {synth.sample_scene(synth.scene_generator("train", 0, i)) for i in range(20)}
    assert len(scenes) == 20


def test_streams_and_seeds_differ():
    train = synth.sample_scene(synth.scene_generator("train", 0, 3))
    assert train != synth.sample_scene(synth.scene_generator("holdout", 0, 3))
    assert train != synth.sample_scene(synth.scene_generator("train", 1, 3))


# ---- rendering ---------------------------------------------------------------------------------------
def test_render_images_shape_and_floor():
    images = synth.render_images([[], [ObjectSpec("cube", "red")]], width=64, height=48)
    assert images.shape == (2, 3, 48, 64) and images.dtype == torch.uint8
    floor = images[0].float()
    assert (floor[0] == floor[1]).all() and (floor[1] == floor[2]).all()  # a gray floor
    assert 60 < floor.mean() < 200
    assert not images[1].equal(images[0])  # the cube shows
    with pytest.raises(ValueError, match="at most 3"):
        synth.render_images([[ObjectSpec("cube", c) for c in ("red", "blue", "gray", "cyan")]])


@pytest.mark.parametrize("color", synth.COLOR_RGB)
def test_object_pixels_have_the_objects_color(color):
    item = ObjectSpec("cube", color, "large", "rubber", (0.0, 0.0), 0.4)
    image, ids = synth._render([item], [[0]], 160, 120, with_ids=True)
    pixels = image[0][:, ids[0] == 0].float()  # (3, K)
    assert pixels.shape[1] > 100
    mean, target = pixels.mean(dim=1), torch.tensor(synth.COLOR_RGB[color], dtype=torch.float32)
    similarity = torch.nn.functional.cosine_similarity(mean, target, dim=0)
    assert similarity > 0.97, f"{color}: mean object color {mean.tolist()} is far from {target.tolist()}"


def test_shapes_differ_in_silhouette():
    masks = {}
    for shape in synth.SHAPES:
        item = ObjectSpec(shape, "gray", "large", "rubber", (0.0, 0.0), 0.6)
        _, ids = synth._render([item], [[0]], 160, 120, with_ids=True)
        masks[shape] = ids[0] == 0
        assert 150 < masks[shape].sum() < 1500
    for a, b in (("cube", "sphere"), ("cube", "cylinder"), ("sphere", "cylinder")):
        overlap = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert overlap < 0.9, f"{a} and {b} cover nearly the same pixels"


def test_every_object_stays_visible():
    scenes = [synth.sample_scene(synth.scene_generator("train", 0, i)) for i in range(12)]
    objects = [item for scene in scenes for item in scene.objects]
    alone = [[i] for i in range(len(objects))]
    together = [[3 * s, 3 * s + 1, 3 * s + 2] for s in range(len(scenes))]
    _, ids = synth._render(objects, alone + together, 160, 120, with_ids=True)
    for s in range(len(scenes)):
        for k in range(3):
            index = 3 * s + k
            full = (ids[index] == index).sum().item()
            seen = (ids[len(objects) + s] == index).sum().item()
            assert full > 30, f"scene {s} object {k} covers only {full} pixels"
            assert seen >= 0.3 * full, f"scene {s} object {k}: {seen} of {full} pixels visible"


def test_render_does_not_depend_on_the_batch():
    scenes = [synth.sample_scene(synth.scene_generator("train", 2, i)) for i in range(3)]
    together = synth.render_scene_prefixes(scenes, width=96, height=72)
    for s, scene in enumerate(scenes):
        alone = synth.render_scene_prefixes([scene], width=96, height=72)
        assert alone.equal(together[3 * s : 3 * s + 3])
    assert synth.render_images(scenes[1].prefixes(), width=96, height=72).equal(together[3:6])


# ---- the data set on disk ---------------------------------------------------------------------------
def test_layout_and_json_format(two_scene_folder):
    root = two_scene_folder
    names = sorted(path.name for path in (root / "iclevr").iterdir())
    assert names == [f"CLEVR_train_{s:06d}_{k}.png" for s in range(2) for k in range(3)]
    assert data.decode_png(root / "iclevr" / names[0]).shape == (3, 240, 320)
    train = json.loads((root / "train.json").read_text())
    assert sorted(train) == names
    for s in range(2):
        full = train[f"CLEVR_train_{s:06d}_2.png"]
        assert len(full) == 3 and len(set(full)) == 3
        for k in range(3):
            assert train[f"CLEVR_train_{s:06d}_{k}.png"] == full[: k + 1]  # prefixes, in order
    assert data.read_train_labels(root / "train.json")  # every name valid
    assert json.loads((root / "objects.json").read_text()) == LabelSpace.default().index
    manifest = json.loads((root / "synthetic.json").read_text())
    assert manifest["seed"] == 5 and manifest["num_scenes"] == 2
    assert manifest["renderer_version"] == synth.RENDERER_VERSION


@pytest.mark.parametrize("split, counts, total", [("test", [6, 12, 14], 72), ("new_test", [0, 12, 20], 84)])
def test_condition_files_have_the_official_structure(two_scene_folder, split, counts, total):
    lists = data.read_conditions(two_scene_folder / f"{split}.json")  # validates names and duplicates
    assert len(lists) == 32
    assert [sum(len(entry) == k for entry in lists) for k in (1, 2, 3)] == counts
    assert sum(len(entry) for entry in lists) == total
    lengths = [len(entry) for entry in lists]
    assert lengths != sorted(lengths)  # shuffled like a real file
    assert len({tuple(entry) for entry in lists}) == 32


def test_same_seed_gives_identical_files(tmp_path, two_scene_folder):
    synth.render_dataset(tmp_path / "again", num_scenes=2, seed=5, progress=False)
    assert folder_bytes(tmp_path / "again") == folder_bytes(two_scene_folder)
    synth.render_dataset(tmp_path / "other", num_scenes=2, seed=6, progress=False)
    other = folder_bytes(tmp_path / "other")
    assert other["iclevr/CLEVR_train_000000_2.png"] != folder_bytes(two_scene_folder)["iclevr/CLEVR_train_000000_2.png"]
    assert other["test.json"] != folder_bytes(two_scene_folder)["test.json"]


def test_extension_renders_only_the_missing_scenes(tmp_path, two_scene_folder, monkeypatch):
    root = tmp_path / "grow"
    synth.render_dataset(root, num_scenes=2, seed=5, progress=False)
    before = {path: (root / path).stat().st_mtime_ns for path in folder_bytes(root) if path.startswith("iclevr/")}
    synth.render_dataset(root, num_scenes=4, seed=5, progress=False)
    after = folder_bytes(root)
    assert len([path for path in after if path.startswith("iclevr/")]) == 12
    assert all((root / path).stat().st_mtime_ns == stamp for path, stamp in before.items())  # not rewritten
    original = {path: content for path, content in folder_bytes(two_scene_folder).items() if path.startswith("iclevr/")}
    assert {path: after[path] for path in original} == original
    assert after["test.json"] == folder_bytes(two_scene_folder)["test.json"]  # independent of num_scenes
    assert len(json.loads(after["train.json"])) == 12 and json.loads(after["synthetic.json"])["num_scenes"] == 4
    synth.render_dataset(tmp_path / "fresh", num_scenes=4, seed=5, progress=False)
    assert folder_bytes(tmp_path / "fresh") == after  # extended == rendered at once

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered although the folder already has enough scenes")

    monkeypatch.setattr(synth, "render_scene_prefixes", no_rendering)
    assert synth.render_dataset(root, num_scenes=3, seed=5, progress=False) == root
    assert folder_bytes(root) == after


def test_foreign_folders_are_refused_and_kept(tmp_path, two_scene_folder):
    with pytest.raises(FileExistsError, match="seed 5") as error:
        synth.render_dataset(two_scene_folder, num_scenes=2, seed=7, progress=False)
    assert str(two_scene_folder) in str(error.value) and "data.synthetic_dir" in str(error.value)
    assert len(list((two_scene_folder / "iclevr").iterdir())) == 6
    foreign = tmp_path / "foreign"
    (foreign / "iclevr").mkdir(parents=True)
    (foreign / "iclevr" / "keep.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="no synthetic.json"):
        synth.render_dataset(foreign, num_scenes=1, progress=False)
    assert (foreign / "iclevr" / "keep.png").read_bytes() == b"x"
    (foreign / "synthetic.json").write_text("{not json")
    with pytest.raises(FileExistsError, match="damaged"):
        synth.render_dataset(foreign, num_scenes=1, progress=False)


def test_resolve_source_renders_the_synthetic_set(tmp_path):
    from labkit.config import get_config

    config = get_config("smoke")
    config.data.root = str(tmp_path / "official")
    config.data.synthetic_dir = str(tmp_path / "synthetic")
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.num_scenes = 1
    config.data.image_size = 16
    training = data.load_training_set(config.data, progress=False)
    assert training.source.kind == "synthetic" and len(training) == 3
    assert training.images.shape == (3, 3, 16, 16)
    assert training.labels.sum(dim=1).tolist() == [1.0, 2.0, 3.0]


# ---- the held-out set --------------------------------------------------------------------------------
def test_render_holdout_shapes_and_labels():
    images, labels = synth.render_holdout(2, seed=0, image_size=32)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert len(labels) == 6 and [len(entry) for entry in labels] == [1, 2, 3, 1, 2, 3]
    assert labels[2][:2] == labels[1] and labels[1][:1] == labels[0]
    LabelSpace.default().encode(labels)  # all valid
    full, same_labels = synth.render_holdout(2, seed=0)
    assert full.shape == (6, 3, 240, 320) and same_labels == labels
    assert images.equal(data.resize_square(full, 32))
    train = [synth.sample_scene(synth.scene_generator("train", 0, i)).labels for i in range(2)]
    assert train != [labels[2], labels[5]]
    default_images, _ = synth.render_holdout(1)
    assert default_images.shape == (3, 3, 240, 320)


def test_object_spec_refuses_unknown_values():
    with pytest.raises(ValueError, match="shape 'cone' is not one of cube, sphere, cylinder"):
        ObjectSpec("cone", "red")
    with pytest.raises(ValueError, match="color 'pink'"):
        ObjectSpec("cube", "pink")
    assert ObjectSpec("cube", "red", "small", "metal").name == "red cube"
    assert Scene((ObjectSpec("cube", "red"), ObjectSpec("sphere", "blue"))).prefixes()[0] == [ObjectSpec("cube", "red")]
