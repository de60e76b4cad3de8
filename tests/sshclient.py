"""The one way tests run the real OpenSSH client: configured only by these flags.

No user or system ssh_config (`-F /dev/null`), no agent, only the given key,
and only the given known_hosts file, so a test's result never depends on the
machine's own SSH setup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def ssh_argv(
    destination: str,
    *,
    identity: Path,
    known_hosts: Path,
    port: int | None = None,
    options: Sequence[str] = (),
    command: Sequence[str] = (),
) -> list[str]:
    """`ssh` argv for DESTINATION; OPTIONS are extra `-o` values, COMMAND the remote command's words."""
    argv = ["ssh", "-F", "/dev/null", "-T"]
    if port is not None:
        argv += ["-p", str(port)]
    argv += ["-i", str(identity)]
    for option in (
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "ConnectTimeout=10",
        "PreferredAuthentications=publickey",
        *options,
    ):
        argv += ["-o", option]
    return [*argv, destination, *command]
