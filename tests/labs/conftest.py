"""Labs tier: labd over real HTTP, the session hook under real sshd, the k3d double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labs.support import Labd


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "labs: labd, the session hook and the k3d double (tests/labs)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/labs/" in str(item.fspath):
            item.add_marker(pytest.mark.labs)


@pytest.fixture
def labd_factory(tmp_path: Path) -> Iterator[list[Labd]]:
    started: list[Labd] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def labd(tmp_path: Path, labd_factory: list[Labd]) -> Labd:
    daemon = Labd(tmp_path / "labd")
    labd_factory.append(daemon)
    return daemon.start()
