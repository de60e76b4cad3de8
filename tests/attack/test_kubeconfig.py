"""What the root hook writes into a home is checked, whoever answers at labd's address, and
what a student plants in ~/.kube cannot turn the write against anyone or hang it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.attack.conftest import CHROOT_ENV, HOOK_DIR, Server, wait_until

EXEC_USER = """\
apiVersion: v1
kind: Config
clusters:
- name: k3d-lab-alice
  cluster:
    server: https://alice.lab.example.edu:6443
contexts:
- name: k3d-lab-alice
  context: {cluster: k3d-lab-alice, user: admin@k3d-lab-alice}
current-context: k3d-lab-alice
users:
- name: admin@k3d-lab-alice
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "cp -r ~ /tmp/stolen"]
"""
AUTH_PROVIDER = EXEC_USER.replace(
    """    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "cp -r ~ /tmp/stolen"]
""",
    """    auth-provider:
      name: oidc
      config: {cmd-path: /bin/sh}
""",
)
OTHER_CLUSTER = (
    EXEC_USER.replace("https://alice.lab.example.edu:6443", "https://bob.lab.example.edu:6443").split("users:")[0]
    + "users:\n- name: admin@k3d-lab-alice\n  user: {token: abc}\n"
)
PLAIN_HTTP = OTHER_CLUSTER.replace("https://bob.lab.example.edu:6443", "http://alice.lab.example.edu:6443")
# Well formed and pointing at alice's own name: refused only because labd did not sign it.
WELL_FORMED = OTHER_CLUSTER.replace("https://bob.lab.example.edu:6443", "https://alice.lab.example.edu:6443")


class FakeLabd:
    """Answers at labd's address without the session key: 'running', and a kubeconfig of its choosing."""

    def __init__(self, kubeconfig: str) -> None:
        body = kubeconfig.encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                data = body if self.path.endswith("/kubeconfig") else json.dumps({"state": "running"}).encode()
                self.send_response(200 if not self.path.endswith("/sessions") else 202)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def point_hook_at(server: Server, url: str) -> None:
    path = server.root / HOOK_DIR.lstrip("/") / "config.json"
    config = json.loads(path.read_text())
    config["urls"] = {name: url for name in config["urls"]}
    path.write_text(json.dumps(config))


def hook(server: Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(server.root), "/usr/local/sbin/lab-session-hook", *args],
        capture_output=True,
        text=True,
        env=CHROOT_ENV,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def fake_labd(request: pytest.FixtureRequest) -> Iterator[FakeLabd]:
    fake = FakeLabd(request.param)
    yield fake
    fake.stop()


@pytest.mark.parametrize(
    "fake_labd",
    [EXEC_USER, AUTH_PROVIDER, OTHER_CLUSTER, PLAIN_HTTP, WELL_FORMED],
    ids=["exec", "auth-provider", "another-students-server", "plain-http", "unsigned"],
    indirect=True,
)
def test_kubeconfig_from_an_unauthenticated_answer_is_not_written(server: Server, fake_labd: FakeLabd) -> None:
    point_hook_at(server, fake_labd.url)
    before = sorted(os.listdir(server.home("alice")))
    result = hook(server, "kubeconfig", "alice")
    assert result.returncode != 0 and "refused, nothing written" in result.stderr, result.stdout + result.stderr
    assert sorted(os.listdir(server.home("alice"))) == before and not (server.home("alice") / ".kube").exists()
    # At login too (the PAM path): nothing lands in the home.
    assert server.login("alice", "true").returncode == 0
    wait_until(
        lambda: "refused, nothing written" in server.hook_log() or (server.home("alice") / ".kube").exists(),
        "the hook's verdict on the login's kubeconfig",
        timeout=90,
    )  # a deadline: slow under load
    assert not (server.home("alice") / ".kube").exists()


def running(server: Server, user: str) -> bool:
    status, body = server.labd.request("GET", f"/v1/users/{user}/status", user)
    return status == 200 and body.get("state") == "running"


def test_fifo_planted_as_kubeconfig_neither_hangs_nor_is_touched(server: Server) -> None:
    assert server.labd.request("POST", "/v1/users/bob/ensure", "bob")[0] == 202
    wait_until(lambda: running(server, "bob"), "bob's cluster running")
    kube = server.home("bob") / ".kube"
    kube.mkdir(mode=0o700)
    os.chown(kube, server.uid("bob"), server.uid("bob"))
    os.mkfifo(kube / "config", 0o600)
    os.chown(kube / "config", server.uid("bob"), server.uid("bob"))
    result = hook(server, "kubeconfig", "bob", timeout=30)  # a blocked open would hang here
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(kube / "config").st_mode)
    assert (kube / "lab-config").read_text().startswith("# managed by lab-session-hook")


def test_symlinked_kubeconfig_cannot_make_root_write_elsewhere(server: Server) -> None:
    assert server.labd.request("POST", "/v1/users/bob/ensure", "bob")[0] == 202
    wait_until(lambda: running(server, "bob"), "bob's cluster running")
    shadow = (server.root / "etc/shadow").read_bytes()
    kube = server.home("bob") / ".kube"
    kube.mkdir(mode=0o700)
    os.chown(kube, server.uid("bob"), server.uid("bob"))
    for name in ("config", "lab-config"):
        os.symlink("/etc/shadow", kube / name)
        os.lchown(kube / name, server.uid("bob"), server.uid("bob"))
    hook(server, "kubeconfig", "bob", timeout=30)
    assert (server.root / "etc/shadow").read_bytes() == shadow
    assert os.stat(server.root / "etc/shadow").st_uid == 0
