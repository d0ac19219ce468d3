"""Exceptions, warnings and the argument checks shared by the public API."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

_INTERNAL_DIRS = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent))


class EquilibriaError(Exception):
    """Base class of every error raised by equilibria."""


class NonFiniteError(EquilibriaError, FloatingPointError):
    """A tensor that must be finite (input, initial state, cell output, gradient) was not."""


class StateMismatchError(EquilibriaError, ValueError):
    """The cell returned a state whose structure, shape or dtype differs from its input state."""


class NotConvergedError(EquilibriaError, RuntimeError):
    """A solve did not reach its tolerance and the caller asked for an error in that case."""


class UnsupportedError(EquilibriaError, RuntimeError):
    """A valid request that equilibria cannot serve (the message names what to use instead)."""


class ConfigError(EquilibriaError, ValueError):
    """A config file or override is invalid: unknown key, wrong type or value out of range."""


class ConvergenceWarning(UserWarning):
    """A solve did not reach its tolerance; the best iterate found is returned."""


def check_choice(name: str, value: Any, valid: Iterable[str]) -> str:
    """Return `value` if it is one of `valid`, else raise a ValueError listing the choices."""
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")
    return value


def check_nonnegative(name: str, value: Any) -> float:
    """Return `value` as a float if it is a finite number >= 0, else raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return `value` if it is an int >= `minimum`, else raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return `value` if it lies in (0, 1] (or [0, 1] with `allow_zero`), else raise."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    low_ok = number and ((value >= 0) if allow_zero else (value > 0))
    if not (low_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


def reject_unknown_options(owner: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise a TypeError naming every unknown keyword in `given` and listing `valid`."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(
            f"{owner} got unknown keyword{plural} {', '.join(map(repr, unknown))}; "
            f"valid keywords are {', '.join(valid) if valid else '(none)'}"
        )


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """Warn, attributing the warning to the first frame outside equilibria and torch."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is our caller
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
