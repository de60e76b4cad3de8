"""Labs tier: labd over real HTTP, the session hook under real sshd, the k3d double,
and the real k3d on a throwaway Docker engine with the stand-in node images."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labs.docker_env import Dockerd, DockerdError, build_standin_images
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


def _missing(what: str) -> None:
    # Under CI the test command installs both; a skip there would hide that
    # the real-engine tests proved nothing (tests/conftest.py fails skips too).
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Dockerd]:
    """One throwaway dockerd for the session, with the stand-in k3s/k3d-proxy/k3d-tools images."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        _missing("no dockerd/docker on PATH: Debian's docker.io (tools/setup.sh system installs it)")
    engine = Dockerd()
    try:
        engine.start()
        build_standin_images(engine)
    except (DockerdError, AssertionError) as err:
        engine.stop()
        pytest.fail(f"the throwaway Docker engine did not come up: {err}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def k3d_binary() -> str:
    found = shutil.which("k3d")
    if found is None:
        _missing('no k3d on PATH: tools/toolchain.sh k3d builds it (eval "$(tools/toolchain.sh env)")')
    assert found is not None
    return found
