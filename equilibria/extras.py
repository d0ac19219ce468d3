"""Optional dependencies: import them with a message that says which extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import EquilibriaError

TRAIN_EXTRA = 'pip install "equilibria[train]"'


class MissingExtraError(EquilibriaError, ImportError):
    """An optional package that a feature needs is not installed."""


def missing_extra(module: str, purpose: str, install: str, detail: str = "") -> MissingExtraError:
    """The error for a missing optional package: what needs it, and how to install it."""
    return MissingExtraError(
        f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed"
        f"{detail}; install it with: {install}"
    )


def require(module: str, purpose: str, install: str = TRAIN_EXTRA) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(module, purpose, install, f" ({error})") from None


def require_installed(module: str, purpose: str, install: str = TRAIN_EXTRA) -> None:
    """Raise MissingExtraError, as `require` does, when `module` is not installed; unlike
    `require`, do not import it (a check before work starts should not pay for the import)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_extra(module, purpose, install)
