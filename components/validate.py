"""Typed checks for stack-config values, shared by every config parser.

Each names the key on failure (via ConfigError) and accepts the forms the
engine really delivers: numbers arrive as floats (22.0) through the engine
and mocks, and as digit strings from `pulumi config set`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.errors import ConfigError


def integer(key: str, value: Any, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]; 22.0 and "22" count, True does not."""
    accepted = f"an integer from {lo} to {hi}"
    if isinstance(value, bool):
        raise ConfigError(key, value, accepted)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(key, value, accepted)
    return value


def boolean(key: str, value: Any) -> bool:
    """true/false, also as the strings `pulumi config set` writes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, value, "true or false")


def mapping(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a mapping (key: value pairs)")
    return value
