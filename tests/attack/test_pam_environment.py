"""A student's own environment must never reach code that runs as root.

Debian's /etc/pam.d/sshd (as openssh-server ships it up to 1:9.7p1-6, and
Ubuntu jammy/noble likewise) reads ~/.pam_environment (`pam_env.so
user_readenv=1`), and the lab session hook runs after it as root through
pam_exec, which passes the PAM environment on. Each test logs in as bob with
a hostile ~/.pam_environment and checks that nothing ran as root, nothing
was proxied, and nothing happened to alice.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.attack.conftest import Server, wait_until

SITECUSTOMIZE = """\
import os
if os.geteuid() == 0:
    with open("/pwned-pythonpath", "a") as handle:
        handle.write(f"{os.getpid()}\\n")
"""

PRELOAD_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void pwn(void) {
    if (geteuid() == 0) {
        FILE *f = fopen("/pwned-preload", "a");
        if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
    }
}
"""

FAKE_PYTHON = """#!/bin/sh
[ "$(id -u)" = 0 ] && echo "$$" >>/pwned-path
exec /usr/bin/python3 "$@"
"""


def pam_environment(values: dict[str, str]) -> str:
    # pam_env.conf syntax, which ~/.pam_environment uses.
    return "".join(f"{name} OVERRIDE={value}\n" for name, value in values.items())


def bob_logged_in_and_hook_ran(server: Server) -> None:
    result = server.login("bob", "true")
    assert result.returncode == 0, result.stderr + server.sshd.new_log()
    # The hook is detached: wait until it has done bob's (legitimate) open.
    wait_until(
        lambda: (
            "for bob: HTTP" in server.hook_log()
            or "doing nothing" in server.hook_log()
            or list(server.root.glob("pwned-*"))
        ),
        "the session hook's open for bob (or its refusal)",
        server=server,
    )


def assert_alice_untouched(server: Server) -> None:
    assert not (server.home("alice") / ".kube").exists()
    sessions = server.labd.state_file().get("users", {}).get("alice", {}).get("sessions", {})
    assert not sessions, sessions
    assert not [c for c in server.labd.double.mutating() if any("alice" in a for a in c)]


def test_image_pam_stack_does_not_read_user_environment(server: Server) -> None:
    for path in sorted((server.root / "etc/pam.d").iterdir()):
        lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
        offending = [line for line in lines if "pam_env" in line and "user_readenv=1" in line.replace(" ", "")]
        assert not offending, f"{path.name}: {offending}"
    sshd = (server.root / "etc/pam.d/sshd").read_text()
    assert "@include lab-session" in sshd and "pam_env.so" in sshd  # the distro's stack, plus the lab include


def test_pythonpath_sitecustomize_does_not_run_as_root(server: Server) -> None:
    server.plant("bob", "py/sitecustomize.py", SITECUSTOMIZE)
    server.plant(
        "bob",
        ".pam_environment",
        pam_environment(
            {
                "PYTHONPATH": "/home/bob/py",
                "PYTHONSTARTUP": "/home/bob/py/sitecustomize.py",
                "PYTHONUSERBASE": "/home/bob/py",
                "PYTHONHOME": "/home/bob/py",
            }
        ),
    )
    bob_logged_in_and_hook_ran(server)
    assert not (server.root / "pwned-pythonpath").exists()
    assert_alice_untouched(server)


def test_loader_variables_reach_no_root_process(server: Server, tmp_path: Path) -> None:
    """LD_PRELOAD runs code in a root process before Python starts, so only the PAM stack
    itself can stop it. LD_DEBUG_OUTPUT needs no compiler to show the same thing: the
    dynamic loader of any process that received it writes a file there, as that process's
    user. With gcc at hand (this machine has it) a real preloaded library is tried too."""
    loader = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": "/tmp/ld-debug-bob"}
    if shutil.which("gcc"):
        source = tmp_path / "pwn.c"
        source.write_text(PRELOAD_C)
        library = tmp_path / "pwn.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True)
        server.plant("bob", "pwn.so", library.read_bytes(), mode=0o755)
        loader["LD_PRELOAD"] = "/home/bob/pwn.so"
    server.plant("bob", ".pam_environment", pam_environment(loader))
    bob_logged_in_and_hook_ran(server)
    assert not (server.root / "pwned-preload").exists()
    written_by_root = [p.name for p in (server.root / "tmp").glob("ld-debug-bob*") if p.stat().st_uid == 0]
    assert not written_by_root
    # The probe itself works in this root: the loader honours it for a process that gets it.
    assert server.login("bob", "LD_DEBUG=files LD_DEBUG_OUTPUT=/tmp/ld-probe-bob /bin/true").returncode == 0
    assert list((server.root / "tmp").glob("ld-probe-bob*"))


def test_path_does_not_reach_root(server: Server) -> None:
    for name in ("python3", "python", "env", "sh", "curl", "id"):
        server.plant("bob", f"bin/{name}", FAKE_PYTHON, mode=0o755)
    server.plant("bob", ".pam_environment", pam_environment({"PATH": "/home/bob/bin"}))
    bob_logged_in_and_hook_ran(server)
    assert not (server.root / "pwned-path").exists()


class CountingProxy:
    """A loopback TCP listener that records every connection (a student's proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy", "https_proxy"])
def test_proxy_variables_are_not_honoured(server: Server, variable: str) -> None:
    proxy = CountingProxy()
    try:
        server.plant("bob", ".pam_environment", pam_environment({variable: f"http://127.0.0.1:{proxy.port}"}))
        # The session stays open until the kubeconfig is written: a session
        # that ends first stops its cluster, and then no kubeconfig comes
        # (CI met exactly that race with a one-command login).
        session = server.session("bob", "sleep 120")
        wait_until(
            lambda: (
                "kubeconfig for bob written" in server.hook_log() or proxy.connections or session.poll() is not None
            ),
            "bob's kubeconfig or a proxied request",
            server=server,
        )
        assert session.poll() is None, session.stderr.read().decode() if session.stderr else ""
        assert proxy.connections == 0
        assert (server.home("bob") / ".kube" / "config").exists()
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "injected",
    [
        {"PAM_USER": "alice"},
        {"PAM_USER": "alice", "PAM_TYPE": "open_session"},
        {"PAM_TYPE": "close_session", "PAM_USER": "alice"},
    ],
)
def test_crafted_pam_items_do_not_act_for_another_student(server: Server, injected: dict[str, str]) -> None:
    server.plant("bob", ".pam_environment", pam_environment(injected))
    bob_logged_in_and_hook_ran(server)
    wait_until(lambda: "for bob" in server.hook_log() or "for alice" in server.hook_log(), "the hook's log")
    assert "for alice" not in server.hook_log()
    assert_alice_untouched(server)


def test_hook_alone_holds_when_a_stack_still_reads_user_environment(server: Server) -> None:
    """Defence in depth: an image whose PAM stack still reads ~/.pam_environment (built before
    the fix, or a distro the scripts do not know) must not give the hook's own part away."""
    pam = server.root / "etc/pam.d/sshd"
    pam.write_text(pam.read_text().replace("user_readenv=0", "user_readenv=1"))
    proxy = CountingProxy()
    try:
        server.plant("bob", "py/sitecustomize.py", SITECUSTOMIZE)
        server.plant(
            "bob",
            ".pam_environment",
            pam_environment(
                {
                    "PYTHONPATH": "/home/bob/py",
                    "http_proxy": f"http://127.0.0.1:{proxy.port}",
                    "PAM_USER": "alice",
                    "PAM_TYPE": "open_session",
                }
            ),
        )
        bob_logged_in_and_hook_ran(server)
        wait_until(
            lambda: "doing nothing" in server.hook_log() or list(server.root.glob("pwned-*")), "the hook's refusal"
        )
        assert not (server.root / "pwned-pythonpath").exists()
        assert proxy.connections == 0
        assert "for alice" not in server.hook_log()
        assert_alice_untouched(server)
    finally:
        proxy.stop()
