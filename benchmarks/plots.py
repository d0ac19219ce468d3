"""PNG plots for the report (matplotlib with the file-only Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def line_plot(
    path: Path,
    panels: Sequence[tuple[str, str, dict[str, tuple[Sequence[float], Sequence[float]]]]],
    *,
    xlabel: str,
    log_y: bool = False,
) -> Path:
    """Side-by-side panels of (title, y label, {label: (xs, ys)}) lines, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, ylabel, lines) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in lines.items():
            style = "--" if "explicit" in label or "unrolled" in label else "-"
            ax.plot(xs, ys, style, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
