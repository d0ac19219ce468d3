"""The contrastive benchmark part at a tiny size: its tables, checks and derived numbers."""

import pytest
import torch

from benchmarks.config import BenchConfig
from benchmarks.parts import ssl as part
from benchmarks.registry import discover


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_part_is_registered_and_the_explicit_backbone_matches_the_deq():
    assert "ssl" in discover()
    overrides, count = part.matched_explicit(96_360)
    assert overrides[0] == "model.arch=resnet" and abs(count - 96_360) < 0.03 * 96_360
    small = ("model.channels=8,8",)
    overrides, count = part.matched_explicit(10_000, small)
    assert overrides[0] == small[0] and count < 20_000


def test_a_tiny_run_fills_every_table(tmp_path):
    settings = part.Settings(
        budget_s=0.3,
        batch_size=16,
        memory_batches=(2, 6),
        reuse_batch=8,
        train_samples=64,
        model=("model.channels=8,8", "model.expansion=1"),
    )
    section = part.run(BenchConfig(quick=True, out=tmp_path), settings)
    probe = section.table("Linear-probe test accuracy (digits)")
    deq, same_steps, same_time = probe.rows
    assert same_steps["steps"] == deq["steps"] >= 1
    assert same_time["cpu_s"] >= 0.3 and deq["nfe"] == 8.0 and same_steps["nfe"] is None
    assert all(0 <= row["probe"] <= 100 and 0 <= row["floor"] <= 100 for row in probe.rows)
    reuse = section.tables[1].rows
    assert [row["start"] for row in reuse][0] == "zeros (cold)"
    assert all(1 <= row["nfe"] <= 50 for row in reuse)
    memory = section.tables[2].rows
    assert memory[2]["per_sample_kb"] > 3 * memory[0]["per_sample_kb"]  # unrolled vs the DEQ
    for row in memory:
        per_image = row["per_sample_kb"] * 1024
        assert row["mb_6"] > row["mb_2"] > 0
        assert per_image * 1024 == pytest.approx((row["mb_6"] - row["mb_2"]) / 4 * 2**20 * 1024)
        assert row["largest_batch"] * per_image <= part.MEMORY_LIMIT
    assert (tmp_path / "ssl_loss.png").is_file()
    assert section.checks[-1].target.startswith("equal parameters")
