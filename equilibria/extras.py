"""Optional dependencies: import them with a message that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import EquilibriaError

TRAIN_EXTRA = 'pip install "equilibria[train]"'


class MissingExtraError(EquilibriaError, ImportError):
    """An optional package that a feature needs is not installed."""


def require(module: str, purpose: str, install: str = TRAIN_EXTRA) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed "
            f"({error}); install it with: {install}"
        ) from None
