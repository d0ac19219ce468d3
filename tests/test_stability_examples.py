"""The stability experiments run end to end with tiny settings and write their reports."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script, out, *args):
    command = [sys.executable, str(EXAMPLES / script), "--out", str(out), "--seeds", "1", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_synthetic_study_writes_a_table_and_a_plot(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    stdout = run_example(
        "stability_synthetic.py",
        tmp_path,
        "--gammas",
        "0",
        "16",
        "--epochs",
        "2",
        "--eval-every",
        "1",
    )
    report = (tmp_path / "synthetic.md").read_text()
    assert (tmp_path / "synthetic.png").stat().st_size > 0
    rows = [
        line
        for line in report.splitlines()
        if line.startswith("| 0.0 |") or line.startswith("| 16.0 |")
    ]
    assert len(rows) == 2 and "torch" in report and "| gamma |" in stdout


@pytest.mark.slow
def test_digits_study_writes_tables_and_a_plot(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    run_example("stability_digits.py", tmp_path, "--gammas", "0", "8", "--epochs", "1")
    report = (tmp_path / "digits.md").read_text()
    assert (tmp_path / "digits.png").stat().st_size > 0
    assert "acc. % @ 6 NFE" in report and report.count("| 8.0 |") == 2
