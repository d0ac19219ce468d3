"""The whole config: sections, file loading (JSON or TOML) and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fields import ConfigError, Section, suggest
from .lm import LMConfig
from .puzzles import PuzzlesConfig
from .schema import (
    DEQ_MODELS,
    SECTIONS,
    TASK_DEFAULTS,
    DataConfig,
    DEQConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    with_task_defaults,
)
from .ssl import SSLConfig

SECTION_NAMES = tuple(s.name for s in SECTIONS)


@dataclass(frozen=True)
class Config:
    """Everything a training run is made of. Build with `Config()` (the defaults),
    `Config.from_dict`, `Config.load(path)` and `config.override(["key=value", ...])`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    deq: DEQConfig = field(default_factory=DEQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    puzzles: PuzzlesConfig = field(default_factory=PuzzlesConfig)

    def __post_init__(self) -> None:
        self.deq.for_task(self.run.task)  # raises on settings the task's recipe ignores
        if self.deq.reuse and (self.run.task != "classify" or self.model.arch not in DEQ_MODELS):
            raise ConfigError(
                "deq.reuse=true needs run.task=classify and an equilibrium image model "
                f"(model.arch {' or '.join(DEQ_MODELS)}), not run.task={self.run.task} with "
                f"model.arch={self.model.arch}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """The config from nested tables ({"model": {...}, ...}); missing keys keep defaults."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a config must be a table of sections, got {type(values).__name__}")
        for name in values:
            if name not in SECTION_NAMES:
                raise ConfigError(
                    f"unknown config section {name!r}{suggest(str(name), list(SECTION_NAMES))}; "
                    f"valid sections are {', '.join(SECTION_NAMES)} (keys: {', '.join(all_keys())})"
                )
        return cls(**{s.name: s.from_dict(values.get(s.name, {})) for s in SECTIONS})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s.name: getattr(self, s.name).to_dict() for s in SECTIONS}

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """A config from a JSON (.json) or TOML (.toml) file."""
        return cls.from_dict(read_file(path))

    def override(self, assignments: Iterable[str]) -> Config:
        """A copy with `key=value` assignments applied (keys as in `resolve_key`)."""
        values = self.to_dict()
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    f"override {assignment!r} is not of the form key=value (for example "
                    "optim.lr=0.001 or epochs=5)"
                )
            section, name = resolve_key(key.strip())
            values[section][name] = value
        return Config.from_dict(values)

    def changed_keys(self, other: Config) -> list[str]:
        """Dotted keys whose values differ between this config and `other`."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{s}.{k}" for s in mine for k in mine[s] if mine[s][k] != theirs[s][k]]

    def for_task(self) -> Config:
        """This config as its run trains: every key left at none that has a value per task
        (`TASK_DEFAULTS`: the gradient, the training cap, the batch) set to run.task's value."""
        task = self.run.task
        return self.replace(
            **{name: with_task_defaults(getattr(self, name), task) for name in TASK_DEFAULTS}
        )

    def replace(self, **sections: Section) -> Config:
        return dataclasses.replace(self, **sections)


def all_keys() -> list[str]:
    """Every valid dotted key."""
    return [f"{s.name}.{k}" for s in SECTIONS for k in s.field_names()]


def resolve_key(key: str) -> tuple[str, str]:
    """(section, field) for "section.field", or for a bare "field" that only one section has."""
    sections = {s.name: s for s in SECTIONS}
    if "." in key:
        section, _, name = key.partition(".")
        if section not in sections:
            raise ConfigError(
                f"unknown config key {key!r}: no section {section!r}"
                f"{suggest(section, list(sections))}; sections are {', '.join(sections)}"
            )
        valid = sections[section].field_names()
        if name not in valid:
            raise ConfigError(
                f"unknown config key {key!r}{suggest(key, all_keys())}; valid keys in "
                f"[{section}] are {', '.join(valid)}"
            )
        return section, name
    owners = [s.name for s in SECTIONS if key in s.field_names()]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(
            f"config key {key!r} is ambiguous: say {' or '.join(f'{o}.{key}' for o in owners)}"
        )
    bare = [k.partition(".")[2] for k in all_keys()]
    close = suggest(key, bare + all_keys())
    raise ConfigError(f"unknown config key {key!r}{close}; valid keys are {', '.join(all_keys())}")


def read_file(path: str | Path) -> dict[str, Any]:
    """The nested tables of a JSON or TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(
                f"reading {path} needs Python >= 3.11 (tomllib); use a .json config instead"
            ) from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    raise ConfigError(f"config file {path} must end in .json or .toml")


def describe_keys() -> str:
    """Every key with its default and help text, for `--help-config`."""
    lines = []
    defaults = Config().to_dict()
    for section in SECTIONS:
        lines.append(f"[{section.name}]")
        for key, text in section.help().items():
            value = json.dumps(defaults[section.name][key])
            lines.append(f"  {key:<18} {value:<28} {text}")
    return "\n".join(lines)
