"""Under CI a skipped test is a failure, unless the reason is on the list below.

Most skips here guard a prerequisite the test command installs (root,
Debian's sshd, debootstrap, systemd-nspawn, Traefik, actionlint, checkov).
On a developer's machine a missing one may skip; in CI it means a broken set-up
step, and a quiet skip would hide that a real-sshd or real-API-server test
proved nothing. The Pulumi engine is such a prerequisite too (the test
command builds it). The only allowed reasons are skips that depend on what
the repository contains, not on the machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

# The tiers, one directory each; a test's tier is the directory it lives in (`pytest -m labs`).
# Their markers are registered in pyproject.toml, the one place pytest reads them from.
TIERS = ("unit", "ssh", "labs", "attack", "labhost", "e2e")
HERE = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    try:
        first = path.resolve().relative_to(HERE).parts[0]
    except (ValueError, IndexError):
        return None
    return first if first in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(Path(str(item.fspath)))
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


ALLOWED_IN_CI = re.compile(
    r"holds encrypted values the mocks cannot decrypt"  # depends on the stack files
    r"|does not exist yet \(the workflow skips it too\)"  # depends on the containers present
)


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _enforce(report: Any) -> None:
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if ALLOWED_IN_CI.search(reason):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where the test command installs every prerequisite: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    _enforce(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    # Module-level skips (pytest.skip(..., allow_module_level=True)) surface here.
    outcome = yield
    _enforce(outcome.get_result())
