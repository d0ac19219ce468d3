"""Settings of tiny training runs (seconds on a CPU) shared by the command-line tests."""

TINY = [
    "model.channels=4,4",
    "model.expansion=1",
    "model.head_channels=8",
    "data.train_samples=96",
    "data.batch_size=32",
    "optim.epochs=2",
    "run.progress=false",
    "run.sweep=1,2",
    "run.trace_iters=3",
]


def tiny(*overrides: str) -> list[str]:
    """TINY followed by `overrides` (later values win)."""
    return [*TINY, *overrides]
