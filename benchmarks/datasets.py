"""Where the benchmarks find their data: the shared data folder next to the repository.

MNIST's test file and Tiny Shakespeare live in `../shared/data` when present; the parts that
use them fall back (or skip) when they are not there, and say so in their report.
"""

from __future__ import annotations

from pathlib import Path

from equilibria.data.text import TextData, load_text

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt.gz"

# MNIST: 28x28 images, solved at 14x14 and 7x7 (the stem's first conv has stride 2); a light
# head (16 channels) for every model, so that the trunks are what is compared
MNIST_COMMON = (
    "data.dataset=mnist-t10k",
    "data.batch_size=32",  # the batch of every MNIST-t10k table (image classifiers' default: 64)
    "model.stem_stride=2",
    "model.channels=16,16",
    "model.head_channels=16",
    "run.progress=false",
    "run.sweep=1,2,4,6,8,12",
)


def mnist_available(data_dir: Path = SHARED_DATA) -> bool:
    """Whether MNIST's test images are in `data_dir`."""
    return (data_dir / "mnist-t10k-images-idx3-ubyte.gz").is_file()


def corpus() -> tuple[TextData, str]:
    """Tiny Shakespeare when available, else the bundled corpus; with a note saying which."""
    if SHAKESPEARE.is_file():
        return load_text(SHAKESPEARE), f"Tiny Shakespeare ({SHAKESPEARE.name})"
    return load_text(None), "Python's pydoc topics (Tiny Shakespeare not found)"


def text_overrides() -> tuple[str, ...]:
    """The `equilibria train --task lm` override that picks Tiny Shakespeare when it is there
    (none otherwise: the bundled text)."""
    return (f"lm.text={SHAKESPEARE}",) if SHAKESPEARE.is_file() else ()
