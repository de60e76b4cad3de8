"""SSH host keys made and signed by the program, so no pod ever holds the class CA's private key.

The login server (and an in-cluster lab host) used to get its host
certificate from an init container that mounted the CA private key. A pod
that shares a node with student code must not hold that key: in privileged
mode a student who becomes root in the pod is root on the node, and from
there could read any Secret a pod on that node mounts. So the program does it:

- `HostKeySet` is a dynamic resource whose provider generates one ed25519 and
  one RSA host key on create and signs a host certificate for each with the
  CA, in the engine's process. The keys live in Pulumi state (a secret
  output), so they survive `pulumi destroy --exclude-protected` of the pod
  only as long as the stack keeps them; they are never written to disk here.
- The certificates are re-signed only when what they say changes (the
  principals, the key id) or the CA does; the keys themselves never change
  on update, so students' clients see the same host key across `pulumi up`,
  pod restarts and node moves.
- The pod mounts only `host_key_files()`: the private host keys (0400), their
  public halves and the certificates (0444). Stealing the host key lets an
  attacker impersonate this one server until the next re-key; stealing the CA
  key would let them impersonate every server and every student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from components import contract
from components.sshcert import ca_public_key_line, load_ca_private_key, plain_props

# The key types sshd_config names (HostKey / HostCertificate), in that order.
HOST_KEY_TYPES: tuple[str, ...] = ("ed25519", "rsa")
RSA_BITS = 3072
# Inputs whose change means the certificates must be re-signed.
SIGNED_FIELDS = ("principals", "key_id")
# ssh-keygen -h without -V: valid from the epoch, forever (the CA is what expires trust).
FOREVER = (1 << 64) - 1
PRIVATE_MODE = 0o400
PUBLIC_MODE = 0o444


def key_file(kind: str) -> str:
    """The private key's file name, as sshd_config's HostKey names it."""
    return f"ssh_host_{kind}_key"


def generate_host_key(kind: str) -> tuple[str, str]:
    """(private key in OpenSSH PEM, public key line) of a new host key of `kind`."""
    if kind == "ed25519":
        key: Any = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        raise ValueError(f"host key type '{kind}' not supported (expected one of {', '.join(HOST_KEY_TYPES)})")
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} host-{kind}"


def sign_host_certificate(ca_private_pem: str, public_key: str, *, principals: Sequence[str], key_id: str) -> str:
    """A host certificate for `public_key`, valid forever for exactly `principals`."""
    if not principals:
        raise ValueError("a host certificate needs at least one principal")
    subject: Any = serialization.load_ssh_public_identity(" ".join(public_key.split()[:2]).encode())
    cert = (
        serialization.SSHCertificateBuilder()
        .public_key(subject)
        .serial(0)
        .type(serialization.SSHCertificateType.HOST)
        .key_id(key_id.encode())
        .valid_principals([p.encode() for p in principals])
        .valid_after(0)
        .valid_before(FOREVER)
        .sign(load_ca_private_key(ca_private_pem))
    )
    return f"{cert.public_bytes().decode()} {key_id}"


def _signed_inputs(props: Mapping[str, Any]) -> dict[str, Any]:
    """What the certificates say, from the resource's inputs (SIGNED_FIELDS, normalised)."""
    principals, key_id = SIGNED_FIELDS
    return {principals: list(props.get(principals) or []), key_id: str(props.get(key_id) or "")}


def needs_resign(olds: Mapping[str, Any], news: Mapping[str, Any]) -> bool:
    """True when the certificates no longer say what the inputs ask, or another CA must sign them."""
    olds, news = plain_props(olds), plain_props(news)
    if _signed_inputs(olds) != _signed_inputs(news):
        return True
    if any(kind not in (olds.get("certificates") or {}) for kind in HOST_KEY_TYPES):
        return True
    ca_pem = news.get("ca_private_key")
    return isinstance(ca_pem, str) and olds.get("ca_public_key") != ca_public_key_line(ca_pem)


def _set_outputs(news: Mapping[str, Any], olds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep every existing key, make the missing ones, sign all; the CA private key is not copied out."""
    news = plain_props(news)
    old = plain_props(olds) if olds is not None else {}
    ca_pem = str(news["ca_private_key"])
    inputs = _signed_inputs(news)
    private_keys = dict(old.get("private_keys") or {})
    public_keys = dict(old.get("public_keys") or {})
    for kind in HOST_KEY_TYPES:
        if kind not in private_keys or kind not in public_keys:
            private_keys[kind], public_keys[kind] = generate_host_key(kind)
    certificates = {
        kind: sign_host_certificate(ca_pem, public_keys[kind], principals=inputs["principals"], key_id=inputs["key_id"])
        for kind in HOST_KEY_TYPES
    }
    return {
        **inputs,
        "ca_public_key": ca_public_key_line(ca_pem),
        "private_keys": {k: private_keys[k] for k in HOST_KEY_TYPES},
        "public_keys": {k: public_keys[k] for k in HOST_KEY_TYPES},
        "certificates": certificates,
    }


class HostKeySetProvider(ResourceProvider):
    """Generates the host keys once; re-signs their certificates when principals, key id or CA change."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="host-keys", outs=_set_outputs(props, None))

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=needs_resign(_olds, _news), replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_set_outputs(_news, _olds))


def host_key_files(
    private_keys: Mapping[str, str], public_keys: Mapping[str, str], certificates: Mapping[str, str]
) -> dict[str, str]:
    """File name -> content of the host-key Secret (what sshd_config's HostKey/HostCertificate read)."""
    files: dict[str, str] = {}
    for kind in HOST_KEY_TYPES:
        name = key_file(kind)
        files[name] = private_keys[kind].rstrip("\n") + "\n"
        files[f"{name}.pub"] = public_keys[kind].rstrip("\n") + "\n"
        files[f"{name}-cert.pub"] = certificates[kind].rstrip("\n") + "\n"
    return files


def host_key_mode(file_name: str) -> int:
    """0400 for a private host key (sshd refuses a readable one), 0444 for the public halves."""
    return PUBLIC_MODE if file_name.endswith(".pub") else PRIVATE_MODE


def host_key_items() -> list[tuple[str, int]]:
    """(file name, mode) of every file in the host-key Secret, in a stable order."""
    names = [
        n for kind in HOST_KEY_TYPES for n in (key_file(kind), f"{key_file(kind)}.pub", f"{key_file(kind)}-cert.pub")
    ]
    return [(name, host_key_mode(name)) for name in names]


def host_key_volume(volume_name: str, secret_name: pulumi.Input[str]) -> k8s.core.v1.VolumeArgs:
    """The pod volume of the host-key Secret, each file with the mode sshd expects (owner root)."""
    return k8s.core.v1.VolumeArgs(
        name=volume_name,
        secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=secret_name,
            default_mode=PRIVATE_MODE,
            items=[k8s.core.v1.KeyToPathArgs(key=name, path=name, mode=mode) for name, mode in host_key_items()],
        ),
    )


def host_key_secret(
    resource_name: str,
    *,
    secret_name: str,
    namespace: pulumi.Input[str],
    keys: HostKeySet,
    labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Secret:
    """The Secret a pod mounts with `host_key_volume` (labelled so the policy pack can tell it from a CA)."""
    return k8s.core.v1.Secret(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=secret_name, namespace=namespace, labels={**labels, contract.ROLE_LABEL: contract.HOST_KEYS_ROLE}
        ),
        type="Opaque",
        string_data=keys.files(),
        opts=opts,
    )


class HostKeySet(pulumi.dynamic.Resource):
    """The host keys of one SSH server and their CA-signed certificates (keys and files are secret)."""

    private_keys: pulumi.Output[dict[str, str]]
    public_keys: pulumi.Output[dict[str, str]]
    certificates: pulumi.Output[dict[str, str]]
    ca_public_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        ca_private_key: pulumi.Input[str],
        principals: pulumi.Input[Sequence[str]],
        key_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "ca_private_key": pulumi.Output.secret(ca_private_key),
            "principals": principals,
            "key_id": key_id,
            "private_keys": None,
            "public_keys": None,
            "certificates": None,
            "ca_public_key": None,
        }
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["private_keys"])
        super().__init__(HostKeySetProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_opts))

    def files(self) -> pulumi.Output[dict[str, str]]:
        """The Secret's string data: secret, since it carries the private keys."""
        return pulumi.Output.secret(
            pulumi.Output.all(self.private_keys, self.public_keys, self.certificates).apply(
                lambda parts: host_key_files(parts[0], parts[1], parts[2])
            )
        )
