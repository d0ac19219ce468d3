"""The `[ssl]` config section: contrastive self-supervised pre-training (`run.task=ssl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import Section, option


@dataclass(frozen=True)
class SSLConfig(Section):
    name: ClassVar[str] = "ssl"

    temperature: float = option(0.5, "NT-Xent temperature", above=0.0)
