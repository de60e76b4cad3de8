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

__all__ = ["YAMLError", "dump", "load"]


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
