"""What a test does when a prerequisite (a tool, a built binary) is missing."""

from __future__ import annotations

import os

import pytest


def missing(what: str) -> None:
    """A skip on a developer's machine, a failure under CI.

    The test command installs every prerequisite, so under CI a skip would hide
    that the real-engine tests proved nothing (tests/conftest.py fails skips too).
    """
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)
