"""labd over real HTTP on 127.0.0.1, driving the k3d double."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.labs.support import LABD_SRC, Labd, ensure_running, running, sign, wait_for, write_key


def test_lifecycle_ensure_stop_kubeconfig_delete(labd: Labd) -> None:
    ensure_running(labd, "alice")
    assert labd.double.running("lab-alice") is True
    create = [a for a in labd.double.argvs() if a[:2] == ["cluster", "create"]]
    assert len(create) == 1 and create[0][2] == "--config"
    rendered = yaml.safe_load(Path(create[0][3]).read_text())
    assert rendered["metadata"]["name"] == "lab-alice"
    assert rendered["apiVersion"] == "k3d.io/v1alpha5" and rendered["kind"] == "Simple"

    status, kubeconfig = labd.request("GET", "/v1/users/alice/kubeconfig", "alice")
    assert status == 200
    server = yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["server"]
    assert server == f"https://127.0.0.1:{labd.status('alice')['ports']['api']}"

    status, body = labd.request("POST", "/v1/users/alice/stop", "alice")
    assert status == 200 and body["state"] == "stopped"
    assert labd.double.running("lab-alice") is False
    status, _ = labd.request("GET", "/v1/users/alice/kubeconfig", "alice")
    assert status == 409

    ensure_running(labd, "alice")
    assert ["cluster", "start", "lab-alice"] in labd.double.argvs()
    assert len([a for a in labd.double.argvs() if a[:2] == ["cluster", "create"]]) == 1

    status, body = labd.request("DELETE", "/v1/users/alice", "admin", key_id="admin")
    assert status == 200 and body["state"] == "deleted"
    assert "lab-alice" not in labd.double.clusters()
    assert "alice" not in labd.state_file()["users"]


def test_routes_follow_the_cluster_set(labd: Labd) -> None:
    ensure_running(labd, "alice")
    ensure_running(labd, "bob")
    routes = yaml.safe_load(Path(labd.config["traefik"]["file"]).read_text())
    alice = labd.status("alice")["ports"]
    assert routes["http"]["routers"]["lab-alice"]["rule"] == "Host(`alice.lab.example.edu`)"
    assert (
        routes["http"]["services"]["lab-alice"]["loadBalancer"]["servers"][0]["url"]
        == f"http://127.0.0.1:{alice['http']}"
    )
    assert routes["tcp"]["routers"]["lab-bob"]["rule"] == "HostSNI(`bob.lab.example.edu`)"
    assert routes["tcp"]["routers"]["lab-bob"]["tls"] == {"passthrough": True}
    assert labd.status("bob")["ports"]["api"] != alice["api"]
    labd.request("DELETE", "/v1/users/alice", "admin", key_id="admin")
    routes = yaml.safe_load(Path(labd.config["traefik"]["file"]).read_text())
    assert set(routes["http"]["routers"]) == {"lab-bob"}
    status, text = labd.request("GET", "/v1/routes", "admin", key_id="admin")
    assert status == 200 and yaml.safe_load(text) == routes


def forged_attempts(labd: Labd) -> list[tuple[str, str, dict[str, str], bytes, int]]:
    """(name, method+path, headers, body, expected status) for requests that must change nothing."""
    path = "/v1/users/alice/ensure"
    wrong_key = b"0" * 64
    good = sign(labd.session_key, "session", "POST", path, "alice")
    tampered = dict(good)
    tampered["X-Labd-User"] = "bob"
    bob_for_alice = sign(labd.session_key, "session", "POST", path, "bob")
    old = sign(labd.session_key, "session", "POST", path, "alice", now=1_000_000_000)
    session_as_admin = sign(labd.session_key, "admin", "DELETE", "/v1/users/alice", "admin")
    student_admin_op = sign(labd.session_key, "session", "DELETE", "/v1/users/alice", "alice")
    student_list = sign(labd.session_key, "session", "GET", "/v1/clusters", "alice")
    return [
        ("missing auth", f"POST {path}", {}, b"", 401),
        ("wrong key", f"POST {path}", sign(wrong_key, "session", "POST", path, "alice"), b"", 401),
        ("user header changed after signing", f"POST {path}", tampered, b"", 401),
        ("path changed after signing", "POST /v1/users/alice/stop", good, b"", 401),
        ("stale timestamp", f"POST {path}", old, b"", 401),
        ("cross-user: bob signs for alice's cluster", f"POST {path}", bob_for_alice, b"", 403),
        ("session key presented as admin", "DELETE /v1/users/alice", session_as_admin, b"", 401),
        ("student calls admin delete", "DELETE /v1/users/alice", student_admin_op, b"", 403),
        ("student lists all clusters", "GET /v1/clusters", student_list, b"", 403),
    ]


def test_forged_and_cross_user_requests_change_nothing(labd: Labd) -> None:
    ensure_running(labd, "alice")
    labd.request("POST", "/v1/users/alice/stop", "alice")
    before = labd.double.snapshot()
    state_before = labd.state_file()
    for name, target, headers, body, expected in forged_attempts(labd):
        method, path = target.split(" ", 1)
        status, answer = labd.raw(method, path, headers, body)
        assert status == expected, f"{name}: HTTP {status} {answer}"
    assert labd.double.snapshot() == before
    assert labd.state_file() == state_before
    assert labd.status("alice")["state"] == "stopped"


def test_replayed_request_is_refused_and_changes_nothing(labd: Labd) -> None:
    ensure_running(labd, "alice")
    path = "/v1/users/alice/stop"
    headers = sign(labd.session_key, "session", "POST", path, "alice")
    status, _ = labd.raw("POST", path, headers)
    assert status == 200
    labd.request("POST", "/v1/users/alice/ensure", "alice")
    wait_for(lambda: running(labd, "alice"), what="restart")
    before = labd.double.snapshot()
    status, body = labd.raw("POST", path, headers)
    assert status == 401 and "replayed" in body["error"]
    assert labd.double.snapshot() == before
    assert labd.double.running("lab-alice") is True


def test_body_is_covered_by_the_signature(labd: Labd) -> None:
    path = "/v1/users/alice/sessions"
    body = json.dumps({"session": "h:1:1", "host": "h"}).encode()
    headers = sign(labd.session_key, "session", "POST", path, "alice", body)
    status, _ = labd.raw("POST", path, headers, json.dumps({"session": "h:9:9", "host": "h"}).encode())
    assert status == 401
    assert labd.double.mutating() == []


def test_roster_file_limits_who_gets_a_cluster(tmp_path: Path, labd_factory: list[Labd]) -> None:
    roster = tmp_path / "roster.txt"
    roster.write_text("alice\n")
    daemon = Labd(tmp_path / "d", rosterFile=str(roster))
    labd_factory.append(daemon)
    daemon.start()
    status, body = daemon.request("POST", "/v1/users/mallory/ensure", "mallory")
    assert status == 403 and "roster" in body["error"]
    ensure_running(daemon, "alice")
    assert list(daemon.double.clusters()) == ["lab-alice"]


def test_state_survives_restart_and_reconciles_with_k3d(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d")
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    ensure_running(daemon, "bob")
    daemon.request("POST", "/v1/users/bob/sessions", "bob", {"session": "login:7:7", "host": "login"})
    ports = {u: daemon.status(u)["ports"] for u in ("alice", "bob")}
    daemon.stop()
    # While labd is down alice's cluster is stopped behind its back.
    subprocess.run(
        [str(daemon.double.binary), "cluster", "stop", "lab-alice"],
        check=True,
        capture_output=True,
        env={"K3D_DOUBLE_DIR": str(daemon.double.dir), "PATH": "/usr/bin:/bin"},
    )
    daemon.start()
    assert daemon.status("alice")["state"] == "stopped"
    assert daemon.status("bob")["state"] == "running"
    assert daemon.status("bob")["sessions"] == 1
    assert {u: daemon.status(u)["ports"] for u in ("alice", "bob")} == ports
    ensure_running(daemon, "alice")
    assert len([a for a in daemon.double.argvs() if a[:2] == ["cluster", "create"]]) == 2


def test_request_signed_before_restart_is_refused_after_it(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d")
    labd_factory.append(daemon)
    daemon.start()
    path = "/v1/users/alice/ensure"
    headers = sign(daemon.session_key, "session", "POST", path, "alice", now=__import__("time").time() - 5)
    daemon.stop()
    daemon.start()
    status, body = daemon.raw("POST", path, headers)
    assert status == 401, body
    assert daemon.double.mutating() == []


def test_reaper_stops_idle_clusters(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d", idleTimeout=1, reaperInterval=0.1)
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    wait_for(lambda: daemon.double.running("lab-alice") is False, what="reaper stop")
    assert ["cluster", "stop", "lab-alice"] in daemon.double.argvs()
    # labd records the new state once k3d returns, a moment after the double changed it.
    wait_for(lambda: daemon.status("alice")["state"] == "stopped", what="labd records the stop")


def test_reaper_keeps_clusters_with_sessions_and_drops_stale_sessions(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d", idleTimeout=0.5, sessionTtl=2, reaperInterval=0.1)
    labd_factory.append(daemon)
    daemon.start()
    daemon.request("POST", "/v1/users/alice/sessions", "alice", {"session": "login:1:1", "host": "login"})
    wait_for(lambda: running(daemon, "alice"), what="running")
    # An open session holds the cluster past idleTimeout; once the session
    # is older than sessionTtl without a sync refreshing it, it is dropped.
    wait_for(lambda: daemon.status("alice")["sessions"] == 0, what="stale session dropped")
    wait_for(lambda: daemon.double.running("lab-alice") is False, what="reaper stop")


def test_host_sync_closes_sessions_the_login_server_no_longer_has(labd: Labd) -> None:
    for sid in ("login:1:1", "login:2:2"):
        labd.request("POST", "/v1/users/alice/sessions", "alice", {"session": sid, "host": "login"})
    wait_for(lambda: running(labd, "alice"), what="running")
    status, body = labd.request("PUT", "/v1/hosts/login/sessions", "alice", {"sessions": [["login:1:1", "alice"]]})
    assert status == 403  # a student signature cannot speak for the host
    status, body = labd.request("PUT", "/v1/hosts/login/sessions", "host:login", {"sessions": [["login:1:1", "alice"]]})
    assert status == 200 and body["closed"] == 1
    assert labd.status("alice")["sessions"] == 1
    labd.request("PUT", "/v1/hosts/login/sessions", "host:login", {"sessions": []})
    wait_for(lambda: labd.double.running("lab-alice") is False, what="stop after last session synced away")


class Receiver(BaseHTTPRequestHandler):
    secret: ClassVar[bytes] = b""
    events: ClassVar[list[dict[str, Any]]] = []
    failures_left: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        stamp = self.headers["X-Labd-Timestamp"]
        expected = "sha256=" + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers["X-Labd-Signature"]):
            self.send_response(401)
        elif Receiver.failures_left > 0:
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            Receiver.events.append({"path": self.path, **json.loads(body)})
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    secret_file = tmp_path / "hook.secret"
    Receiver.secret = write_key(secret_file)
    Receiver.events = []
    Receiver.failures_left = 1
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", secret_file
    server.shutdown()


def test_init_and_cleanup_webhooks_are_signed_and_retried(
    tmp_path: Path, labd_factory: list[Labd], receiver: tuple[str, Path]
) -> None:
    url, secret = receiver
    hooks = {
        "init": {"url": url + "/init", "secretFile": str(secret), "timeout": 2, "retries": 2},
        "cleanup": {"url": url + "/cleanup", "secretFile": str(secret), "timeout": 2, "retries": 2},
    }
    daemon = Labd(tmp_path / "d", hooks=hooks)
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    wait_for(lambda: Receiver.events, what="init webhook")
    daemon.request("POST", "/v1/users/alice/stop", "alice")
    ensure_running(daemon, "alice")  # a restart is not a first creation: no second init
    daemon.request("DELETE", "/v1/users/alice", "admin", key_id="admin")
    events = [(e["path"], e["event"], e["user"], e["class"], e["term"]) for e in Receiver.events]
    assert events == [
        ("/init", "init", "alice", "cis90", "fall2026"),
        ("/cleanup", "stop", "alice", "cis90", "fall2026"),
        ("/cleanup", "delete", "alice", "cis90", "fall2026"),
    ]


def run_labd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labd", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(LABD_SRC), "PATH": "/usr/bin:/bin"},
        check=False,
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"idleTimeout": "soon"}, "config key 'idleTimeout': got 'soon'; expected a number of seconds"),
        ({"labDomain": "Lab Domain"}, "config key 'labDomain'"),
        ({"k3d": {"template": {"server": 1}}}, "config key 'k3d.template.server'"),
        ({"k3d": {"template": {"image": "rancher/k3s:${version}"}}}, "config key 'k3d.template'"),
        ({"k3d": {"template": {"agents": -1}}}, "config key 'k3d.template.agents': got -1; expected an integer 0..9"),
        ({"hooks": {"init": {"url": "ftp://x", "secretFile": "/nonexistent"}}}, "config key 'hooks.init.url'"),
        ({"hooks": {"init": {"url": "http://x/ y", "secretFile": "/nonexistent"}}}, "config key 'hooks.init.url'"),
        ({"class": "cis90\n"}, "config key 'class'"),
        ({"labDomain": "lab.example.edu\n"}, "config key 'labDomain'"),
        ({"portLimit": 20001}, "config key 'portLimit'"),
        ({"kubeconfigServer": "${nope}.example.edu"}, "config key 'kubeconfigServer'"),
        ({"colour": "blue"}, "config key 'colour'"),
        # backendHost is also the one address students' ingress is published on: refused at start, not at the
        # first ensure (a name would be resolved once and go stale; 0.0.0.0 is every address, past Traefik)
        ({"backendHost": "traefik.lab.example.edu"}, "config key 'backendHost': got 'traefik.lab.example.edu'"),
        ({"backendHost": "0.0.0.0"}, "config key 'backendHost': got '0.0.0.0'; expected an IPv4 address"),
        ({"backendHost": "::1"}, "config key 'backendHost'"),
        ({"engine": "docker"}, "config key 'engine': got 'docker'; expected one of 'shared', 'rootless'"),
        ({"engine": "shared", "rootless": {}}, "config key 'rootless'"),
        ({"engine": "rootless", "rootless": {"userPrefix": "Lab_"}}, "config key 'rootless.userPrefix'"),
        ({"engine": "rootless", "rootless": {"runDir": "/" + "r" * 60}}, "config key 'rootless.runDir'"),
        ({"engine": "rootless", "rootless": {"dataDir": "relative"}}, "config key 'rootless.dataDir'"),
        ({"engine": "rootless", "rootless": {"dockerdArgs": "--debug"}}, "config key 'rootless.dockerdArgs'"),
        ({"engine": "rootless", "rootless": {"preloadImages": [""]}}, "config key 'rootless.preloadImages[0]'"),
        ({"engine": "rootless", "rootless": {"startTimeout": 0}}, "config key 'rootless.startTimeout'"),
        ({"engine": "rootless", "rootless": {"colour": 1}}, "config key 'rootless.colour'"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, change: dict[str, Any], fragment: str) -> None:
    daemon = Labd(tmp_path / "d")
    config = {**daemon.config, **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    done = run_labd("check", "--config", str(path))
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    daemon = Labd(tmp_path / "d")
    (tmp_path / "d" / "session.key").chmod(0o644)
    daemon.config_path.write_text(json.dumps(daemon.config))
    done = run_labd("check", "--config", str(daemon.config_path))
    assert done.returncode == 2 and "sessionKeyFile" in done.stderr and "0600" in done.stderr


def test_admin_cli_deletes_and_lists(labd: Labd) -> None:
    ensure_running(labd, "alice")
    done = run_labd("admin", "--url", labd.url, "--key-file", str(labd.root / "admin.key"), "list")
    assert done.returncode == 0 and json.loads(done.stdout)["clusters"][0]["user"] == "alice"
    done = run_labd("admin", "--url", labd.url, "--key-file", str(labd.root / "session.key"), "delete", "alice")
    assert done.returncode == 1 and "HTTP 401" in done.stderr
    assert "lab-alice" in labd.double.clusters()
    done = run_labd("admin", "--url", labd.url, "--key-file", str(labd.root / "admin.key"), "delete", "alice")
    assert done.returncode == 0 and "lab-alice" not in labd.double.clusters()


def test_k3d_failure_is_reported_not_hidden(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d")
    daemon.env_extra = {"K3D_DOUBLE_FAIL": "create"}
    labd_factory.append(daemon)
    daemon.start()
    daemon.request("POST", "/v1/users/alice/ensure", "alice")
    status = wait_for(lambda: (s := daemon.status("alice"))["state"] == "error" and s, what="error state")
    assert "K3D_DOUBLE_FAIL" in status["error"]


def test_kubeconfig_server_defaults_to_the_students_lab_host_name(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d")
    del daemon.config["kubeconfigServer"]
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    status, text = daemon.request("GET", "/v1/users/alice/kubeconfig", "alice")
    assert status == 200
    port = daemon.status("alice")["ports"]["api"]
    assert yaml.safe_load(text)["clusters"][0]["cluster"]["server"] == f"https://alice.lab.example.edu:{port}"


def test_header_names_are_case_insensitive(labd: Labd) -> None:
    path = "/v1/users/alice/status"
    headers = {k.lower(): v for k, v in sign(labd.session_key, "session", "GET", path, "alice").items()}
    conn = http.client.HTTPConnection("127.0.0.1", labd.port, timeout=10)
    conn.putrequest("GET", path)
    for name, value in headers.items():
        conn.putheader(name, value)  # http.client sends names exactly as given
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 200, response.read()
    conn.close()


def test_lost_state_adopts_clusters_on_the_ports_k3d_lists(tmp_path: Path, labd_factory: list[Labd]) -> None:
    """The double's version of test_k3d_real's re-adoption: ports come from `cluster list`, not a re-allocation."""
    daemon = Labd(tmp_path / "d")
    labd_factory.append(daemon)
    daemon.start()
    for user in ("gina", "frank"):  # gina gets the first ports; k3d lists frank first
        ensure_running(daemon, user)
    ports = {u: daemon.status(u)["ports"] for u in ("frank", "gina")}
    routes = yaml.safe_load(Path(daemon.config["traefik"]["file"]).read_text())
    daemon.stop()
    Path(daemon.config["stateFile"]).unlink()
    daemon.start()
    assert {u: daemon.status(u)["ports"] for u in ("frank", "gina")} == ports
    assert yaml.safe_load(Path(daemon.config["traefik"]["file"]).read_text()) == routes


def test_recorded_ports_that_k3d_contradicts_follow_k3d(tmp_path: Path, labd_factory: list[Labd]) -> None:
    daemon = Labd(tmp_path / "d")
    labd_factory.append(daemon)
    daemon.start()
    ensure_running(daemon, "alice")
    ports = daemon.status("alice")["ports"]
    daemon.stop()
    state_path = Path(daemon.config["stateFile"])
    state = json.loads(state_path.read_text())
    state["users"]["alice"]["ports"] = {"api": 29000, "http": 29001, "https": 29002}
    state_path.write_text(json.dumps(state))
    daemon.start()
    assert daemon.status("alice")["ports"] == ports
    routes = yaml.safe_load(Path(daemon.config["traefik"]["file"]).read_text())
    assert (
        routes["http"]["services"]["lab-alice"]["loadBalancer"]["servers"][0]["url"]
        == f"http://127.0.0.1:{ports['http']}"
    )


def test_the_engine_is_rootless_unless_the_config_says_shared(tmp_path: Path) -> None:
    from labd.config import parse_config

    daemon = Labd(tmp_path / "d")
    raw = {k: v for k, v in daemon.config.items() if k != "engine"}
    cfg = parse_config(raw)
    assert cfg.engine == "rootless"
    assert (cfg.rootless.user_prefix, cfg.rootless.data_dir, cfg.rootless.run_dir) == (
        "labu-",
        "/var/lib/labd/engines",
        "/run/labd/engines",
    )
    assert parse_config({**raw, "engine": "shared"}).engine == "shared"
    custom = parse_config({**raw, "rootless": {"userPrefix": "lab-u", "dockerdArgs": ["--debug"]}})
    assert custom.rootless.user_prefix == "lab-u" and custom.rootless.dockerd_args == ("--debug",)


def test_each_student_gets_a_host_user_name_of_their_own() -> None:
    from labd.engines import host_user_for

    assert host_user_for("labu-", "alice") == "labu-alice"
    long, dotted = "a" * 32, "al.ice"
    names = {host_user_for("labu-", s) for s in ("alice", long, long + "b", dotted, "al-ice")}
    assert len(names) == 5  # never two students on one host user
    assert all(n.startswith("labu-") and len(n) <= 32 and "." not in n for n in names)
