"""The access model against real OpenSSH 9.2: the project's sshd_config, host keys from
components/hostkeys.py (as the pod mounts them), certificates from components/sshcert.py, accounts, authorized keys and
the KRL from reconcile-roster, all inside a throwaway Debian chroot; the real ssh client
connects over loopback trusting the server through one @cert-authority line only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.rosterdata import key_fingerprint, parse_access, roster_document
from components.sshcert import (
    USER_EXTENSIONS,
    CertificateRequest,
    CertificateSetProvider,
    ca_public_key_line,
    known_hosts_line,
)
from tests.hostkeys import install_host_keys
from tests.ssh.conftest import install_reconciler
from tests.ssh.rootfs import chroot, overlay_root
from tests.ssh.sshd import SCRIPTS, Sshd, free_port, new_key, ssh

STACK = "cis90-test"
DAY = 86400


def ca_pem() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )


@dataclass
class Lab:
    root: Path
    tmp: Path
    ca: str
    sshd: Sshd
    known_hosts: Path
    keys: dict[str, tuple[Path, str]]
    roster: dict[str, Any]
    now: int

    def cert(
        self,
        user_key: str,
        principal: str,
        *,
        valid_after: int | None = None,
        valid_before: int | None = None,
        serial: int = 1000,
        ca: str | None = None,
    ) -> Path:
        """A certificate signed the way the CertificateSet resource signs it."""
        request = CertificateRequest(
            public_key=self.keys[user_key][1],
            principal=principal,
            key_id=f"cis90/test/{principal}",
            serial=serial,
            valid_after=self.now - DAY if valid_after is None else valid_after,
            valid_before=self.now + 30 * DAY if valid_before is None else valid_before,
            extensions=USER_EXTENSIONS,
        )
        props = {"ca_private_key": ca or self.ca, "entries": {"one": request.fields()}}
        cert = CertificateSetProvider().create(props).outs["certificates"]["one"]
        path = self.tmp / f"{user_key}-{principal}-{serial}-cert.pub"
        path.write_text(cert + "\n")
        return path

    def login(
        self, user: str, key: str, certificate: Path | None = None, command: str = "id -un"
    ) -> subprocess.CompletedProcess[str]:
        self.sshd.mark()
        return ssh(self.sshd.port, user, self.keys[key][0], self.known_hosts, certificate=certificate, command=command)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ssh-access")
    now = int(time.time())
    keys = {
        name: new_key(tmp, name)
        for name in ("alice", "bob", "carol", "carol_own", "dave", "erin", "alice_own", "revoked_key", "stranger")
    }
    with overlay_root(rootfs) as root:
        install_reconciler(root)
        ca = ca_pem()
        (tmp / "ca").write_text(ca)
        (tmp / "ca").chmod(0o600)
        (root / "etc/ssh/classroom").mkdir(parents=True)
        (root / "etc/ssh/classroom/ca.pub").write_text(ca_public_key_line(ca) + "\n")
        # Host keys and certificates exactly as the program signs them and the pod mounts them.
        install_host_keys(ca, root / "etc/ssh/host", ["127.0.0.1", "localhost"])
        shutil.copy(SCRIPTS / "sshd_config", root / "etc/ssh/sshd_config")

        access = parse_access(
            {
                "roster": [
                    {"username": "alice", "keys": [keys["alice"][1]]},
                    {"username": "bob"},
                    {"username": "carol", "role": "ta", "keys": [keys["carol"][1]]},
                    {"username": "dave", "keys": [keys["dave"][1]]},
                    {"username": "erin", "keys": [keys["erin"][1], keys["revoked_key"][1]]},
                ],
                "term": {
                    "start": time.strftime("%Y-%m-%d", time.gmtime(now - 10 * DAY)),
                    "end": time.strftime("%Y-%m-%d", time.gmtime(now + 30 * DAY)),
                },
                "revocations": {"serials": [666], "keys": [keys["revoked_key"][1]]},
                "staffKeepOwnKeys": True,
            },
            base_dir=tmp,
        )
        roster = roster_document(access, stack=STACK)
        (root / "etc/classroom/roster").mkdir(parents=True)
        (root / "etc/classroom/roster/roster.json").write_text(json.dumps(roster))
        result = chroot(root, "python3", "/usr/local/sbin/reconcile-roster", "--offline")
        assert result.returncode == 0, result.stderr
        # A student appends a key of their own; a TA does the same (allowed for staff).
        for user, key in (("alice", "alice_own"), ("carol", "carol_own")):
            uid = next(p["uid"] for p in roster["people"] if p["username"] == user)
            ssh_dir = root / "home" / user / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(keys[key][1] + "\n")
            for path in (ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(path, uid, uid)
        sshd = Sshd(root=root, port=free_port(), log=tmp / "sshd.log")
        (tmp / "known_hosts").write_text(known_hosts_line(ca_public_key_line(ca), [f"[127.0.0.1]:{sshd.port}"]) + "\n")
        sshd.start()
        try:
            yield Lab(
                root=root, tmp=tmp, ca=ca, sshd=sshd, known_hosts=tmp / "known_hosts", keys=keys, roster=roster, now=now
            )
        finally:
            sshd.stop()


def test_valid_student_certificate_is_accepted(lab: Lab) -> None:
    # bob has no authorized key at all: only the certificate can let him in.
    result = lab.login("bob", "bob", lab.cert("bob", "bob", serial=4321))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bob"
    log = lab.sshd.new_log("Accepted publickey for bob")
    assert "Accepted publickey for bob" in log and "ID cis90/test/bob (serial 4321)" in log


def test_authorized_key_with_expiry_time_is_accepted(lab: Lab) -> None:
    result = lab.login("alice", "alice")
    assert result.returncode == 0, result.stderr
    text = (lab.root / "etc/ssh/authorized_keys/alice").read_text()
    assert 'expiry-time="' in text and lab.keys["alice"][1].split()[1] in text


def test_expired_certificate_is_refused(lab: Lab) -> None:
    cert = lab.cert("bob", "bob", valid_after=lab.now - 20 * DAY, valid_before=lab.now - DAY, serial=11)
    result = lab.login("bob", "bob", cert)
    assert result.returncode == 255
    assert "Certificate invalid: expired" in lab.sshd.new_log("Certificate invalid")


def test_not_yet_valid_certificate_is_refused(lab: Lab) -> None:
    cert = lab.cert("bob", "bob", valid_after=lab.now + DAY, valid_before=lab.now + 20 * DAY, serial=12)
    result = lab.login("bob", "bob", cert)
    assert result.returncode == 255
    assert "Certificate invalid: not yet valid" in lab.sshd.new_log("Certificate invalid")


def test_wrong_principal_is_refused(lab: Lab) -> None:
    cert = lab.cert("bob", "alice", serial=13)  # alice's name on bob's key, used to log in as bob
    result = lab.login("bob", "bob", cert)
    assert result.returncode == 255
    assert "Certificate invalid: name is not a listed principal" in lab.sshd.new_log("Certificate invalid")


def test_revoked_serial_is_refused(lab: Lab) -> None:
    cert = lab.cert("bob", "bob", serial=666)
    result = lab.login("bob", "bob", cert)
    assert result.returncode == 255
    log = lab.sshd.new_log("revoked")
    assert "revoked by file /etc/ssh/classroom-revoked.krl" in log


def test_revoked_key_is_refused_and_not_installed(lab: Lab) -> None:
    assert lab.keys["revoked_key"][1].split()[1] not in (lab.root / "etc/ssh/authorized_keys/erin").read_text()
    # Even as a certificate the revoked key is refused: the KRL revokes the key itself.
    result = lab.login("erin", "revoked_key", lab.cert("revoked_key", "erin", serial=14))
    assert result.returncode == 255
    assert "revoked by file" in lab.sshd.new_log("revoked")
    assert lab.login("erin", "erin").returncode == 0


def test_certificate_from_another_ca_is_refused(lab: Lab) -> None:
    foreign = ca_pem()
    cert = lab.cert("bob", "bob", serial=15, ca=foreign)
    result = lab.login("bob", "bob", cert)
    assert result.returncode == 255
    # At VERBOSE sshd names the certificate and the foreign CA it was refused for.
    log = lab.sshd.new_log("Failed publickey for bob")
    foreign_fp = key_fingerprint(ca_public_key_line(foreign))
    assert f"ID cis90/test/bob (serial 15) CA ED25519 {foreign_fp}" in log


def test_student_key_in_home_authorized_keys_is_ignored(lab: Lab) -> None:
    result = lab.login("alice", "alice_own")
    assert result.returncode == 255
    log = lab.sshd.new_log("Failed publickey for alice")
    assert "Failed publickey for alice" in log


def test_staff_keep_their_own_keys(lab: Lab) -> None:
    result = lab.login("carol", "carol_own")
    assert result.returncode == 0, result.stderr
    assert "Accepted publickey for carol" in lab.sshd.new_log("Accepted publickey for carol")
    assert lab.login("carol", "carol", command="sudo -n true").returncode == 0  # staff sudo without password
    assert lab.login("alice", "alice", command="sudo -n true").returncode != 0


def test_expired_account_is_refused_with_a_valid_key(lab: Lab) -> None:
    assert lab.login("dave", "dave").returncode == 0
    chroot(lab.root, "chage", "-E", "2001-01-01", "dave")
    result = lab.login("dave", "dave", lab.cert("dave", "dave", serial=16))
    assert result.returncode == 255
    # The certificate itself is fine; PAM's account stage (pam_unix, shadow expiry) says no.
    log = lab.sshd.new_log("PAM account configuration")
    assert 'Accepted certificate ID "cis90/test/dave" (serial 16)' in log
    assert "Access denied for user dave by PAM account configuration" in log


def test_host_certificate_is_required(lab: Lab) -> None:
    other = lab.tmp / "other_known_hosts"
    other.write_text(known_hosts_line(ca_public_key_line(ca_pem()), [f"[127.0.0.1]:{lab.sshd.port}"]) + "\n")
    result = ssh(lab.sshd.port, "alice", lab.keys["alice"][0], other)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_cli_issued_certificate_and_known_hosts_work(lab: Lab) -> None:
    from ops import cli

    (lab.tmp / "roster.json").write_text(json.dumps(lab.roster))
    out = lab.tmp / "issued"
    assert (
        cli.main(
            [
                "roster",
                "issue",
                "--stack",
                STACK,
                "--out",
                str(out),
                "--ca-key",
                str(lab.tmp / "ca"),
                "--roster-json",
                str(lab.tmp / "roster.json"),
                "--host",
                "127.0.0.1",
                "--port",
                str(lab.sshd.port),
            ]
        )
        == 0
    )
    serial = next(p for p in lab.roster["people"] if p["username"] == "alice")["certificates"][0]["serial"]
    lab.sshd.mark()
    result = ssh(lab.sshd.port, "alice", lab.keys["alice"][0], out / "known_hosts", certificate=out / "alice-cert.pub")
    assert result.returncode == 0, result.stderr
    log = lab.sshd.new_log("Accepted publickey for alice")
    assert f'Accepted certificate ID "cis90/test/alice" (serial {serial})' in log


def test_staff_own_keys_can_be_switched_off(lab: Lab) -> None:
    roster = {**lab.roster, "staffKeepOwnKeys": False}
    (lab.root / "etc/classroom/roster/roster.json").write_text(json.dumps(roster))
    result = chroot(lab.root, "python3", "/usr/local/sbin/reconcile-roster", "--offline")
    assert "removed carol from classroom-ownkeys" in result.stdout
    assert lab.login("carol", "carol_own").returncode == 255
    assert lab.login("carol", "carol").returncode == 0  # the roster's key still works
    (lab.root / "etc/classroom/roster/roster.json").write_text(json.dumps(lab.roster))
    assert chroot(lab.root, "python3", "/usr/local/sbin/reconcile-roster", "--offline").returncode == 0


def test_authorized_key_past_term_end_is_refused(lab: Lab) -> None:
    # The term is over: the reconciler rewrites expiry-time= to the past and expires the accounts.
    past = json.loads(json.dumps(lab.roster))
    past["term"]["accessEnd"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lab.now - DAY))
    (lab.root / "etc/classroom/roster/roster.json").write_text(json.dumps(past))
    result = chroot(lab.root, "python3", "/usr/local/sbin/reconcile-roster", "--offline")
    assert result.returncode == 0, result.stderr
    assert "set expiry of erin" in result.stdout
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(lab.now - DAY))
    assert f'expiry-time="{stamp}" ' in (lab.root / "etc/ssh/authorized_keys/erin").read_text()
    refused = lab.login("erin", "erin")
    assert refused.returncode == 255
    # The key line matches but its expiry-time= option has passed (before PAM is even asked).
    log = lab.sshd.new_log("Failed publickey for erin")
    assert "Refused by key options" in log and "Failed publickey for erin" in log
