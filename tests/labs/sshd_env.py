"""A real OpenSSH sshd on 127.0.0.1 whose PAM stack runs the lab session hook.

sshd always uses the PAM service name "sshd" and reads /etc/pam.d, so the
test sshd runs in its own mount namespace (`unshare -m`) with a test pam.d
bind-mounted over /etc/pam.d: the machine's own PAM configuration is never
touched. Test users are created with a unique prefix and removed afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.labs.support import HOOK, Labd, free_port, wait_for


class SshdEnv:
    def __init__(self, labd: Labd, users: int = 1) -> None:
        self.labd = labd
        # World-traversable: sshd reads authorized keys as the target user.
        self.dir = Path(tempfile.mkdtemp(prefix="labs-sshd-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.users: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[subprocess.Popen[bytes]] = []
        prefix = "lt" + secrets.token_hex(3)
        for i in range(users):
            self._add_user(f"{prefix}u{i}")
        self.hook_state = self.dir / "hook-state"
        self.hook_log = self.dir / "hook.log"
        key_file = self.dir / "session.key"
        key_file.write_bytes(labd.session_key + b"\n")
        key_file.chmod(0o600)
        self.hook_config = self.dir / "hook.json"
        self.hook_config.write_text(
            json.dumps(
                {
                    "url": labd.url,
                    "keyFile": str(key_file),
                    "hostId": "login-test",
                    "stateDir": str(self.hook_state),
                    "logFile": str(self.hook_log),
                    "readyTimeout": 60,
                    "requestTimeout": 5,
                }
            )
        )
        self.hook_config.chmod(0o600)

    def _add_user(self, name: str) -> None:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
        self.users.append(name)
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
        keys = self.dir / "keys"
        keys.mkdir(exist_ok=True)
        keys.chmod(0o755)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / f"id_{name}")], check=True)
        (keys / name).write_text((self.dir / f"id_{name}.pub").read_text())
        (keys / name).chmod(0o644)

    def start(self) -> SshdEnv:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key")], check=True)
        pam = self.dir / "pam.d"
        pam.mkdir()
        (pam / "sshd").write_text(
            "auth required pam_permit.so\n"
            "account required pam_permit.so\n"
            "session required pam_permit.so\n"
            f"session optional pam_exec.so quiet {HOOK} --config {self.hook_config}\n"
        )
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nUsePAM yes\nAuthorizedKeysFile {self.dir / 'keys'}/%u\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nLogLevel VERBOSE\nPermitRootLogin no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        script = f"mount --bind {pam} /etc/pam.d && exec /usr/sbin/sshd -D -e -f {config}"
        self.log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(self._listening, what="test sshd listening")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def ssh(self, user: str, command: str = "cat") -> subprocess.Popen[bytes]:
        """A session that lasts until its stdin closes (or it is killed)."""
        client = subprocess.Popen(
            [
                "ssh",
                "-i",
                str(self.dir / f"id_{user}"),
                "-p",
                str(self.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                f"{user}@127.0.0.1",
                command,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.clients.append(client)
        return client

    def hook_records(self) -> list[dict[str, str]]:
        if not self.hook_state.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.hook_state.glob("*.json"))]

    def run_hook(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HOOK), "--config", str(self.hook_config), *args],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **(env or {})},
            check=False,
            timeout=60,
        )

    def stop(self) -> None:
        for client in self.clients:
            if client.poll() is None:
                client.kill()
            client.wait()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if hasattr(self, "log"):
            self.log.close()
        for user in self.users:
            # The user's connection processes may still be exiting; userdel waits for them.
            for _ in range(100):
                if subprocess.run(["userdel", "-r", user], capture_output=True, check=False).returncode in (0, 6):
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def home(user: str) -> Path:
    return Path(os.path.expanduser(f"~{user}"))
