"""The root session hook leaves nothing running once a student's session is over.

The hook's PAM side returns at once and does its labd calls in a detached root process. A student
who logs in with one command (`ssh host true`) closes the session before the cluster can be running;
a root process that kept polling labd for a kubeconfig after that would be a root process the student
can spawn at will, one per login. Every detached process must end with the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.attack.conftest import HOOK_DIR, Server, wait_until

# The cluster takes longer to start than the test waits, and the hook would wait longer still:
# only a child that notices the session's end can be gone in time.
SLOW_START = "150"
READY_TIMEOUT = 600
WAIT = 60.0


def hook_processes(server: Server) -> list[tuple[int, str]]:
    """(pid, command line) of live processes running the hook inside this server's root."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/root") != str(server.root):
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                line for line in Path(f"/proc/{entry}/status").read_text().splitlines() if line.startswith("State:")
            )
        except (OSError, StopIteration):
            continue
        if "lab-session-hook" in cmdline and " Z " not in f" {state.split(':', 1)[1].strip()} ":
            found.append((int(entry), cmdline.strip()))
    return found


def test_a_one_command_login_leaves_no_root_hook_running(server: Server) -> None:
    server.labd.stop()
    server.labd.env_extra["K3D_DOUBLE_DELAY"] = SLOW_START
    server.labd.start()
    config_path = server.root / HOOK_DIR.lstrip("/") / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "readyTimeout": READY_TIMEOUT}))
    assert hook_processes(server) == []
    for _ in range(3):  # several logins in a row: none may leave a process behind
        result = server.login("alice", "true")
        assert result.returncode == 0, result.stderr + server.sshd.new_log()
    wait_until(
        lambda: server.hook_log().count("close ") >= 3 and not hook_processes(server),
        "every close logged and no hook process left",
        timeout=WAIT,
        server=server,
    )
    assert hook_processes(server) == []
    # The opens' children stopped because the sessions were over, not because they gave up.
    log = server.hook_log()
    assert log.count("open ") >= 3 and "closed before the cluster was running" in log, log
    # Nothing is counted for alice at labd, and no session record is left in the root-only state dir.
    sessions = server.labd.state_file().get("users", {}).get("alice", {}).get("sessions", {})
    assert not sessions, sessions
    assert list((server.root / "run/lab-session-hook").glob("*")) == []
    assert not (server.home("alice") / ".kube" / "config").exists()
