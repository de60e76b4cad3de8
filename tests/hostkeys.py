"""Host keys for tests' sshd, made by the code that ships (components/hostkeys.py).

The program signs host certificates at deploy time and the pod mounts them
from a Secret at /etc/ssh/host: private keys 0400, public halves and
certificates 0444, owner root. `install_host_keys` lays the same files out the
way the kubelet does for a Secret volume (each name a symlink through `..data`
into a timestamped directory that holds the real files), so every tier that
boots the real sshd uses what production uses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from components.hostkeys import HOST_KEY_TYPES, generate_host_key, host_key_files, host_key_mode, sign_host_certificate


def new_ca(path: Path, comment: str = "class-ca") -> str:
    """A fresh ed25519 CA at `path` (and `path`.pub), made by ssh-keygen; returns the private key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, capture_output=True
    )
    return path.read_text()


def install_host_keys(ca_private_pem: str, host_dir: Path, principals: Sequence[str]) -> dict[str, str]:
    """Write the host-key Secret's files into `host_dir` with the Secret volume's modes; returns them."""
    private, public, certificates = {}, {}, {}
    for kind in HOST_KEY_TYPES:
        private[kind], public[kind] = generate_host_key(kind)
        certificates[kind] = sign_host_certificate(
            ca_private_pem, public[kind], principals=list(principals), key_id=f"host:{principals[0]}"
        )
    files = host_key_files(private, public, certificates)
    payload = host_dir / "..2026_01_01_00_00_00.000000001"
    payload.mkdir(parents=True)
    for name, content in files.items():
        target = payload / name
        target.write_text(content)
        target.chmod(host_key_mode(name))
    (host_dir / "..data").symlink_to(payload.name)
    for name in files:
        (host_dir / name).symlink_to(f"..data/{name}")
    return files


def verified_host_certificate(cert_line: str) -> tuple[Any, str]:
    """The OpenSSH certificate in `cert_line`, its signature checked, and the signer's key as `type base64`.

    Raises (cryptography's InvalidSignature) unless the certificate is signed by the key it names.
    """
    cert: Any = serialization.load_ssh_public_identity(" ".join(cert_line.split()[:2]).encode())
    cert.verify_cert_signature()
    signer = cert.signature_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return cert, " ".join(signer.decode().split()[:2])
