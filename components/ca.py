"""SshCertificateAuthority: the class's SSH CA.

Either the stack generates the CA key (`pulumi_tls.PrivateKey`, ED25519 by
default, RSA 4096 on request) and keeps it in Pulumi state as a secret, or the
CA lives in an existing Kubernetes Secret with keys `ca_key` / `ca_key_pub`
(the public key may also be `ca_key.pub`, as the cloud-server chart's own
Secret spells it).

The private key reaches the cluster only as a Secret that the LoginServer
mounts into its init container; it is never a plain output. Other components
(the roster) sign user certificates with `private_key_openssh`, which is a
Pulumi secret.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

CA_KEY = "ca_key"
CA_KEY_PUB = "ca_key_pub"
CA_ROLE_LABEL = "classroom/role"


@dataclass
class SshCertificateAuthorityArgs:
    namespace: pulumi.Input[str]
    algorithm: str = "ed25519"  # "ed25519" or "rsa"
    existing_secret: str = ""  # name of a Secret in `namespace` holding ca_key / ca_key_pub
    known_hosts_patterns: Sequence[str] = ("*",)
    labels: dict[str, str] | None = None


# The cloud-server chart's Secret spells the public key `ca_key.pub`.
CHART_CA_KEY_PUB = "ca_key.pub"


def _decode(data: Mapping[str, str] | None, key: str) -> str:
    spellings = (key, CHART_CA_KEY_PUB) if key == CA_KEY_PUB else (key,)
    found = next((k for k in spellings if data and k in data), None)
    if data is None or found is None:
        raise pulumi.RunError(
            f"config key 'ssh.existingSecret': the Secret has no key '{key}'; expected keys ca_key and ca_key_pub "
            f"(or the chart's {CHART_CA_KEY_PUB})"
        )
    return base64.b64decode(data[found]).decode()


class SshCertificateAuthority(pulumi.ComponentResource):
    """The SSH certificate authority that signs host and user certificates."""

    secret_name: pulumi.Output[str]
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
            self.secret_name = existing.metadata.apply(lambda m: m.name or args.existing_secret)
            # The provider marks all Secret data secret; the public half is
            # public by definition (it goes into every known_hosts file).
            public_key = pulumi.Output.unsecret(existing.data.apply(lambda d: _decode(d, CA_KEY_PUB).strip()))
            self.private_key_openssh = pulumi.Output.secret(existing.data.apply(lambda d: _decode(d, CA_KEY)))
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
            secret = k8s.core.v1.Secret(
                f"{name}-secret",
                # The policy pack finds the CA Secret by this label and checks
                # that only init containers mount it.
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name="ssh-ca",
                    namespace=args.namespace,
                    labels={**(args.labels or {}), CA_ROLE_LABEL: "ssh-ca"},
                ),
                type="Opaque",
                # Secret outputs are already secret (the provider marks data),
                # and the private key input is a secret Output as well.
                string_data={CA_KEY: self.private_key_openssh, CA_KEY_PUB: public_key},
                opts=child,
            )
            self.secret_name = secret.metadata.apply(lambda m: m.name or "ssh-ca")

        self.public_key = public_key
        patterns = ",".join(args.known_hosts_patterns)
        self.known_hosts_line = public_key.apply(lambda k: f"@cert-authority {patterns} {k}")
        self.register_outputs(
            {
                "secret_name": self.secret_name,
                "public_key": self.public_key,
                "known_hosts_line": self.known_hosts_line,
                "private_key_openssh": self.private_key_openssh,
            }
        )
