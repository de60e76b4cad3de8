"""Run the project's sshd configuration for real inside a chroot and connect with the real ssh client."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.sshclient import ssh_argv

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "components" / "scripts"
SSHD_LIFETIME = 600  # seconds; sshd is started under timeout(1) so it always stops by itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_key(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key pair for a client; returns (private key path, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / name
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    public = (
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + f" {name}"
    )
    (directory / f"{name}.pub").write_text(public + "\n")
    return path, public


@dataclass
class Sshd:
    """sshd -D -e in `root`, listening on 127.0.0.1:port, its log captured to `log`."""

    root: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    offset: int = field(default=0)

    def start(self, *extra: str) -> None:
        (self.root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        # Only the port, address and log verbosity differ from the project's sshd_config.
        argv = [
            "chroot",
            str(self.root),
            "timeout",
            str(SSHD_LIFETIME),
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            "/etc/ssh/sshd_config",
            "-o",
            f"Port={self.port}",
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "LogLevel=VERBOSE",
            *extra,
        ]
        check = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/sshd", "-t", "-f", "/etc/ssh/sshd_config"],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected the configuration: {check.stderr}")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def mark(self) -> None:
        self.offset = self.log.stat().st_size

    def new_log(self, expect: str | None = None, wait: float = 5.0) -> str:
        """Log written since mark(); when `expect` is given, wait for it to be flushed (sshd logs async)."""
        deadline = time.monotonic() + wait
        while True:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                text = handle.read().decode(errors="replace")
            if expect is None or expect in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def ssh(
    port: int, user: str, identity: Path, known_hosts: Path, *, certificate: Path | None = None, command: str = "id -un"
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, configured only by these flags (no user or system ssh_config)."""
    options = [f"CertificateFile={certificate}"] if certificate is not None else []
    argv = ssh_argv(
        f"{user}@127.0.0.1", identity=identity, known_hosts=known_hosts, port=port, options=options, command=[command]
    )
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
