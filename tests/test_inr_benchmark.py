"""The INR benchmark part at a tiny size: its rows, checks and figure agree with the fits."""

import pytest
import torch

from benchmarks import registry
from benchmarks.config import BenchConfig
from benchmarks.parts import inr

pytest.importorskip("sklearn")
pytest.importorskip("PIL")


def test_inr_part_is_registered_after_the_core_parts():
    parts = registry.discover()
    assert "inr" in parts and parts["inr"].order > parts["gradients"].order


def test_inr_part_reports_psnr_evaluations_and_memory(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = BenchConfig(quick=True, out=tmp_path)
        settings = inr.Settings(size=16, seconds=0.2, width=16, frequencies=8, scale=3.0)
        section = inr.run_inr(config, settings)
    finally:
        torch.set_num_threads(threads)
    (table,) = section.tables
    assert table.column("model") == list(inr.RUNS)
    reused, cold, explicit, explicit_slow = table.rows
    assert all(row["steps"] >= 1 and row["psnr"] > 0 for row in table.rows)
    assert reused["parameters"] == cold["parameters"]
    assert abs(explicit["parameters"] - reused["parameters"]) <= 0.05 * reused["parameters"]
    assert explicit.get("forward_nfe") is None and reused["forward_nfe"] >= 1
    # one solve + the differentiable application; the Jacobian-free backward adds none
    assert reused["cells"] == pytest.approx(reused["forward_nfe"] + 1)
    assert len(section.checks) == 2
    assert section.checks[0].passed == (cold["forward_nfe"] / reused["forward_nfe"] >= 3)
    best = max(explicit["psnr"], explicit_slow["psnr"])
    assert section.checks[1].passed == (reused["psnr"] >= best)
    assert all(row["step_seconds"] > 0 for row in table.rows)
    assert any(note.startswith("Training PSNR after") for note in section.notes)
    assert (tmp_path / "inr_psnr.png").is_file()
    assert "PSNR (dB)" in section.to_markdown()
