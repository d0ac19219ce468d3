"""The language-model benchmark part at a tiny size: its tables, memory scan and checks."""

import pytest

from benchmarks import datasets, registry
from benchmarks.config import BenchConfig
from benchmarks.parts.lm import Settings, lm_benchmark

TINY = Settings(
    seq_len=16,
    batch=4,
    heads=2,
    explicit_width=8,
    layers=3,
    deq_width=12,
    expansion=2,
    budget_s=0.2,
    warmup_steps=2,
    eval_chars=64,
    max_iter=3,
    eval_max_iter=4,
    depths=(1, 2, 3),
    iterations=(2, 5),
)


def test_the_part_is_registered():
    assert "lm" in registry.discover()


def test_tiny_run_reports_every_model_memory_scan_and_target(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SHAKESPEARE", tmp_path / "absent.txt.gz")
    section = lm_benchmark(BenchConfig(quick=True, out=tmp_path), TINY)
    results, scan = section.tables
    assert [r["model"] for r in results.rows] == ["explicit L=3", "DEQ", "DEQ + Jacobian reg."]
    for row in results.rows:
        assert row["steps"] >= 1 and row["cpu_s"] >= TINY.budget_s and row["val_bpc"] > 0
        assert row["tokens_per_s"] == pytest.approx(
            row["steps"] * TINY.batch * TINY.seq_len / row["cpu_s"]
        )
    assert results.rows[0]["train_nfe"] is None and results.rows[1]["train_nfe"] == 3
    explicit = [r["saved_mb"] for r in scan.rows if r["model"] == "explicit"]
    deq = [r["saved_mb"] for r in scan.rows if r["model"] == "DEQ"]
    assert explicit[0] < explicit[1] < explicit[2] and deq[0] == deq[1]
    assert explicit[2] == pytest.approx(results.rows[0]["saved_mb"])
    assert len(section.checks) == 5 and section.checks[2].passed and section.checks[3].passed
    assert "pydoc topics (Tiny Shakespeare not found)" in section.summary
    assert (tmp_path / "lm.png").is_file()
