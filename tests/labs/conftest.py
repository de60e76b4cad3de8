"""Labs tier: labd over real HTTP, the session hook under real sshd, the k3d double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labs.support import Labd


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
