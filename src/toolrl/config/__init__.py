"""Configuration: structured schema, YAML + dotlist loading, validation."""

from toolrl.config.loader import config_to_yaml, load_config, save_config
from toolrl.config.schema import RootConfig

__all__ = ["RootConfig", "load_config", "save_config", "config_to_yaml"]
