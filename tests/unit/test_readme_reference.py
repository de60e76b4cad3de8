"""The README's configuration reference names every key the program accepts.

An instructor reads the README, not config.py: a key added to the program
without a line in the reference is a key nobody can find.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.config import TOP_LEVEL_KEYS
from components.labconfig import HOST_KEYS, LAB_FIELDS, LAB_KEYS
from components.rosterdata import ACCESS_KEYS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def reference() -> str:
    start = README.index("## Configuration reference")
    end = README.index("\n## ", start + 1)
    return README[start:end]


@pytest.mark.parametrize("key", [*TOP_LEVEL_KEYS, *ACCESS_KEYS, *LAB_KEYS])
def test_every_stack_key_has_a_line_in_the_reference(key: str) -> None:
    assert re.search(rf"`{re.escape(key)}`", reference()), f"README reference lacks `{key}`"


@pytest.mark.parametrize("field", [*LAB_FIELDS, *HOST_KEYS])
def test_every_lab_field_is_documented(field: str) -> None:
    section = reference()[reference().index("### Lab clusters") :]
    assert re.search(rf"\b{re.escape(field)}\b", section), f"README lab reference lacks `{field}`"
