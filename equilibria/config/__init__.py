"""Typed, validated training configuration: sections per concern, files plus `key=value` overrides.

An unknown or misspelt key, a value of the wrong type or one out of range is a `ConfigError`
that names the key and what is valid.
"""

from .config import Config, all_keys, describe_keys, read_file, resolve_key
from .fields import ConfigError, Section
from .lm import LMConfig
from .schema import SECTIONS, DataConfig, DEQConfig, ModelConfig, OptimConfig, RunConfig
from .ssl import SSLConfig

__all__ = [
    "SECTIONS",
    "Config",
    "ConfigError",
    "DEQConfig",
    "DataConfig",
    "LMConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SSLConfig",
    "Section",
    "all_keys",
    "describe_keys",
    "read_file",
    "resolve_key",
]
