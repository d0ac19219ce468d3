"""`equilibria eval CHECKPOINT`: test a trained image classifier or language model with any
solver, tolerance and budget (the language-model parts are in `evaluate_lm`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..config.schema import DEQ_MODELS
from ..data import load_data
from ..errors import check_choice
from ..extras import require
from ..models import build_model
from ..solvers import SOLVERS
from ..training import distributed
from ..training.analysis import elastic_sweep
from ..training.checkpoint import find_checkpoint, load_checkpoint, restore_model
from ..training.engine import evaluate
from ..training.plots import plot_accuracy_vs_nfe
from . import evaluate_lm
from .arguments import number, stored_config
from .eval_settings import check_solve_options, describe, neural_solver, solve_options, write_eval


def _caps(text: str) -> list[int]:
    try:
        caps = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sweep takes iteration caps separated by commas (e.g. 1,2,4,8), got {text!r}"
        ) from None
    if not caps or min(caps) < 1:
        raise argparse.ArgumentTypeError(f"--sweep caps must be integers >= 1, got {text!r}")
    return caps


def _solver(text: str) -> str:
    try:
        return check_choice("--solver", text, [*SOLVERS, "neural"])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a classifier or language model, at any solver setting or over budgets",
        description=(
            "Evaluate a trained image classifier (test accuracy) or language model (bits per "
            "character and accuracy of next-character prediction on its text). Without options "
            "the solver settings of its config (eval mode) are used; --solver, --tol and "
            "--max-iter change them, and --sweep evaluates at several iteration caps (accuracy "
            "or bits per character against compute)."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="a run folder or checkpoint file")
    parser.add_argument(
        "--solver",
        type=_solver,
        help=f"one of {', '.join(SOLVERS)}, or neural (the solver that train-solver saved "
        "beside the checkpoint)",
    )
    parser.add_argument("--tol", type=number(float, 0, what="a tolerance"), help="solver tolerance")
    parser.add_argument("--max-iter", type=number(int, 1), help="iteration cap")
    parser.add_argument("--sweep", type=_caps, metavar="CAPS", help="caps, e.g. 1,2,4,8,16")
    parser.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="test (default; a language model's validation text) or train",
    )
    parser.add_argument("--batch-size", type=number(int, 1), help="evaluation batch size")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    parser.add_argument("--data-dir", help="folder with the image data files (classifiers)")
    parser.add_argument("--out", type=Path, help="write eval.json (and the sweep plot) here")
    parser.set_defaults(run=run)


def _stored_config(path: Path, checkpoint: dict, args: argparse.Namespace) -> Config:
    config = stored_config(path, checkpoint)
    overrides = []
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    return config.override(overrides)


def _row(label: str, result: dict[str, Any]) -> str:
    text = f"{label:<22} accuracy {100 * result['accuracy']:6.2f}%  loss {result['loss']:.4f}"
    if result.get("forward_nfe") is not None:
        text += (
            f"  mean NFE {result['forward_nfe']:5.1f}  residual {result['residual']:.2e}"
            f"  converged {100 * result['converged']:5.1f}%"
        )
    return text


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    task = stored_config(path, checkpoint).run.task
    if task == "lm":
        return evaluate_lm.run(args, path, checkpoint)
    if task != "classify":
        raise ConfigError(
            f"{path} holds a run of task {task!r}; eval applies to image classifiers (task "
            "'classify') and language models (task 'lm')"
        )
    config = _stored_config(path, checkpoint, args)
    solving = solve_options(args)
    arch = config.model.arch
    explicit = f"an explicit {arch}" if arch not in DEQ_MODELS else None
    check_solve_options(path, explicit, solving, args)
    if config.data.dataset == "digits":
        require("sklearn", "the digits data set")
    if args.out and args.sweep:
        require("matplotlib", "the accuracy-vs-NFE plot")
    with distributed.session(config.run.device) as runtime:
        data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
        model = build_model(config, data.shape, data.classes)
        weights = checkpoint.get("average") or checkpoint["model"]
        restore_model(model, weights, str(path))
        model.to(runtime.device)
        if args.solver == "neural":
            solving["solver"] = neural_solver(path).to(runtime.device)
        batch_size = args.batch_size or config.data.eval_batch_size
        split = data.test if args.split == "test" else data.train
        common = dict(batch_size=batch_size, precision=config.run.precision)
        if args.sweep:
            rows = elastic_sweep(
                model,
                data,
                runtime,
                args.sweep,
                solver=solving.get("solver"),
                tol=args.tol,
                **common,
            )
        else:
            rows = [evaluate(model, data, split, runtime, **common, **solving)]
    if not runtime.is_main:
        return 0
    settings = describe(solving)
    print(f"{path} on {data.name} {args.split if not args.sweep else 'test'} ({settings}):")
    for row in rows:
        label = f"max_iter {row['max_iter']}" if "max_iter" in row else args.split
        print("  " + _row(label, row))
    if args.out:
        write_eval(args.out, path, solving, rows)
        if args.sweep:
            solver = args.solver or config.deq.eval_solver or config.deq.solver
            plot_accuracy_vs_nfe({solver: rows}, args.out / "accuracy_vs_nfe.png")
        print(f"wrote {args.out / 'eval.json'}")
    return 0
