"""labkit.evaluate: the course evaluator drop-in, the accuracy formula, the required files, the judge."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from labkit import evaluate, judge_training
from labkit.config import get_config
from labkit.data import LabelSpace, decode_png

# A course-style evaluator.py, structured like the file the course distributes: the hard-coded
# './checkpoint.pth', `.cuda()`, the compute_acc loop and eval.
COURSE_EVALUATOR = textwrap.dedent(
    '''
    import torch
    import torch.nn as nn
    import torchvision.models as models

    """===============================================================
    Course classifier (test copy): ResNet18 with only the last linear layer changed,
    trained on i-CLEVR upsampled 64x64 images from 32x32 images.
    You should call eval(images, labels) and to get total accuracy.
    images shape: (batch_size, 3, 64, 64)
    labels shape: (batch_size, 24) where labels are one-hot vectors
    ==============================================================="""


    class evaluation_model():
        def __init__(self):
            #modify the path to your own path
            checkpoint = torch.load('./checkpoint.pth')
            self.resnet18 = models.resnet18(pretrained=False)
            self.resnet18.fc = nn.Sequential(
                nn.Linear(512,24),
                nn.Sigmoid()
            )
            self.resnet18.load_state_dict(checkpoint['model'])
            self.resnet18 = self.resnet18.cuda()
            self.resnet18.eval()
            self.classnum = 24
        def compute_acc(self, out, onehot_labels):
            batch_size = out.size(0)
            acc = 0
            total = 0
            for i in range(batch_size):
                k = int(onehot_labels[i].sum().item())
                total += k
                outv, outi = out[i].topk(k)
                lv, li = onehot_labels[i].topk(k)
                for j in outi:
                    if j in li:
                        acc += 1
            return acc / total
        def eval(self, images, labels):
            with torch.no_grad():
                #your image shape should be (batch, 3, 64, 64)
                out = self.resnet18(images)
                acc = self.compute_acc(out.cpu(), labels.cpu())
                return acc
    '''
)


def course_way_network() -> nn.Module:
    """ResNet18 built exactly as the course's evaluator.py builds it."""
    network = torchvision.models.resnet18(weights=None)
    network.fc = nn.Sequential(nn.Linear(512, 24), nn.Sigmoid())
    return network


def literal_course_loop(out: torch.Tensor, onehot_labels: torch.Tensor) -> tuple[int, int]:
    """The course's compute_acc, restated line by line, returning (acc, total) instead of the ratio."""
    acc = 0
    total = 0
    for i in range(out.size(0)):
        k = int(onehot_labels[i].sum().item())
        total += k
        outv, outi = out[i].topk(k)
        lv, li = onehot_labels[i].topk(k)
        for j in outi:
            if j in li:
                acc += 1
    return acc, total


def config_in(tmp_path: Path, **judge_settings):
    """The smoke profile with every path absolute under tmp_path."""
    cfg = get_config("smoke")
    cfg.data.root = str(tmp_path / "data")
    cfg.data.synthetic_dir = str(tmp_path / "data" / "synthetic")
    cfg.data.cache_dir = str(tmp_path / "data" / "cache")
    cfg.train.runs_dir = str(tmp_path / "runs")
    for key, value in judge_settings.items():
        setattr(cfg.judge, key, value)
    return cfg


@pytest.fixture(autouse=True)
def project_in_tmp(tmp_path, monkeypatch):
    """report_figures/ and relative outputs land in tmp_path, never in the checkout."""
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture
def course_checkpoint(tmp_path) -> tuple[Path, dict]:
    """A checkpoint.pth in the course format with random weights, in tmp_path/data."""
    torch.manual_seed(1)
    network = course_way_network()
    # Random BN statistics so eval mode differs from an untouched network.
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "data" / "checkpoint.pth"
    path.parent.mkdir(parents=True)
    state = network.state_dict()
    torch.save({"model": state, "epoch": 100}, path)
    return path, state


def reference_outputs(state: dict, images: torch.Tensor) -> torch.Tensor:
    network = course_way_network()
    network.load_state_dict(state)
    network.eval()
    with torch.no_grad():
        return network(images)


def random_images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator) * 2 - 1


def random_labels(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(count, 24)
    for row in range(count):
        k = 1 + row % 3
        labels[row, torch.randperm(24, generator=generator)[:k]] = 1
    return labels


# ---- the network and the course checkpoint ----------------------------------------------------------
def test_network_has_course_architecture():
    network = evaluate.build_evaluator_network()
    reference = course_way_network()
    assert [(k, v.shape) for k, v in network.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert isinstance(network.fc[1], nn.Sigmoid)
    output = network.eval()(random_images(2))
    assert output.shape == (2, 24) and bool(((output > 0) & (output < 1)).all())


def test_checkpoint_alone_loads_and_matches_torchvision(tmp_path, course_checkpoint):
    _, state = course_checkpoint
    cfg = config_in(tmp_path)
    judge = evaluate.load_course_judge(cfg, device="cpu")
    assert judge.name == "course checkpoint" and judge.course_model is None
    images = random_images(5)
    torch.testing.assert_close(judge.probabilities(images), reference_outputs(state, images), rtol=0, atol=1e-6)


def test_course_evaluator_file_used_through_subclass_on_cpu(tmp_path, course_checkpoint, monkeypatch):
    _, state = course_checkpoint
    evaluator_path = tmp_path / "data" / "evaluator.py"
    evaluator_path.write_text(COURSE_EVALUATOR)
    digest = hashlib.sha256(evaluator_path.read_bytes()).hexdigest()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # './checkpoint.pth' does not exist here

    module = evaluate.import_course_evaluator(evaluator_path)
    with pytest.raises(FileNotFoundError):  # the course's own __init__ needs ./checkpoint.pth
        module.evaluation_model()

    cfg = config_in(tmp_path)
    judge = evaluate.load_course_judge(cfg, device="cpu")
    assert judge.name == "course checkpoint"
    subclass = type(judge.course_model)
    assert subclass.__mro__[1].__name__ == "evaluation_model" and "compute_acc" not in vars(subclass)
    assert judge.course_model.classnum == 24
    assert next(judge.network.parameters()).device.type == "cpu"
    assert Path.cwd() == elsewhere
    assert hashlib.sha256(evaluator_path.read_bytes()).hexdigest() == digest

    images = random_images(6, seed=3)
    labels = random_labels(6, seed=3)
    torch.testing.assert_close(judge.probabilities(images), reference_outputs(state, images), rtol=0, atol=1e-6)
    # the course's own eval() on the subclass agrees with labkit's accuracy
    result = judge.accuracy(images, labels, split="test")
    assert judge.course_model.eval(images, labels) == pytest.approx(result.accuracy)
    assert result.total == int(labels.sum())


def test_bad_checkpoint_names_file_and_fix(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = config_in(tmp_path)
    path = folder / "checkpoint.pth"

    path.write_bytes(b"not a torch file")
    with pytest.raises(evaluate.EvaluatorFileError, match=r"checkpoint\.pth.*torch\.load cannot read it.*original"):
        evaluate.load_course_judge(cfg, device="cpu")

    torch.save({"state_dict": {}}, path)
    with pytest.raises(evaluate.EvaluatorFileError, match=r"checkpoint\.pth: expected a dict whose entry 'model'"):
        evaluate.load_course_judge(cfg, device="cpu")

    torch.save({"model": {"fc.weight": torch.zeros(3)}}, path)
    with pytest.raises(evaluate.EvaluatorFileError, match=r"checkpoint\.pth: entry 'model' does not fit ResNet18"):
        evaluate.load_course_judge(cfg, device="cpu")


def test_bad_evaluator_file_names_file_and_fix(tmp_path, course_checkpoint):
    evaluator_path = tmp_path / "data" / "evaluator.py"
    cfg = config_in(tmp_path)
    evaluator_path.write_text("def broken(:\n")
    with pytest.raises(evaluate.EvaluatorFileError, match=r"evaluator\.py: importing it failed.*restore"):
        evaluate.load_course_judge(cfg, device="cpu")
    evaluator_path.write_text("x = 1\n")
    with pytest.raises(evaluate.EvaluatorFileError, match=r"evaluator\.py: no class evaluation_model"):
        evaluate.load_course_judge(cfg, device="cpu")


def test_probabilities_resize_small_images_to_64(course_checkpoint):
    _, state = course_checkpoint
    network = course_way_network()
    network.load_state_dict(state)
    judge = evaluate.Judge("course checkpoint", network, "cpu", chunk_size=3)
    small = random_images(7, size=32, seed=5)
    upsampled = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(judge.probabilities(small), reference_outputs(state, upsampled), rtol=0, atol=1e-6)
    as_uint8 = ((small + 1) * 127.5).round().to(torch.uint8)
    assert judge.probabilities(as_uint8).shape == (7, 24)

def test_generated_images_score_as_their_saved_files_do(tmp_path, course_checkpoint):
    """The sweep and the training-time evaluation score tensors, ``evaluate`` scores the PNG files: the
    tensors they score must be the files' pixels, or one rounded pixel flips a label between them."""
    from labkit.lab import upsample_for_output

    _, state = course_checkpoint
    network = course_way_network()
    network.load_state_dict(state)
    judge = evaluate.Judge("course checkpoint", network, "cpu")
    generated = random_images(32, size=32, seed=9)  # a 32x32 model's float output
    scored = upsample_for_output(generated)  # (32, 3, 64, 64)
    evaluate.save_required_outputs(scored, "test", tmp_path / "outputs")
    folder = tmp_path / "outputs" / "images" / "test"
    from_files = torch.stack([decode_png(folder / f"{i}.png") for i in range(32)]).float() / 127.5 - 1
    assert torch.equal(from_files, scored)
    assert torch.equal(judge.probabilities(from_files), judge.probabilities(scored))



# ---- the accuracy formula ---------------------------------------------------------------------------
def hand_made_case():
    """Mixed k (1, 2, 3), a tie inside the top-k, a tie across its edge, and an all-equal row."""
    probabilities = torch.full((5, 24), 0.01)
    labels = torch.zeros(5, 24)
    # image 0: k=1, right
    labels[0, 3] = 1
    probabilities[0, 3] = 0.9
    # image 1: k=2, one right (5), one wrong (7 beats 6)
    labels[1, [5, 6]] = 1
    probabilities[1, [5, 7, 6]] = torch.tensor([0.8, 0.7, 0.6])
    # image 2: k=3, all right, with a tie among the top 3
    labels[2, [0, 8, 16]] = 1
    probabilities[2, [0, 8, 16]] = torch.tensor([0.5, 0.5, 0.9])
    # image 3: k=2, the second place is tied between a true (10) and a false (11) class
    labels[3, [9, 10]] = 1
    probabilities[3, [9, 10, 11]] = torch.tensor([0.9, 0.4, 0.4])
    # image 4: k=3, every class equal: topk's tie order decides
    labels[4, [20, 21, 22]] = 1
    probabilities[4] = 0.5
    return probabilities, labels


def test_course_accuracy_matches_literal_loop_including_ties():
    probabilities, labels = hand_made_case()
    hits, total = evaluate.course_accuracy(probabilities, labels)
    assert (hits, total) == literal_course_loop(probabilities, labels)
    assert total == 11
    # images 0-2 contribute 1 + 1 + 3 = 5 hits whatever the tie order
    determined = evaluate.course_accuracy(probabilities[:3], labels[:3])
    assert determined == (5, 6)


def test_course_accuracy_random_cases_match_literal_loop():
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        count = 1 + trial
        # coarse values make ties frequent
        probabilities = torch.randint(0, 4, (count, 24), generator=generator).float() / 4
        labels = random_labels(count, seed=trial)
        assert evaluate.course_accuracy(probabilities, labels) == literal_course_loop(probabilities, labels)


def test_accuracy_is_total_hits_over_total_objects_not_mean_per_image():
    probabilities, labels = hand_made_case()
    probabilities, labels = probabilities[:2], labels[:2]  # 1/1 and 1/2
    hits, total = evaluate.course_accuracy(probabilities, labels)
    assert hits / total == pytest.approx(2 / 3)  # a per-image mean would give 0.75


def test_course_accuracy_rejects_mismatched_or_soft_labels():
    with pytest.raises(ValueError, match="same shape"):
        evaluate.course_accuracy(torch.rand(2, 24), torch.zeros(3, 24))
    with pytest.raises(ValueError, match="multi-hot"):
        evaluate.course_accuracy(torch.rand(2, 24), torch.full((2, 24), 0.5))


def test_breakdowns_and_failure_cases():
    probabilities, labels = hand_made_case()
    probabilities, labels = probabilities[:4], labels[:4]
    space = LabelSpace.default()
    per_class = evaluate.per_class_accuracy(probabilities, labels, space)
    assert per_class[space.names[6]] == {"hits": 0, "total": 1, "accuracy": 0.0}
    assert per_class[space.names[5]]["hits"] == 1
    assert sum(row["hits"] for row in per_class.values()) == evaluate.course_accuracy(probabilities, labels)[0]
    by_count = evaluate.per_object_count_accuracy(probabilities, labels)
    assert by_count[1] == {"images": 1, "hits": 1, "total": 1, "accuracy": 1.0}
    assert by_count[3]["hits"] == 3 and by_count[2]["images"] == 2
    cases = evaluate.failure_cases(probabilities, labels, space)
    assert 1 in [case.index for case in cases] and 0 not in [case.index for case in cases]
    case = next(case for case in cases if case.index == 1)
    assert case.missed == [space.names[6]] and case.predicted == [space.names[5], space.names[7]]


def test_accuracy_result_names_the_judge():
    result = evaluate.AccuracyResult(61 / 72, 61, 72, "synthetic judge", split="test")
    assert str(result) == "test.json: 0.847 (61/72 objects, synthetic judge)"
    result.judge_holdout_accuracy = 0.991
    assert str(result) == "test.json: 0.847 (61/72 objects, synthetic judge, held-out 0.991)"
    assert "course checkpoint" in str(evaluate.AccuracyResult(1.0, 3, 3, "course checkpoint"))


# ---- required output files ----------------------------------------------------------------------------
def index_images(count: int = 32, size: int = 16) -> torch.Tensor:
    """uint8 images whose every pixel encodes the image's index (7 * index)."""
    return (torch.arange(count) * 7).to(torch.uint8)[:, None, None, None].expand(count, 3, size, size).clone()


def test_required_outputs_are_named_and_ordered(tmp_path):
    out_dir = tmp_path / "outputs"
    stale = out_dir / "images" / "test" / "40.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    paths = evaluate.save_required_outputs(index_images(), "test", out_dir)
    folder = out_dir / "images" / "test"
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{i}.png" for i in range(32))
    assert paths[:32] == [folder / f"{i}.png" for i in range(32)]
    for index in range(32):
        image = decode_png(folder / f"{index}.png")
        assert image.shape == (3, 16, 16)
        assert int(image[0, 0, 0]) == 7 * index and bool((image == 7 * index).all())


def test_required_outputs_accept_float_images(tmp_path):
    images = index_images(size=64).float() / 127.5 - 1
    evaluate.save_required_outputs(images, "new_test", tmp_path / "outputs")
    image = decode_png(tmp_path / "outputs" / "images" / "new_test" / "5.png")
    assert image.shape == (3, 64, 64) and int(image[1, 3, 3]) == 35


def test_grid_has_8_columns_and_4_rows(tmp_path):
    size, padding = 16, 2
    paths = evaluate.save_required_outputs(index_images(size=size), "test", tmp_path / "outputs")
    grid_path = tmp_path / "outputs" / "test_grid.png"
    report_grid = tmp_path / "outputs" / "report_figures" / "test_grid.png"  # with the run's outputs
    assert paths[-2:] == [grid_path, report_grid] and report_grid.is_file()
    grid = decode_png(grid_path)
    assert grid.shape == (3, 4 * (size + padding) + padding, 8 * (size + padding) + padding)
    for row in range(4):
        for column in range(8):
            top = padding + row * (size + padding)
            left = padding + column * (size + padding)
            assert int(grid[0, top + size // 2, left + size // 2]) == 7 * (row * 8 + column)


def test_required_outputs_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        evaluate.save_required_outputs(index_images(), "test.json", tmp_path)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        evaluate.save_required_outputs(torch.zeros(32, 16, 16), "test", tmp_path)


def test_accuracy_summary_names_the_judge(tmp_path):
    results = {
        "test": evaluate.AccuracyResult(61 / 72, 61, 72, "synthetic judge", "test", judge_holdout_accuracy=0.991),
        "new_test": evaluate.AccuracyResult(80 / 84, 80, 84, "synthetic judge", "new_test", judge_holdout_accuracy=0.991),
    }
    text = evaluate.write_accuracy_summary(results, tmp_path / "outputs")
    assert "synthetic judge" in text and "held-out accuracy 0.991" in text
    assert "test.json:" in text and "61/72" in text and "new_test.json:" in text and "80/84" in text
    assert "not the course checkpoint" in text
    assert (tmp_path / "outputs" / "accuracy.txt").read_text().strip() == text
    saved = json.loads((tmp_path / "outputs" / "accuracy.json").read_text())
    assert saved["test"]["judge"] == "synthetic judge" and saved["new_test"]["hits"] == 80
    course = {"test": evaluate.AccuracyResult(1.0, 72, 72, "course checkpoint", "test")}
    assert "not the course checkpoint" not in evaluate.write_accuracy_summary(course, tmp_path / "outputs")


# ---- the synthetic judge ------------------------------------------------------------------------------
def test_bad_judge_settings_fail_before_any_work(tmp_path):
    cfg = config_in(tmp_path, steps=0, lr=-1.0)
    with pytest.raises(ValueError, match=r"judge\.steps = 0.*judge\.lr = -1\.0"):
        evaluate.train_synthetic_judge(cfg, device="cpu", progress=False)
    assert not (tmp_path / "data").exists()


def test_tiny_synthetic_judge_is_saved_in_course_format_and_warns(tmp_path, monkeypatch):
    cfg = config_in(tmp_path, steps=3, batch_size=8, num_holdout_scenes=4, min_accuracy=0.98)
    cfg.data.num_scenes = 6
    with pytest.warns(evaluate.WeakJudgeWarning, match="WEAK"):
        judge, report = evaluate.train_synthetic_judge(cfg, device="cpu", progress=False)
    assert judge.name == "synthetic judge"
    weights = tmp_path / "data" / "synthetic" / "judge.pth"
    checkpoint = torch.load(weights, weights_only=True)
    assert set(checkpoint) == {"model"}
    network = course_way_network()
    network.load_state_dict(checkpoint["model"])  # the course's own loading code works on it
    saved = json.loads((tmp_path / "data" / "synthetic" / "judge.json").read_text())
    assert saved["holdout"]["total"] == report["holdout"]["total"] > 0
    assert 0 <= saved["holdout"]["accuracy"] <= 1 and saved["steps"] == 3 and saved["images_seen"] == 24
    assert judge.holdout.total == saved["holdout"]["total"]

    # the cached judge is reused (no training) and still warns; printed accuracies name it
    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been reused")

    monkeypatch.setattr(judge_training, "train_synthetic_judge", no_training)  # where load_judge finds it
    with pytest.warns(evaluate.WeakJudgeWarning):
        cached = evaluate.load_judge(cfg, device="cpu", progress=False)
    images = random_images(4, size=32)
    torch.testing.assert_close(cached.probabilities(images), judge.probabilities(images), rtol=0, atol=1e-5)
    assert "synthetic judge" in str(cached.accuracy(images, random_labels(4), split="test"))
    assert "held-out accuracy" in str(cached)


def test_a_weak_judge_is_announced_once_without_a_quoted_source_line(capsys):
    import warnings

    from labkit.judge import warn_if_weak

    weak = evaluate.Judge("synthetic judge", evaluate.build_evaluator_network(),
                          holdout=evaluate.AccuracyResult(0.5, 9, 18, "synthetic judge", "held-out"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_weak(weak, 0.98)
    assert capsys.readouterr().out == ""  # not printed a second time beside the warning
    assert len(caught) == 1 and caught[0].category is evaluate.WeakJudgeWarning
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert "THE SYNTHETIC JUDGE IS WEAK" in shown and "!!!!" in shown
    assert "warn" not in shown.split("WeakJudgeWarning:")[1]  # no line of labkit's code quoted under it
