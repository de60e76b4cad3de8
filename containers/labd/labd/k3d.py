"""The only place labd runs k3d: argv lists, no shell, bounded in time."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class K3dError(Exception):
    """k3d failed; the message carries its exit status and last lines of output."""


# Container port -> labd's name for it. k3d publishes all three on the cluster's
# loadbalancer node; it keys the API port without a protocol ("6443"), HTTP and
# HTTPS as "80/tcp" and "443/tcp" (checked against the real k3d, tests/labs/test_k3d_real.py).
PORT_NAMES = {"6443": "api", "80": "http", "443": "https"}


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    running: bool
    # The host ports the cluster is published on ({"api", "http", "https"}), read
    # from k3d; None unless all three are there.
    ports: dict[str, int] | None = None


def _published_ports(nodes: Any) -> dict[str, int] | None:
    """The host ports of the loadbalancer's API, HTTP and HTTPS bindings, from `k3d cluster list -o json`.

    k3d reports each binding's HostIp ("127.0.0.1" when labd published the port
    on backendHost, "0.0.0.0" for the API port and for clusters an older labd
    made). Where one container port has several bindings (a template may add
    its own), the one on a specific address wins over one on all addresses,
    since that is the one labd publishes for Traefik. An HTTP/HTTPS port found
    only on all addresses is still adopted (its routes stay right) but logged:
    that cluster is reachable past Traefik until it is recreated.
    """
    found: dict[str, tuple[bool, int, str]] = {}
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict) or node.get("role") != "loadbalancer":
            continue
        mappings = node.get("portMappings")
        for key, bindings in mappings.items() if isinstance(mappings, dict) else []:
            name = PORT_NAMES.get(str(key).removesuffix("/tcp"))
            if name is None or not isinstance(bindings, list):
                continue
            for binding in bindings:
                if not isinstance(binding, dict):
                    continue
                port, address = str(binding.get("HostPort", "")), str(binding.get("HostIp") or "")
                if not (port.isdigit() and 0 < int(port) < 65536):
                    continue
                specific = address not in ("", "0.0.0.0", "::")  # noqa: S104 (reads k3d's bindings, binds nothing)
                if name not in found or (specific and not found[name][0]):
                    found[name] = (specific, int(port), address)
    if set(found) != set(PORT_NAMES.values()):
        return None
    for name in ("http", "https"):
        if not found[name][0]:
            logging.getLogger(__name__).warning(
                "%s port %d is published on all addresses (%s): reachable past Traefik until recreated",
                name,
                found[name][1],
                found[name][2] or "no address",
            )
    return {name: port for name, (_, port, _) in found.items()}


class K3d:
    def __init__(
        self,
        binary: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
        run_as: tuple[int, int] | None = None,
    ) -> None:
        self.binary = binary
        self.timeout = timeout
        # Added to labd's environment for every call: DOCKER_HOST of a student's own engine (labd.engines).
        self.env = dict(env or {})
        # (uid, gid) k3d runs as: a student's host user, so that it can reach that student's engine only,
        # whatever their (student-owned) runtime directory's docker.sock has been made to point at.
        self.run_as = run_as

    def for_engine(self, env: Mapping[str, str], run_as: tuple[int, int] | None = None) -> K3d:
        """The same k3d, talking to the engine env names, as run_as."""
        return K3d(self.binary, self.timeout, {**self.env, **env}, run_as)

    def _run(self, *args: str) -> str:
        argv = [self.binary, *args]
        if self.run_as is not None:
            uid, gid = self.run_as
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
        try:
            done = subprocess.run(
                argv,
                env={**os.environ, **self.env} if self.env else None,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise K3dError(f"k3d binary {self.binary!r} not found") from None
        except subprocess.TimeoutExpired:
            raise K3dError(f"'k3d {' '.join(args)}' did not finish within {self.timeout:g}s") from None
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise K3dError(f"'k3d {' '.join(args)}' exited {done.returncode}: {tail}")
        return done.stdout

    def list(self) -> dict[str, ClusterInfo]:
        out = self._run("cluster", "list", "-o", "json")
        try:
            data = json.loads(out or "[]")
        except json.JSONDecodeError:
            raise K3dError("'k3d cluster list -o json' printed something that is not JSON") from None
        clusters: dict[str, ClusterInfo] = {}
        for item in data or []:
            name = str(item.get("name", ""))
            # k3d counts running server containers; a cluster whose servers
            # are all stopped cannot serve its API, whatever the agents do.
            running = int(item.get("serversRunning", 0)) > 0
            clusters[name] = ClusterInfo(name=name, running=running, ports=_published_ports(item.get("nodes")))
        return clusters

    def create(self, config_file: str) -> None:
        self._run("cluster", "create", "--config", config_file)

    def start(self, name: str) -> None:
        self._run("cluster", "start", name)

    def stop(self, name: str) -> None:
        self._run("cluster", "stop", name)

    def delete(self, name: str) -> None:
        self._run("cluster", "delete", name)

    def kubeconfig(self, name: str, server_host: str, api_port: int) -> str:
        """The cluster's kubeconfig, pointed at the lab host as students reach it.

        k3d writes the address the API was bound on (often 0.0.0.0), which is
        useless from the login server.
        """
        text = self._run("kubeconfig", "get", name)
        return re.sub(r"(?m)^(\s*server:\s*)https://\S+$", rf"\g<1>https://{server_host}:{api_port}", text)
