"""The registry of benchmark parts.

A part is a function `run(config) -> Section` registered under a short name. Every module in the
`benchmarks.parts` package is imported on discovery, so a new part (for example one that needs a
model added later) joins the suite by adding a module there that calls `register`. A part that
needs an optional module names it in `requires`; when that module is missing the part is listed
as skipped with the reason instead of failing the whole run.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from .config import BenchConfig
from .report import Section

PartFunction = Callable[[BenchConfig], Section]


@dataclass(frozen=True)
class Part:
    """A registered benchmark part."""

    name: str
    title: str
    run: PartFunction
    order: int = 100
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The modules this part needs that cannot be imported here."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]


PARTS: dict[str, Part] = {}


def register(
    name: str, title: str, *, order: int = 100, requires: tuple[str, ...] = ()
) -> Callable[[PartFunction], PartFunction]:
    """Decorator registering `run(config) -> Section` as the part `name`."""

    def decorate(run: PartFunction) -> PartFunction:
        if name in PARTS and PARTS[name].run is not run:
            raise ValueError(f"a benchmark part named {name!r} is already registered")
        PARTS[name] = Part(name=name, title=title, run=run, order=order, requires=requires)
        return run

    return decorate


def discover() -> dict[str, Part]:
    """Import every module of `benchmarks.parts` and return the parts in report order."""
    from . import parts

    for module in pkgutil.iter_modules(parts.__path__):
        importlib.import_module(f"{parts.__name__}.{module.name}")
    return dict(sorted(PARTS.items(), key=lambda item: (item[1].order, item[0])))


def select(names: list[str]) -> list[Part]:
    """The parts named (all of them when `names` is empty); unknown names raise a ValueError."""
    available = discover()
    if not names:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"unknown benchmark part{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; choose from {', '.join(available)}"
        )
    return [available[name] for name in dict.fromkeys(names)]
