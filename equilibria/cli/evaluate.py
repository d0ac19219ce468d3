"""`equilibria eval CHECKPOINT`: test a saved run of any task that can be evaluated (an image
classifier, a language model) with any solver, tolerance and budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import check_choice
from ..solvers import SOLVERS
from ..tasks import EvalRequest, task_for
from ..training.checkpoint import find_checkpoint, load_checkpoint, stored_config
from .arguments import number
from .eval_settings import describe, solve_options, write_eval


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


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    task = task_for(path, stored_config(path, checkpoint).run.task, "evaluate", "eval")
    request = EvalRequest(
        path,
        checkpoint,
        solve_options(args),
        sweep=args.sweep,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=args.data_dir,
        plot=bool(args.out and args.sweep),
    )
    result = task.evaluate(request)
    if not result.is_main:
        return 0
    print(f"{path} on {result.heading} ({describe(result.solve)}):")
    for row in result.rows:
        label = f"max_iter {row['max_iter']}" if "max_iter" in row else result.label
        print("  " + result.row_text(label, row))
    if args.out:
        write_eval(args.out, path, result.solve, result.rows, **result.record)
        if result.plot is not None:
            result.plot(args.out)
        print(f"wrote {args.out / 'eval.json'}")
    return 0
