"""labkit: the training and sampling core of a notebook course lab on conditional diffusion.

The notebooks in ``notebooks/`` explain; this package runs. Modules map onto notebooks:
``data``/``synth`` (01), ``schedules`` (02), ``model`` (03), ``train`` (04), ``sample`` (05),
``evaluate`` (06); ``figures`` and ``widgets`` serve all of them; ``python -m labkit`` runs
the whole lab headlessly.

The modules follow the data flow, and each imports only modules of its own or an earlier stage:
``config``, ``runtime`` → ``labels``, ``images`` → ``data``, ``synth`` → ``schedules``, ``model`` →
``checkpoint`` → ``train`` → ``sample`` → ``metrics``, ``judge``, ``judge_training`` → ``outputs``,
``figures``, ``evaluate`` → ``widgets``, ``lab`` → ``__main__``. Where an earlier stage needs a later
one (the trainer drawing previews or scoring samples) it takes a callback; ``lab`` wires the stages.
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
