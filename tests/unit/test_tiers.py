"""Test tiers: one directory each, the marker derived from it, every marker registered in one place."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.conftest import TIERS, tier_of

TESTS = Path(__file__).resolve().parents[1]
PYPROJECT = TESTS.parent / "pyproject.toml"


def test_every_tier_has_its_directory_and_its_registered_marker() -> None:
    markers = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert sorted(m.split(":", 1)[0] for m in markers) == sorted(TIERS)
    with_tests = {p.parent.name for p in TESTS.glob("*/test_*.py")}
    assert with_tests == set(TIERS)


def test_a_test_carries_the_marker_of_its_directory(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert tier_of(TESTS / "labs" / "test_x.py") == "labs" and tier_of(TESTS / "hostkeys.py") is None
    assert tier_of(Path("/elsewhere/test_x.py")) is None
