"""`equilibria sample CHECKPOINT`: generate with a saved model of a task that can (a character
language model writes text)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..tasks import SampleRequest, task_for
from ..training.checkpoint import find_checkpoint, load_checkpoint, stored_config
from .arguments import number


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sample",
        help="generate text with a trained language model (a run of --task lm)",
        description=(
            "Generate text one character at a time. A DEQ-Transformer keeps the equilibria "
            "of earlier positions as memory and starts each new solve from the previous "
            "position's equilibrium (--cold starts from zero instead)."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="a run folder or checkpoint file")
    parser.add_argument(
        "--prompt", help="text to continue (default: a newline, if the text has one)"
    )
    parser.add_argument("--chars", type=number(int, 1), default=400, help="characters to write")
    parser.add_argument(
        "--temperature",
        type=number(float, 0, what="a temperature"),
        default=0.8,
        help="0: always the likeliest",
    )
    parser.add_argument("--top-k", type=number(int, 1), help="draw among the k likeliest only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--cold", action="store_true", help="DEQ: solve each position from zero")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    task = task_for(path, stored_config(path, checkpoint).run.task, "sample", "sample")
    request = SampleRequest(
        path,
        checkpoint,
        device=args.device,
        prompt=args.prompt,
        length=args.chars,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        warm_start=not args.cold,
    )
    result = task.sample(request)
    print(result.prompt + result.text)
    if result.mean_nfe is not None:
        start = "zero" if args.cold else "the previous position's equilibrium"
        print(
            f"[{args.chars} characters; mean forward NFE per character {result.mean_nfe:.1f}, "
            f"each solve started from {start}]",
            file=sys.stderr,
        )
    return 0
