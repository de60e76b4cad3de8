"""Isolation: a student's cluster-admin is not root on the lab host (issue #11).

The REAL labd (as root, `"engine": "rootless"`, the default) runs two
students' clusters with the REAL k3d, each under a rootless dockerd of its
own owned by a host user of its own (tests/labs/rootless_env.py). The node
image is the STAND-IN (tests/labs/k3s_standin), so "cluster-admin" here is
what it amounts to on a k3d node: root in a privileged node container. These
tests check where that root lands on the host and attack from there:

- each cluster's containers are in that student's engine only, not in the
  other's and not in the root engine;
- the engine's processes and the node's processes run as the student's host
  uid (never 0), and the node's root maps to that uid;
- the engines' runtime and data directories are 0700 and owned by that user;
- from inside a node (docker exec as its root) the host's Docker sockets and
  labd's keys are not there to be reached;
- a process running as that host uid (what escaping the node gives) is
  refused the other student's socket and files, the root engine's socket and
  labd's keys, cannot signal the other's engine, and after the attack the
  keys are unchanged and the other student's cluster still runs;
- labd re-adopts both clusters from their own engines after losing its
  state, on their published ports; deleting a student removes their engine
  and host user and leaves the other's alone.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.labs.docker_env import Dockerd
from tests.labs.rootless_env import RootlessLab, as_uid, missing_tools, probe, tun_problem
from tests.labs.support import wait_for

STUDENTS = ("alice", "bob")


def fetch(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def wait_running(lab: RootlessLab, user: str) -> None:
    try:
        wait_for(lambda: lab.labd.status(user)["state"] == "running", timeout=240, what=f"{user}'s cluster running")
    except AssertionError as err:
        log = (lab.labd.root / "labd.log").read_text()[-3000:]
        raise AssertionError(f"{err}; labd says {lab.labd.status(user)}; labd.log ends:\n{log}") from None


@pytest.fixture(scope="module")
def lab(k3d_binary: str, docker_engine: Dockerd) -> Iterator[RootlessLab]:
    problem = tun_problem()
    missing = missing_tools()
    if problem or missing:
        pytest.fail(
            f"rootless engines cannot run here: {problem or ''} {('missing: ' + ', '.join(missing)) if missing else ''}"
            " (tools/setup.sh system installs rootlesskit, slirp4netns, uidmap and sets /dev/net/tun 0666)"
        )
    lab = RootlessLab(k3d_binary, docker_engine)
    try:
        lab.labd.start()
        for user in STUDENTS:
            status, body = lab.labd.request("POST", f"/v1/users/{user}/ensure", user)
            assert status == 202, body
        for user in STUDENTS:
            wait_running(lab, user)
        yield lab
    finally:
        lab.stop()


def containers(lab: RootlessLab, student: str) -> dict[str, dict[str, Any]]:
    ids = lab.docker(student, "ps", "-aq").stdout.split()
    if not ids:
        return {}
    return {c["Name"].lstrip("/"): c for c in json.loads(lab.docker(student, "inspect", *ids).stdout)}


def test_each_cluster_runs_in_its_students_engine_only(lab: RootlessLab, docker_engine: Dockerd) -> None:
    for student, other in (("alice", "bob"), ("bob", "alice")):
        mine = containers(lab, student)
        assert {f"k3d-lab-{student}-server-0", f"k3d-lab-{student}-serverlb"} <= set(mine)
        assert all(c["Config"]["Labels"]["k3d.cluster"] == f"lab-{student}" for c in mine.values())
        assert not any(other in name for name in mine)
        info = json.loads(lab.docker(student, "info", "--format", "{{json .SecurityOptions}}").stdout)
        assert "name=rootless" in info
        # the published HTTP port reaches this student's own node
        ports = lab.labd.status(student)["ports"]
        assert f"k3s STAND-IN ingress k3d-lab-{student}-server-0" in (fetch(ports["http"]) or "")
    assert docker_engine.docker("ps", "-aq", "--filter", "label=k3d.cluster=lab-alice").stdout.strip() == ""
    assert docker_engine.docker("ps", "-aq", "--filter", "label=k3d.cluster=lab-bob").stdout.strip() == ""


def test_engines_and_nodes_run_as_the_students_host_user(lab: RootlessLab) -> None:
    uids = set()
    for student in STUDENTS:
        user = lab.host_user(student)
        assert user.pw_uid != 0 and user.pw_gecos == f"labd engine for {student}"
        uids.add(user.pw_uid)
        procs = lab.processes_of(student)
        names = {name for _, _, name in procs}
        assert {"rootlesskit", "dockerd", "containerd"} <= names, procs
        assert {uid for _, uid, _ in procs} == {user.pw_uid}, procs
        node = containers(lab, student)[f"k3d-lab-{student}-server-0"]
        assert node["HostConfig"]["Privileged"] is True  # as k3d makes it; the boundary is not "unprivileged"
        status = Path(f"/proc/{node['State']['Pid']}/status").read_text()
        assert status.split("Uid:")[1].split()[:4] == [str(user.pw_uid)] * 4
        # root in the node is the host user; its other ids are the user's own subordinate range
        uid_map = lab.docker(student, "exec", f"k3d-lab-{student}-server-0", "cat", "/proc/self/uid_map").stdout
        rows = [line.split() for line in uid_map.strip().splitlines()]
        assert rows[0] == ["0", str(user.pw_uid), "1"]
        assert all(int(row[1]) >= 100000 for row in rows[1:])
        assert lab.docker(student, "exec", f"k3d-lab-{student}-server-0", "id", "-u").stdout.strip() == "0"
    assert len(uids) == 2


def test_subordinate_ranges_do_not_overlap(lab: RootlessLab) -> None:
    for path in ("/etc/subuid", "/etc/subgid"):
        ranges = {}
        for line in Path(path).read_text().splitlines():
            name, start, count = line.split(":")
            if name in {lab.host_user(s).pw_name for s in STUDENTS}:
                ranges[name] = range(int(start), int(start) + int(count))
        assert len(ranges) == 2
        first, second = ranges.values()
        assert not set(first) & set(second)
        assert all(r.start > 65535 for r in ranges.values())


def test_runtime_and_data_directories_are_private(lab: RootlessLab) -> None:
    docker_gid = {g.gr_gid for g in grp.getgrall() if g.gr_name == "docker"}
    for student in STUDENTS:
        user = lab.host_user(student)
        for path in (lab.engines.run_dir(student), lab.engines.data_dir(student)):
            info = os.stat(path)
            assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o777)) == (user.pw_uid, user.pw_gid, "0o700")
        sock = os.stat(lab.engines.socket(student))
        assert sock.st_uid == user.pw_uid and sock.st_mode & 0o007 == 0
        groups = os.getgrouplist(user.pw_name, user.pw_gid)
        assert groups == [user.pw_gid] and not docker_gid & set(groups)


def test_inside_a_node_the_host_sockets_and_keys_are_not_there(lab: RootlessLab, docker_engine: Dockerd) -> None:
    node = "k3d-lab-alice-server-0"
    paths = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        str(docker_engine.socket),
        lab.engines.socket("alice"),
        lab.engines.socket("bob"),
        lab.labd.config["sessionKeyFile"],
        lab.labd.config["adminKeyFile"],
    ]
    for path in paths:
        done = lab.docker("alice", "exec", node, "ls", "-l", path, check=False)
        assert done.returncode != 0 and "No such file" in done.stderr, (path, done.stdout)
    # The classic way out of a privileged container: the kernel runs core_pattern's program as real root.
    # Root of a rootless node is not root of the host's user namespace, so the write is refused.
    host_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    done = lab.docker(
        "alice", "exec", node, "sh", "-c", "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern", check=False
    )
    assert done.returncode != 0 and ("denied" in done.stderr or "not permitted" in done.stderr), done.stderr
    assert Path("/proc/sys/kernel/core_pattern").read_text() == host_pattern


def test_an_escape_as_the_nodes_host_uid_reaches_nothing_else(lab: RootlessLab, docker_engine: Dockerd) -> None:
    alice = lab.host_user("alice")
    keys = [Path(lab.labd.config["sessionKeyFile"]), Path(lab.labd.config["adminKeyFile"])]
    before = {key: (key.read_bytes(), key.stat().st_mtime_ns) for key in keys}
    bob_ids = {name: c["Id"] for name, c in containers(lab, "bob").items()}
    bob_engine = int(Path(lab.engines.pid_file("bob")).read_text())
    attempts = [
        f"connect:{lab.engines.socket('bob')}",
        f"list:{lab.engines.run_dir('bob')}",
        f"list:{lab.engines.data_dir('bob')}",
        f"write:{lab.engines.data_dir('bob')}/planted",
        f"connect:{docker_engine.socket}",
        f"read:{keys[0]}",
        f"read:{keys[1]}",
        f"write:{keys[1]}",
        f"read:{lab.labd.config['stateFile']}",
        f"write:{lab.labd.config['traefik']['file']}",
        f"kill:{bob_engine}",
        # the positive control: the same probe reaches alice's own engine (so the refusals above are real)
        f"connect:{lab.engines.socket('alice')}",
    ]
    seen = probe(alice.pw_uid, alice.pw_gid, *attempts)
    assert seen.pop(f"connect:{lab.engines.socket('alice')}") == "ok"
    assert seen[f"kill:{bob_engine}"] == "EPERM"
    # the state file's and routes' directories are labd's: not even their names are reachable
    assert set(seen.values()) <= {"EACCES", "EPERM"}, seen
    assert len(seen) == len(attempts) - 1
    # and the docker CLI as alice's host user, pointed at bob's engine, is refused
    done = as_uid(alice.pw_uid, alice.pw_gid, "docker", "--host", lab.engines.docker_host("bob"), "ps")
    assert done.returncode != 0 and "permission denied" in done.stderr.lower()
    # nothing changed
    assert {key: (key.read_bytes(), key.stat().st_mtime_ns) for key in keys} == before
    assert {name: c["Id"] for name, c in containers(lab, "bob").items()} == bob_ids
    assert all(c["State"]["Running"] for c in containers(lab, "bob").values())
    assert not Path(lab.engines.data_dir("bob"), "planted").exists()
    assert lab.labd.status("bob")["state"] == "running"


def test_a_socket_pointed_at_the_root_engine_does_not_make_labd_a_deputy(
    lab: RootlessLab, docker_engine: Dockerd
) -> None:
    """The runtime directory is the student's: an escape can put a symlink to the root engine's socket
    where their docker.sock was. labd runs k3d and docker as that host user, so it gets EACCES, not root."""
    alice = lab.host_user("alice")
    bob_ids = {name: c["Id"] for name, c in containers(lab, "bob").items()}
    done = as_uid(alice.pw_uid, alice.pw_gid, "ln", "-sfn", str(docker_engine.socket), lab.engines.socket("alice"))
    assert done.returncode == 0, done.stderr
    assert os.path.islink(lab.engines.socket("alice"))
    status, body = lab.labd.request("POST", "/v1/users/alice/ensure", "alice")
    assert status == 202, body
    wait_for(lambda: lab.labd.status("alice")["state"] == "error", timeout=60, what="alice's ensure refused")
    assert "does not answer" in lab.labd.status("alice")["error"]
    assert docker_engine.docker("ps", "-aq", "--filter", "label=k3d.cluster=lab-alice").stdout.strip() == ""
    assert {name: c["Id"] for name, c in containers(lab, "bob").items()} == bob_ids
    # labd recovers once the engine is restarted (it removes what is left in the runtime directory)
    lab.engines.stop("alice")
    status, body = lab.labd.request("POST", "/v1/users/alice/ensure", "alice")
    assert status == 202, body
    wait_running(lab, "alice")
    assert not os.path.islink(lab.engines.socket("alice"))
    assert docker_engine.docker("ps", "-aq", "--filter", "label=k3d.cluster=lab-alice").stdout.strip() == ""


def test_a_stopped_cluster_stops_its_engine_and_ensure_brings_both_back(lab: RootlessLab) -> None:
    ids = {name: c["Id"] for name, c in containers(lab, "alice").items()}
    ports = lab.labd.status("alice")["ports"]
    starts = int((fetch(ports["http"]) or "start 0").split("start ")[-1])
    status, body = lab.labd.request("POST", "/v1/users/alice/stop", "alice")
    assert status == 200 and body["state"] == "stopped", body
    assert wait_for(lambda: lab.processes_of("alice") == [], timeout=60, what="alice's engine stopped")
    assert fetch(ports["http"]) is None
    assert lab.labd.status("bob")["state"] == "running" and lab.processes_of("bob")
    status, body = lab.labd.request("POST", "/v1/users/alice/ensure", "alice")
    assert status == 202, body
    wait_running(lab, "alice")
    assert {name: c["Id"] for name, c in containers(lab, "alice").items()} == ids
    assert f"k3s STAND-IN ingress k3d-lab-alice-server-0 start {starts + 1}" in (fetch(ports["http"]) or "")


def test_labd_readopts_each_engines_cluster_after_losing_its_state(lab: RootlessLab) -> None:
    ports = {u: lab.labd.status(u)["ports"] for u in STUDENTS}
    engine_pids = {u: Path(lab.engines.pid_file(u)).read_text() for u in STUDENTS}
    routes_file = Path(lab.labd.config["traefik"]["file"])
    routes = yaml.safe_load(routes_file.read_text())
    lab.labd.stop()
    Path(lab.labd.config["stateFile"]).unlink()
    routes_file.unlink()
    lab.labd.start()
    assert {u: lab.labd.status(u)["ports"] for u in STUDENTS} == ports
    assert all(lab.labd.status(u)["state"] == "running" for u in STUDENTS)
    assert yaml.safe_load(routes_file.read_text()) == routes
    # the engines outlived labd and were adopted, not started again
    assert {u: Path(lab.engines.pid_file(u)).read_text() for u in STUDENTS} == engine_pids
    for user in STUDENTS:
        assert f"ingress k3d-lab-{user}-server-0" in (fetch(ports[user]["http"]) or "")


def test_a_cluster_named_for_another_student_in_ones_engine_is_not_adopted(lab: RootlessLab) -> None:
    """An escaped student owns their engine: a 'lab-carol' cluster made there must not become carol's."""
    path = lab.root / "carol.yaml"
    path.write_text((lab.labd.root / "work" / "lab-alice.yaml").read_text().replace("lab-alice", "lab-carol"))
    config = yaml.safe_load(path.read_text())
    base = lab.port_base + 27
    config["kubeAPI"]["hostPort"] = str(base)
    config["ports"] = [
        {"port": f"{base + 1}:80", "nodeFilters": ["loadbalancer"]},
        {"port": f"{base + 2}:443", "nodeFilters": ["loadbalancer"]},
    ]
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(lab.k3d), "cluster", "create", "--config", str(path)],
        env={**os.environ, "DOCKER_HOST": lab.engines.docker_host("alice")},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    try:
        lab.labd.stop()
        Path(lab.labd.config["stateFile"]).unlink()
        lab.labd.start()
        status, body = lab.labd.request("GET", "/v1/clusters", "admin", key_id="admin")
        assert status == 200, body
        assert "carol" not in json.dumps(body)
        assert lab.labd.status("carol")["state"] == "absent"
    finally:
        subprocess.run(
            [str(lab.k3d), "cluster", "delete", "lab-carol"],
            env={**os.environ, "DOCKER_HOST": lab.engines.docker_host("alice")},
            capture_output=True,
            timeout=120,
            check=False,
        )


def test_delete_removes_the_students_engine_and_host_user_only(lab: RootlessLab) -> None:
    bob = lab.host_user("bob")
    status, body = lab.labd.request("DELETE", "/v1/users/bob", "admin", key_id="admin")
    assert status == 200 and body["state"] == "deleted", body
    with pytest.raises(KeyError):
        pwd.getpwnam(bob.pw_name)
    assert not Path(lab.engines.run_dir("bob")).exists() and not Path(lab.engines.data_dir("bob")).exists()
    assert wait_for(lambda: lab.processes_of("bob") == [], timeout=30, what="bob's engine gone")
    assert bob.pw_name not in Path("/etc/subuid").read_text()
    assert lab.labd.status("alice")["state"] == "running"
    assert all(c["State"]["Running"] for c in containers(lab, "alice").values())
