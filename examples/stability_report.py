"""Shared by the stability experiments: NFE to a tolerance, the environment line, tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

import equilibria as eq


def nfe_to_tolerance(solution: eq.Solution, tol: float) -> torch.Tensor:
    """Per sample: evaluations until its relative residual first reached `tol` (the cap + 1 when
    it never did). Row k of the trace is the iterate after k + 1 evaluations (Picard, Anderson)."""
    below = solution.rel_trace <= tol
    first = torch.where(below.any(0), below.float().argmax(0) + 1, solution.rel_trace.shape[0] + 1)
    return first


def environment(threads: int) -> str:
    """One line naming the machine, the torch build and the thread count."""
    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__}, "
        f"{threads} thread{'s' if threads > 1 else ''}, Python {platform.python_version()}"
    )


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, title: str, sections: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n\n".join(sections) + "\n")
