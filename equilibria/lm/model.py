"""The language model an `[lm]` config describes."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..models import deq_options
from ..models.transformer import DEQTransformer, ExplicitTransformer


def build_language_model(config: Config, vocab: int) -> nn.Module:
    """A `DEQTransformer` (lm.network=deq, solved as [deq] says) or an `ExplicitTransformer`."""
    lm = config.lm
    common = dict(
        expansion=lm.ff_expansion,
        norm=lm.norm,
        dropout=lm.variational_dropout,
        weight_norm=lm.normalize_weights,
    )
    if lm.network == "deq":
        return DEQTransformer(
            vocab, lm.width, lm.heads, memory=lm.memory, **common, **deq_options(config)
        )
    return ExplicitTransformer(
        vocab, lm.width, lm.heads, layers=lm.layers, tied=lm.network == "tied", **common
    )


def context_length(config: Config) -> int:
    """The most characters the model attends to at once in training: lm.seq_len + lm.memory."""
    return config.lm.seq_len + config.lm.memory
