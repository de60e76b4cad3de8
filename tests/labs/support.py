"""Helpers for the labs tier: a real labd process, signed requests, the k3d double's records.

Used by the tests and by bench/labd_bench.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labd.auth import sign

REPO = Path(__file__).resolve().parents[2]
LABD_SRC = REPO / "containers" / "labd"
DOUBLE = Path(__file__).resolve().parent / "k3d_double.py"
HOOK = REPO / "components" / "scripts" / "lab-session-hook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until predicate is truthy; a deadline, not a timed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def write_key(path: Path) -> bytes:
    key = secrets.token_hex(32).encode()
    path.write_bytes(key + b"\n")
    path.chmod(0o600)
    return key


class Double:
    """Read side of the k3d double's files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.binary = directory.parent / "k3d"
        # A wrapper so the double runs under the venv's python (it parses YAML).
        self.binary.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
        self.binary.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    def mutating(self) -> list[list[str]]:
        return [a for a in self.argvs() if a[:2] != ["cluster", "list"]]

    def clusters(self) -> dict[str, Any]:
        path = self.dir / "clusters.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def snapshot(self) -> tuple[list[list[str]], dict[str, Any]]:
        return self.mutating(), self.clusters()

    def running(self, name: str) -> bool | None:
        info = self.clusters().get(name)
        return None if info is None else bool(info["running"])


class Labd:
    """A real labd process on 127.0.0.1 driving the k3d double."""

    def __init__(self, root: Path, **overrides: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.double = Double(root / "double")
        self.session_key = write_key(root / "session.key")
        self.admin_key = write_key(root / "admin.key")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.host_name = f"127.0.0.1:{self.port}"
        self.config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "class": "cis90",
            "term": "fall2026",
            "labDomain": "lab.example.edu",
            "stateFile": str(root / "state" / "state.json"),
            "workDir": str(root / "work"),
            "sessionKeyFile": str(root / "session.key"),
            "adminKeyFile": str(root / "admin.key"),
            "k3dBinary": str(self.double.binary),
            "traefik": {"file": str(root / "traefik" / "labs.yaml")},
            "idleTimeout": 3600,
            "stopGrace": 0,
            "reaperInterval": 0.1,
            "kubeconfigServer": "127.0.0.1",
            # The k3d double (and test_k3d_real.py's wrapper, which names the throwaway engine itself)
            # talk to no engine of labd's choosing; the rootless engines are tests/labs/test_isolation.py's.
            "engine": "shared",
        }
        self.config.update(overrides)
        self.config_path = root / "labd.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env_extra: dict[str, str] = {}

    def start(self) -> Labd:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        env = {**os.environ, "PYTHONPATH": str(LABD_SRC), "K3D_DOUBLE_DIR": str(self.double.dir), **self.env_extra}
        self.log = open(self.root / "labd.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labd", "serve", "--config", str(self.config_path)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, what="labd /healthz")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"labd exited {self.proc.returncode}: {(self.root / 'labd.log').read_text()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()

    def request(
        self,
        method: str,
        path: str,
        user: str,
        body: Any = None,
        key_id: str = "session",
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        if headers is None:
            key = key if key is not None else (self.admin_key if key_id == "admin" else self.session_key)
            # Signed for this labd as the hook signs (host:port of its URL), so a labd with
            # hostNames accepts the tests' own requests too.
            headers = sign(key, key_id, method, path, user, data, host=self.host_name)
        return self.raw(method, path, headers, data)

    def raw(self, method: str, path: str, headers: dict[str, str], data: bytes = b"") -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=data or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        try:
            return status, json.loads(payload)
        except json.JSONDecodeError:
            return status, payload.decode()

    def status(self, user: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v1/users/{user}/status", user)
        assert status == 200, body
        return dict(body)

    def rss_kib(self) -> int:
        """labd's resident memory (VmRSS) from /proc."""
        return self._proc_status("VmRSS")

    def threads(self) -> int:
        return self._proc_status("Threads")

    def _proc_status(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def state_file(self) -> dict[str, Any]:
        return dict(json.loads(Path(self.config["stateFile"]).read_text()))


def running(labd: Labd, user: str) -> bool:
    return labd.status(user)["state"] == "running"


def ensure_running(labd: Labd, user: str) -> None:
    """POST ensure (202) and wait until labd reports the cluster running."""
    status, body = labd.request("POST", f"/v1/users/{user}/ensure", user)
    assert status == 202, body
    wait_for(lambda: running(labd, user), what=f"{user}'s cluster running")
