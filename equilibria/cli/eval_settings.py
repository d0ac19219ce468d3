"""The solve settings `equilibria eval` is asked for, for any task alike: read from the command
line, described, and recorded in eval.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..files import write_json


def solve_options(args: argparse.Namespace) -> dict[str, Any]:
    """--solver, --tol and --max-iter as DEQ solve settings (those given only)."""
    solving = {"solver": args.solver, "tol": args.tol, "max_iter": args.max_iter}
    return {k: v for k, v in solving.items() if v is not None}


def describe(solving: dict[str, Any]) -> str:
    """The settings as the header of the printed results says them."""
    return (
        ", ".join(f"{k}={getattr(v, 'name', v)}" for k, v in solving.items())
        or "the config's eval settings"
    )


def write_eval(
    out: Path, path: Path, solving: dict[str, Any], rows: list[dict[str, Any]], **extra: Any
) -> None:
    """eval.json in `out`: the checkpoint, the settings (a solver by name), `extra`, the rows."""
    out.mkdir(parents=True, exist_ok=True)
    named = {k: getattr(v, "name", v) for k, v in solving.items()}
    write_json(out / "eval.json", {"checkpoint": str(path), **named, **extra, "results": rows})
