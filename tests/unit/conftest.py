"""Fixtures of the unit tier; the mock harness itself is tests/harness.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import Rendered, render


@pytest.fixture
def rendered() -> Callable[..., Rendered]:
    return render
