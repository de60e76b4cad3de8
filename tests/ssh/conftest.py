"""Fixtures for the ssh tier: a throwaway Debian chroot per module, real OpenSSH inside it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ssh.rootfs import RootfsUnavailable, ensure_rootfs, overlay_root

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "components" / "scripts"


@pytest.fixture(scope="session")
def rootfs() -> Path:
    try:
        return ensure_rootfs()
    except RootfsUnavailable as exc:
        pytest.skip(f"chroot unavailable: {exc}")


@pytest.fixture
def chroot_root(rootfs: Path) -> Iterator[Path]:
    with overlay_root(rootfs) as root:
        install_reconciler(root)
        yield root


def install_reconciler(root: Path) -> Path:
    target = root / "usr" / "local" / "sbin" / "reconcile-roster"
    shutil.copy(SCRIPTS / "reconcile-roster", target)
    target.chmod(0o755)
    return target
