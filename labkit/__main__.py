"""``python -m labkit <command>``: the whole lab, or one stage of it.

    python -m labkit lab        data → train → sample → evaluate → guidance sweep
    python -m labkit data       render (if needed) and cache the training set
    python -m labkit judge      train (if needed) and report the synthetic judge
    python -m labkit train      train or resume the profile's run (also under accelerate launch)
    python -m labkit sample     write outputs/<run name>/images/{test,new_test}/, the grids and the denoising row
    python -m labkit evaluate   score outputs/<run name>/images/ with the judge (and sweep the guidance scale)
    python -m labkit handin     copy one run's outputs into the course's flat layout (handin/)
    python -m labkit experiment NAME   one comparison (schedules, timesteps, guidance, samplers, ...; see labkit.experiments)
    python -m labkit mnist train|sample|fid   the unconditional digit track (see labkit.mnist_cli)

Every command takes ``--profile`` (smoke, cpu, gpu; default: LABKIT_PROFILE, else gpu with
CUDA, else cpu) and ``--set section.name=value`` to override any config value.
"""

from __future__ import annotations

import argparse
import sys

from labkit.config import PROFILES, ConfigError, LabError, active_profile, get_config, set_override


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="run profile: smoke (tests, seconds), cpu (2 CPU cores, <= 30 min), gpu (the real recipe). "
        "Default: $LABKIT_PROFILE, else gpu when CUDA is present, else cpu.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="override one config value, e.g. --set train.steps=500 --set sample.sampler=ddim "
        "--set data.hflip=no --set sample.sweep_scales=[1,3,5] (repeatable; each value is checked "
        "against the setting's type and allowed values before anything runs)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m labkit",
        description="labkit: conditional DDPM on i-CLEVR, the whole lab or one stage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    lab = commands.add_parser("lab", help="the whole lab: data → train → sample → evaluate → sweep")
    _common(lab)
    lab.add_argument("--no-sweep", action="store_true", help="skip the guidance-scale sweep")
    lab.add_argument("--fresh", action="store_true", help="start training from scratch (the old run is moved aside)")

    data = commands.add_parser("data", help="render synthetic i-CLEVR if needed and build the decode-once cache")
    _common(data)

    judge = commands.add_parser("judge", help="train (if needed) the synthetic judge and print its held-out accuracy")
    _common(judge)

    train = commands.add_parser(
        "train", help="train or resume the run in runs/<profile>/ (works under `accelerate launch -m labkit train`)"
    )
    _common(train)
    train.add_argument("--steps", type=int, default=None, help="total optimiser steps (overrides train.steps)")
    train.add_argument("--fresh", action="store_true", help="start from scratch (the old run is moved aside)")
    train.add_argument("--run-name", default=None, help="run folder name under runs/ (default: the profile)")

    sample = commands.add_parser("sample", help="sample test.json and new_test.json into outputs/<run name>/")
    _common(sample)
    sample.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver++"), default=None, help="sampler")
    sample.add_argument("--steps", type=int, default=None, help="number of inference steps")
    sample.add_argument(
        "--guidance-scale", type=float, default=None, help="CFG scale w in ε = ε_u + w(ε_c − ε_u); 1 = no guidance"
    )
    sample.add_argument(
        "--judge-guidance-scale",
        type=float,
        default=None,
        help="evaluator guidance strength (0 = off, the default); results are marked judge-guided",
    )
    sample.add_argument("--run-name", default=None, help="run folder name under runs/ (default: the profile)")
    sample.add_argument(
        "--reference",
        action="store_true",
        help="sample with the shipped reference model (reference/model.pt) and print both accuracies",
    )

    evaluate = commands.add_parser("evaluate", help="score outputs/<run name>/images/ with the judge; optional guidance sweep")
    _common(evaluate)
    evaluate.add_argument("--sweep", action="store_true", help="also sweep the guidance scale (samples again)")
    evaluate.add_argument("--run-name", default=None, help="run folder name under runs/ (default: the profile)")

    handin = commands.add_parser(
        "handin", help="copy a run's images, grids, accuracy and figures from outputs/<run name>/ to handin/"
    )
    _common(handin)
    handin.add_argument("--run-name", default=None, help="the run to hand in (default: the profile)")
    handin.add_argument("--to", default="handin", help="destination folder (default: handin/ in the project)")

    from labkit.experiments import EXPERIMENTS

    experiment = commands.add_parser(
        "experiment", help="one comparison: a table and a figure in outputs/experiments/NAME/ (see labkit.experiments)"
    )
    _common(experiment)
    experiment.add_argument("name", choices=EXPERIMENTS, help="which comparison")
    experiment.add_argument("--steps", type=int, default=None, help="training steps per run (default: the profile's train.steps)")
    experiment.add_argument("--run-name", default=None,
                            help="sampling and checkpoints experiments: an existing trained run (default: exp-base)")
    experiment.add_argument("--seeds", type=int, default=10, help="the seeds experiment: number of sampling seeds")
    return parser


def build_config(args: argparse.Namespace):
    """The profile's config with every ``--set`` and command flag applied, validated.

    Raises :class:`~labkit.config.ConfigError` naming the setting, the value and what is allowed.
    """
    config = get_config(args.profile or active_profile())
    for item in args.overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected SECTION.NAME=VALUE, e.g. train.steps=500")
        key, value = item.split("=", 1)
        try:
            set_override(config, key.strip(), value.strip())
        except ConfigError as error:
            raise ConfigError(f"--set {item}: {error}") from None
    if getattr(args, "steps", None) is not None and args.command != "experiment":
        if args.command == "train":
            config.train.steps = args.steps
        else:
            config.sample.num_inference_steps = args.steps
    if getattr(args, "run_name", None) and args.command != "experiment":
        config.train.run_name = args.run_name
    for name in ("sampler", "guidance_scale", "judge_guidance_scale"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(config.sample, name, value)
    return config.validate()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mnist"]:  # the digit track has its own options
        from labkit.mnist_cli import main as mnist_main

        return mnist_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
    try:
        config = build_config(args)
        run_command(args, config, progress=not args.quiet)
    except (LabError, FileNotFoundError, FileExistsError) as error:
        if args.debug:
            raise
        print(error_paragraph(f"python -m labkit {args.command}", error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: training has saved its checkpoint on the way out (it says where)
        if args.debug:
            raise
        print(f"python -m labkit {args.command}: stopped (Ctrl-C); run it again to go on (training resumes from the checkpoint it saved)",
              file=sys.stderr)
        return 130
    return 0


def error_paragraph(command: str, error: BaseException) -> str:
    """One paragraph for an error the user can fix (what, where, the fix), and how to see the traceback."""
    kind = "" if isinstance(error, LabError) else f"{type(error).__name__}: "
    return f"{command}: error: {kind}{error}\n(run again with --debug for the traceback)"


def run_command(args: argparse.Namespace, config, progress: bool) -> None:
    """Run ``args.command`` with ``config``."""
    from labkit import lab
    from labkit.preflight import preflight

    checks = {  # what each command reads, checked before any long work (the lab checks its own)
        "data": dict(judge=False),
        "judge": dict(),
        "train": dict(judge=config.train.eval_every > 0),
        "sample": dict(judge=config.sample.judge_guidance_scale > 0),
        "evaluate": dict(),
    }
    if args.command in checks and not getattr(args, "reference", False):
        report = preflight(config, **checks[args.command])
        if progress:
            print(report)
    if args.command == "lab":
        lab.run_lab(config, progress=progress, sweep=not args.no_sweep, resume=not args.fresh)
    elif args.command == "data":
        lab.run_data(config, progress=progress)
    elif args.command == "judge":
        from labkit.evaluate import load_judge

        judge = load_judge(config, progress=progress)
        print(judge)
    elif args.command == "train":
        result = lab.run_train(config, progress=progress, resume=not args.fresh)
        if result.last_checkpoint is not None and result.losses:
            print(f"trained {config.run_dir} to step {result.step}; last loss {result.losses[-1][1]:.4f}")
    elif args.command == "sample" and args.reference:
        results = lab.run_reference(progress=progress)
        print(results["accuracy"]["summary"])
    elif args.command == "sample":
        results = lab.run_sample(config, progress=progress)
        for split in lab.SPLITS:
            print(f"{split}: {results['paths'][split]}")
        print(f"denoising process: {results['paths']['denoising']}")
    elif args.command == "evaluate":
        results = lab.run_evaluate(config, progress=progress)
        print(results["summary"])
        if args.sweep:
            sweep = lab.run_sweep(config, progress=progress)
            print(f"guidance sweep ({sweep['judge']}): best w = {sweep['best_scale']}")
    elif args.command == "experiment":
        from labkit import experiments

        result = experiments.run(args.name, config, steps=args.steps, run_name=args.run_name, seeds=args.seeds,
                                 progress=progress)
        print(result)
        print(f"table and figure: {result.folder}")
    elif args.command == "handin":
        folder = lab.hand_in(config, args.to)
        print(f"handed in run {config.run_name}: {config.outputs_dir} copied to {folder}")
        print(f"  {folder / 'images' / 'test'}/0.png … and {folder / 'images' / 'new_test'}/0.png …")


if __name__ == "__main__":
    sys.exit(main())
