"""labd under hostile HTTP: malformed lengths, slow clients, floods, replays at another lab host.

Against the real labd process over real HTTP on 127.0.0.1 (the k3d double behind it). Each attack
must fail, leave the state file and the clusters as they were, keep labd's memory bounded (VmRSS
from /proc) and leave labd serving another client. Deadlines here are for reaching a condition,
never assertions about speed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.labs.support import Labd, ensure_running, sign, wait_for

pytestmark = pytest.mark.labs

MAX_BODY = 64 * 1024
# labd at rest is ~20 MB; the old rfile.read(-n) grew it by hundreds.
RSS_GROWTH_LIMIT_KIB = 24 * 1024


def connect(labd: Labd, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", labd.port), timeout=timeout)
    return sock


def read_status(sock: socket.socket) -> int | None:
    """The status of the answer on sock, or None if labd closed without one."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split(b" ", 2)[1])


def head(labd: Labd, method: str, path: str, user: str, extra: list[tuple[str, str]]) -> bytes:
    """A correctly signed request head (empty body signed) plus extra header lines."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{labd.port}"]
    lines += [f"{k}: {v}" for k, v in sign(labd.session_key, "session", method, path, user).items()]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0.05)
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def busy_labd(tmp_path: Path, labd_factory: list[Labd]) -> Iterator[Labd]:
    """alice and bob have running clusters; a long requestTimeout so that only labd's checks decide."""
    daemon = Labd(tmp_path / "labd", requestTimeout=60)
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    ensure_running(daemon, "bob")
    # "running" is written before the init hook's "initialized": a snapshot between the two would differ
    wait_for(lambda: all(r["initialized"] for r in daemon.state_file()["users"].values()), what="both initialized")
    yield daemon


def snapshot(labd: Labd) -> tuple[Any, ...]:
    return labd.double.snapshot(), labd.state_file()


MALFORMED: list[tuple[str, list[tuple[str, str]], int]] = [
    ("negative", [("Content-Length", "-1")], 400),
    ("very negative (the ~440 MB read)", [("Content-Length", "-440000000")], 400),
    ("not a number", [("Content-Length", "abc")], 400),
    ("plus sign", [("Content-Length", "+5")], 400),
    ("underscore digits", [("Content-Length", "1_0")], 400),
    ("non-ASCII digit", [("Content-Length", "\u0665")], 400),
    ("a list", [("Content-Length", "5, 5")], 400),
    ("duplicated", [("Content-Length", "5"), ("Content-Length", "5")], 400),
    ("contradictory", [("Content-Length", "5"), ("Content-Length", "7")], 400),
    ("over the limit", [("Content-Length", str(MAX_BODY + 1))], 413),
    ("absurdly large", [("Content-Length", "99999999999999999999")], 400),
    ("chunked", [("Transfer-Encoding", "chunked")], 400),
    ("chunked and a length", [("Transfer-Encoding", "chunked"), ("Content-Length", "5")], 400),
]


@pytest.mark.parametrize(("name", "extra", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_length_is_answered_before_the_body_and_changes_nothing(
    busy_labd: Labd, name: str, extra: list[tuple[str, str]], expected: int
) -> None:
    labd = busy_labd
    before, rss_before = snapshot(labd), labd.rss_kib()
    sock = connect(labd)
    # A signed stop for alice: were the body read, it would stop her cluster.
    sock.sendall(head(labd, "POST", "/v1/users/alice/stop", "alice", extra))
    # The connection stays open and no body comes: labd must answer from the head alone.
    assert read_status(sock) == expected, name
    assert closed_by_peer(sock) or wait_for(lambda: closed_by_peer(sock), what="labd closes the connection")
    sock.close()
    assert snapshot(labd) == before
    assert labd.double.running("lab-alice") is True
    assert labd.rss_kib() - rss_before < RSS_GROWTH_LIMIT_KIB
    assert labd.status("bob")["state"] == "running"


def test_negative_length_with_a_stream_behind_it_keeps_memory_bounded(busy_labd: Labd) -> None:
    labd = busy_labd
    before, rss_before = snapshot(labd), labd.rss_kib()
    streams = []
    for _ in range(4):
        sock = connect(labd)
        sock.sendall(head(labd, "POST", "/v1/users/alice/stop", "alice", [("Content-Length", "-440000000")]))
        streams.append(sock)
    chunk = b"x" * 65536
    sent = 0
    for sock in streams:
        try:
            for _ in range(256):  # up to 16 MiB each, as long as labd takes it
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # labd answered and closed: the stream goes nowhere
    for sock in streams:
        sock.close()
    assert labd.rss_kib() - rss_before < RSS_GROWTH_LIMIT_KIB
    assert snapshot(labd) == before
    assert labd.status("bob")["state"] == "running"


def test_oversized_request_head_is_refused(busy_labd: Labd) -> None:
    labd = busy_labd
    before, rss_before = snapshot(labd), labd.rss_kib()
    socks = []
    for _ in range(20):
        sock = connect(labd)
        padding = [(f"X-Pad-{i}", "p" * 1000) for i in range(60)]  # ~60 KiB: http.server alone allows 6.5 MB
        with contextlib.suppress(OSError):  # labd may answer 431 and close mid-head
            sock.sendall(head(labd, "POST", "/v1/users/alice/stop", "alice", padding))
        socks.append(sock)
    statuses = [read_status(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert set(statuses) <= {431, None} and 431 in statuses, statuses
    assert snapshot(labd) == before
    assert labd.rss_kib() - rss_before < RSS_GROWTH_LIMIT_KIB
    assert labd.status("bob")["state"] == "running"


class Trickler(threading.Thread):
    """A slowloris: one byte of a request head every 0.2 s, for as long as labd keeps the connection."""

    def __init__(self, labd: Labd, body: bool = False) -> None:
        super().__init__(daemon=True)
        self.sock = connect(labd, timeout=5)
        if body:
            # A complete, signed head announcing 100 bytes; the body then trickles.
            self.data = head(labd, "POST", "/v1/users/alice/sessions", "alice", [("Content-Length", "100")])
            self.sock.sendall(self.data)
            self.data = b"{" * 100
        else:
            self.data = b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 10_000
        self.cut = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        for byte in self.data:
            if self.stop.is_set():
                return
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                self.cut.set()
                return
            if closed_by_peer(self.sock):
                self.cut.set()
                return
            time.sleep(0.15)


def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(tmp_path: Path, labd_factory: list[Labd]) -> None:
    # The socket timeout alone (2 s per read) never fires for a byte every 0.2 s:
    # only labd's per-request deadline ends these connections.
    labd = Labd(tmp_path / "labd", requestTimeout=2)
    labd_factory.append(labd)
    labd.start()
    ensure_running(labd, "bob")
    before = snapshot(labd)
    tricklers = [Trickler(labd) for _ in range(12)] + [Trickler(labd, body=True) for _ in range(4)]
    for t in tricklers:
        t.start()
    try:
        # While they hold their connections, another client is served.
        assert labd.status("bob")["state"] == "running"
        status, body = labd.request("POST", "/v1/users/bob/stop", "bob")
        assert status == 200 and body["state"] == "stopped"
        wait_for(lambda: all(t.cut.is_set() for t in tricklers), timeout=60, what="labd cuts every slow client off")
    finally:
        for t in tricklers:
            t.stop.set()
            t.join(timeout=10)
            t.sock.close()
    # The trickled session open for alice never counted; only bob's own stop changed anything.
    after = snapshot(labd)
    assert "alice" not in after[1]["users"]
    assert after[0][0] == before[0][0] + [["cluster", "stop", "lab-bob"]]
    assert labd.status("alice")["sessions"] == 0


def settled_threads(labd: Labd) -> int:
    """labd's thread count once it is the same over three reads 0.3 s apart."""
    reads = [labd.threads()]

    def steady() -> bool:
        time.sleep(0.3)
        reads.append(labd.threads())
        return len(reads) >= 3 and len(set(reads[-3:])) == 1

    wait_for(steady, what="labd's thread count to settle")
    return reads[-1]


def test_connection_flood_is_bounded_answered_503_and_labd_recovers(tmp_path: Path, labd_factory: list[Labd]) -> None:
    labd = Labd(tmp_path / "labd", maxConnections=8, requestTimeout=5)
    labd_factory.append(labd)
    labd.start()
    ensure_running(labd, "alice")
    # The handler of the last request may still be finishing: count labd's threads once that count
    # holds still, or a thread that ends later leaves the count short of baseline + 8 for good.
    threads_before = settled_threads(labd)
    before, rss_before = snapshot(labd), labd.rss_kib()
    holders = [connect(labd) for _ in range(8)]
    # Every slot is held once labd has a handler thread for each holder.
    wait_for(lambda: labd.threads() >= threads_before + 8, what="labd handles the 8 holders")
    flood = [connect(labd) for _ in range(150)]
    try:
        statuses = [read_status(sock) for sock in flood]
        assert statuses.count(503) == len(flood), statuses
        # Threads stay at the bound: no handler per flood connection.
        assert labd.threads() <= threads_before + 8
        assert labd.rss_kib() - rss_before < RSS_GROWTH_LIMIT_KIB
        # The holders never send a byte nor close: labd's deadline frees their slots,
        # and then a legitimate client (the hook retries 503) is served again.
        wait_for(
            lambda: all(closed_by_peer(sock) for sock in holders),
            timeout=60,
            what="labd drops the idle holders at their deadline",
        )

        def served() -> bool:
            try:
                status, _ = labd.request("GET", "/v1/users/alice/status", "alice")
            except OSError:
                return False
            return status == 200

        wait_for(served, timeout=30, what="labd serves again after the flood")
    finally:
        for sock in holders + flood:
            sock.close()
    assert snapshot(labd) == before
    assert labd.double.running("lab-alice") is True


def test_request_signed_for_one_lab_host_is_refused_at_another(tmp_path: Path, labd_factory: list[Labd]) -> None:
    lab1, lab2 = Labd(tmp_path / "lab1"), Labd(tmp_path / "lab2")
    # One class: both lab hosts hold the same session key, as the program installs them.
    for daemon in (lab1, lab2):
        daemon.config["hostNames"] = [daemon.host_name]
        labd_factory.append(daemon)
    lab1.start()
    (lab2.root / "session.key").write_bytes(lab1.session_key + b"\n")
    lab2.session_key = lab1.session_key
    lab2.start()
    for daemon in (lab1, lab2):
        ensure_running(daemon, "alice")
        daemon.request("PUT", "/v1/hosts/login/sessions", "host:login", {"sessions": [["login:1:1", "alice"]]})
        status, _ = daemon.request(
            "POST", "/v1/users/alice/sessions", "alice", {"session": "login:1:1", "host": "login"}
        )
        assert status == 202
    before = snapshot(lab2)

    # Captured on its way to lab1: a host sync that drops every session of host "login".
    path = "/v1/hosts/login/sessions"
    body = json.dumps({"sessions": []}).encode()
    for_lab1 = sign(lab1.session_key, "session", "PUT", path, "host:login", body, host=lab1.host_name)
    status, answer = lab2.raw("PUT", path, for_lab1, body)
    assert status == 401 and "lab host" in answer["error"], answer
    # Relabelled for lab2 after signing: the signature no longer holds.
    relabelled = {**for_lab1, "X-Labd-Host": lab2.host_name}
    status, answer = lab2.raw("PUT", path, relabelled, body)
    assert status == 401 and "bad signature" in answer["error"], answer
    # Stripped of its host: a session signature must name one.
    stop_path = "/v1/users/alice/stop"
    unbound = sign(lab1.session_key, "session", "POST", stop_path, "alice")
    status, answer = lab2.raw("POST", stop_path, unbound)
    assert status == 401, answer
    assert snapshot(lab2) == before
    assert lab2.status("alice")["sessions"] == 1 and lab2.double.running("lab-alice") is True

    # At the host it was signed for it works, once (nonce replay protection still holds).
    status, _ = lab1.raw("PUT", path, for_lab1, body)
    assert status == 200
    status, answer = lab1.raw("PUT", path, for_lab1, body)
    assert status == 401 and "replayed" in answer["error"], answer
    assert lab1.status("alice")["sessions"] == 0
