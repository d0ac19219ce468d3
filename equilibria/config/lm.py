"""The `[lm]` config section: character-level language modelling (`run.task=lm`).

The solver settings of the DEQ come from [deq], the optimizer and the number of epochs from
[optim], batch sizes from [data] (data.batch_size windows per step) and the seed, device and
threads from [run].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import ConfigError, Section, option

NETWORKS = ("deq", "explicit", "tied")
NORMS = ("post", "pre")


@dataclass(frozen=True)
class LMConfig(Section):
    name: ClassVar[str] = "lm"

    text: str | None = option(
        None,
        "UTF-8 text file to model, plain or .gz (none: Python's bundled pydoc topics text)",
    )
    seq_len: int = option(128, "characters per training sequence", minimum=2)
    network: str = option(
        "deq",
        "deq (one weight-tied block solved to its equilibrium), explicit (lm.layers "
        "different blocks) or tied (one block applied lm.layers times)",
        choices=NETWORKS,
    )
    width: int = option(64, "features per character position", minimum=2)
    heads: int = option(4, "attention heads (each head's width must be even)", minimum=1)
    ff_expansion: int = option(4, "feed-forward hidden width, as a multiple of lm.width", minimum=1)
    layers: int = option(8, "explicit and tied only: block applications", minimum=1)
    norm: str = option(
        "post", "LayerNorm after (post) or before (pre) each sub-layer", choices=NORMS
    )
    variational_dropout: float = option(
        0.0, "dropout rate, one mask per sequence (and per solve)", minimum=0.0, maximum=0.9
    )
    normalize_weights: bool = option(True, "weight normalization of the block's linear layers")
    memory: int = option(
        0,
        "deq only: earlier positions (their equilibria) each training sequence attends to",
        minimum=0,
    )
    val_fraction: float = option(
        0.1, "trailing fraction of the text held out for validation", above=0.0, maximum=0.5
    )
    steps_per_epoch: int = option(100, "training steps between validations", minimum=1)
    eval_chars: int = option(
        16384, "validation characters scored after each epoch (from the split's start)", minimum=1
    )

    def check(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ConfigError(
                f"lm.heads={self.heads} must divide lm.width={self.width} into heads of even "
                "width (rotary positions rotate feature pairs)"
            )
        if self.memory and self.network != "deq":
            raise ConfigError(
                f"lm.memory={self.memory} needs lm.network=deq (the memory holds past equilibria)"
            )
