"""FID for the digit track: Fréchet distance between feature Gaussians, on named features.

* **FID** (standard): pytorch-fid's Inception-v3 pool features (2048-d), used only when the
  package and its weights load (they download on an online machine such as Colab).
* **domain FID**: the same Fréchet distance on the 64-d penultimate features of
  :class:`DigitClassifier`, a small CNN trained here on the real digits. Its values are *not*
  comparable with Inception FID and are always printed under their own name.

Generated images go to one flat folder as ``00001.png … NNNNN.png`` (:func:`save_pngs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from labkit.runtime import show_progress


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² = |μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) for means (D,) and covariances (D, D)."""
    from scipy import linalg

    import warnings

    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled just below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D) -> (mean (D,), covariance (D, D)) in float64."""
    features = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def save_pngs(images: torch.Tensor, folder: str | Path, start: int = 1) -> list[Path]:
    """Images (N, 3, H, W) in [-1, 1] or uint8 -> ``folder/00001.png …`` (flat, 5 digits)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if images.dtype != torch.uint8:
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    paths = []
    for i, image in enumerate(images.cpu()):
        path = folder / f"{start + i:05d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def load_pngs(folder: str | Path) -> torch.Tensor:
    """All ``*.png`` of ``folder`` in name order -> uint8 (N, 3, H, W)."""
    from PIL import Image

    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no PNG files in {folder}; generate them first (python -m labkit mnist sample)")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class DigitClassifier(nn.Module):
    """Small CNN: uint8/float (B, 3, S, S) digits -> logits (B, 10); ``features`` gives (B, 64)."""

    def __init__(self, size: int = 28):
        super().__init__()
        self.size = size
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [-1, 1] float (B, 3, H, W) -> (B, 1, size, size) in [-1, 1] (the gray channel)."""
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_digit_classifier(images: torch.Tensor, digits: torch.Tensor, steps: int = 300, batch_size: int = 128,
                           seed: int = 0, size: int = 28, progress: bool = True) -> DigitClassifier:
    """Train :class:`DigitClassifier` on uint8 (N, 3, S, S) images and (N,) digit labels (Adam 1e-3,
    random ±2-pixel shifts; a progress bar unless ``progress=False``). Returns it in eval mode."""

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitClassifier(size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in tqdm(range(steps), desc="digit classifier", disable=not show_progress(progress)):
        index = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x = model.prepare(images[index])
        dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model.head(model.body(x)), digits[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classifier_features(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 64) penultimate features."""
    return torch.cat([classifier.features(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def domain_fid(classifier: DigitClassifier, generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Domain FID: Fréchet distance of the classifier's features of two image sets (N, 3, H, W)."""
    a = feature_statistics(classifier_features(classifier, generated))
    b = feature_statistics(classifier_features(classifier, reference))
    return frechet_distance(*a, *b)


def inception_fid(generated_folder: str | Path, reference_folder: str | Path, device: str = "cpu") -> float | None:
    """pytorch-fid's standard FID between two PNG folders, or None when pytorch-fid or its
    Inception weights cannot be loaded (offline; nothing is substituted)."""
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths

        return float(calculate_fid_given_paths([str(generated_folder), str(reference_folder)], 50, device, 2048, 0))
    except Exception as error:  # missing package, or weights not downloadable
        print(f"standard FID unavailable ({type(error).__name__}: {str(error)[:80]}); reporting domain FID only")
        return None
