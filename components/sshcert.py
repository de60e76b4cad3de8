"""SSH user certificates signed by the class CA, and a Pulumi resource that keeps them stable.

Signing uses `cryptography`'s SSHCertificateBuilder, which draws a fresh
random nonce per signature: re-signing on every `pulumi up` would change every
certificate. `UserCertificate` is therefore a dynamic resource whose provider
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


def _plain(props: Mapping[str, Any]) -> dict[str, Any]:
    """The engine strips secrets before calling a dynamic provider (acceptSecrets=False), but
    mocks pass them wrapped; accept both."""
    return {key: rpc.unwrap_rpc_secret(value) for key, value in props.items()}


def _signed_outputs(props: Mapping[str, Any]) -> dict[str, Any]:
    """Sign and return the outputs stored in state: the inputs that matter plus the certificate.

    The CA private key is deliberately not copied into the outputs; only its
    public half is, so the next diff can notice a CA rotation.
    """
    props = _plain(props)
    ca_pem = str(props["ca_private_key"])
    outs = {name: props[name] for name in SIGNED_FIELDS}
    outs["serial"] = int(props["serial"])
    outs["valid_after"] = int(props["valid_after"])
    outs["valid_before"] = int(props["valid_before"])
    outs["extensions"] = list(props["extensions"])
    outs["ca_public_key"] = ca_public_key_line(ca_pem)
    outs["certificate"] = sign_user_certificate(
        ca_pem,
        str(props["public_key"]),
        principal=str(props["principal"]),
        key_id=str(props["key_id"]),
        serial=outs["serial"],
        valid_after=outs["valid_after"],
        valid_before=outs["valid_before"],
        extensions=outs["extensions"],
    )
    return outs


def changed_fields(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Which signed inputs differ between the state and the new inputs (numbers compared as ints)."""
    olds, news = _plain(olds), _plain(news)
    changed = []
    for name in SIGNED_FIELDS:
        old, new = olds.get(name), news.get(name)
        if name in ("serial", "valid_after", "valid_before"):
            old = int(old) if old is not None else None
            new = int(new) if new is not None else None
        if name == "extensions":
            old, new = sorted(old or []), sorted(new or [])
        if old != new:
            changed.append(name)
    ca_pem = news.get("ca_private_key")
    if isinstance(ca_pem, str) and olds.get("ca_public_key") != ca_public_key_line(ca_pem):
        changed.append("ca_private_key")
    return changed


class UserCertificateProvider(ResourceProvider):
    """Signs once; re-signs only when a signed input or the CA changes."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = _signed_outputs(props)
        return CreateResult(id_=f"{outs['principal']}-{outs['serial']}", outs=outs)

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        changed = changed_fields(_olds, _news)
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_signed_outputs(_news))


@dataclass
class UserCertificateArgs:
    ca_private_key: pulumi.Input[str]  # secret
    public_key: pulumi.Input[str]
    principal: pulumi.Input[str]
    key_id: pulumi.Input[str]
    serial: pulumi.Input[int]
    valid_after: pulumi.Input[int]
    valid_before: pulumi.Input[int]
    extensions: Sequence[str] = USER_EXTENSIONS


class UserCertificate(pulumi.dynamic.Resource):
    """One student's user certificate, kept in Pulumi state (the certificate output is secret)."""

    certificate: pulumi.Output[str]
    serial: pulumi.Output[int]
    ca_public_key: pulumi.Output[str]

    def __init__(self, name: str, args: UserCertificateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["certificate"])
        props = {
            "ca_private_key": pulumi.Output.secret(args.ca_private_key),
            "public_key": args.public_key,
            "principal": args.principal,
            "key_id": args.key_id,
            "serial": args.serial,
            "valid_after": args.valid_after,
            "valid_before": args.valid_before,
            "extensions": list(args.extensions),
            "certificate": None,
            "ca_public_key": None,
        }
        super().__init__(UserCertificateProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_opts))
