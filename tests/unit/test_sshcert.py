"""User certificate signing and the UserCertificate dynamic provider (components/sshcert.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.sshcert import (  # noqa: E402
    USER_EXTENSIONS,
    UserCertificateProvider,
    ca_public_key_line,
    certificate_fields,
    changed_fields,
    known_hosts_line,
    sign_user_certificate,
)

pytestmark = pytest.mark.unit


def private_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def public_line(key: ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode() + " student@laptop"


CA = private_pem(ed25519.Ed25519PrivateKey.generate())
OTHER_CA = private_pem(ed25519.Ed25519PrivateKey.generate())
STUDENT = public_line(ed25519.Ed25519PrivateKey.generate())
PROPS = {
    "ca_private_key": CA, "public_key": STUDENT, "principal": "alice", "key_id": "cis90/fall2026/alice",
    "serial": 4242, "valid_after": 1787554800, "valid_before": 1798272000, "extensions": list(USER_EXTENSIONS),
}


def test_certificate_fields_as_ssh_keygen_reads_them(tmp_path: Path) -> None:
    cert = sign_user_certificate(CA, STUDENT, principal="alice", key_id="cis90/fall2026/alice", serial=4242,
                                 valid_after=1787554800, valid_before=1798272000)
    (tmp_path / "c.pub").write_text(cert + "\n")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "c.pub")], capture_output=True, text=True,
                             check=True).stdout
    assert "user certificate" in listing
    assert 'Key ID: "cis90/fall2026/alice"' in listing
    assert "Serial: 4242" in listing
    assert "permit-pty" in listing and "permit-X11-forwarding" not in listing
    fields = certificate_fields(cert)
    assert fields["principals"] == ["alice"] and fields["valid_before"] == 1798272000


def test_rsa_ca_is_supported() -> None:
    ca = private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert = sign_user_certificate(ca, STUDENT, principal="bob", key_id="x/y/bob", serial=1, valid_after=0,
                                 valid_before=10)
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert ca_public_key_line(ca).startswith("ssh-rsa ")


@pytest.mark.parametrize(("serial", "after", "before"), [(0, 0, 10), (1 << 64, 0, 10), (1, 10, 10)])
def test_signing_refuses_bad_serial_or_window(serial: int, after: int, before: int) -> None:
    with pytest.raises(ValueError):
        sign_user_certificate(CA, STUDENT, principal="a", key_id="k", serial=serial, valid_after=after,
                              valid_before=before)


def test_known_hosts_line() -> None:
    line = known_hosts_line(ca_public_key_line(CA), ["login.example.edu", "[127.0.0.1]:2222"])
    assert line.startswith("@cert-authority login.example.edu,[127.0.0.1]:2222 ssh-ed25519 ")
    assert "classroom-ca" not in line


def test_provider_create_keeps_private_key_out_of_outputs() -> None:
    result = UserCertificateProvider().create(dict(PROPS))
    assert "ca_private_key" not in result.outs
    assert CA not in repr(result.outs)
    assert result.outs["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert result.outs["ca_public_key"] == ca_public_key_line(CA)


def test_provider_diff_ignores_the_nonce_and_sees_every_signed_input() -> None:
    provider = UserCertificateProvider()
    outs = provider.create(dict(PROPS)).outs
    # Same inputs (numbers come back from the engine as floats): nothing to do, the bytes stay.
    same = {**PROPS, "serial": 4242.0, "valid_after": 1787554800.0}
    assert provider.diff("id", outs, same).changes is False
    assert changed_fields(outs, {**PROPS, "serial": 4243}) == ["serial"]
    assert changed_fields(outs, {**PROPS, "valid_before": 1798272001}) == ["valid_before"]
    assert changed_fields(outs, {**PROPS, "principal": "bob"}) == ["principal"]
    assert changed_fields(outs, {**PROPS, "ca_private_key": OTHER_CA}) == ["ca_private_key"]
    assert provider.diff("id", outs, {**PROPS, "public_key": public_line(ed25519.Ed25519PrivateKey.generate())}) \
        .changes is True
    updated = provider.update("id", outs, {**PROPS, "serial": 4243}).outs
    assert certificate_fields(updated["certificate"])["serial"] == 4243


def test_signing_twice_differs_so_state_must_hold_the_bytes() -> None:
    # The reason UserCertificate is a resource: cryptography draws a fresh nonce per signature.
    first = UserCertificateProvider().create(dict(PROPS)).outs["certificate"]
    second = UserCertificateProvider().create(dict(PROPS)).outs["certificate"]
    assert first != second


def test_provider_serialises_for_the_engine() -> None:
    from pulumi.dynamic.dynamic import serialize_provider

    assert serialize_provider(UserCertificateProvider())


def test_provider_loads_in_a_fresh_process_like_the_provider_host() -> None:
    # The engine runs `python -m pulumi.dynamic` in the project directory and unpickles the provider there.
    from pulumi.dynamic.dynamic import serialize_provider

    from components.roster import UidLedgerProvider

    for provider in (UserCertificateProvider(), UidLedgerProvider()):
        blob = serialize_provider(provider)
        script = ("import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read())); "
                  "print(type(p).__module__, type(p).__name__)")
        result = subprocess.run([sys.executable, "-c", script], input=blob, cwd=ROOT, capture_output=True,
                                text=True, check=True)
        assert result.stdout.split() == [type(provider).__module__, type(provider).__name__]
