"""`equilibria train`: train a model from the defaults, a config file and `key=value` overrides."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..config import Config, ConfigError, describe_keys
from ..tasks import TASKS, get_task
from ..tasks.run import run_task
from ..training import distributed
from ..training.checkpoint import find_checkpoint, load_checkpoint, stored_config
from .requirements import check_packages

# keys that may change when a run is resumed: none of them changes what is computed
RESUMABLE = (
    "run.device",
    "run.threads",
    "run.progress",
    "run.sweep",
    "run.trace_iters",
    "data.data_dir",
    "data.download",
    "data.eval_batch_size",
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model (default: the multiscale DEQ on digits)",
        description=(
            "Train a model: an image classifier (the default), a character language model "
            "(--task lm) or a contrastive backbone (--task ssl). Settings come from the "
            "defaults, then --config, then KEY=VALUE overrides (section.key, or a key only "
            "one section has), e.g. "
            "'equilibria train epochs=5 data.dataset=mnist'. List every key with --show-keys."
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--config", type=Path, help="a .json or .toml config file")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/DATASET-MODEL-TIME)")
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the run in this folder (or checkpoint file)",
    )
    parser.add_argument("--task", help=f"same as run.task=... ({', '.join(TASKS)})")
    parser.add_argument("--device", help="same as run.device=...")
    parser.add_argument("--data-dir", help="same as data.data_dir=...")
    parser.add_argument("--text", help="same as lm.text=... (a UTF-8 file, plain or .gz)")
    parser.add_argument("--show-keys", action="store_true", help="list every config key and exit")
    parser.set_defaults(run=run)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.task is not None:
        flags.append(f"run.task={args.task}")
    if args.device is not None:
        flags.append(f"run.device={args.device}")
    if args.data_dir is not None:
        flags.append(f"data.data_dir={args.data_dir}")
    if args.text is not None:
        flags.append(f"lm.text={args.text}")
    return flags


def resumed_config(args: argparse.Namespace) -> tuple[Config, dict, Path]:
    """The config, checkpoint contents and output folder of a resumed run."""
    if args.config is not None:
        raise ConfigError(
            "--config cannot be combined with --resume: a resumed run keeps its config"
        )
    path = find_checkpoint(args.resume)
    checkpoint = load_checkpoint(path)
    stored = stored_config(path, checkpoint)
    config = stored.override(args.overrides + flag_overrides(args))
    fixed = [key for key in stored.changed_keys(config) if key not in RESUMABLE]
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change when resuming (the run would no longer be the "
            f"same run); keys that may change: {', '.join(RESUMABLE)}"
        )
    return config, checkpoint, Path(args.out) if args.out else path.parent


def default_out(config: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{get_task(config.run.task).folder_name(config)}-{stamp}"


def run(args: argparse.Namespace) -> int:
    if args.show_keys:
        print(describe_keys())
        return 0
    checkpoint = None
    if args.resume is not None:
        config, checkpoint, out = resumed_config(args)
        if checkpoint["progress"].finished:
            print(
                f"the run in {out} already finished its {config.optim.epochs} epochs; "
                f"see {out / 'summary.json'}"
            )
            return 0
    else:
        config = Config.load(args.config) if args.config else Config()
        config = config.override(args.overrides + flag_overrides(args))
        out = args.out or default_out(config)
    task = get_task(config.run.task)
    check_packages(digits=task.reads_images and config.data.dataset == "digits")
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    with distributed.session(config.run.device) as runtime:
        result = run_task(config, out, runtime, checkpoint=checkpoint)
    if not runtime.is_main:
        return 130 if result.status == "interrupted" else 0
    if result.status == "interrupted":
        print(
            f"stopped by {result.signal}: checkpoint saved to {result.checkpoint}; continue with "
            f"'equilibria train --resume {result.out}'",
            file=sys.stderr,
        )
        return 130
    written = ", ".join(sorted(p.name for p in result.out.iterdir() if not p.name.startswith(".")))
    print(f"{result.headline}; wrote {written} to {result.out}")
    return 0
