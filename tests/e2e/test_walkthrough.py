"""The chart's walkthrough, for real: up, ssh in, uninstall, reinstall, same home.

Both modes run it: unprivileged (sshd only, the entry point as PID 1) and
privileged (systemd as PID 1 in the pod, rc-local before sshd, the hostname set).

A local control plane with one real node (tools/node.py) and the Debian login
image built here (tools/loginimage.py) imported into its containerd.  The real
engine runs `pulumi up` of an unprivileged stack using that image; the pod
really boots (the entry point runs rc.local, which touches /ready; sshd
starts), and a student logs in with OpenSSH through the Service's
LoadBalancer address (routed to kube-proxy's rules on the node, as MetalLB
would make it reach the node), using the certificate `classroom roster issue`
issues, ``StrictHostKeyChecking=yes`` and only the stack's ``@cert-authority``
line in known_hosts.  They write a file in their home; `pulumi destroy
--exclude-protected` and a new `pulumi up` later the file is there with the
same owner and UID.  Then the roster: a student added later gets in without a
pod restart, a removed one is locked out and their open session ends, and a
student's own ~/.ssh/authorized_keys is ignored.
"""

from __future__ import annotations

import datetime
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import localcluster
import loginimage
import node as realnode
import pytest

from tests.e2e.project import PulumiProject, kget, kubectl
from tests.sshclient import ssh_argv

REPO = Path(__file__).resolve().parents[2]


STACK = "walkthrough"
NAMESPACE = f"classroom-{STACK}"
RELEASE = loginimage.RELEASES["bookworm"]
TOKEN = secrets.token_hex(8)
# the reconciler's interval is 30 s; a login may also wait for the pod's first pass
ROSTER_DEADLINE = 120
LB_ADDRESS = str(realnode.NODE_LB_POOL[10])


def keypair(where: Path, name: str) -> tuple[Path, str]:
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (where / f"{name}.pub").read_text().strip()


@dataclass
class Walk:
    cluster: localcluster.LocalCluster
    node: realnode.RealNode
    project: PulumiProject
    keys: dict[str, Path]
    pubs: dict[str, str]
    certs: Path
    mode: str = "unprivileged"
    figures: dict[str, float] = field(default_factory=dict)
    alice_uid: str = ""

    def issue(self) -> dict[str, Any]:
        """Certificates, known_hosts and the address, from `classroom roster issue` (stack outputs)."""
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "classroom"), "roster", "issue", "--stack", STACK, "--out", str(self.certs)],
            cwd=self.project.workdir,
            env=self.project.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs = self.project.outputs()
        return {
            "host": outputs["sshHost"],
            "port": int(outputs["sshPort"]),
            "known_hosts": (self.certs / "known_hosts").read_text(),
        }

    def ssh(
        self,
        user: str,
        command: str,
        address: dict[str, Any],
        check: bool = True,
        cert: bool = True,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        argv = self.ssh_argv(user, address, command, cert=cert)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"ssh {user}: exit {proc.returncode}: {proc.stderr[-1500:]}"
        return proc

    def ssh_argv(
        self, user: str, address: dict[str, Any], command: str, *, cert: bool = True, key: str | None = None
    ) -> list[str]:
        """The real ssh client to the server, as USER with KEY (default: the user's own key and certificate)."""
        return ssh_argv(
            f"{user}@{address['host']}",
            identity=self.keys[key or user],
            known_hosts=self.certs / "known_hosts",
            port=int(address["port"]),
            options=[f"CertificateFile={self.certs / f'{user}-cert.pub'}"] if cert else [],
            command=[command],
        )

    def ssh_eventually(
        self, user: str, command: str, address: dict[str, Any], deadline: float = ROSTER_DEADLINE
    ) -> subprocess.CompletedProcess[str]:
        end = time.monotonic() + deadline
        while True:
            proc = self.ssh(user, command, address, check=False)
            if proc.returncode == 0 or time.monotonic() > end:
                assert proc.returncode == 0, f"ssh {user}: exit {proc.returncode}: {proc.stderr[-1500:]}"
                return proc
            time.sleep(2)

    def pod(self) -> dict[str, Any]:
        pods = kget(str(self.cluster.kubeconfig), "pods", "-n", NAMESPACE)["items"]
        login = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(login) == 1, [p["metadata"]["name"] for p in pods]
        return login[0]


def kubectl_text(walk: Walk, *args: str) -> str:
    return kubectl(str(walk.cluster.kubeconfig), *args, check=False).stdout


def stack_config(pubs: dict[str, str], roster: list[str], mode: str = "unprivileged") -> dict[str, Any]:
    today = datetime.datetime.now(datetime.UTC).date()
    return {
        "hostName": "walkthrough",
        "user": "instructor",
        "userID": 10000,
        "privileged": mode == "privileged",
        "homeSize": "1Gi",
        "storageProvisioner": localcluster.PROVISIONER,
        "image": {"repository": loginimage.IMAGE_REPOSITORY, "tag": RELEASE.name, "pullPolicy": "Never"},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        # A named address, as the chart's example has it: the host certificate lists the names in
        # the config, so an address the load balancer picks by itself is no principal of it
        # (`Certificate invalid: name is not a listed principal`: StrictHostKeyChecking refuses it).
        "service": {"type": "LoadBalancer", "port": 22, "loadBalancerIP": LB_ADDRESS},
        "roster": [{"username": u, "key": pubs[u]} for u in roster],
        "term": {
            "start": str(today - datetime.timedelta(days=7)),
            "end": str(today + datetime.timedelta(days=60)),
            "timezone": "UTC",
        },
    }


@pytest.fixture(scope="module", params=["unprivileged", "privileged"])
def walk(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    toolchain_env: dict[str, str],
    pulumi_bin: str,
) -> Iterator[Walk]:
    mode: str = request.param
    try:
        localcluster.find_binaries()
        realnode.find_node_binaries()
        image = loginimage.build(RELEASE)
    except (localcluster.ClusterError, realnode.NodeError, loginimage.ImageError) as e:
        pytest.fail(str(e))
    base = tmp_path_factory.mktemp(f"walkthrough-{mode}")
    keydir = base / "keys"
    keydir.mkdir()
    keys, pubs = {}, {}
    for user in ("alice", "bob", "carol", "bob-own"):
        keys[user], pubs[user] = keypair(keydir, user)
    before = realnode.host_state()
    with localcluster.LocalCluster(base / "cluster", fake_nodes=(), lb_pool=realnode.NODE_LB_POOL) as cluster:
        node = realnode.RealNode(cluster, base / "node")
        try:
            node.start()
            t0 = time.monotonic()
            node.import_image(image)
            figures = {"node start (s)": node.started_in, "login image import (s)": time.monotonic() - t0}
            project = PulumiProject.create(base, STACK, toolchain_env, str(cluster.kubeconfig))
            for key, value in stack_config(pubs, ["alice", "bob"], mode).items():
                project.set_config(key, value)
            yield Walk(cluster, node, project, keys, pubs, base / "certs", mode, figures)
            (REPO / "out").mkdir(exist_ok=True)
            (REPO / "out" / f"walkthrough-{mode}-figures.json").write_text(json.dumps(figures, indent=2) + "\n")
        finally:
            node.stop()
    assert realnode.leftovers(before, base / "node") == {}


@pytest.fixture(scope="module")
def first_up(walk: Walk) -> dict[str, Any]:
    t0 = time.monotonic()
    walk.project.up()
    walk.figures["pulumi up, first (s)"] = time.monotonic() - t0
    address = walk.issue()
    login = walk.ssh_eventually("alice", "true", address, deadline=60)
    assert login.returncode == 0
    walk.figures["up to first login (s)"] = time.monotonic() - t0
    return address


def test_up_runs_the_login_pod_on_the_real_node_and_it_becomes_ready(walk: Walk, first_up: dict[str, Any]) -> None:
    pod = walk.pod()
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True", pod["status"]
    login = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "login")
    assert login["image"].endswith(RELEASE.ref) and login["state"].get("running"), login
    assert first_up["host"] == LB_ADDRESS


def test_the_pod_runs_in_its_mode(walk: Walk, first_up: dict[str, Any]) -> None:
    out = walk.ssh("alice", "cat /proc/1/comm; hostname", first_up).stdout.split()
    if walk.mode == "unprivileged":
        assert out[0] == "sshd", out  # the entry point ran rc.local, then exec'd sshd
        return
    assert out == ["systemd", "walkthrough"], out
    # rc-local.service finished before ssh.service started (sshd waits for the boot script)
    show = walk.ssh(
        "alice",
        "systemctl show -p ActiveEnterTimestampMonotonic rc-local.service; "
        "systemctl show -p ExecMainStartTimestampMonotonic ssh.service; "
        "systemctl is-system-running || true",
        first_up,
    ).stdout.split()
    rc_local = int(show[0].split("=")[1])
    sshd = int(show[1].split("=")[1])
    assert 0 < rc_local <= sshd, show
    assert show[2] == "running", f"systemd in the pod is {show[2]} (failed units?)"


def test_known_hosts_is_only_the_stacks_cert_authority_line(walk: Walk, first_up: dict[str, Any]) -> None:
    lines = [line for line in first_up["known_hosts"].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("@cert-authority "), lines
    assert lines[0] == walk.project.outputs()["knownHostsLine"].strip()


def test_a_student_logs_in_and_writes_a_file_in_the_home(walk: Walk, first_up: dict[str, Any]) -> None:
    t0 = time.monotonic()
    out = walk.ssh(
        "alice",
        f"echo {TOKEN} > ~/walkthrough.txt && id -u && stat -c '%u %U' ~/walkthrough.txt "
        "&& cat /ready >/dev/null && echo ready",
        first_up,
    ).stdout.split("\n")
    walk.figures["login latency (s)"] = time.monotonic() - t0
    uid, owner, ready = out[0], out[1], out[2]
    assert owner == f"{uid} alice" and ready == "ready", out
    walk.alice_uid = uid


def test_destroy_and_up_again_give_the_same_file_owner_and_uid(walk: Walk, first_up: dict[str, Any]) -> None:
    uid = walk.alice_uid
    assert uid, "the first login did not run"
    walk.project.run("destroy", "--yes", "--skip-preview", "--exclude-protected")
    gone_deadline = time.monotonic() + 120
    while kget(str(walk.cluster.kubeconfig), "pods", "-n", NAMESPACE)["items"] and time.monotonic() < gone_deadline:
        time.sleep(1)
    assert not kget(str(walk.cluster.kubeconfig), "pods", "-n", NAMESPACE)["items"], "the login pod outlived destroy"
    t0 = time.monotonic()
    walk.project.up()
    address = walk.issue()
    out = walk.ssh_eventually(
        "alice", "cat ~/walkthrough.txt && id -u && stat -c '%u %U' ~/walkthrough.txt", address, deadline=60
    ).stdout.split("\n")
    walk.figures["reinstall up to login (s)"] = time.monotonic() - t0
    assert out[:3] == [TOKEN, uid, f"{uid} alice"], out


def test_a_students_own_authorized_keys_is_ignored(walk: Walk, first_up: dict[str, Any]) -> None:
    address = walk.issue()
    # a key of bob's own, on no roster: only ~/.ssh/authorized_keys could let it in
    walk.ssh("bob", f"mkdir -p ~/.ssh && echo '{walk.pubs['bob-own']}' > ~/.ssh/authorized_keys", address)
    refused = subprocess.run(
        walk.ssh_argv("bob", address, "true", cert=False, key="bob-own"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    walk.ssh("bob", "true", address)  # his certificate still works


def test_a_student_added_to_the_roster_gets_in_without_a_pod_restart(walk: Walk, first_up: dict[str, Any]) -> None:
    pod_before = walk.pod()["metadata"]["uid"]
    walk.project.set_config("roster", stack_config(walk.pubs, ["alice", "bob", "carol"], walk.mode)["roster"])
    walk.project.up()
    address = walk.issue()
    walk.ssh_eventually("carol", "true", address)
    after = walk.pod()
    if after["metadata"]["uid"] != pod_before:
        events = kubectl_text(walk, "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp")
        revisions = kubectl_text(walk, "get", "controllerrevisions", "-n", NAMESPACE, "-o", "yaml")
        raise AssertionError(f"the roster change restarted the pod:\n{events}\n{revisions[-6000:]}")


def test_a_removed_student_is_locked_out_and_their_session_ends(walk: Walk, first_up: dict[str, Any]) -> None:
    address = walk.issue()
    session = subprocess.Popen(
        walk.ssh_argv("bob", address, "echo open; sleep 600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout is not None and session.stdout.readline().strip() == "open"
        walk.project.set_config("roster", stack_config(walk.pubs, ["alice", "carol"], walk.mode)["roster"])
        walk.project.up()
        session.wait(timeout=ROSTER_DEADLINE)  # the reconciler kills bob's processes
        end = time.monotonic() + ROSTER_DEADLINE
        while (refused := walk.ssh("bob", "true", address, check=False)).returncode == 0 and time.monotonic() < end:
            time.sleep(2)
        assert refused.returncode != 0, "bob still gets in after leaving the roster"
        walk.ssh("alice", "true", address)
    finally:
        session.kill()
        session.wait()


def test_after_access_end_no_student_gets_in_and_open_sessions_end(walk: Walk, first_up: dict[str, Any]) -> None:
    # the last test: it ends the term. accessEnd a little after this `up`, as an exact date-time
    access_end = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=75)
    config = stack_config(walk.pubs, ["alice", "carol"], walk.mode)
    walk.project.set_config("term", {**config["term"], "end": access_end.isoformat().replace("+00:00", "Z")})
    walk.project.up()
    address = walk.issue()
    session = subprocess.Popen(
        walk.ssh_argv("carol", address, "echo open; sleep 900"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout is not None and session.stdout.readline().strip() == "open"
        left = (access_end - datetime.datetime.now(datetime.UTC)).total_seconds()
        assert left > 0, "the term ended before the session opened; the test's margin is too small"
        # the reconciler ends every student's session within its interval after accessEnd
        session.wait(timeout=left + ROSTER_DEADLINE)
        refused = walk.ssh("alice", "true", address, check=False)
        assert refused.returncode == 255, "a student still gets in after accessEnd"
    finally:
        session.kill()
        session.wait()
