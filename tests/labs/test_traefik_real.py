"""Real Traefik routing to REAL k3d cluster containers that labd made through the real k3d.

Traefik (the toolchain's binary) runs inside the throwaway engine's network
namespace, where k3d published the clusters' ports (on 127.0.0.1, labd's
backendHost), with the file-provider config labd writes. Clients run there
too (`Dockerd.in_netns`).

The clusters' nodes are STAND-INS (tests/labs/k3s_standin/k3s): their port 80
answers HTTP naming the node; their port 443 is not TLS but raw bytes naming
the node and echoing the first five bytes it got (k3s-standin-tls). The HTTPS
check sends a real TLS ClientHello with SNI `<user>.<domain>` (Python's
ssl.MemoryBIO) through Traefik's TCP passthrough router: the stand-in's answer
coming back names the student's node and the ClientHello's record header,
which proves Traefik routed by SNI and forwarded the handshake untouched
instead of terminating it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.labs.docker_env import Dockerd
from tests.labs.real_k3d import RealK3d, wait_running
from tests.labs.support import Labd, free_port, wait_for
from tests.labs.traefik_env import HTTP_CLIENT, TLS_CLIENT, find_traefik, traefik_argv
from tests.prereq import missing

DOMAIN = "lab.example.edu"
USERS = ("alice", "bob")


class Stack:
    def __init__(self, engine: Dockerd, labd: Labd, web: int, websecure: int, log: Path) -> None:
        self.engine, self.labd, self.web, self.websecure, self.log = engine, labd, web, websecure, log

    def _run(self, script: str, *args: str) -> dict[str, Any]:
        done = self.engine.in_netns(sys.executable, "-c", script, *args)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def http(self, user: str) -> tuple[int, str]:
        out = self._run(HTTP_CLIENT, str(self.web), f"{user}.{DOMAIN}")
        return int(out["status"]), str(out["body"])

    def tls(self, user: str) -> tuple[str, bytes]:
        """(the ClientHello's record header in hex, the bytes that came back)."""
        out = self._run(TLS_CLIENT, str(self.websecure), f"{user}.{DOMAIN}")
        return str(out["hello"]), bytes.fromhex(out["got"])


@pytest.fixture(scope="module")
def stack(k3d_binary: str, docker_engine: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    traefik = find_traefik()
    if traefik is None:
        missing("traefik not built yet (tools/toolchain.sh traefik)")
    work = tmp_path_factory.mktemp("traefik-real")
    k3d = RealK3d(k3d_binary, docker_engine, work)
    labd = Labd(work / "labd", k3dBinary=str(k3d.wrapper), k3dTimeout=120, labDomain=DOMAIN)
    labd.start()
    proc = None
    log_path = work / "traefik.log"
    log = open(log_path, "ab")  # noqa: SIM115 (closed below)
    try:
        for user in USERS:
            status, body = labd.request("POST", f"/v1/users/{user}/ensure", user)
            assert status == 202, body
            wait_running(labd, user, f"{user}'s cluster running")
        # free in the engine's namespace too: nothing but k3d's published ports listens there
        web, websecure = free_port(), free_port()
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{docker_engine.netns}",
                *traefik_argv(traefik, web, websecure, labd.config["traefik"]["file"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack = Stack(docker_engine, labd, web, websecure, log_path)
        wait_for(lambda: stack.http("alice")[0] == 200, timeout=30, what="traefik routing alice")
        yield stack
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        log.close()
        labd.stop()
        for user in USERS:
            k3d("cluster", "delete", f"lab-{user}")


def test_http_by_host_reaches_each_students_own_cluster(stack: Stack) -> None:
    for user in USERS:
        status, body = stack.http(user)
        assert status == 200, body
        assert body.startswith(f"k3s STAND-IN ingress k3d-lab-{user}-server-0 "), body


def test_unknown_host_gets_traefiks_404(stack: Stack) -> None:
    status, body = stack.http("mallory")
    assert status == 404
    assert "STAND-IN" not in body


def test_https_by_sni_passthrough_reaches_each_students_own_cluster(stack: Stack) -> None:
    for user in USERS:
        hello, got = stack.tls(user)
        assert hello.startswith("1603"), hello  # a TLS handshake record: the ClientHello
        # the stand-in node's answer, naming it and the ClientHello's first bytes as they arrived
        header = " ".join(hello[i : i + 2] for i in range(0, 10, 2))
        assert got == f"k3s STAND-IN tls k3d-lab-{user}-server-0 got {header} \n".encode(), got


def test_unknown_sni_reaches_no_cluster(stack: Stack) -> None:
    """No TCP router matches: Traefik terminates the handshake itself (its own default certificate)."""
    _, got = stack.tls("mallory")
    assert b"STAND-IN" not in got
    # a TLS handshake record holding a ServerHello (type 2): Traefik's own answer, which no stand-in sends
    assert got[:1] == b"\x16" and got[5:6] == b"\x02", got[:16].hex()


def test_a_stopped_cluster_fails_and_never_reaches_the_other_student(stack: Stack) -> None:
    status, body = stack.labd.request("POST", "/v1/users/bob/stop", "bob")
    assert status == 200 and body["state"] == "stopped", body
    try:
        status, body = stack.http("bob")
        assert status == 502, (status, body)  # Traefik: bad gateway, the route is there but nothing listens
        assert "STAND-IN" not in body
        _, got = stack.tls("bob")
        assert got == b""
        # alice is untouched
        assert stack.http("alice")[1].startswith("k3s STAND-IN ingress k3d-lab-alice-server-0 ")
        assert b"k3d-lab-alice-server-0" in stack.tls("alice")[1]
    finally:
        status, body = stack.labd.request("POST", "/v1/users/bob/ensure", "bob")
        assert status == 202, body
        wait_running(stack.labd, "bob", "bob's cluster started again")
    assert stack.http("bob")[1].startswith("k3s STAND-IN ingress k3d-lab-bob-server-0 ")
