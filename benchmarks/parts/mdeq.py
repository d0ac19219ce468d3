"""The MDEQ training benchmarks (see `benchmarks.mdeq_training`) as parts of the suite."""

from __future__ import annotations

from ..config import BenchConfig
from ..mdeq_training import SHARED_MNIST, block, digits, gradient_modes, mnist
from ..registry import register
from ..report import Section

TRAINING_MODULES = ("sklearn", "matplotlib", "tqdm")


@register(
    "mdeq-digits", "MDEQ: the default training run on digits", order=200, requires=TRAINING_MODULES
)
def run_digits(config: BenchConfig) -> Section:
    return digits(config)


@register(
    "mdeq-mnist",
    "MDEQ against explicit ResNets on real MNIST",
    order=210,
    requires=TRAINING_MODULES,
)
def run_mnist(config: BenchConfig) -> Section:
    if not (SHARED_MNIST / "mnist-t10k-images-idx3-ubyte.gz").is_file():
        section = Section("mdeq-mnist", "MDEQ against explicit ResNets on real MNIST")
        section.notes.append(f"Skipped: the MNIST test set is not in {SHARED_MNIST}.")
        return section
    return mnist(config)


@register(
    "mdeq-block",
    "MDEQ branch block: with and without the identity shortcut",
    order=220,
    requires=TRAINING_MODULES,
)
def run_block(config: BenchConfig) -> Section:
    return block(config)


@register(
    "gradients-digits",
    "Gradient strategies: final accuracy on digits",
    order=45,
    requires=TRAINING_MODULES,
)
def run_gradient_modes(config: BenchConfig) -> Section:
    return gradient_modes(config)
