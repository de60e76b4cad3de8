"""Lab-host tier: a real sshd in a network namespace the test creates, trusted through a test CA.

The "lab host" is this machine seen through sshd inside a fresh network
namespace (10.231.x addresses on that namespace's loopback, invisible outside
it). labd and the installer really run there, as root, under a
per-test install root. `lab_engine` starts a throwaway dockerd (tests/labs/docker_env.py)
INSIDE that same namespace, with the stand-in node images, so the ports the
REAL k3d publishes for labd are where the lab host's labd and Traefik look
(`real_k3d` is the k3d wrapper labd runs: DOCKER_HOST of that engine baked in,
since labd's environment comes from sshd). Every test of this tier that
needs k3d runs the real one; the k3d double is the labs tier's, for fault
injection only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.labs.docker_env import Dockerd, running_with_standins
from tests.prereq import missing

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    run("ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path))
    return path


@dataclass
class Netns:
    name: str
    addresses: list[str] = field(default_factory=list)

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"clr-lh-{uuid.uuid4().hex[:8]}"
    run("ip", "netns", "add", name)
    ns = Netns(name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        # Host addresses on the namespace's own loopback: no kernel module
        # (dummy/veth) needed, and nothing outside the namespace sees them.
        for last in (2, 3):
            address = f"10.231.0.{last}"
            run("ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo")
            ns.addresses.append(address)
        yield ns
    finally:
        # Anything still running in the namespace is ours: stop it before removing it.
        pids = run("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while run("ip", "netns", "pids", name, check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "delete", name, check=False)


@dataclass
class Ca:
    key: Path

    @property
    def public(self) -> str:
        return Path(f"{self.key}.pub").read_text().strip()

    def sign_host(self, host_key: Path, principals: str) -> Path:
        run(
            "ssh-keygen",
            "-q",
            "-s",
            str(self.key),
            "-h",
            "-I",
            f"host:{principals}",
            "-n",
            principals,
            f"{host_key}.pub",
        )
        return Path(f"{host_key}-cert.pub")


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Ca, Ca, Path]:
    """(class CA, an unrelated CA, the engine's private key)."""
    directory = tmp_path / "pki"
    directory.mkdir()
    return Ca(keygen(directory / "class-ca")), Ca(keygen(directory / "other-ca")), keygen(directory / "engine")


@dataclass
class Sshd:
    address: str
    port: int
    directory: Path
    host_keys: list[Path]
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text() if path.exists() else ""


def start_sshd(
    ns: Netns,
    directory: Path,
    address: str,
    ca: Ca | None,
    principals: str,
    authorized: Path | None,
    trusted_user_ca: Ca | None = None,
    key_types: tuple[str, ...] = ("ed25519", "rsa"),
) -> Sshd:
    """Real /usr/sbin/sshd inside ns, with host keys (ed25519 + RSA, like the login server) signed by ca."""
    directory.mkdir(parents=True)
    keys = [keygen(directory / f"ssh_host_{kind}_key", kind) for kind in key_types]
    lines = [
        f"ListenAddress {address}:22",
        "Port 22",
        f"PidFile {directory}/sshd.pid",
        f"AuthorizedKeysFile {directory}/authorized_keys/%u",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "X11Forwarding no",
        "LogLevel VERBOSE",
        # as Debian's own sshd_config has it: CopyToRemote (LabHost) copies over SFTP
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    for key in keys:
        lines.append(f"HostKey {key}")
        if ca is not None:
            lines.append(f"HostCertificate {ca.sign_host(key, principals)}")
    if trusted_user_ca is not None:
        lines.append(f"TrustedUserCAKeys {trusted_user_ca.key}.pub")
    (directory / "sshd_config").write_text("\n".join(lines) + "\n")
    (directory / "authorized_keys").mkdir()
    if authorized is not None:
        shutil.copy(f"{authorized}.pub", directory / "authorized_keys" / "root")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ns.exec("/usr/sbin/sshd", "-D", "-e", "-f", str(directory / "sshd_config"), "-E", str(directory / "sshd.log"))
    )
    deadline = time.monotonic() + 10
    while True:
        probe = run(*ns.exec("bash", "-c", f"exec 3<>/dev/tcp/{address}/22"), check=False)
        if probe.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"sshd on {address} did not start: {(directory / 'sshd.log').read_text()}")
        time.sleep(0.05)
    return Sshd(address, 22, directory, keys, proc)


@pytest.fixture
def sshd_factory(netns: Netns, tmp_path: Path) -> Iterator[list[Sshd]]:
    started: list[Sshd] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.proc.kill()


def toolchain_binary(name: str) -> Path | None:
    """name from the toolchain (tools/toolchain.sh dir), else from PATH."""
    out = run("bash", str(REPO / "tools" / "toolchain.sh"), "dir", check=False).stdout.strip()
    path = Path(out) / "bin" / name if out else None
    if path is not None and os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture
def lab_engine(netns: Netns) -> Iterator[Dockerd]:
    """A throwaway dockerd in the lab host's namespace, with the stand-in images; torn down after the test."""
    with running_with_standins(Dockerd(Path(tempfile.mkdtemp(prefix="labhost-dockerd-")), netns=netns.name)) as engine:
        yield engine


def real_k3d(directory: Path, engine: Dockerd) -> Path:
    """A `k3d` wrapper that runs the REAL k3d against engine (labd's env comes from sshd: no DOCKER_HOST)."""
    binary = toolchain_binary("k3d")
    if binary is None:
        missing('no k3d: tools/toolchain.sh k3d builds it (eval "$(tools/toolchain.sh env)")')
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "k3d"
    # K3D_FIX_DNS=0: k3d's DNS fix runs iptables inside the node; the stand-in image has none.
    wrapper.write_text(
        f"#!/bin/sh\nexport DOCKER_HOST={engine.host} DOCKER_CONFIG={engine.root}/client "
        f'K3D_FIX_DNS=0\nexec {binary} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper
