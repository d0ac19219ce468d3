"""Typed, validated config sections: dataclass fields that parse and check their own values.

A section is a frozen dataclass whose fields are declared with `option(...)` (default, help text
and limits). Values come from files (typed JSON / TOML values) or the command line (strings);
both go through `coerce`, which converts to the annotated type and names the key on failure.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Union

from ..errors import ConfigError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> Any:
    """A config field: its default, a one-line help text and the limits its values must obey."""
    metadata = {"help": help, "choices": choices, "min": minimum, "max": maximum, "above": above}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def suggest(word: str, valid: list[str]) -> str:
    """' (did you mean 'x'?)' when a valid word is close to `word`, else ''."""
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return f"{_describe(inner[0])} or none"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(kind)[0])}s"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[kind]


def coerce(key: str, value: Any, kind: Any) -> Any:
    """`value` (typed, or a string from the command line) converted to the type `kind`."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        return coerce(key, value, inner)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(key, v, item) for v in value)
    fail = ConfigError(f"{key}={value!r} is not valid: expected {_describe(kind)}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise fail
    if isinstance(value, bool):
        raise fail
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise fail from None
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise fail from None
    if kind is str:
        if isinstance(value, str):
            return value
        raise fail
    raise TypeError(f"config field {key} has an unsupported type {kind!r}")


def _check_limits(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if item is None:
            continue
        if meta["choices"] is not None and item not in meta["choices"]:
            raise ConfigError(
                f"{key}={item!r} is not valid; choose one of {', '.join(meta['choices'])}"
            )
        if meta["min"] is not None and item < meta["min"]:
            raise ConfigError(f"{key} must be >= {meta['min']}, got {item!r}")
        if meta["max"] is not None and item > meta["max"]:
            raise ConfigError(f"{key} must be <= {meta['max']}, got {item!r}")
        if meta["above"] is not None and not item > meta["above"]:
            raise ConfigError(f"{key} must be > {meta['above']}, got {item!r}")


@dataclasses.dataclass(frozen=True)
class Section:
    """Base class of config sections; subclasses are frozen dataclasses of `option` fields."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key = f"{self.name}.{f.name}"
            value = coerce(key, getattr(self, f.name), hints[f.name])
            _check_limits(key, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks that involve several fields (override in sections that need them)."""

    def changed(self, names: tuple[str, ...]) -> list[str]:
        """The keys among `names` whose values differ from their defaults, as 'section.k=v'."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changed = []
        for name in names:
            field = fields[name]
            default = (
                field.default_factory() if field.default is dataclasses.MISSING else field.default
            )
            if getattr(self, name) != default:
                changed.append(f"{self.name}.{name}={getattr(self, name)}")
        return changed

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Section:
        """The section from a mapping; an unknown key is an error that lists the valid ones."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{cls.name}] must be a table of keys, got {type(values).__name__}")
        valid = cls.field_names()
        for key in values:
            if key not in valid:
                raise ConfigError(
                    f"unknown config key {cls.name}.{key}{suggest(str(key), valid)}; valid keys "
                    f"in [{cls.name}] are {', '.join(valid)}"
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
