"""`classroom roster revoke USER` must stop every way in: certificate, roster keys, imported keys,
and what is already open."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import yaml

from components.sshcert import sign_user_certificate
from ops import cli, roster
from tests.attack.conftest import STACK, Server, wait_until
from tests.ssh.sshd import ssh


def stack_project(server: Server, tmp: Path) -> Path:
    project = tmp / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: classroom\nruntime: python\nstackConfigDir: stacks\n")
    bob = {"username": "bob", "keys": [server.keys["bob"][1]], "github": "bob-gh", "labs": True}
    roster = [p if p["username"] != "bob" else bob for p in server.people]
    (project / "stacks" / f"Pulumi.{STACK}.yaml").write_text(
        yaml.safe_dump({"config": {"classroom:roster": roster, "classroom:term": server.term}}, sort_keys=False)
    )
    return project


def access(project: Path) -> dict[str, object]:
    return roster.access_raw(project / "stacks" / f"Pulumi.{STACK}.yaml")


def test_revoked_student_cannot_come_back_by_any_key(server: Server, tmp_path: Path) -> None:
    project = stack_project(server, tmp_path)
    doc = server.write_roster(raw=access(project))
    # bob's imported GitHub key, as an earlier online pass cached it (ssh-import-id).
    imported = server.keys["mallory"][1]
    digest = hashlib.sha256(b"gh:bob-gh").hexdigest()
    cache = server.root / "var/lib/classroom/imported/bob"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(f"# {digest}\n{imported}\n")
    assert server.reconcile().returncode == 0
    assert server.login("bob").returncode == 0
    assert server.login("bob", key="mallory").returncode == 0
    serial = next(p for p in doc["people"] if p["username"] == "bob")["certificates"][0]["serial"]
    now = int(time.time())
    cert = sign_user_certificate(
        (server.tmp / "ca").read_text(),
        server.keys["bob"][1],
        principal="bob",
        key_id="cis90/test/bob",
        serial=serial,
        valid_after=now - 3600,
        valid_before=now + 86400,
    )
    (tmp_path / "bob-cert.pub").write_text(cert + "\n")
    session = server.session("bob", "sleep 300")
    wait_until(lambda: server.processes("bob"), "bob's open session")

    assert cli.main(["roster", "--project", str(project), "revoke", "--stack", STACK, "bob"]) == 0
    server.write_roster(raw=access(project))
    result = server.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr

    assert server.login("bob").returncode == 255  # roster key
    assert server.login("bob", key="mallory").returncode == 255  # imported key
    server.sshd.mark()
    by_cert = ssh(
        server.sshd.port, "bob", server.keys["bob"][0], server.known_hosts, certificate=tmp_path / "bob-cert.pub"
    )
    assert by_cert.returncode == 255  # certificate
    assert session.wait(timeout=30) != 0 and not server.processes("bob")  # what was open
    assert server.login("alice").returncode == 0  # nobody else
