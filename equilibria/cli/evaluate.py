"""`equilibria eval CHECKPOINT`: test a saved run of any task that can be evaluated (an image
classifier, a language model) with any solver, tolerance and budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, check_choice
from ..solvers import SOLVERS
from ..tasks import EvalRequest, Task, task_for, tasks_with
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
        help="evaluate a classifier, language model or puzzle solver, at any solver setting or "
        "over budgets",
        description=(
            "Evaluate a trained image classifier (test accuracy), language model (bits per "
            "character and accuracy of next-character prediction on its text) or puzzle solver "
            "(puzzles solved at each test difficulty, harder sizes with --sizes, a puzzle file "
            "with --data, several starts with --starts). Without options "
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
    puzzles = parser.add_argument_group("puzzle runs")
    puzzles.add_argument(
        "--data", type=Path, metavar="FILE", help="test on the puzzles of a text file instead"
    )
    puzzles.add_argument(
        "--sizes", type=_caps, metavar="SIZES", help="difficulties to generate, e.g. 64,128"
    )
    puzzles.add_argument(
        "--starts", type=number(int, 1), default=1, help="starts per puzzle (breadth; default 1)"
    )
    puzzles.add_argument(
        "--select",
        choices=("residual", "vote"),
        default="residual",
        help="with --starts: keep the lowest-residual start (default) or the majority answer",
    )
    parser.set_defaults(run=run)


# the options only some tasks read: their EvalRequest field, and the value that means unset
TASK_OPTIONS = {
    "--data": ("data_file", None),
    "--sizes": ("sizes", None),
    "--starts": ("starts", 1),
    "--select": ("select", "residual"),
}


def _task_options(args: argparse.Namespace, task: Task, path: Path) -> dict:
    """The task-specific options given, refused for a task that does not read them."""
    values = {
        "data_file": args.data,
        "sizes": tuple(args.sizes) if args.sizes else None,
        "starts": args.starts,
        "select": args.select,
    }
    for flag, (name, unset) in TASK_OPTIONS.items():
        if values[name] != unset and name not in task.eval_options:
            able = [t.name for t in tasks_with("evaluate") if name in t.eval_options]
            raise ConfigError(
                f"{flag} applies to runs of task {' or '.join(able)}; {path} holds a run of "
                f"task {task.name!r}"
            )
    if args.data is not None and args.sizes:
        raise ConfigError("--data tests the puzzles of a file, --sizes generated ones; give one")
    return values


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
        out=args.out,
        **_task_options(args, task, path),
    )
    result = task.evaluate(request)
    if not result.is_main:
        return 0
    print(f"{path} on {result.heading} ({describe(result.solve)}):")
    for row in result.rows:
        label = row.get("label") or (
            f"max_iter {row['max_iter']}" if "max_iter" in row else result.label
        )
        print("  " + result.row_text(label, row))
    if args.out:
        write_eval(args.out, path, result.solve, result.rows, **result.record)
        if result.plot is not None:
            result.plot(args.out)
        print(f"wrote {args.out / 'eval.json'}")
    return 0
