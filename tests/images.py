"""What every login image must hold: one list for the unit tier (it reads the Dockerfiles) and e2e (a built image)."""

from __future__ import annotations

# What the pod and the roster reconciler rely on inside the image.
REQUIRED_PACKAGES = {
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "sudo",
    "python3",
    "ssh-import-id",
    "git",
    "passwd",
    "libpam-modules",
    "curl",
    "ca-certificates",
    "locales",
}
