"""The `[lm]` config section: character-level language modelling (`run.task=lm`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import Section, option


@dataclass(frozen=True)
class LMConfig(Section):
    name: ClassVar[str] = "lm"

    text: str | None = option(
        None, "UTF-8 text file to model (none: Python's bundled pydoc topics text)"
    )
    seq_len: int = option(128, "characters per training sequence", minimum=2)
