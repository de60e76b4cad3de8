"""The LabHost installer's package step, for real: Debian's apt in a bookworm chroot.

A lab host whose engine is rootless needs docker.io, rootlesskit, slirp4netns,
uidmap and fuse-overlayfs. The installer (components/scripts/labhost-install.py,
run over SSH by LabHost) installs whichever are missing with apt-get. Here it
runs in a throwaway overlay of the ssh tier's debootstrapped bookworm, which has
none of them, against Debian's own mirror: real dpkg-query, apt-get and
postinst scripts (policy-rc.d keeps them from starting services).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.labs import ROOTLESS_PACKAGES
from tests.prereq import missing
from tests.ssh.rootfs import RootfsUnavailable, chroot, overlay_root

INSTALLER = Path(__file__).resolve().parents[2] / "components" / "scripts" / "labhost-install.py"

# Loads the installer as LabHost ships it and runs only its package step.
DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("labhost_install", "/tmp/labhost-install.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(module.install_packages(sys.argv[1:])))
"""


@pytest.fixture
def host() -> Iterator[Path]:
    try:
        with overlay_root() as root:
            shutil.copy(INSTALLER, root / "tmp" / "labhost-install.py")
            shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
            policy = root / "usr" / "sbin" / "policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            yield root
    except RootfsUnavailable as why:
        missing(str(why))


def installed(root: Path, name: str) -> bool:
    status = chroot(root, "dpkg-query", "-W", "-f=${Status}", name, check=False)
    return status.stdout.strip() == "install ok installed"


def install(root: Path, *packages: str) -> tuple[int, list[str] | None, str]:
    done = chroot(root, "python3", "-c", DRIVER, *packages, check=False, timeout=900)
    answer = json.loads(done.stdout) if done.returncode == 0 else None
    return done.returncode, answer, done.stderr


def test_installer_adds_exactly_the_missing_rootless_packages_and_then_nothing(host: Path) -> None:
    packages = list(ROOTLESS_PACKAGES)
    assert not any(installed(host, name) for name in packages), "the bookworm chroot already has them"

    code, added, err = install(host, *packages)
    assert code == 0, err
    assert added == packages
    assert all(installed(host, name) for name in packages)
    # What labd's rootless engines run: Debian's rootless dockerd wrapper and the setuid id mappers.
    assert (host / "usr/share/docker.io/contrib/dockerd-rootless.sh").is_file()
    for tool in ("rootlesskit", "slirp4netns", "fuse-overlayfs", "dockerd"):
        assert (host / "usr/bin" / tool).is_file() or (host / "usr/sbin" / tool).is_file(), tool
    for mapper in ("newuidmap", "newgidmap"):
        assert os.stat(host / "usr/bin" / mapper).st_mode & stat.S_ISUID, f"{mapper} is not setuid"

    # Run again: nothing is missing, apt is not called (dpkg's log does not grow).
    dpkg_log = (host / "var/log/dpkg.log").read_bytes()
    code, added, err = install(host, *packages)
    assert (code, added) == (0, []), err
    assert (host / "var/log/dpkg.log").read_bytes() == dpkg_log


def test_without_apt_the_installer_names_what_is_missing_and_changes_nothing(host: Path) -> None:
    # A host without apt and dpkg (not Debian): a package counts as there when its command is.
    for tool in ("apt-get", "dpkg-query"):
        (host / "usr/bin" / tool).unlink()
    before = sorted(p.name for p in (host / "usr/bin").iterdir())

    code, added, err = install(host, *ROOTLESS_PACKAGES)
    assert code == 1 and added is None
    assert "Traceback" not in err
    assert "this host has no apt-get" in err and "set the host's engine to shared" in err
    for name in ROOTLESS_PACKAGES:
        assert name in err
    assert "uidmap (for newuidmap)" in err
    assert sorted(p.name for p in (host / "usr/bin").iterdir()) == before


def test_a_failing_apt_is_one_line_naming_the_command(host: Path) -> None:
    # No mirror can be reached: apt-get update fails; the installer says which step and why it ran.
    (host / "etc/apt/sources.list").write_text("deb http://127.0.0.1:9/debian bookworm main\n")
    for extra in (host / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    shutil.rmtree(host / "var/lib/apt/lists", ignore_errors=True)
    (host / "var/lib/apt/lists/partial").mkdir(parents=True)

    code, added, err = install(host, "rootlesskit")
    assert code == 1 and added is None
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("labhost-install: 'apt-get install") or last.startswith(
        "labhost-install: 'apt-get update"
    ), err
    assert "labd's rootless engines need rootlesskit" in last
    assert not installed(host, "rootlesskit")
