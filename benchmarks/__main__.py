"""Command line: `python -m benchmarks [PART ...] [--quick] [--out DIR] [--device cpu|cuda]
[--seeds N] [--cases NAME,...]`.

Runs the named parts (all registered parts when none is named) and writes `report.md`,
`report.json` and the plots under `--out`; `--docs PATH` also writes the README's performance
section generated from the same report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DEVICES, BenchConfig
from .docs import write_docs
from .registry import discover, select
from .runner import command_line, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="equilibria's benchmark suite: writes a markdown report and PNG plots.",
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help="parts to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="report folder")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where to run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument(
        "--seeds",
        type=int,
        help="how many seeds (from --seed on) parts that train over seeds use (default: theirs)",
    )
    parser.add_argument(
        "--cases",
        type=lambda text: tuple(name for name in text.split(",") if name),
        default=(),
        metavar="NAME[,NAME...]",
        help="run only these cases of parts that have named cases (parity: its cells)",
    )
    parser.add_argument(
        "--wall-clock",
        action="store_true",
        help="time with wall-clock time (default on CPU with one thread: thread CPU time)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="merge this run into the report at PATH (e.g. docs/performance.md) and rewrite "
        "the README's summary of it",
    )
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        parts = discover()
        width = max(map(len, parts))
        for part in parts.values():
            print(f"{part.name:{width}s}  {part.title}")
        return 0
    try:  # user mistakes (unknown part, no CUDA, bad thread count) end with one clear line
        config = BenchConfig(
            device=args.device,
            quick=args.quick,
            threads=args.threads,
            out=args.out,
            seed=args.seed,
            wall_clock=args.wall_clock,
            cases=args.cases,
            seeds=args.seeds,
        )
        selected = select(args.parts)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = run(selected, config, command_line("python -m benchmarks", argv))
    if args.docs:
        write_docs(report, config.out, args.docs, Path("README.md"))
    print(f"report written to {config.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
