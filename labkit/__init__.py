"""labkit: the training and sampling core of a notebook course lab on conditional diffusion.

The notebooks in ``notebooks/`` explain; this package runs. Modules map onto notebooks:
``data``/``synth`` (01), ``schedules`` (02), ``model`` (03), ``train`` (04), ``sample`` (05),
``evaluate`` (06); ``figures`` and ``widgets`` serve all of them; ``plan`` says how long a run
takes here and hands the sampling notebooks a model; ``colab`` is every notebook's first cell;
``python -m labkit`` runs the whole lab headlessly.
"""

from labkit.config import LabConfig, active_profile, get_config, project_root, resolve_path
from labkit.runtime import get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "LabConfig",
    "active_profile",
    "get_config",
    "get_device",
    "project_root",
    "resolve_path",
    "seed_everything",
]
