"""The character language-model benchmark (see `benchmarks.lm_training`) as a part."""

from __future__ import annotations

from ..config import BenchConfig
from ..lm_training import lm_benchmark
from ..registry import register
from ..report import Section


@register(
    "lm",
    "Character language model: DEQ-Transformer against an explicit Transformer",
    order=230,
    requires=("matplotlib",),
)
def run_lm(config: BenchConfig) -> Section:
    return lm_benchmark(config)
