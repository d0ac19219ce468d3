"""The README's performance section, generated from a benchmark report.

    python -m benchmarks.docs [REPORT_DIR] [DOCS_PATH]

rewrites DOCS_PATH (default docs/performance.md) from REPORT_DIR/report.json (default
results/bench) without running anything; `python -m benchmarks --docs PATH` does the same at
the end of a run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .report import Report

INTRO = """\
Every performance figure below comes from one command, which runs the benchmark suite in
`benchmarks/` and writes a markdown report with its plots to `results/bench/`:

```bash
.venv/bin/python -m benchmarks                  # whole suite, CPU (about {minutes} min here)
.venv/bin/python -m benchmarks solvers --quick  # one part, smaller sizes
.venv/bin/python -m benchmarks --device cuda    # on a GPU (benchmarks/gpu.sh: <= 5 min)
.venv/bin/python -m benchmarks --docs docs/performance.md  # also rewrite this section
```

The parts: `solvers` (against TorchDEQ 0.1.0), `memory` (training memory against depth),
`overhead` (solver cost against the cell's own cost) and `gradients` (implicit, phantom and
one-step gradients); `python -m benchmarks --list` prints them. A part that needs a model joins
the suite as one more module in `benchmarks/parts/` that registers itself.

The comparison with TorchDEQ needs the `bench` extra (`pip install -e '.[bench]'`, which adds
torchdeq==0.1.0); without it those columns are skipped with a note. The machine below is shared
with other jobs, so times are medians of interleaved runs, comparisons are medians of per-round
ratios, and with one CPU thread the clock is the thread's CPU time (time spent waiting for a
core is not counted); the ratios are more trustworthy than the absolute milliseconds."""


def render_docs(report: Report, out: Path, docs_path: Path) -> str:
    """Markdown for docs/performance.md; figures are copied next to it under img/."""
    minutes = (
        sum(float(s.settings.get("wall time", "0 s").split()[0]) for s in report.sections) / 60
    )
    env = "\n".join(f"| {key} | {value} |" for key, value in report.environment.items())
    parts = [
        "## Performance",
        INTRO.format(minutes=max(1, round(minutes))),
        f"Measured with `{report.command}` on:\n\n| | |\n|---|---|\n{env}",
    ]
    summary = [
        f"- {section.title}: {check.target}: **{check.verdict}** ({check.measured})"
        for section in report.sections
        for check in section.checks
    ]
    if summary:
        parts.append("### Targets at a glance\n\n" + "\n".join(summary))
    images = docs_path.parent / "img"
    for section in report.sections:
        for figure in section.figures:
            images.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / figure.path, images / f"bench-{figure.path}")
            figure.path = f"img/bench-{figure.path}"
        parts.append(section.to_markdown(level=3))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path("results/bench")
    docs_path = Path(args[1]) if len(args) > 1 else Path("docs/performance.md")
    source = out / "report.json"
    if not source.exists():
        print(f"error: {source} does not exist; run python -m benchmarks first", file=sys.stderr)
        return 2
    report = Report.from_json(source.read_text())
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    docs_path.write_text(render_docs(report, out, docs_path))
    print(f"wrote {docs_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
