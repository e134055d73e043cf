"""Run by tests/test_train.py under `accelerate launch`: train a tiny run, save each rank's weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from factories import make_training_set  # noqa: E402

from labkit.config import LabConfig  # noqa: E402
from labkit.train import train  # noqa: E402


def main() -> None:
    config = LabConfig.load(sys.argv[1])
    out = Path(sys.argv[2])
    torch.set_num_threads(1)
    training_set = make_training_set(out, count=16, size=config.data.image_size)
    result = train(config, resume=False, progress=False, training_set=training_set)
    from accelerate import PartialState

    state = PartialState()
    torch.save(
        {name: tensor.detach().cpu() for name, tensor in result.model.state_dict().items()},
        out / f"rank{state.process_index}.pt",
    )
    (out / f"world{state.process_index}.txt").write_text(str(state.num_processes))


if __name__ == "__main__":
    main()
