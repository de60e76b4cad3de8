"""Labs tier: labd over real HTTP, the session hook under real sshd, the k3d double,
and the real k3d on a throwaway Docker engine with the stand-in node images."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labs.docker_env import Dockerd, running_with_standins
from tests.labs.support import Labd
from tests.prereq import missing


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


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Dockerd]:
    """One throwaway dockerd for the session, with the stand-in k3s/k3d-proxy/k3d-tools images."""
    with running_with_standins(Dockerd()) as engine:
        yield engine


@pytest.fixture(scope="session")
def k3d_binary() -> str:
    found = shutil.which("k3d")
    if found is None:
        missing('no k3d on PATH: tools/toolchain.sh k3d builds it (eval "$(tools/toolchain.sh env)")')
    assert found is not None
    return found
