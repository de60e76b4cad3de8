"""A Debian bookworm root filesystem for chroot tests of the in-container scripts.

Built once with debootstrap (Debian's mirror is reachable; Ubuntu's is not, so
the login image's Ubuntu is stood in for by Debian with the same tools:
useradd/chage/gpasswd from `passwd`, OpenSSH 9.2, python3) and cached under
~/.cache/classroom/rootfs-bookworm. Each test mounts a throwaway overlay on
top, so the cache stays pristine and a test can create accounts freely.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("CLASSROOM_CACHE", Path.home() / ".cache" / "classroom"))
ROOTFS = CACHE / "rootfs-bookworm"
PACKAGES = ("python3", "openssh-server", "openssh-client", "procps", "sudo", "passwd")
MARKER = ".classroom-rootfs"
MIRROR = os.environ.get("CLASSROOM_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class RootfsUnavailable(RuntimeError):
    """Raised when the chroot cannot be built here (not root, no debootstrap, no mirror)."""


def _run(argv: list[str], log: Path) -> None:
    with log.open("a") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if result.returncode != 0:
        raise RootfsUnavailable(f"{' '.join(argv[:3])} ... failed (rc={result.returncode}); see {log}")


def ensure_rootfs() -> Path:
    """The cached rootfs with PACKAGES installed; builds or completes it on first use."""
    if os.geteuid() != 0:
        raise RootfsUnavailable("chroot tests need root")
    CACHE.mkdir(parents=True, exist_ok=True)
    wanted = " ".join(PACKAGES)
    with (CACHE / "rootfs.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        marker = ROOTFS / MARKER
        if marker.exists() and marker.read_text().strip() == wanted:
            return ROOTFS
        log = CACHE / "rootfs-build.log"
        if not ROOTFS.exists():
            if not shutil.which("debootstrap"):
                raise RootfsUnavailable("debootstrap is not installed (apt-get install debootstrap)")
            partial = CACHE / "rootfs-bookworm.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    "bookworm",
                    str(partial),
                    MIRROR,
                ],
                log,
            )
            partial.rename(ROOTFS)
        else:
            # An older cache: add what is missing with the chroot's own apt.
            shutil.copy("/etc/resolv.conf", ROOTFS / "etc" / "resolv.conf")
            policy = ROOTFS / "usr" / "sbin" / "policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            _run(["chroot", str(ROOTFS), "apt-get", "install", "-y", "-q", *PACKAGES], log)
            _run(["chroot", str(ROOTFS), "apt-get", "clean"], log)
        # Packages generate host keys at install time; tests install their own with tests/hostkeys.py.
        for key in (ROOTFS / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()
        marker.write_text(wanted + "\n")
        return ROOTFS


@contextmanager
def overlay_root(base: Path | None = None) -> Iterator[Path]:
    """A writable throwaway copy of the rootfs (overlayfs) with /proc and /dev mounted."""
    lower = base or ensure_rootfs()
    work = Path(tempfile.mkdtemp(prefix="classroom-chroot-"))
    upper, scratch, merged = work / "upper", work / "work", work / "root"
    for path in (upper, scratch, merged):
        path.mkdir()
    mounts: list[Path] = []
    try:
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={lower},upperdir={upper},workdir={scratch}",
                str(merged),
            ],
            check=True,
        )
        mounts.append(merged)
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        mounts.append(merged / "proc")
        subprocess.run(["mount", "--bind", "/dev", str(merged / "dev")], check=True)
        mounts.append(merged / "dev")
        yield merged
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def chroot(root: Path, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, check=check, timeout=timeout)
