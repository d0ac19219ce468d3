"""The machine and software a report was measured on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from .config import BenchConfig


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` prints)."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """The checked-out commit of this repository (with "+ local changes" when dirty)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} + local changes" if dirty else commit


def describe(config: BenchConfig) -> dict[str, str]:
    """Machine, versions and settings, as the report's header table shows them."""
    env = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs",
        "CPU": cpu_model(),
        "device": config.device,
    }
    if config.device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env["GPU"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    env.update(
        {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "equilibria": f"{package_version('equilibria')} (commit {git_commit()})",
            "torchdeq": package_version("torchdeq"),
            "CPU threads (torch)": str(torch.get_num_threads()),
            "clock": {
                "cpu": "thread CPU time (one thread; waits for other jobs are not counted)",
                "wall": "wall-clock time",
            }[config.clock_name],
            "preset": "quick" if config.quick else "full",
            "seed": str(config.seed),
            "load average at start (1, 5, 15 min)": load_average(),
        }
    )
    return env
