"""Host keys signed at deploy time (components/hostkeys.py): kept across updates, re-signed only when needed.

OpenSSH's own `ssh-keygen -L` reads every certificate, so the format is the real one; the ssh and
attack tiers then boot the real sshd with keys made by the same functions (tests/hostkeys.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pulumi.runtime import rpc

from components.hostkeys import (
    HOST_KEY_TYPES,
    HostKeySetProvider,
    generate_host_key,
    host_key_files,
    host_key_items,
    sign_host_certificate,
)
from components.sshcert import ca_public_key_line
from tests.hostkeys import verified_host_certificate


def new_ca() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )


CA = new_ca()
PRINCIPALS = ["login.example.edu", "login-0", "ssh.cis90.svc.cluster.local"]


def props(ca: str = CA, principals: list[str] | None = None, key_id: str = "host:login.example.edu") -> dict[str, Any]:
    return {"ca_private_key": ca, "principals": list(principals or PRINCIPALS), "key_id": key_id}


def outs_of(result: Any) -> dict[str, Any]:
    assert result.outs is not None
    return dict(result.outs)


def keygen_listing(tmp_path: Path, cert_line: str) -> str:
    path = tmp_path / "cert.pub"
    path.write_text(cert_line + "\n")
    listed = subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True)
    return listed.stdout


def signer_of(cert_line: str) -> str:
    return verified_host_certificate(cert_line)[1]


def test_create_makes_both_key_types_with_host_certificates_openssh_reads(tmp_path: Path) -> None:
    outs = outs_of(HostKeySetProvider().create(props()))
    assert set(outs["private_keys"]) == set(outs["certificates"]) == set(HOST_KEY_TYPES)
    assert "ca_private_key" not in outs and CA not in str(outs)
    assert outs["ca_public_key"] == ca_public_key_line(CA)
    for kind in HOST_KEY_TYPES:
        listing = keygen_listing(tmp_path, outs["certificates"][kind])
        assert "host certificate" in listing and "Valid: forever" in listing
        assert all(f"\n                {p}\n" in listing for p in PRINCIPALS)
        assert 'Key ID: "host:login.example.edu"' in listing
        assert signer_of(outs["certificates"][kind]) == " ".join(ca_public_key_line(CA).split()[:2])


def test_same_inputs_plan_no_change_and_keep_every_byte() -> None:
    provider = HostKeySetProvider()
    outs = outs_of(provider.create(props()))
    assert provider.diff("host-keys", outs, props()).changes is False


@pytest.mark.parametrize(
    "change",
    [
        {"principals": [*PRINCIPALS, "10.0.0.9"]},
        {"key_id": "host:other"},
        {"ca": new_ca()},
    ],
)
def test_a_change_to_what_the_certificate_says_re_signs_but_keeps_the_keys(change: dict[str, Any]) -> None:
    provider = HostKeySetProvider()
    olds = outs_of(provider.create(props()))
    news = props(**change)
    assert provider.diff("host-keys", olds, news).changes is True
    updated = outs_of(provider.update("host-keys", olds, news))
    # Students' clients see the same host key: only the certificates change.
    assert updated["private_keys"] == olds["private_keys"] and updated["public_keys"] == olds["public_keys"]
    assert updated["certificates"] != olds["certificates"]
    for kind in HOST_KEY_TYPES:
        cert: Any = serialization.load_ssh_public_identity(" ".join(updated["certificates"][kind].split()[:2]).encode())
        assert [p.decode() for p in cert.valid_principals] == news["principals"]
        assert cert.key_id.decode() == news["key_id"]
        new_ca_key = " ".join(ca_public_key_line(news["ca_private_key"]).split()[:2])
        assert signer_of(updated["certificates"][kind]) == new_ca_key


def test_state_that_lost_a_certificate_is_repaired_without_new_keys() -> None:
    provider = HostKeySetProvider()
    olds = outs_of(provider.create(props()))
    damaged = {**olds, "certificates": {"ed25519": olds["certificates"]["ed25519"]}}
    assert provider.diff("host-keys", damaged, props()).changes is True
    repaired = outs_of(provider.update("host-keys", damaged, props()))
    assert repaired["private_keys"] == olds["private_keys"] and set(repaired["certificates"]) == set(HOST_KEY_TYPES)


def test_secret_wrapped_inputs_from_mocks_are_accepted() -> None:
    wrapped = {k: {rpc._special_sig_key: rpc._special_secret_sig, "value": v} for k, v in props().items()}
    outs = outs_of(HostKeySetProvider().create(wrapped))
    assert outs["principals"] == PRINCIPALS


def test_files_and_modes_are_what_sshd_config_names(tmp_path: Path) -> None:
    private, public = zip(*(generate_host_key(kind) for kind in HOST_KEY_TYPES), strict=True)
    certs = [sign_host_certificate(CA, p, principals=PRINCIPALS, key_id="host:x") for p in public]
    files = host_key_files(
        dict(zip(HOST_KEY_TYPES, private, strict=True)),
        dict(zip(HOST_KEY_TYPES, public, strict=True)),
        dict(zip(HOST_KEY_TYPES, certs, strict=True)),
    )
    sshd_config = (Path(__file__).resolve().parents[2] / "components" / "scripts" / "sshd_config").read_text()
    named = {
        line.split()[1].rsplit("/", 1)[1]
        for line in sshd_config.splitlines()
        if line.startswith(("HostKey ", "HostCertificate "))
    }
    assert named <= set(files)
    modes = dict(host_key_items())
    assert set(modes) == set(files)
    assert {n for n, m in modes.items() if m == 0o400} == {"ssh_host_ed25519_key", "ssh_host_rsa_key"}
    # The private halves are real OpenSSH keys whose public halves are the .pub files.
    for kind in HOST_KEY_TYPES:
        key_path = tmp_path / f"ssh_host_{kind}_key"
        key_path.write_text(files[key_path.name])
        key_path.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key_path)], capture_output=True, text=True, check=True)
        assert derived.stdout.split()[:2] == files[f"{key_path.name}.pub"].split()[:2]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate_host_key("dsa"), "host key type 'dsa' not supported"),
        (lambda: sign_host_certificate(CA, generate_host_key("ed25519")[1], principals=[], key_id="x"), "at least one"),
    ],
)
def test_bad_arguments_are_clear_errors(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
