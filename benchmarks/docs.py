"""The README's performance section, generated from a benchmark report."""

from __future__ import annotations

import shutil
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

The comparison with TorchDEQ needs the `bench` extra (`pip install -e '.[bench]'`, which adds
torchdeq==0.1.0); without it those columns are skipped with a note. Times on a shared machine are
medians of interleaved runs, and comparisons are medians of per-round ratios, so they are more
trustworthy than the absolute milliseconds."""


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
