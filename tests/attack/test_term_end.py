"""Access ends with the term for open sessions too, for staff's own keys too, and a session
kill cannot be outrun by a process that keeps changing its PID."""

from __future__ import annotations

import time
from pathlib import Path

from tests.attack.conftest import Server, wait_until
from tests.labs.support import Labd

HOPPER = (
    "import os, time\n"
    "end = time.time() + 90\n"  # stops by itself
    "while time.time() < end:\n"
    "    if os.fork():\n"
    "        os._exit(0)\n"
)


def detached(command: str) -> str:
    return f"setsid nohup {command} </dev/null >/dev/null 2>&1 & echo started"


def test_open_sessions_and_background_jobs_of_students_end_at_access_end(server: Server) -> None:
    session = server.session("bob", "sleep 300")
    assert server.login("bob", detached("sleep 301")).stdout.strip() == "started"
    staff = server.session("carol", "sleep 302")
    wait_until(lambda: len(server.processes("bob")) >= 2 and server.processes("carol"), "the sessions")
    carol_before = set(server.processes("carol"))

    server.write_roster(access_end=int(time.time()) - 30)  # the clock passes accessEnd
    result = server.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr

    wait_until(lambda: not server.processes("bob"), "bob's processes gone", timeout=10)
    assert session.wait(timeout=30) != 0  # the open session was closed under him
    assert server.login("bob").returncode == 255
    # Staff keep what they have open (grading after the term); only new access ends.
    assert staff.poll() is None and carol_before <= set(server.processes("carol"))


def test_staff_own_keys_do_not_outlive_access_end(server: Server) -> None:
    server.plant("carol", ".ssh/authorized_keys", server.keys["carol_own"][1] + "\n", mode=0o600)
    (server.home("carol") / ".ssh").chmod(0o700)
    assert server.login("carol", key="carol_own").returncode == 0  # staffKeepOwnKeys: allowed in term

    server.write_roster(access_end=int(time.time()) - 30)
    result = server.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr
    refused = server.login("carol", key="carol_own")
    assert refused.returncode == 255, refused.stdout
    assert server.login("carol").returncode == 255  # the roster key too (expiry-time=)


def test_session_kill_cannot_be_outrun_by_a_pid_hopper(server: Server) -> None:
    started = server.login("bob", detached(f"python3 -c '{HOPPER}'"))
    assert started.stdout.strip() == "started", started.stderr
    wait_until(lambda: server.processes("bob"), "the hopper")

    server.write_roster(people=[p for p in server.people if p["username"] != "bob"])
    result = server.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # not a timed assertion: nothing may come back in this window
        assert not server.processes("bob"), "a process of bob survived the session kill"
        time.sleep(0.05)


def test_labd_refuses_to_start_clusters_after_the_term(labd_factory: list[Labd], tmp_path: Path) -> None:
    root = tmp_path / "labd-ended"
    ended = Labd(root, accessEnd=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)))
    labd_factory.append(ended)
    ended.start()
    before = ended.double.snapshot()
    status, body = ended.request("POST", "/v1/users/bob/sessions", "bob", {"session": "s1", "host": "login"})
    assert status == 403, body
    status, body = ended.request("POST", "/v1/users/bob/ensure", "bob")
    assert status == 403, body
    assert ended.double.snapshot() == before
    # Stopping and status still work: the end of a term stops clusters, it does not strand them.
    assert ended.request("GET", "/v1/users/bob/status", "bob")[0] in (200, 404)
