"""User certificate signing and the CertificateSet dynamic provider (components/sshcert.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from components.sshcert import (
    USER_EXTENSIONS,
    CertificateRequest,
    CertificateSetProvider,
    ca_public_key_line,
    certificate_fields,
    changed_entries,
    known_hosts_line,
    sign_request,
    sign_user_certificate,
)

ROOT = Path(__file__).resolve().parents[2]


def private_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def public_line(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + " student@laptop"
    )


CA = private_pem(ed25519.Ed25519PrivateKey.generate())
OTHER_CA = private_pem(ed25519.Ed25519PrivateKey.generate())
STUDENT = public_line(ed25519.Ed25519PrivateKey.generate())
ALICE = {
    "public_key": STUDENT,
    "principal": "alice",
    "key_id": "cis90/fall2026/alice",
    "serial": 4242,
    "valid_after": 1787554800,
    "valid_before": 1798272000,
    "extensions": list(USER_EXTENSIONS),
}
BOB = {
    **ALICE,
    "public_key": public_line(ed25519.Ed25519PrivateKey.generate()),
    "principal": "bob",
    "key_id": "cis90/fall2026/bob",
    "serial": 4243,
}
PROPS = {"ca_private_key": CA, "entries": {"alice/k1": ALICE, "bob/k1": BOB}}


def with_entry(entry_id: str, **changes: object) -> dict[str, object]:
    entries = dict(PROPS["entries"])  # type: ignore[call-overload]
    entries[entry_id] = {**entries[entry_id], **changes}
    return {**PROPS, "entries": entries}


def test_certificate_fields_as_ssh_keygen_reads_them(tmp_path: Path) -> None:
    cert = sign_user_certificate(
        CA,
        STUDENT,
        principal="alice",
        key_id="cis90/fall2026/alice",
        serial=4242,
        valid_after=1787554800,
        valid_before=1798272000,
    )
    (tmp_path / "c.pub").write_text(cert + "\n")
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(tmp_path / "c.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert "user certificate" in listing
    assert 'Key ID: "cis90/fall2026/alice"' in listing
    assert "Serial: 4242" in listing
    assert "permit-pty" in listing and "permit-X11-forwarding" not in listing
    fields = certificate_fields(cert)
    assert fields["principals"] == ["alice"] and fields["valid_before"] == 1798272000


def test_rsa_ca_is_supported() -> None:
    ca = private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert = sign_user_certificate(
        ca, STUDENT, principal="bob", key_id="x/y/bob", serial=1, valid_after=0, valid_before=10
    )
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert ca_public_key_line(ca).startswith("ssh-rsa ")


@pytest.mark.parametrize(("serial", "after", "before"), [(0, 0, 10), (1 << 64, 0, 10), (1, 10, 10)])
def test_signing_refuses_bad_serial_or_window(serial: int, after: int, before: int) -> None:
    with pytest.raises(ValueError):
        sign_user_certificate(
            CA, STUDENT, principal="a", key_id="k", serial=serial, valid_after=after, valid_before=before
        )


def test_known_hosts_line() -> None:
    line = known_hosts_line(ca_public_key_line(CA), ["login.example.edu", "[127.0.0.1]:2222"])
    assert line.startswith("@cert-authority login.example.edu,[127.0.0.1]:2222 ssh-ed25519 ")
    assert "classroom-ca" not in line


def test_provider_create_keeps_private_key_out_of_outputs() -> None:
    result = CertificateSetProvider().create(dict(PROPS))
    assert "ca_private_key" not in result.outs
    assert CA not in repr(result.outs)
    assert set(result.outs["certificates"]) == {"alice/k1", "bob/k1"}
    assert all(c.startswith("ssh-ed25519-cert-v01@openssh.com ") for c in result.outs["certificates"].values())
    assert result.outs["ca_public_key"] == ca_public_key_line(CA)


def test_provider_diff_ignores_the_nonce_and_sees_every_signed_input() -> None:
    provider = CertificateSetProvider()
    outs = provider.create(dict(PROPS)).outs
    # Same inputs (numbers come back from the engine as floats): nothing to do, the bytes stay.
    same = with_entry("alice/k1", serial=4242.0, valid_after=1787554800.0)
    assert provider.diff("id", outs, same).changes is False
    assert changed_entries(outs, with_entry("alice/k1", serial=4244)) == ["alice/k1"]
    assert changed_entries(outs, with_entry("bob/k1", valid_before=1798272001)) == ["bob/k1"]
    assert changed_entries(outs, with_entry("alice/k1", principal="carol")) == ["alice/k1"]
    assert changed_entries(outs, with_entry("alice/k1", extensions=["permit-pty"])) == ["alice/k1"]
    assert changed_entries(outs, {**PROPS, "ca_private_key": OTHER_CA}) == ["alice/k1", "bob/k1"]
    assert (
        provider.diff(
            "id", outs, with_entry("alice/k1", public_key=public_line(ed25519.Ed25519PrivateKey.generate()))
        ).changes
        is True
    )


def test_update_resigns_only_what_changed_and_keeps_the_other_bytes() -> None:
    provider = CertificateSetProvider()
    outs = provider.create(dict(PROPS)).outs
    updated = provider.update("id", outs, with_entry("alice/k1", serial=4244)).outs
    assert certificate_fields(updated["certificates"]["alice/k1"])["serial"] == 4244
    assert updated["certificates"]["bob/k1"] == outs["certificates"]["bob/k1"]
    # a newcomer is signed, a leaver is dropped, everyone else keeps their bytes
    carol = {**ALICE, "principal": "carol", "serial": 4245}
    grown = provider.update("id", updated, {**PROPS, "entries": {"bob/k1": BOB, "carol/k1": carol}}).outs
    assert set(grown["certificates"]) == {"bob/k1", "carol/k1"}
    assert grown["certificates"]["bob/k1"] == outs["certificates"]["bob/k1"]
    assert certificate_fields(grown["certificates"]["carol/k1"])["principals"] == ["carol"]
    # a new CA re-signs everyone
    rotated = provider.update("id", grown, {**PROPS, "ca_private_key": OTHER_CA, "entries": {"bob/k1": BOB}}).outs
    assert rotated["certificates"]["bob/k1"] != outs["certificates"]["bob/k1"]
    assert rotated["ca_public_key"] == ca_public_key_line(OTHER_CA)


def test_signing_twice_differs_so_state_must_hold_the_bytes() -> None:
    # The reason CertificateSet is a resource: cryptography draws a fresh nonce per signature.
    request = CertificateRequest(**ALICE)  # type: ignore[arg-type]
    assert sign_request(CA, request) != sign_request(CA, request)


def test_provider_serialises_for_the_engine() -> None:
    from pulumi.dynamic.dynamic import serialize_provider

    assert serialize_provider(CertificateSetProvider())


def test_provider_loads_in_a_fresh_process_like_the_provider_host() -> None:
    # The engine runs `python -m pulumi.dynamic` in the project directory and unpickles the provider there.
    from pulumi.dynamic.dynamic import serialize_provider

    from components.roster import UidLedgerProvider

    for provider in (CertificateSetProvider(), UidLedgerProvider()):
        blob = serialize_provider(provider)
        script = (
            "import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read())); "
            "print(type(p).__module__, type(p).__name__)"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], input=blob, cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert result.stdout.split() == [type(provider).__module__, type(provider).__name__]
