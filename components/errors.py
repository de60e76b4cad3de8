"""The one error type a stack-config mistake raises.

Every validation failure names the key, the offending value and what would be
accepted, so an instructor can fix the stack file without reading a traceback.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A stack-configuration value that cannot be accepted."""

    def __init__(self, key: str, value: Any, accepted: str, *, where: str = "") -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        self.where = where
        location = f" ({where})" if where else ""
        super().__init__(f"config key '{key}'{location}: got {value!r}; expected {accepted}")
