"""SshCertificateAuthority: the class's SSH CA.

Either the stack generates the CA key (`pulumi_tls.PrivateKey`, ED25519 by
default, RSA 4096 on request) and keeps it in Pulumi state as a secret, or the
CA lives in an existing Kubernetes Secret with keys `ca_key` / `ca_key_pub`
(the public key may also be `ca_key.pub`, as the cloud-server chart's own
Secret spells it).

The private key never reaches the cluster from this program: the roster signs
user certificates and hostkeys.py signs host certificates with
`private_key_openssh` (a Pulumi secret) in the engine's process, and pods get
only certificates. It is never a plain output.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components import contract
from components.sshcert import ca_public_key_line

CA_KEY = contract.CA_KEY_ENTRY
CA_KEY_PUB = contract.CA_PUBLIC_ENTRY


@dataclass
class SshCertificateAuthorityArgs:
    namespace: pulumi.Input[str]
    algorithm: str = "ed25519"  # "ed25519" or "rsa"
    existing_secret: str = ""  # name of a Secret in `namespace` holding ca_key / ca_key_pub
    known_hosts_patterns: Sequence[str] = ("*",)


# The cloud-server chart's Secret spells the public key `ca_key.pub`.
CHART_CA_KEY_PUB = contract.CHART_CA_PUBLIC_ENTRY


def _decode(data: Mapping[str, str] | None, key: str) -> str:
    spellings = (key, CHART_CA_KEY_PUB) if key == CA_KEY_PUB else (key,)
    found = next((k for k in spellings if data and k in data), None)
    if data is None or found is None:
        raise pulumi.RunError(
            f"config key 'ssh.existingSecret': the Secret has no key '{key}'; expected keys ca_key and ca_key_pub "
            f"(or the chart's {CHART_CA_KEY_PUB})"
        )
    return base64.b64decode(data[found]).decode()


def _existing_private_key(data: Mapping[str, str] | None) -> str:
    """The Secret's `ca_key`, checked: a usable private key whose public half is the Secret's public key."""
    private = _decode(data, CA_KEY)
    public = _decode(data, CA_KEY_PUB)
    try:
        derived = ca_public_key_line(private)
    except ValueError as err:
        raise pulumi.RunError(
            f"config key 'ssh.existingSecret': the Secret's '{CA_KEY}' is not a usable private key ({err}); "
            "expected an unencrypted OpenSSH or PEM ed25519, ECDSA or RSA key"
        ) from None
    if derived.split()[:2] != public.split()[:2]:
        raise pulumi.RunError(
            f"config key 'ssh.existingSecret': the Secret's {CA_KEY_PUB} is not the public half of '{CA_KEY}'; "
            "host certificates signed with that key would not match the known_hosts line students get"
        )
    return private


class SshCertificateAuthority(pulumi.ComponentResource):
    """The SSH certificate authority that signs host and user certificates."""

    public_key: pulumi.Output[str]
    known_hosts_line: pulumi.Output[str]
    private_key_openssh: pulumi.Output[str]

    def __init__(
        self, name: str, args: SshCertificateAuthorityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("classroom:index:SshCertificateAuthority", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if args.existing_secret:
            existing = k8s.core.v1.Secret.get(
                f"{name}-existing",
                pulumi.Output.concat(args.namespace, "/", args.existing_secret),
                opts=child,
            )
            # The provider marks all Secret data secret; the public half is
            # public by definition (it goes into every known_hosts file).
            public_key = pulumi.Output.unsecret(existing.data.apply(lambda d: _decode(d, CA_KEY_PUB).strip()))
            self.private_key_openssh = pulumi.Output.secret(existing.data.apply(_existing_private_key))
        else:
            algorithm = args.algorithm.lower()
            key = tls.PrivateKey(
                f"{name}-key",
                algorithm="RSA" if algorithm == "rsa" else "ED25519",
                rsa_bits=4096 if algorithm == "rsa" else None,
                # A new CA would silently invalidate every student's
                # known_hosts line and certificate: keep it across
                # `destroy --exclude-protected`, and refuse a plan that
                # replaces it (e.g. a caAlgorithm change) until someone
                # unprotects it on purpose.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
            )
            public_key = key.public_key_openssh.apply(lambda k: k.strip())
            self.private_key_openssh = pulumi.Output.secret(key.private_key_openssh)

        self.public_key = public_key
        patterns = ",".join(args.known_hosts_patterns)
        self.known_hosts_line = public_key.apply(lambda k: f"@cert-authority {patterns} {k}")
        self.register_outputs(
            {
                "public_key": self.public_key,
                "known_hosts_line": self.known_hosts_line,
                "private_key_openssh": self.private_key_openssh,
            }
        )
