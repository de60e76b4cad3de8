"""Roster, term window and revocations: pure parsing and validation.

OWNED BY the roster/access work (issue 4). This initial version is only the
interface that components/config.py calls; it accepts an absent roster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.errors import ConfigError

# Stack-config keys (under the `classroom:` namespace) this module parses.
ACCESS_KEYS = ("roster", "term", "revocations", "staffKeepOwnKeys")


@dataclass(frozen=True)
class AccessConfig:
    """Everything the access model needs, validated."""

    people: tuple[Any, ...] = field(default_factory=tuple)
    term: Any = None
    revoked_serials: tuple[int, ...] = ()
    revoked_keys: tuple[str, ...] = ()
    staff_keep_own_keys: bool = True


def parse_access(raw: Mapping[str, Any], *, base_dir: Path) -> AccessConfig:
    """Validate the ACCESS_KEYS subset of a stack's config."""
    if raw.get("roster"):
        raise ConfigError("roster", raw["roster"], "not yet supported by this build")
    return AccessConfig()
