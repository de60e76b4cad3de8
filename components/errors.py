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
        shown = repr(value)
        if len(shown) > 120:  # an rcLocal script or a CSV cell: the start is enough to find it
            shown = shown[:100] + "..."
        # One line whatever the input: a key or an `accepted` built from input cannot break it.
        message = f"config key '{key}'{location}: got {shown}; expected {accepted}"
        super().__init__(" ".join(message.splitlines()))
