"""What several commands parse alike: bounded numbers on the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def number(
    kind: type, minimum: float, strict: bool = False, *, what: str | None = None
) -> Callable[[str], Any]:
    """An argparse type: a `kind` (int or float) of at least `minimum` (above it when `strict`);
    the error names the value as `what` ("a temperature"; by default "an integer"/"a number")."""
    what = what or ("an integer" if kind is int else "a number")
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    return parse
