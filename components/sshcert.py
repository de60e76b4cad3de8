"""SSH user certificates signed by the class CA, and a Pulumi resource that keeps them stable.

Signing uses `cryptography`'s SSHCertificateBuilder, which draws a fresh
random nonce per signature: re-signing on every `pulumi up` would change every
certificate. `CertificateSet` is therefore a dynamic resource whose provider
signs in create/update and whose diff compares only the inputs that matter
(key, principal, key id, serial, window, extensions, CA public key), so an
unchanged roster produces no diff and the bytes in state stay the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.runtime import rpc

# What a student session may do. X11 is left out (the server disables it);
# port forwarding stays because VS Code Remote SSH needs it.
USER_EXTENSIONS: tuple[str, ...] = (
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)

# Inputs whose change means the certificate must be re-signed.
SIGNED_FIELDS = ("public_key", "principal", "key_id", "serial", "valid_after", "valid_before", "extensions")

SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_ca_private_key(pem: str) -> SigningKey:
    """The CA private key from OpenSSH PEM (what tls.PrivateKey.private_key_openssh gives) or PKCS#8 PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key: Any = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ValueError("the CA private key is neither OpenSSH nor unencrypted PEM") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"unsupported CA key type {type(key).__name__}")
    return key


def ca_public_key_line(ca_private_pem: str, comment: str = "classroom-ca") -> str:
    """'type base64 comment' of the CA public key (what TrustedUserCAKeys and @cert-authority need)."""
    public = load_ca_private_key(ca_private_pem).public_key()
    text = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{text} {comment}".strip()


def known_hosts_line(ca_public_key: str, hosts: Sequence[str]) -> str:
    """The one line a student's known_hosts needs to trust every host certificate the CA signs."""
    key = " ".join(ca_public_key.split()[:2])
    return f"@cert-authority {','.join(hosts)} {key}"


def sign_user_certificate(
    ca_private_pem: str,
    public_key: str,
    *,
    principal: str,
    key_id: str,
    serial: int,
    valid_after: int,
    valid_before: int,
    extensions: Sequence[str] = USER_EXTENSIONS,
) -> str:
    """Sign `public_key` as a user certificate; returns the '...-cert-v01@openssh.com BASE64 key_id' line."""
    if not 0 < serial < 1 << 64:
        raise ValueError(f"serial {serial} outside 1..2^64-1")
    if valid_before <= valid_after:
        raise ValueError(f"empty validity window {valid_after}..{valid_before}")
    subject: Any = serialization.load_ssh_public_identity(" ".join(public_key.split()[:2]).encode())
    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(subject)
        .serial(serial)
        .type(serialization.SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([principal.encode()])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for extension in sorted(extensions):
        builder = builder.add_extension(extension.encode(), b"")
    cert = builder.sign(load_ca_private_key(ca_private_pem))
    return f"{cert.public_bytes().decode()} {key_id}"


def certificate_fields(cert_line: str) -> dict[str, Any]:
    """Decode the fields of a certificate line (used by the CLI's status and by tests)."""
    cert: Any = serialization.load_ssh_public_identity(" ".join(cert_line.split()[:2]).encode())
    return {
        "serial": cert.serial,
        "key_id": cert.key_id.decode(),
        "principals": [p.decode() for p in cert.valid_principals],
        "valid_after": cert.valid_after,
        "valid_before": cert.valid_before,
        "type": cert.type.name,
    }


# --------------------------------------------------------------------------- dynamic provider
#
# One resource holds every certificate of the roster. A resource per
# certificate cost the engine a round trip to the dynamic provider per
# student on every preview and update (bench/results/engine.md: a 300-student
# no-op `up` took 2x a 1-student one); one resource keyed by person and key
# costs one round trip, and its diff still names exactly which entries change.


def plain_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """The engine strips secrets before calling a dynamic provider (acceptSecrets=False), but
    mocks pass them wrapped; accept both."""
    return {key: rpc.unwrap_rpc_secret(value) for key, value in props.items()}


def _entry_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The signed inputs of one certificate, normalised (numbers cross the engine as floats)."""
    fields: dict[str, Any] = {name: entry.get(name) for name in SIGNED_FIELDS}
    for name in ("serial", "valid_after", "valid_before"):
        value = fields[name]
        fields[name] = int(value) if value is not None else None
    fields["extensions"] = sorted(fields["extensions"] or [])
    return fields


def _sign_entry(ca_pem: str, fields: Mapping[str, Any]) -> str:
    return sign_user_certificate(
        ca_pem,
        str(fields["public_key"]),
        principal=str(fields["principal"]),
        key_id=str(fields["key_id"]),
        serial=int(fields["serial"]),
        valid_after=int(fields["valid_after"]),
        valid_before=int(fields["valid_before"]),
        extensions=list(fields["extensions"]),
    )


def changed_entries(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Entry ids to (re-)sign: new, changed or, when the CA changed, all; removed ones are listed too."""
    olds, news = plain_props(olds), plain_props(news)
    old_entries = {k: _entry_fields(v) for k, v in (olds.get("entries") or {}).items()}
    new_entries = {k: _entry_fields(v) for k, v in (news.get("entries") or {}).items()}
    ca_pem = news.get("ca_private_key")
    if isinstance(ca_pem, str) and olds.get("ca_public_key") != ca_public_key_line(ca_pem):
        return sorted(set(new_entries) | set(old_entries))
    return sorted(k for k in set(new_entries) | set(old_entries) if old_entries.get(k) != new_entries.get(k))


def _set_outputs(news: Mapping[str, Any], olds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Sign what changed, keep the bytes of everything else.

    The CA private key is deliberately not copied into the outputs; only its
    public half is, so the next diff can notice a CA rotation.
    """
    news = plain_props(news)
    ca_pem = str(news["ca_private_key"])
    resign = set(changed_entries(olds, news)) if olds is not None else None
    kept = dict(plain_props(olds).get("certificates") or {}) if olds is not None else {}
    entries = {k: _entry_fields(v) for k, v in (news.get("entries") or {}).items()}
    certificates = {
        k: (_sign_entry(ca_pem, fields) if resign is None or k in resign or k not in kept else str(kept[k]))
        for k, fields in entries.items()
    }
    return {"entries": entries, "ca_public_key": ca_public_key_line(ca_pem), "certificates": certificates}


class CertificateSetProvider(ResourceProvider):
    """Signs each entry once; re-signs only entries whose signed inputs, or the CA, change."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="certificates", outs=_set_outputs(props, None))

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult(
            changes=bool(changed_entries(_olds, _news)), replaces=[], stables=[], delete_before_replace=False
        )

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_set_outputs(_news, _olds))


@dataclass
class CertificateRequest:
    """What one certificate says; `CertificateSet` signs it with the class CA."""

    public_key: str
    principal: str
    key_id: str
    serial: int
    valid_after: int
    valid_before: int
    extensions: Sequence[str] = USER_EXTENSIONS

    def fields(self) -> dict[str, Any]:
        return _entry_fields({**self.__dict__, "extensions": list(self.extensions)})


def sign_request(ca_private_pem: str, request: CertificateRequest) -> str:
    """The certificate `CertificateSet` would issue for one request (tests and the CLI use it)."""
    return _sign_entry(ca_private_pem, request.fields())


class CertificateSet(pulumi.dynamic.Resource):
    """Every user certificate of a roster, kept in Pulumi state (the certificates output is secret)."""

    certificates: pulumi.Output[dict[str, str]]
    ca_public_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        ca_private_key: pulumi.Input[str],
        requests: Mapping[str, CertificateRequest],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["certificates"])
        props = {
            "ca_private_key": pulumi.Output.secret(ca_private_key),
            "entries": {entry_id: request.fields() for entry_id, request in requests.items()},
            "certificates": None,
            "ca_public_key": None,
        }
        super().__init__(CertificateSetProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_opts))
