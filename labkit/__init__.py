"""labkit: the training and sampling core of a notebook course lab on conditional diffusion.

The notebooks in ``notebooks/`` explain; this package runs. Modules map onto notebooks:
``data``/``synth`` (01), ``schedules`` (02), ``model`` (03), ``train`` (04), ``sample`` (05),
``evaluate`` (06), ``network_view`` (04: the trained network's one-step view); ``exercises`` checks the student
notebooks' exercises; ``figures`` and ``widgets`` serve all of them; ``plan`` says how long a run
takes here and hands the sampling notebooks a model (the profile's run or the shipped ``reference``
model); ``colab`` is every notebook's first cell; ``python -m labkit`` runs the whole lab headlessly.

The modules follow the data flow, and each imports only modules of its own or an earlier stage:
``config``, ``runtime`` → ``labels``, ``images`` → ``data``, ``synth`` → ``schedules``, ``model`` →
``checkpoint``, ``reference`` → ``train``, ``network_view`` → ``sample`` → ``metrics``, ``judge``, ``judge_training`` →
``outputs``, ``figures``, ``evaluate``, ``exercises``, ``sampler_comparison`` → ``widgets``, ``lab``, ``plan``, ``colab`` → ``__main__``. Where an
earlier stage needs a later one (the trainer drawing previews or scoring samples) it takes a callback;
``lab`` wires the stages.
"""

from labkit.config import LabConfig, active_profile, get_config, project_root, resolve_path
from labkit.runtime import get_device, seed_everything

__version__ = "0.1.0"


def load_reference(device=None):
    """The shipped reference model for sampling: ``(model, schedule, config)``; see :mod:`labkit.reference`."""
    from labkit.reference import load_reference as load

    return load(device=device)


__all__ = [
    "LabConfig",
    "active_profile",
    "get_config",
    "get_device",
    "load_reference",
    "project_root",
    "resolve_path",
    "seed_everything",
]
