"""A throwaway Docker engine for the labs tier, and the stand-in images the real k3d runs on it.

`Dockerd` starts Debian's dockerd as root with everything of its own under one
temporary directory: data root, exec root (and the containerd it starts
there), pid file and a unix socket (DOCKER_HOST=unix://...). It runs inside a
network namespace of its own (`ip netns add`; or, given `netns=`, an existing
one it neither creates nor deletes, such as the lab-host tier's), so the bridges k3d creates and
the ports it publishes (labd's ingress ports on backendHost, 127.0.0.1 in the
tests; the API port on 0.0.0.0) exist only there; clients
reach the engine through the socket, and tests reach published ports with
`Dockerd.fetch` (a Python urllib GET inside that namespace). It also changes no
firewall rules (`--iptables=false --ip-masq=false`: published ports go
through docker-proxy) and has no default bridge (`--bridge=none`: k3d makes
its own network). Its default runtime is
tests/labs/docker-runtime-wrapper: runc minus CAP_SYS_RESOURCE, the one
capability this sandbox lacks, without which no --privileged container (all
of k3d's nodes) starts here. Teardown removes every container, network and
volume, stops the engine and deletes the directory.

`build_standin_images` makes the STAND-IN node images: k3s, k3d-proxy and
k3d-tools cannot be pulled here (no registry), so one busybox root file system
carrying tests/labs/k3s_standin/ is `docker import`ed under the tags k3d and
labd ask for. They are stand-ins, not k3s: see tests/labs/k3s_standin/k3s.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.prereq import missing

HERE = Path(__file__).resolve().parent
WRAPPER = HERE / "docker-runtime-wrapper"
STANDIN = HERE / "k3s_standin"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, every applet

# The tags k3d asks for: the node image labd's default template names, and the
# helper images k3d v5.8.3 defaults to (ghcr.io/k3d-io/k3d-{proxy,tools}:<its version>).
K3S_IMAGE = "docker.io/rancher/k3s:v1.31.5-k3s1"
PROXY_IMAGE = "ghcr.io/k3d-io/k3d-proxy:5.8.3"
TOOLS_IMAGE = "ghcr.io/k3d-io/k3d-tools:5.8.3"
# image -> Dockerfile-style changes given to `docker import --change`
IMAGES = {
    K3S_IMAGE: ['ENTRYPOINT ["/bin/k3s"]', 'CMD ["agent"]'],
    PROXY_IMAGE: ['ENTRYPOINT ["/bin/k3d-proxy"]'],
    TOOLS_IMAGE: ['ENTRYPOINT ["/bin/k3d-tools"]'],
}


class DockerdError(Exception):
    """The throwaway engine did not start; the message names its log."""


class Dockerd:
    def __init__(self, root: Path | None = None, netns: str | None = None) -> None:
        """netns: run in that existing namespace (left in place by stop) instead of one of its own."""
        self.root = root or Path(tempfile.mkdtemp(prefix="labs-dockerd-"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log_path = self.root / "dockerd.log"
        self.netns = netns or "classroom-labs-" + secrets.token_hex(4)
        self.own_netns = netns is None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a docker or k3d client of this engine runs with."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "client")}

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def in_netns(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run argv inside the engine's network namespace (where the published ports are)."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def fetch(self, port: int, host: str = "127.0.0.1") -> str | None:
        """GET http://host:port/ inside the engine's namespace: the body, or None if nothing answered."""
        script = (
            "import sys, urllib.request\n"
            "try:\n"
            "    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
            "except OSError as err:\n"
            "    sys.exit(f'{sys.argv[1]}: {err}')\n"
        )
        done = self.in_netns(sys.executable, "-c", script, f"http://{host}:{port}/")
        return done.stdout if done.returncode == 0 else None

    def start(self, timeout: float = 60) -> Dockerd:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerdError(
                "no dockerd on PATH: Debian's docker.io is in tools/apt-packages.txt "
                "(tools/setup.sh system installs it)"
            )
        for sub in ("data", "exec", "client"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        steps = (
            [["ip", "netns", "add", self.netns], ["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"]]
            if self.own_netns
            else []
        )
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise DockerdError(f"{' '.join(step)} exited {done.returncode}: {done.stderr.strip()}")
        self.netns_made = self.own_netns
        argv = [
            # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts dockerd needs
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            dockerd,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            "--host",
            self.host,
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=overlay2",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--containerd-namespace",
            "classroom-labs",
            "--containerd-plugins-namespace",
            "classroom-labs-plugins",
            "--add-runtime",
            f"standin-runc={WRAPPER}",
            "--default-runtime",
            "standin-runc",
        ]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        # Its own session: a ^C of pytest must not reach it before teardown does.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DockerdError(
                    f"dockerd exited {self.proc.returncode} at start; log: {self.log_path}:\n"
                    + self.log_path.read_text()[-2000:]
                )
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise DockerdError(f"dockerd did not answer on {self.socket} within {timeout:g}s; log: {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False)
            self.docker("network", "prune", "-f", check=False)
            self.docker("volume", "prune", "-f", check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        # overlay2 or a container's leftovers may still be mounted under the root
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root) + "/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        if getattr(self, "netns_made", False):
            subprocess.run(["ip", "netns", "delete", self.netns], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _kubeconfig() -> str:
    """A kubeconfig as k3s writes it (a CA, a client certificate), for a STAND-IN with no API behind it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> bytes:
        built = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )
        return built.public_bytes(serialization.Encoding.PEM)

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("k3s-server-ca STAND-IN", ca_key, "k3s-server-ca STAND-IN", ca_key, True)
    client = cert("system:admin", client_key, "k3s-server-ca STAND-IN", ca_key, False)
    key = client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (
        "apiVersion: v1\nkind: Config\npreferences: {}\ncurrent-context: default\n"
        f"clusters:\n- cluster:\n    certificate-authority-data: {b64(ca)}\n    server: @SERVER@\n  name: default\n"
        "contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n"
        f"users:\n- name: default\n  user:\n    client-certificate-data: {b64(client)}\n"
        f"    client-key-data: {b64(key)}\n"
    )


def standin_rootfs_tar(dest: Path) -> Path:
    """A tarball of the stand-in root file system: busybox, the stand-in scripts, a kubeconfig template."""
    if not BUSYBOX.exists():
        raise DockerdError(f"{BUSYBOX} missing: Debian's busybox-static is in tools/apt-packages.txt")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    root = dest.with_suffix(".d")
    shutil.rmtree(root, ignore_errors=True)
    for sub in (
        "bin",
        "etc/standin",
        "tmp",
        "output",
        "var/log",
        "var/lib/rancher/k3s",
        "root",
        "proc",
        "sys",
        "dev",
        "run",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    ours = {p.name for p in STANDIN.iterdir()}
    for applet in applets:
        if applet not in ours and applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "usr").mkdir()
    (root / "usr" / "bin").symlink_to("../bin")
    (root / "sbin").symlink_to("bin")
    for script in STANDIN.iterdir():
        shutil.copy2(script, root / "bin" / script.name)
    (root / "etc" / "standin" / "kubeconfig.yaml").write_text(_kubeconfig())
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "tmp").chmod(0o1777)
    with tarfile.open(dest, "w") as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return dest


def build_standin_images(engine: Dockerd) -> dict[str, str]:
    """`docker import` the stand-in root file system under each tag; returns tag -> image id."""
    tar = standin_rootfs_tar(engine.root / "standin-rootfs.tar")
    ids: dict[str, str] = {}
    for tag, changes in IMAGES.items():
        argv = ["import"]
        for change in changes:
            argv += ["--change", change]
        ids[tag] = engine.docker(*argv, str(tar), tag).stdout.strip()
    tar.unlink()
    return ids


@contextmanager
def running_with_standins(engine: Dockerd) -> Iterator[Dockerd]:
    """ENGINE started, with the stand-in images, and stopped at the end; a start failure fails the test."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        missing("no dockerd/docker on PATH: Debian's docker.io (tools/setup.sh system installs it)")
    try:
        engine.start()
        build_standin_images(engine)
    except (DockerdError, AssertionError) as err:
        engine.stop()
        pytest.fail(f"the throwaway Docker engine did not come up: {err}")
    try:
        yield engine
    finally:
        engine.stop()
