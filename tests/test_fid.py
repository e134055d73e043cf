"""Fréchet distance, PNG folders and the domain-FID classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from labkit.fid import (
    DigitClassifier,
    domain_fid,
    feature_statistics,
    frechet_distance,
    load_pngs,
    save_pngs,
)


def direct_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The definition written out: |μa − μb|² + Tr(Σa + Σb − 2 sqrtm(Σa Σb))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_distance_matches_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    b = rng.normal(loc=0.5, scale=1.5, size=(300, 8)) @ rng.normal(size=(8, 8))
    got = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert got == pytest.approx(direct_frechet(a, b), rel=1e-6)
    assert got > 1.0


def test_frechet_distance_of_a_set_with_itself_is_zero_and_shift_adds_its_square():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6))
    stats = feature_statistics(a)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)
    shifted = feature_statistics(a + 2.0)  # same covariance, mean moved by 2 in each of 6 dims
    assert frechet_distance(*stats, *shifted) == pytest.approx(6 * 4.0, rel=1e-6)


def test_save_pngs_names_files_flat_and_round_trips(tmp_path):
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    paths = save_pngs(images, tmp_path / "gen")
    assert [p.name for p in paths] == ["00001.png", "00002.png", "00003.png"]
    assert torch.equal(load_pngs(tmp_path / "gen"), images)


def test_load_pngs_names_the_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PNG files"):
        load_pngs(tmp_path)


def test_domain_fid_is_zero_on_identical_sets_and_positive_on_noise():
    torch.manual_seed(0)
    classifier = DigitClassifier(16).eval()
    real = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    assert domain_fid(classifier, real, real) == pytest.approx(0.0, abs=1e-4)
    noise = torch.zeros_like(real)
    assert domain_fid(classifier, noise, real) > 0.0
