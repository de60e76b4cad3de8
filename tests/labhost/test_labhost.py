"""LabHost against a real sshd in a network namespace; k3d is the DOUBLE.

Two levels:
- the host-side scripts LabHost ships (CA verification, installer, cluster
  create/delete) driven over real OpenSSH — needs no Pulumi engine;
- the LabHost component under the REAL Pulumi engine and pulumi-command
  provider (`pulumi up` with a local file backend), run inside the namespace.
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

import pytest

from components.labconfig import LabHostSpec, parse_labs
from components.labs import LABD_PACKAGE, VERIFY_SCRIPT, cluster_commands, install_command, install_manifest
from tests.e2e.project import toolchain_env
from tests.labhost.conftest import Ca, Netns, Sshd, k3d_double, run, start_sshd
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
                # k3d here is the DOUBLE, which talks to no Docker engine: labd must not make host users and
                # rootless engines for it. The rootless default is tests/labs/test_isolation.py's, for real.
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


def double_calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["argv"] for line in path.read_text().splitlines() if line.strip()]


def mutating(state: Path) -> list[list[str]]:
    return [a for a in double_calls(state) if a[:2] != ["cluster", "list"]]


def double_clusters(state: Path) -> dict[str, Any]:
    path = state / "clusters.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def labd_healthy(ns: Netns, port: int) -> bool:
    probe = run(
        *ns.exec(
            sys.executable, "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/healthz', timeout=3)"
        ),
        check=False,
    )
    return probe.returncode == 0


# ------------------------------------------------------------------ scripts over real OpenSSH


def test_verify_script_accepts_only_a_host_certified_by_the_class_ca(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    ca, other, engine = pki
    good = start_sshd(netns, tmp_path / "good", "10.231.0.2", ca, "lab1.example.test", engine)
    rogue = start_sshd(netns, tmp_path / "rogue", "10.231.0.3", other, "lab1.example.test", engine)
    sshd_factory.extend([good, rogue])
    env = {
        **os.environ,
        "LABHOST_PORT": "22",
        "LABHOST_USER": "root",
        "LABHOST_PRINCIPAL": "lab1.example.test",
        "LABHOST_CA": ca.public,
        "LABHOST_KEY": engine.read_text(),
    }

    # Exactly as LabHost's command.local.Command runs it: interpreter ["/bin/sh", "-c"], the script as text.
    script = VERIFY_SCRIPT.read_text()
    ok = run(*netns.exec("/bin/sh", "-c", script), env={**env, "LABHOST_ADDRESS": good.address}, check=False)
    assert ok.returncode == 0, ok.stderr
    presented = ok.stdout.split()
    # The ed25519 certificate: pulumi-command can pin it (an RSA one it cannot, see the script).
    ed25519_cert = (good.directory / "ssh_host_ed25519_key-cert.pub").read_text().split()
    assert presented == ed25519_cert[:2]

    refused = run(*netns.exec("/bin/sh", "-c", script), env={**env, "LABHOST_ADDRESS": rogue.address}, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "failed host verification against the class CA" in refused.stderr
    assert "Host key verification failed" in refused.stderr

    wrong_name = run(
        *netns.exec("/bin/sh", "-c", script),
        env={**env, "LABHOST_ADDRESS": good.address, "LABHOST_PRINCIPAL": "lab2.example.test"},
        check=False,
    )
    assert wrong_name.returncode == 1 and "not a listed principal" in wrong_name.stderr


def test_verify_script_refuses_a_host_with_only_an_rsa_certificate(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    # pulumi-command would pin it as ssh-rsa-cert-v01 (SHA-1), which sshd refuses: fail here, clearly.
    ca, _, engine = pki
    sshd_factory.append(
        start_sshd(netns, tmp_path / "rsa", "10.231.0.2", ca, "lab1.example.test", engine, key_types=("rsa",))
    )
    env = {
        **os.environ,
        "LABHOST_ADDRESS": "10.231.0.2",
        "LABHOST_PORT": "22",
        "LABHOST_USER": "root",
        "LABHOST_PRINCIPAL": "lab1.example.test",
        "LABHOST_CA": ca.public,
        "LABHOST_KEY": engine.read_text(),
    }
    refused = run(*netns.exec("/bin/sh", "-c", VERIFY_SCRIPT.read_text()), env=env, check=False)
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
        env = {
            **os.environ,
            "LABHOST_ADDRESS": "10.231.0.2",
            "LABHOST_PORT": "22",
            "LABHOST_USER": "root",
            "LABHOST_PRINCIPAL": "lab1.example.test",
            "LABHOST_CA": ca.public,
            "LABHOST_AGENT": str(socket),
        }
        script = VERIFY_SCRIPT.read_text()
        ok = run(*netns.exec("/bin/sh", "-c", script), env=env, check=False)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.split()[0] == "ssh-ed25519-cert-v01@openssh.com"
        # Without the agent (and without a key) the same host refuses the login.
        refused = run(*netns.exec("/bin/sh", "-c", script), env={**env, "LABHOST_AGENT": "/nonexistent"}, check=False)
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
    state: Path
    port: int


def install_over_ssh(
    netns: Netns,
    pki: tuple[Ca, Ca, Path],
    sshd_factory: list[Sshd],
    tmp_path: Path,
    students: list[str],
    port: int,
    **host: Any,
) -> Installed:
    """Ship labd the way LabHost does (staged package + installer manifest on stdin), over real OpenSSH."""
    ca, _, engine = pki
    sshd_factory.append(start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", engine))
    root = tmp_path / "host-root"
    k3d, state = k3d_double(tmp_path)
    raw = labs_raw(engine, root, k3d, port, **host)
    labs = parse_labs({"labs": raw}, base_dir=tmp_path, people=[_Person(u) for u in students])
    spec = labs.hosts[0]
    stage = root / "var/lib/classroom-lab/stage/labd-test"
    shutil.copytree(LABD_PACKAGE, stage, ignore=shutil.ignore_patterns("__pycache__"))  # what CopyToRemote does
    manifest = json.dumps(install_manifest(spec, labs, "cis90", "fall2026", str(stage), labs.students_on("lab1")))
    ssh = ssh_argv(netns, ca, engine, tmp_path / "known_hosts", "10.231.0.2", "lab1.example.test")
    return Installed(spec, ssh, install_command(spec), manifest, root, state, port)


def test_installer_and_cluster_commands_over_real_ssh(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    host = install_over_ssh(netns, pki, sshd_factory, tmp_path, ["alice", "bob"], 18787)
    spec, ssh, root, state = host.spec, host.ssh, host.root, host.state
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

    for user in ("alice", "bob"):
        create, _ = cluster_commands(spec, user)
        done = run(*ssh, create, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["action"] == "created"
    assert sorted(a[:2] + a[-1:] for a in mutating(state) if a[1] == "stop") == [
        ["cluster", "stop", "lab-alice"],
        ["cluster", "stop", "lab-bob"],
    ]
    assert {n: c["running"] for n, c in double_clusters(state).items()} == {"lab-alice": False, "lab-bob": False}

    calls_before = len(mutating(state))
    kept = run(*ssh, cluster_commands(spec, "alice")[0], check=False)
    assert json.loads(kept.stdout)["action"] == "kept" and len(mutating(state)) == calls_before

    gone = run(*ssh, cluster_commands(spec, "bob")[1], check=False)
    assert gone.returncode == 0, gone.stderr
    assert mutating(state)[calls_before:] == [["cluster", "delete", "lab-bob"]]
    assert set(double_clusters(state)) == {"lab-alice"}

    # A changed labd config restarts labd; a roster change alone does not.
    changed = json.loads(host.manifest)
    for item in changed["files"]:
        if item["path"] == "/etc/labd/roster":
            item["content"] = "alice\n"
    roster_only = run(*ssh, host.install, input=json.dumps(changed), check=False)
    assert json.loads(roster_only.stdout) == {"changed": ["/etc/labd/roster"], "restarted": []}


def toolchain_binary(name: str) -> Path | None:
    out = run("bash", str(REPO / "tools" / "toolchain.sh"), "dir", check=False).stdout.strip()
    path = Path(out) / "bin" / name if out else None
    return path if path is not None and os.access(path, os.X_OK) else None


def test_edge_router_routes_each_student_host_to_their_cluster(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    traefik = toolchain_binary("traefik")
    if traefik is None:
        pytest.skip("Traefik from the toolchain is not built yet (tools/toolchain.sh traefik)")
    host = install_over_ssh(netns, pki, sshd_factory, tmp_path, ["alice"], 18789, traefikBinary=str(traefik))
    first = run(*host.ssh, host.install, input=host.manifest, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["restarted"] == ["labd", "traefik"]
    done = run(*host.ssh, cluster_commands(host.spec, "alice")[0], check=False)
    assert done.returncode == 0, done.stderr

    def status(host_header: str) -> str:
        code = (
            "import urllib.request as u, urllib.error as e\n"
            f"r = u.Request('http://127.0.0.1:80/', headers={{'Host': '{host_header}'}})\n"
            "try:\n    print(u.urlopen(r, timeout=5).status)\n"
            "except e.HTTPError as err:\n    print(err.code)\n"
            "except OSError:\n    print('down')\n"
        )
        return run(*netns.exec(sys.executable, "-c", code), check=False).stdout.strip()

    # Routed (the double's cluster has no ingress listening: 502 from Traefik)
    # versus not routed at all (404): labd's file-provider output reached Traefik.
    deadline = time.monotonic() + 20
    while status("alice.lab.example.test") != "502" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status("alice.lab.example.test") == "502"
    assert status("mallory.lab.example.test") == "404"


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
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path
) -> None:
    env = engine_env()
    if env is None:
        pytest.skip("no pulumi CLI with the command 1.2.1 plugin (tools/toolchain.sh engine)")
    ca, other, engine = pki
    sshd_factory.append(start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", engine))
    sshd_factory.append(start_sshd(netns, tmp_path / "rogue", "10.231.0.3", other, "lab1.example.test", engine))
    root = tmp_path / "host-root"
    k3d, state = k3d_double(tmp_path)
    port = 18788
    raw = labs_raw(engine, root, k3d, port)
    students = ["alice", "bob", "carol"]
    program = Engine(netns, tmp_path, env)

    program.write({"labs": raw, "people": [{"username": u} for u in students], "caPublicKey": ca.public})
    program.up()
    assert (root / "opt/classroom-lab/labd/__init__.py").exists()
    assert json.loads((root / "etc/labd/labd.json").read_text())["labDomain"] == "lab.example.test"
    assert labd_healthy(netns, port)
    created = sorted(a[-1] for a in mutating(state) if a[:2] == ["cluster", "create"])
    assert len(created) == 3
    assert {n: c["running"] for n, c in double_clusters(state).items()} == {f"lab-{u}": False for u in students}

    # A second `up` with the same inputs changes nothing, anywhere.
    calls = len(mutating(state))
    assert program.changes() == {}
    program.up()
    assert len(mutating(state)) == calls

    # Removing one student deletes exactly their cluster.
    program.write({"labs": raw, "people": [{"username": u} for u in ("alice", "carol")], "caPublicKey": ca.public})
    assert program.changes() == {"delete": 1, "update": 1}  # bob's cluster; the host's roster file
    program.up()
    assert mutating(state)[calls:] == [["cluster", "delete", "lab-bob"]]
    assert set(double_clusters(state)) == {"lab-alice", "lab-carol"}

    # A host whose certificate is not from the class CA is refused before any command runs on it.
    calls = len(mutating(state))
    rogue = {**raw, "hosts": [{**raw["hosts"][0], "address": "10.231.0.3"}]}
    program.write({"labs": rogue, "people": [{"username": "alice"}, {"username": "carol"}], "caPublicKey": ca.public})
    failed = program.up(check=False)
    assert failed.returncode != 0
    assert "failed host verification against the class CA" in failed.stdout + failed.stderr
    assert len(mutating(state)) == calls

    # A pinned host key that does not match is refused by pulumi-command itself.
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
    assert len(mutating(state)) == calls
    assert "lab-dan" not in double_clusters(state)
