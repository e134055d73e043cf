"""Counting objects: a small network that tells how many objects a scene shows (1, 2, 3, or 4 and more).

The course's accuracy cannot see an object the model adds: for a condition of k objects it reads
only the judge's top k. The counter fills that gap. It trains on synthetic renders of 1 to 5
objects (the 1-, 2-, ..., 5-object prefixes of 5-object scenes, 4 and 5 both counted as "4 or
more"), seen as the judge sees them: 32x32, 8-bit. A generated image of any size is resized to
32x32 and counted; the result is compared with the number of objects asked for
(:func:`count_summary`: exact, one or more extra, one or more missing).

It is a diagnostic, not the course's metric: its held-out accuracy is reported with every count.
How it trains is the config's ``counter`` section; the weights are cached
(``<data.cache_dir>/counter_r<renderer version>_<settings>.pt``). With the default settings the
first call trains it in about 4 minutes on 2 CPU cores (held-out accuracy 0.997).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from labkit import synth
from labkit.config import CounterConfig, LabConfig, resolve_path
from labkit.judge import to_evaluator_input
from labkit.runtime import atomic_save, get_device, show_progress

COUNT_SIZE = 32  # the judge's training size: the counter sees what the judge sees
MAX_COUNT = 4  # the last class means "4 or more"
SCENE_OBJECTS = 5  # objects per rendered scene; its prefixes give every count from 1 to 5


class CountNet(nn.Module):
    """float (B, 3, 32, 32) in [-1, 1] -> (B, MAX_COUNT) logits; class c means c + 1 objects. 0.3M parameters."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width):  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 4 * 4, MAX_COUNT)  # (B, 128 * 4 * 4) -> (B, MAX_COUNT)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))  # (B, MAX_COUNT)


def render_count_set(num_scenes: int, stream: str, seed: int = 0, progress: bool = False):
    """uint8 (5 N, 3, 32, 32) renders and their object counts (5 N,), clipped to MAX_COUNT; scene-major."""
    images, label_lists = synth.render_holdout(num_scenes, seed, COUNT_SIZE, progress, stream, SCENE_OBJECTS)
    return images, torch.tensor([len(labels) for labels in label_lists]).clamp(max=MAX_COUNT)


class Counter:
    """A trained :class:`CountNet` with its held-out accuracy; :meth:`count` returns objects per image."""

    name = "object counter"
    max_count = MAX_COUNT  # its last class: this many objects or more

    def __init__(self, network: CountNet, holdout_accuracy: float, settings: CounterConfig, device="cpu"):
        self.network = network.eval().requires_grad_(False).to(device)
        self.holdout_accuracy, self.settings, self.device = holdout_accuracy, settings, torch.device(device)

    @torch.no_grad()
    def count(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, 3, S, S) uint8 or float [-1, 1] -> (B,) long: 1, 2, 3, or MAX_COUNT for 4 and more."""
        counts = [self.network(to_evaluator_input(images[i : i + batch_size], COUNT_SIZE).to(self.device)).argmax(1).cpu() + 1
                  for i in range(0, len(images), batch_size)]
        return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long)

    def __str__(self) -> str:
        return f"{self.name} (held-out accuracy {self.holdout_accuracy:.3f})"


def _fit(network: CountNet, images, counts, settings: CounterConfig, device, progress: bool) -> None:
    """Cross-entropy, AdamW and a one-cycle LR; random horizontal flips."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=settings.steps)
    network.train()
    for _ in tqdm(range(settings.steps), desc="object counter", disable=not show_progress(progress)):
        index = torch.randint(len(images), (settings.batch_size,), generator=generator)
        batch = to_evaluator_input(images[index], COUNT_SIZE)  # (B, 3, 32, 32) in [-1, 1]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        loss = F.cross_entropy(network(batch.to(device)), (counts[index] - 1).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def train_counter(settings: CounterConfig, device=None, progress: bool = True) -> Counter:
    """Render the counting set, train a :class:`CountNet` on it and test it on held-out scenes."""
    device = get_device(device)
    torch.manual_seed(settings.seed)
    images, counts = render_count_set(settings.num_scenes, "count", settings.seed, progress)
    holdout_images, holdout_counts = render_count_set(settings.num_holdout_scenes, "count-holdout", settings.seed, progress)
    network = CountNet().to(device)
    _fit(network, images, counts, settings, device, progress)
    counter = Counter(network, 0.0, settings, device)
    counter.holdout_accuracy = (counter.count(holdout_images) == holdout_counts).float().mean().item()
    return counter


def counter_path(config: LabConfig):
    """Where the counter for ``config.counter`` is cached: one file per renderer version and settings."""
    key = "_".join(f"{value}" for value in asdict(config.counter).values())
    return resolve_path(config.data.cache_dir) / f"counter_r{synth.RENDERER_VERSION}_{key}.pt"


def load_counter(config: LabConfig, device=None, progress: bool = True) -> Counter:
    """The cached counter for ``config.counter``, or a new one (trained, then cached, with a line saying so)."""
    settings = config.counter
    path = counter_path(config)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network = CountNet()
        network.load_state_dict(saved["state_dict"])
        counter = Counter(network, saved["holdout_accuracy"], settings, get_device(device))
    else:
        start = time.perf_counter()
        counter = train_counter(settings, device, progress)
        atomic_save({"state_dict": counter.network.state_dict(), "holdout_accuracy": counter.holdout_accuracy,
                     "settings": asdict(settings)}, path)
        print(f"trained the {counter} in {time.perf_counter() - start:.0f} s; saved {path}")
    return counter


def count_summary(counts: torch.Tensor, wanted: torch.Tensor) -> dict:
    """Counted against asked-for objects per image ((B,) each): fractions exact, with extra, with missing."""
    counts, wanted = counts.cpu(), wanted.cpu().clamp(max=MAX_COUNT)
    total = max(1, len(counts))
    return {"exact": (counts == wanted).sum().item() / total, "extra": (counts > wanted).sum().item() / total,
            "missing": (counts < wanted).sum().item() / total, "images": len(counts)}
