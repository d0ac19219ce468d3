"""A trained language model read back from its checkpoint, and the text it was trained on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config, ConfigError
from ..data.text import TextData, Vocabulary, load_text
from ..training.checkpoint import CheckpointError, load_checkpoint, restore_model, stored_config
from .model import build_language_model, context_length


def load_language_model(
    path: Path, device: str | None, checkpoint: dict | None = None
) -> tuple[Config, Vocabulary, nn.Module]:
    """The config, vocabulary and trained model of the language-model checkpoint at `path`
    (`checkpoint`: its contents, when the caller has already read them)."""
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
    config = stored_config(path, checkpoint)
    if config.run.task != "lm":
        raise ConfigError(
            f"{path} holds a run of task {config.run.task!r}; sample needs a language model "
            "(a run of 'equilibria train --task lm')"
        )
    vocab = _vocabulary(checkpoint, str(path))
    if device:
        config = config.override([f"run.device={device}"])
    return config, vocab, _restored(config, vocab, checkpoint, str(path))


def checkpoint_vocabulary(config: Config, checkpoint: Mapping[str, Any]) -> Vocabulary:
    """The vocabulary a language-model checkpoint was trained with (what `encode` needs)."""
    return _vocabulary(checkpoint, "the checkpoint")


def trained_language_model(config: Config, checkpoint: Mapping[str, Any]) -> nn.Module:
    """The language model of a saved run, in eval mode on the CPU."""
    vocab = checkpoint_vocabulary(config, checkpoint)
    return _restored(config, vocab, checkpoint, "the checkpoint").eval()


def _vocabulary(checkpoint: Mapping[str, Any], source: str) -> Vocabulary:
    chars = (checkpoint.get("data") or {}).get("vocab")
    if not isinstance(chars, str):
        raise CheckpointError(f"{source} holds no vocabulary, so its tokens cannot be read")
    return Vocabulary(chars)


def _restored(
    config: Config, vocab: Vocabulary, checkpoint: Mapping[str, Any], source: str
) -> nn.Module:
    model = build_language_model(config, len(vocab))
    restore_model(model, checkpoint["model"], source)
    return model


def scored_text(config: Config, vocab: Vocabulary, path: Path) -> TextData:
    """The run's text (`lm.text`, split as in training), checked to have the vocabulary of the
    checkpoint at `path` and room for one training window."""
    lm = config.lm
    data = load_text(lm.text, lm.val_fraction)
    if data.vocab != vocab:
        raise CheckpointError(
            f"the text {data.name} (lm.text={lm.text}) now has another vocabulary "
            f"({len(data.vocab)} characters) than the model in {path} ({len(vocab)}): the text "
            "changed since training; evaluate with the text the model learned"
        )
    data.check_length(
        context_length(config), "lm.seq_len + lm.memory" if lm.memory else "lm.seq_len"
    )
    return data
