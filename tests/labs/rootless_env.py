"""A labd that runs every student's cluster under a rootless engine of their own, for the isolation tests.

`RootlessLab` starts the REAL labd as root with `"engine": "rootless"`: labd
makes a host user per student (useradd; a prefix of this run's own so nothing
else on the machine is touched, removed again at teardown), starts Debian's
dockerd-rootless.sh (rootlesskit + slirp4netns) as that user, and drives the
real k3d against it. The stand-in node images are `docker save`d from the
labs tier's root test engine and loaded into each student's engine by labd
itself (`rootless.preloadImages`), as a lab host without a registry would.

What differs from a lab host, and why: the engines run
tests/labs/docker-runtime-wrapper as their default runtime (runc minus
CAP_SYS_RESOURCE, which this sandbox lacks, as for the root test engine), and
with `--iptables=false` (port publishing then goes through
rootlesskit-docker-proxy and rootlesskit's builtin port driver, the
configuration checked here). No network namespace is made for them:
rootlesskit gives each engine its own, and the only thing on the host's are
the published ports rootlesskit binds (a random high range per run).

Everything lives under one short directory in /tmp (unix socket paths are
short), mode 0755 so that only the files' own modes keep one host user from
another's files and labd's keys, as under /etc/labd and /run on a lab host.
"""

from __future__ import annotations

import os
import pwd
import random
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from labd.engines import RootlessConfig, RootlessEngines

from tests.labs.docker_env import IMAGES, WRAPPER, Dockerd
from tests.labs.support import Labd

DOCKERD_ROOTLESS = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
TUN = Path("/dev/net/tun")


def tun_problem() -> str | None:
    """Why slirp4netns cannot open /dev/net/tun as an unprivileged user, or None if it can."""
    try:
        mode = TUN.stat().st_mode
    except OSError as err:
        return f"{TUN}: {err.strerror}"
    if mode & 0o006 != 0o006:
        return (
            f"{TUN} is mode {oct(stat.S_IMODE(mode))}; rootless engines (slirp4netns) open it as their own user. "
            "Debian's default is 0666; tools/setup.sh system restores it"
        )
    return None


def missing_tools() -> list[str]:
    wanted = ["rootlesskit", "slirp4netns", "newuidmap", "newgidmap", "setpriv", "useradd", "userdel"]
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    return missing + ([DOCKERD_ROOTLESS] if not Path(DOCKERD_ROOTLESS).exists() else [])


def free_port_block(count: int) -> int:
    """A base port with count free ports after it on the host's 0.0.0.0 (where rootlesskit publishes)."""
    for _ in range(200):
        base = random.randrange(30000, 60000, 3)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    raise AssertionError(f"no block of {count} free ports found")


def as_uid(uid: int, gid: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """argv run as uid:gid with no supplementary groups and a clean environment: what an escape yields."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# A small probe run as the attacker: one line per attempt, "ok" or the errno's name.
PROBE = r"""
import errno, os, socket, sys
for spec in sys.argv[1:]:
    kind, path = spec.split(":", 1)
    try:
        if kind == "read":
            open(path, "rb").read()
        elif kind == "write":
            open(path, "ab").close()
        elif kind == "list":
            os.listdir(path)
        elif kind == "connect":
            s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(path); s.close()
        elif kind == "kill":
            os.kill(int(path), 0)
        print(spec, "ok")
    except OSError as err:
        print(spec, errno.errorcode.get(err.errno, str(err.errno)))
"""


def probe(uid: int, gid: int, *attempts: str) -> dict[str, str]:
    done = as_uid(uid, gid, "/usr/bin/python3", "-c", PROBE, *attempts)
    assert done.returncode == 0, done.stderr
    return dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())


class RootlessLab:
    def __init__(self, k3d_binary: str, engine: Dockerd) -> None:
        tag = secrets.token_hex(2)
        self.root = Path(f"/tmp/lri-{tag}")
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.prefix = f"li{tag}-"
        images = self.root / "standin-images.tar"
        engine.docker("save", "--output", str(images), *IMAGES, timeout=300)
        # K3D_FIX_DNS=0: the stand-in image has no iptables (see test_k3d_real.py). No DOCKER_HOST here:
        # labd gives k3d each student's own engine.
        self.k3d = self.root / "k3d"
        # labd runs k3d as each student's host user: a copy those users can execute (the toolchain's is under /root).
        shutil.copy2(k3d_binary, self.root / "k3d-bin")
        self.k3d.write_text(f'#!/bin/sh\nexport K3D_FIX_DNS=0\nexec {self.root / "k3d-bin"} "$@"\n')
        self.k3d.chmod(0o755)
        self.port_base = free_port_block(30)
        self.rootless: dict[str, Any] = {
            "userPrefix": self.prefix,
            "dataDir": str(self.root / "data"),
            "runDir": str(self.root / "run"),
            "dockerdRootless": DOCKERD_ROOTLESS,
            "dockerBinary": shutil.which("docker") or "/usr/bin/docker",
            "dockerdArgs": [
                "--iptables=false",
                "--add-runtime",
                f"standin-runc={WRAPPER}",
                "--default-runtime",
                "standin-runc",
            ],
            "preloadImages": [str(images)],
            "startTimeout": 90,
        }
        self.labd = Labd(
            self.root / "labd",
            engine="rootless",
            rootless=self.rootless,
            k3dBinary=str(self.k3d),
            k3dTimeout=180,
            portBase=self.port_base,
            portLimit=self.port_base + 29,
        )
        self.engines = RootlessEngines(
            RootlessConfig(
                user_prefix=self.prefix,
                data_dir=self.rootless["dataDir"],
                run_dir=self.rootless["runDir"],
                dockerd_rootless=DOCKERD_ROOTLESS,
                docker_binary=self.rootless["dockerBinary"],
            )
        )

    def host_user(self, student: str) -> pwd.struct_passwd:
        return pwd.getpwnam(self.engines.host_user(student))

    def docker(self, student: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The docker CLI (as root) against student's own engine."""
        done = subprocess.run(
            ["docker", "--host", self.engines.docker_host(student), *args],
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "client")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} on {student}'s engine exited {done.returncode}: {done.stderr}"
            )
        return done

    def processes_of(self, student: str) -> list[tuple[int, int, str]]:
        """(pid, real uid, name) of every host process whose command line names student's runtime directory."""
        marker = self.engines.run_dir(student).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
            except OSError:
                continue
            if marker in cmdline:
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                found.append((int(entry.name), int(fields["Uid"].split()[0]), fields["Name"].strip()))
        return found

    def stop(self) -> None:
        self.labd.stop()
        for student in self.engines.students():
            try:
                self.engines.remove(student)
            except Exception as err:  # teardown goes on: the next lines still clean up
                print(f"removing {student}'s engine: {err}")
        for user in [e for e in pwd.getpwall() if e.pw_name.startswith(self.prefix)]:
            for pid, uid, _ in self._pids_of_uid(user.pw_uid):
                if uid == user.pw_uid:
                    subprocess.run(["kill", "-KILL", str(pid)], check=False)
            subprocess.run(["userdel", user.pw_name], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _pids_of_uid(uid: int) -> list[tuple[int, int, str]]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    found.append((int(entry.name), uid, fields["Name"].strip()))
        return found
