"""Stack files read and written round-trip: comments, key order and quoting survive an edit.

`ruamel.yaml` in round-trip mode keeps what PyYAML drops. With the indentation the project's
stack files use (mappings 2, sequences 4 with the dash at 2), loading and dumping an unchanged
file gives back the same bytes (tests/unit/test_term.py checks it for every file in stacks/).
A comment that sits after a key whose value is removed or replaced goes with that value.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

__all__ = ["YAMLError", "dump", "load", "set_in_place"]


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line (keys, rcEnv) the author wrote on one line
    return yaml


def load(text: str) -> Any:
    """The document, as mappings and lists that remember their comments (None for an empty file)."""
    return _yaml().load(text)


def dump(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def set_in_place(mapping: Any, key: str, value: Any) -> None:
    """mapping[key] = value, but a mapping or list replaced by its kind is edited entry by entry, so
    the comments inside it (and the one after it, which belongs to its last entry) stay where they were."""
    current = mapping.get(key)
    if isinstance(current, dict) and isinstance(value, dict):
        for old_key in [k for k in current if k not in value]:
            del current[old_key]
        for sub_key, sub_value in value.items():
            set_in_place(current, sub_key, sub_value)
    elif isinstance(current, list) and isinstance(value, list):
        for index, item in enumerate(value):
            if index >= len(current):
                current.append(item)
            elif current[index] != item:
                current[index] = item
        del current[len(value) :]
    elif current != value or key not in mapping:
        mapping[key] = value
