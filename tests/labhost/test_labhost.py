"""LabHost against a real sshd in a network namespace.

Two levels:
- the host-side scripts LabHost ships (CA verification, installer, cluster
  create/delete) driven over real OpenSSH — needs no Pulumi engine. The
  installer/cluster-command test and the edge-router test run the REAL k3d on a
  real throwaway dockerd inside the lab host's namespace (conftest.lab_engine),
  nodes being the stand-in images (tests/labs/k3s_standin): containers, k3d's
  labels, published ports, stop on the last session close, Traefik on the lab
  host routing by Host and by SNI to each student's real cluster;
- the LabHost component under the REAL Pulumi engine and pulumi-command
  provider (`pulumi up` with a local file backend), run inside the namespace,
  on the same real k3d: "a no-op `up` does nothing" and "a refused host gets
  no command" read as unchanged k3d containers (Ids, StartedAt, FinishedAt),
  and `destroy` as every student's containers gone while labd's files stay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.labconfig import LabHostSpec, parse_labs
from components.labs import LABD_PACKAGE, VERIFY_SCRIPT, cluster_commands, install_command, install_manifest
from tests.e2e.project import toolchain_env
from tests.labhost.conftest import Ca, Netns, Sshd, real_k3d, run, start_sshd, toolchain_binary
from tests.labs.docker_env import Dockerd
from tests.labs.traefik_env import HTTP_CLIENT, TLS_CLIENT
from tests.prereq import missing
from tests.sshclient import ssh_argv as client_argv

REPO = Path(__file__).resolve().parents[2]
PROGRAM = Path(__file__).resolve().parent / "program"
SECRET = "x" * 48


def labs_raw(engine_key: Path, install_root: Path, k3d: Path, labd_port: int, **host: Any) -> dict[str, Any]:
    return {
        "domain": "lab.example.test",
        "idleTimeout": "30m",
        "hosts": [
            {
                "name": "lab1",
                "address": "10.231.0.2",
                "principal": "lab1.example.test",
                "capacity": 10,
                "installRoot": str(install_root),
                "serviceManager": "none",
                "k3dBinary": str(k3d),
                "labdPort": labd_port,
                "traefikBinary": "/nonexistent/traefik",
                "python": "/usr/bin/python3",
                # One engine for all: the DOUBLE talks to none, the real k3d to the test's throwaway dockerd
                # (its DOCKER_HOST baked into the wrapper). The rootless default is tests/labs/test_isolation.py's.
                "engine": "shared",
                **host,
            }
        ],
        "ssh": {"privateKey": engine_key.read_text()},
        "sessionKey": SECRET,
        "adminKey": SECRET,
    }


def ssh_argv(ns: Netns, ca: Ca, key: Path, known_hosts: Path, address: str, principal: str) -> list[str]:
    known_hosts.write_text(f"@cert-authority {principal} {ca.public}\n")
    return ns.exec(
        *client_argv(f"root@{address}", identity=key, known_hosts=known_hosts, options=[f"HostKeyAlias={principal}"])
    )


def labd_healthy(ns: Netns, port: int) -> bool:
    probe = run(
        *ns.exec(
            sys.executable, "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/healthz', timeout=3)"
        ),
        check=False,
    )
    return probe.returncode == 0


# Run inside the lab host's namespace: one request to labd, signed as the login server's hook signs it.
LABD_CLIENT = """
import json, sys, urllib.request, urllib.error
from labd.auth import sign
port, key_id, method, path, user, body = sys.argv[1:7]
data = body.encode()
host = f"10.231.0.2:{port}"
headers = sign(sys.argv[7].encode(), key_id, method, path, user, data, host=host)
request = urllib.request.Request(f"http://{host}{path}", data=data or None, method=method, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=30) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read() or b"{}")}))
except urllib.error.HTTPError as err:
    print(json.dumps({"status": err.code, "body": err.read().decode(errors="replace")}))
"""


def labd_call(ns: Netns, port: int, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    """(status, body) of one signed request to the lab host's labd (the session key; admin for admin paths)."""
    key_id = "admin" if user == "admin" else "session"
    data = "" if body is None else json.dumps(body)
    argv = [sys.executable, "-c", LABD_CLIENT, str(port), key_id, method, path, user, data, SECRET]
    done = run(*ns.exec("env", f"PYTHONPATH={REPO / 'containers' / 'labd'}", *argv), check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return int(out["status"]), out["body"]


def cluster_containers(docker: Dockerd, cluster: str) -> dict[str, dict[str, Any]]:
    """name -> `docker inspect` of every container k3d labelled as cluster's."""
    ids = docker.docker("ps", "-aq", "--filter", f"label=k3d.cluster={cluster}").stdout.split()
    return {c["Name"].lstrip("/"): c for c in json.loads(docker.docker("inspect", *ids).stdout)} if ids else {}


def running(docker: Dockerd, cluster: str) -> dict[str, bool]:
    return {name: c["State"]["Running"] for name, c in cluster_containers(docker, cluster).items()}


def k3d_containers(docker: Dockerd) -> dict[str, tuple[str, str, str, str, bool]]:
    """Every k3d container on the engine: name -> (its cluster, Id, StartedAt, FinishedAt, Running).

    What "k3d did nothing" means on a real engine: no container made, removed,
    started or stopped (a stop of a stopped one changes nothing either).
    """
    ids = docker.docker("ps", "-aq", "--filter", "label=k3d.cluster").stdout.split()
    inspected = json.loads(docker.docker("inspect", *ids).stdout) if ids else []
    return {
        c["Name"].lstrip("/"): (
            c["Config"]["Labels"]["k3d.cluster"],
            c["Id"],
            c["State"]["StartedAt"],
            c["State"]["FinishedAt"],
            c["State"]["Running"],
        )
        for c in inspected
    }


def clusters_of(containers: dict[str, tuple[str, str, str, str, bool]]) -> dict[str, bool]:
    """cluster -> whether any of its containers runs."""
    out: dict[str, bool] = {}
    for cluster, *_times, up in containers.values():
        out[cluster] = out.get(cluster, False) or bool(up)
    return out


def wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


# ------------------------------------------------------------------ scripts over real OpenSSH


def run_verify(netns: Netns, ca: Ca, address: str, **credentials: str) -> subprocess.CompletedProcess[str]:
    """The verify step exactly as LabHost's command.local.Command runs it: ["/bin/sh", "-c"], the script as text.

    credentials: LABHOST_* overrides (KEY or AGENT, PRINCIPAL), by suffix.
    """
    env = {
        **os.environ,
        "LABHOST_ADDRESS": address,
        "LABHOST_PORT": "22",
        "LABHOST_USER": "root",
        "LABHOST_PRINCIPAL": "lab1.example.test",
        "LABHOST_CA": ca.public,
        **{f"LABHOST_{name}": value for name, value in credentials.items()},
    }
    return run(*netns.exec("/bin/sh", "-c", VERIFY_SCRIPT.read_text()), env=env, check=False)


def test_verify_script_accepts_only_a_host_certified_by_the_class_ca(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    ca, other, engine = pki
    good = start_sshd(netns, tmp_path / "good", "10.231.0.2", ca, "lab1.example.test", engine)
    rogue = start_sshd(netns, tmp_path / "rogue", "10.231.0.3", other, "lab1.example.test", engine)
    sshd_factory.extend([good, rogue])
    key = engine.read_text()

    ok = run_verify(netns, ca, good.address, KEY=key)
    assert ok.returncode == 0, ok.stderr
    presented = ok.stdout.split()
    # The ed25519 certificate: pulumi-command can pin it (an RSA one it cannot, see the script).
    ed25519_cert = (good.directory / "ssh_host_ed25519_key-cert.pub").read_text().split()
    assert presented == ed25519_cert[:2]

    refused = run_verify(netns, ca, rogue.address, KEY=key)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "failed host verification against the class CA" in refused.stderr
    assert "Host key verification failed" in refused.stderr

    wrong_name = run_verify(netns, ca, good.address, KEY=key, PRINCIPAL="lab2.example.test")
    assert wrong_name.returncode == 1 and "not a listed principal" in wrong_name.stderr


def test_verify_script_refuses_a_host_with_only_an_rsa_certificate(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    # pulumi-command would pin it as ssh-rsa-cert-v01 (SHA-1), which sshd refuses: fail here, clearly.
    ca, _, engine = pki
    sshd_factory.append(
        start_sshd(netns, tmp_path / "rsa", "10.231.0.2", ca, "lab1.example.test", engine, key_types=("rsa",))
    )
    refused = run_verify(netns, ca, "10.231.0.2", KEY=engine.read_text())
    assert refused.returncode == 1 and refused.stdout == ""
    assert "an ed25519 or ECDSA host certificate is needed" in refused.stderr


def test_verify_step_logs_in_with_a_user_certificate_from_an_agent(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    """labs.ssh.agentSocket: the engine's key and its user certificate live in ssh-agent."""
    ca, _, engine = pki
    # No authorized key for root: only a certificate from the class CA gets in.
    sshd_factory.append(
        start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", None, trusted_user_ca=ca)
    )
    run("ssh-keygen", "-q", "-s", str(ca.key), "-I", "pulumi-engine", "-n", "root", "-V", "-5m:+1h", f"{engine}.pub")
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        added = run("ssh-add", str(engine), env={**os.environ, "SSH_AUTH_SOCK": str(socket)}, check=False)
        assert "Certificate added" in added.stderr, added.stderr
        ok = run_verify(netns, ca, "10.231.0.2", AGENT=str(socket))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.split()[0] == "ssh-ed25519-cert-v01@openssh.com"
        # Without the agent (and without a key) the same host refuses the login.
        refused = run_verify(netns, ca, "10.231.0.2", AGENT="/nonexistent")
        assert refused.returncode == 1
    finally:
        agent.terminate()
        agent.wait(timeout=5)


@dataclass
class Installed:
    spec: LabHostSpec
    ssh: list[str]
    install: str
    manifest: str
    root: Path
    port: int


def install_over_ssh(
    netns: Netns,
    pki: tuple[Ca, Ca, Path],
    sshd_factory: list[Sshd],
    tmp_path: Path,
    students: list[str],
    port: int,
    docker: Dockerd,
    labd: dict[str, Any] | None = None,
    **host: Any,
) -> Installed:
    """Ship labd the way LabHost does (staged package + installer manifest on stdin), over real OpenSSH.

    docker: labd's k3d is the REAL k3d on that engine; labd: keys set in the shipped labd.json.
    """
    ca, _, engine = pki
    sshd_factory.append(start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", engine))
    root = tmp_path / "host-root"
    raw = labs_raw(engine, root, real_k3d(tmp_path / "k3d", docker), port, **host)
    labs = parse_labs({"labs": raw}, base_dir=tmp_path, people=[_Person(u) for u in students])
    spec = labs.hosts[0]
    stage = root / "var/lib/classroom-lab/stage/labd-test"
    shutil.copytree(LABD_PACKAGE, stage, ignore=shutil.ignore_patterns("__pycache__"))  # what CopyToRemote does
    built = install_manifest(spec, labs, "cis90", "fall2026", str(stage), labs.students_on("lab1"))
    for item in built["files"]:
        if labd and item["path"] == "/etc/labd/labd.json":
            item["content"] = json.dumps({**json.loads(item["content"]), **labd})
    manifest = json.dumps(built)
    ssh = ssh_argv(netns, ca, engine, tmp_path / "known_hosts", "10.231.0.2", "lab1.example.test")
    return Installed(spec, ssh, install_command(spec), manifest, root, port)


def test_installer_and_cluster_commands_over_real_ssh(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path, lab_engine: Dockerd
) -> None:
    # stopGrace 0 and a fast reaper: the stop on the last session close is seen within the test.
    host = install_over_ssh(
        netns,
        pki,
        sshd_factory,
        tmp_path,
        ["alice", "bob"],
        18787,
        docker=lab_engine,
        labd={"stopGrace": 0, "reaperInterval": 0.5, "k3dTimeout": 120},
    )
    spec, ssh, root = host.spec, host.ssh, host.root
    stale = root / "var/lib/classroom-lab/stage/labd-0ld"
    stale.mkdir()

    first = run(*ssh, host.install, input=host.manifest, check=False)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["restarted"] == ["labd"]  # Traefik is optional and absent here
    assert (root / "opt/classroom-lab/labd/__init__.py").exists()
    assert (root / "etc/labd/admin.key").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/labd/roster").read_text().split() == ["alice", "bob"]
    assert labd_healthy(netns, host.port)
    assert not stale.exists()  # older staged labd copies are pruned

    again = run(*ssh, host.install, input=host.manifest, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"changed": [], "restarted": []}

    # `create` makes each cluster for real through labd and the real k3d, then stops it.
    for user in ("alice", "bob"):
        create, _ = cluster_commands(spec, user)
        done = run(*ssh, create, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["action"] == "created"
        nodes = cluster_containers(lab_engine, f"lab-{user}")
        server, lb = f"k3d-lab-{user}-server-0", f"k3d-lab-{user}-serverlb"
        assert set(nodes) == {server, lb}
        assert nodes[server]["Config"]["Labels"]["k3d.role"] == "server"
        assert nodes[lb]["Config"]["Labels"]["k3d.role"] == "loadbalancer"
        assert {n: c["State"]["Running"] for n, c in nodes.items()} == {server: False, lb: False}
    created = {n: c["Id"] for n, c in cluster_containers(lab_engine, "lab-alice").items()}

    # `create` again keeps the cluster: the same containers, still stopped.
    kept = run(*ssh, cluster_commands(spec, "alice")[0], check=False)
    assert json.loads(kept.stdout)["action"] == "kept"
    assert {n: c["Id"] for n, c in cluster_containers(lab_engine, "lab-alice").items()} == created
    assert set(running(lab_engine, "lab-alice").values()) == {False}

    # A login (session open) starts those same containers; the route points at the port k3d published.
    status, body = labd_call(
        netns, host.port, "POST", "/v1/users/alice/sessions", "alice", {"session": "s1", "host": "login1"}
    )
    assert status in (200, 202), body
    labd_call(netns, host.port, "POST", "/v1/users/alice/sessions", "alice", {"session": "s2", "host": "login1"})
    wait_until(
        lambda: labd_call(netns, host.port, "GET", "/v1/users/alice/status", "alice")[1].get("state") == "running",
        "alice running",
    )
    nodes = cluster_containers(lab_engine, "lab-alice")
    assert {n: c["Id"] for n, c in nodes.items()} == created
    assert set(running(lab_engine, "lab-alice").values()) == {True}
    http_port = nodes["k3d-lab-alice-serverlb"]["HostConfig"]["PortBindings"]["80/tcp"][0]
    assert http_port["HostIp"] == "127.0.0.1"
    routes = (root / "var/lib/labd/traefik/labs.yaml").read_text()
    assert f"127.0.0.1:{http_port['HostPort']}" in routes and "alice.lab.example.test" in routes
    assert "k3s STAND-IN ingress k3d-lab-alice-server-0" in (lab_engine.fetch(int(http_port["HostPort"])) or "")

    # One of two sessions closes: still running. The last one closes: the reaper stops it.
    labd_call(netns, host.port, "DELETE", "/v1/users/alice/sessions/s1", "alice")
    time.sleep(2)
    assert set(running(lab_engine, "lab-alice").values()) == {True}
    labd_call(netns, host.port, "DELETE", "/v1/users/alice/sessions/s2", "alice")
    wait_until(lambda: set(running(lab_engine, "lab-alice").values()) == {False}, "alice stopped after the last logout")
    assert labd_call(netns, host.port, "GET", "/v1/users/alice/status", "alice")[1]["state"] == "stopped"

    gone = run(*ssh, cluster_commands(spec, "bob")[1], check=False)
    assert gone.returncode == 0, gone.stderr
    assert cluster_containers(lab_engine, "lab-bob") == {}
    assert set(cluster_containers(lab_engine, "lab-alice")) == set(created)

    # A changed labd config restarts labd; a roster change alone does not.
    changed = json.loads(host.manifest)
    for item in changed["files"]:
        if item["path"] == "/etc/labd/roster":
            item["content"] = "alice\n"
    roster_only = run(*ssh, host.install, input=json.dumps(changed), check=False)
    assert json.loads(roster_only.stdout) == {"changed": ["/etc/labd/roster"], "restarted": []}


def test_edge_router_routes_each_student_host_to_their_cluster(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path, lab_engine: Dockerd
) -> None:
    traefik = toolchain_binary("traefik")
    if traefik is None:
        missing("Traefik from the toolchain is not built yet (tools/toolchain.sh traefik)")
    host = install_over_ssh(
        netns,
        pki,
        sshd_factory,
        tmp_path,
        ["alice", "bob"],
        18789,
        docker=lab_engine,
        labd={"k3dTimeout": 120},
        traefikBinary=str(traefik),
    )
    first = run(*host.ssh, host.install, input=host.manifest, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["restarted"] == ["labd", "traefik"]
    for user in ("alice", "bob"):
        status, body = labd_call(netns, host.port, "POST", f"/v1/users/{user}/ensure", user)
        assert status == 202, body
    for user in ("alice", "bob"):
        wait_until(
            lambda u=user: labd_call(netns, host.port, "GET", f"/v1/users/{u}/status", u)[1].get("state") == "running",
            f"{user} running",
            timeout=120,
        )

    def client(script: str, port: int, name: str) -> dict[str, Any]:
        done = run(*netns.exec(sys.executable, "-c", script, str(port), name), check=False)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def http(user: str) -> tuple[int, str]:
        out = client(HTTP_CLIENT, 80, f"{user}.lab.example.test")
        return int(out["status"]), str(out["body"])

    # Traefik (on the lab host's :80/:443, labd's file-provider output) to each student's REAL cluster.
    wait_until(lambda: http("alice")[0] == 200 and http("bob")[0] == 200, "Traefik routing both students", 30)
    for user in ("alice", "bob"):
        status, body = http(user)
        assert status == 200 and body.startswith(f"k3s STAND-IN ingress k3d-lab-{user}-server-0 "), body
        # HTTPS: a real ClientHello with SNI, passed through untouched to the student's node
        out = client(TLS_CLIENT, 443, f"{user}.lab.example.test")
        hello, got = str(out["hello"]), bytes.fromhex(out["got"])
        header = " ".join(hello[i : i + 2] for i in range(0, 10, 2))
        assert got == f"k3s STAND-IN tls k3d-lab-{user}-server-0 got {header} \n".encode(), got
    status, body = http("mallory")
    assert status == 404 and "STAND-IN" not in body
    assert b"STAND-IN" not in bytes.fromhex(client(TLS_CLIENT, 443, "mallory.lab.example.test")["got"])

    # A stopped cluster: the route stays, nothing answers (502), and it never reaches the other student.
    status, body = labd_call(netns, host.port, "POST", "/v1/users/bob/stop", "bob")
    assert status == 200 and body["state"] == "stopped", body
    status, body = http("bob")
    assert status == 502 and "STAND-IN" not in body
    assert http("alice")[1].startswith("k3s STAND-IN ingress k3d-lab-alice-server-0 ")


class _Person:
    def __init__(self, username: str, labs: bool = True) -> None:
        self.username = username
        self.labs = labs


# ------------------------------------------------------------------ the real engine


def engine_env() -> dict[str, str] | None:
    """The toolchain's environment (pulumi on PATH, its PULUMI_HOME), or None without the command plugin."""
    env = {**os.environ, **toolchain_env()}
    if not shutil.which("pulumi", path=env["PATH"]):
        return None
    plugins = run("pulumi", "plugin", "ls", "--json", env=env, check=False)
    try:
        listed = json.loads(plugins.stdout or "[]")
    except json.JSONDecodeError:
        return None
    if not any(p.get("name") == "command" and p.get("version") == "1.2.1" for p in listed or []):
        return None
    return env


class Engine:
    """`pulumi` on a copy of the test program, run inside the network namespace."""

    def __init__(self, ns: Netns, root: Path, env: dict[str, str]) -> None:
        self.ns = ns
        self.dir = root / "program"
        shutil.copytree(PROGRAM, self.dir)
        (self.dir / "Pulumi.yaml").write_text(
            "name: labhost-test\nruntime:\n  name: python\n  options:\n"
            f"    toolchain: pip\n    virtualenv: {REPO / '.venv'}\n"
        )
        backend = root / "backend"
        backend.mkdir()
        self.config = root / "labs.json"
        self.env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "labhost-test",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "NO_COLOR": "1",
            "PULUMI_HOME": env.get("PULUMI_HOME", str(Path.home() / ".pulumi")),
            "CLASSROOM_REPO": str(REPO),
            "LABHOST_TEST_CONFIG": str(root / "labs.json"),
        }
        self.pulumi("stack", "init", "test")

    def write(self, data: dict[str, Any]) -> None:
        self.config.write_text(json.dumps(data))

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.ns.exec("pulumi", *args, "--non-interactive"),
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def up(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pulumi("up", "--yes", "--skip-preview", check=check)

    def changes(self) -> dict[str, int]:
        done = self.pulumi("preview", "--json")
        return {k: v for k, v in json.loads(done.stdout).get("changeSummary", {}).items() if k != "same"}


def test_real_engine_up_noop_remove_and_refuse(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path, lab_engine: Dockerd
) -> None:
    env = engine_env()
    if env is None:
        missing("no pulumi CLI with the command 1.2.1 plugin (tools/toolchain.sh engine)")
    ca, other, engine = pki
    sshd_factory.append(start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", engine))
    sshd_factory.append(start_sshd(netns, tmp_path / "rogue", "10.231.0.3", other, "lab1.example.test", engine))
    root = tmp_path / "host-root"
    port = 18788
    raw = labs_raw(engine, root, real_k3d(tmp_path / "k3d", lab_engine), port)
    students = ["alice", "bob", "carol"]
    program = Engine(netns, tmp_path, env)

    program.write({"labs": raw, "people": [{"username": u} for u in students], "caPublicKey": ca.public})
    program.up()
    assert (root / "opt/classroom-lab/labd/__init__.py").exists()
    assert json.loads((root / "etc/labd/labd.json").read_text())["labDomain"] == "lab.example.test"
    assert labd_healthy(netns, port)
    # Each student's cluster made for real by labd through k3d, and stopped until they log in.
    made = k3d_containers(lab_engine)
    assert clusters_of(made) == {f"lab-{u}": False for u in students}
    assert len(made) == 2 * len(students)  # a server node and a loadbalancer each

    # A second `up` with the same inputs changes nothing, anywhere: no container made, started or stopped.
    assert program.changes() == {}
    program.up()
    assert k3d_containers(lab_engine) == made

    # Removing one student deletes exactly their cluster; the others' containers are untouched.
    program.write({"labs": raw, "people": [{"username": u} for u in ("alice", "carol")], "caPublicKey": ca.public})
    assert program.changes() == {"delete": 1, "update": 1}  # bob's cluster; the host's roster file
    program.up()
    kept = {name: c for name, c in made.items() if c[0] != "lab-bob"}
    assert k3d_containers(lab_engine) == kept

    # A host whose certificate is not from the class CA is refused before any command runs on it.
    rogue = {**raw, "hosts": [{**raw["hosts"][0], "address": "10.231.0.3"}]}
    program.write({"labs": rogue, "people": [{"username": "alice"}, {"username": "carol"}], "caPublicKey": ca.public})
    failed = program.up(check=False)
    assert failed.returncode != 0
    assert "failed host verification against the class CA" in failed.stdout + failed.stderr
    assert k3d_containers(lab_engine) == kept

    # A pinned host key that does not match is refused by pulumi-command itself: dan gets no cluster.
    wrong_pin = (tmp_path / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    wrong_pin[1] = (tmp_path / "rogue" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    pinned = {**raw, "hosts": [{**raw["hosts"][0], "hostKey": " ".join(wrong_pin)}]}
    program.write(
        {
            "labs": pinned,
            "people": [{"username": "alice"}, {"username": "carol"}, {"username": "dan"}],
            "caPublicKey": ca.public,
        }
    )
    refused = program.up(check=False)
    assert refused.returncode != 0
    assert k3d_containers(lab_engine) == kept

    # Back on the real host, then `destroy`: every student's cluster is deleted, labd stops, and its files and
    # state stay on the host (uninstall stops services only).
    program.write({"labs": raw, "people": [{"username": "alice"}, {"username": "carol"}], "caPublicKey": ca.public})
    program.up()
    assert {name: c[:2] for name, c in k3d_containers(lab_engine).items()} == {n: c[:2] for n, c in kept.items()}
    program.pulumi("destroy", "--yes", "--skip-preview")
    assert k3d_containers(lab_engine) == {}
    assert not labd_healthy(netns, port)
    assert (root / "etc/labd/labd.json").is_file() and (root / "var/lib/labd/state.json").is_file()
    assert json.loads(program.pulumi("stack", "export").stdout)["deployment"].get("resources") in (None, [])
