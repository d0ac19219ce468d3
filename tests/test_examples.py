"""`examples/train_mdeq.py` runs as written: a few steps of a small MDEQ, then the held-out test."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> subprocess.CompletedProcess:
    # one thread: on shared cores, several threads wait for each other at every operation
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_mdeq.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=environment,
    )


def test_train_mdeq_trains_and_evaluates():
    pytest.importorskip("sklearn")
    tiny = ["--width", "4", "--batch_size", "8", "--test_fraction", "0.05", "--log_every", "1"]
    result = run_script("--steps", "3", *tiny)
    assert result.returncode == 0, result.stderr[-2000:]
    steps = re.findall(
        r"^step +\d+ \| loss [\d.]+ \| acc [\d.]+ \| nfe (\d+)/(\d+) \| residual ",
        result.stdout,
        re.MULTILINE,
    )
    assert len(steps) == 3
    assert all(0 < int(forward) <= 8 and int(backward) > 0 for forward, backward in steps)
    test = re.search(
        r"^test \| acc ([\d.]+) \| nfe ([\d.]+) \| residual (\S+) \| 89 images$",
        result.stdout,
        re.MULTILINE,
    )
    assert test, result.stdout
    assert 0.0 <= float(test[1]) <= 1.0 and 0 < float(test[2]) <= 20


def test_train_mdeq_refuses_an_unknown_setting():
    result = run_script("--stepz", "3")
    assert result.returncode != 0 and "unknown setting '--stepz'" in result.stderr


def test_train_mdeq_stays_off_the_command_line_machinery():
    source = (ROOT / "examples" / "train_mdeq.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if re.search(r"equilibria\.(training|cli|config)", line)]
    assert "from equilibria.models import MDEQ" in imports and "import equilibria as eq" in imports
