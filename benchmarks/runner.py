"""Run benchmark parts into one report: each part timed, the report rewritten after every part."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import torch

from .config import BenchConfig
from .environment import describe, load_average
from .registry import Part
from .report import Report, Section


def run(selected: list[Part], config: BenchConfig, command: str) -> Report:
    """Run the parts under `config` and write the report files; returns the report."""
    torch.set_num_threads(config.threads)
    config.out.mkdir(parents=True, exist_ok=True)
    report = Report(environment=describe(config), command=command)
    for part in selected:
        missing = part.missing()
        if missing:
            section = Section(part.name, part.title)
            section.notes.append(f"Skipped: needs {', '.join(missing)}, not importable here.")
        else:
            started = time.perf_counter()
            print(f"[benchmarks] {part.name} ...", file=sys.stderr, flush=True)
            section = part.run(config)
            section.settings["wall time"] = f"{time.perf_counter() - started:.0f} s"
        report.sections.append(section)
        write(report, config.out)  # after every part, so a run cut short keeps what it did
    report.environment["load average at end (1, 5, 15 min)"] = load_average()
    write(report, config.out)
    return report


def write(report: Report, out: Path) -> None:
    """`report.md` and `report.json` in `out`."""
    (out / "report.md").write_text(report.to_markdown())
    (out / "report.json").write_text(report.to_json())


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command as typed, for the report: `prog` and its arguments (`sys.argv` when None)."""
    return f"{prog} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
