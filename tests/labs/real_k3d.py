"""The real k3d binary against a throwaway engine (tests/labs/docker_env.py), for tests and bench/k3d_bench.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from labd.config import DEFAULT_TEMPLATE
from labd.render import ClusterValues, render_k3d_config, to_yaml

from tests.labs.docker_env import Dockerd
from tests.labs.support import Labd, free_port, wait_for


class RealK3d:
    """The real k3d against the throwaway engine."""

    def __init__(self, binary: str, engine: Dockerd, work: Path) -> None:
        self.binary = binary
        self.engine = engine
        self.work = work
        # K3D_FIX_DNS=0: k3d's DNS fix runs iptables-save/-restore inside the
        # node; the stand-in image has no iptables (the real k3s image has).
        self.env = {**engine.env, "K3D_FIX_DNS": "0"}
        # The same k3d for programs that run it with their own environment (labd.k3d.K3d, labd)
        self.wrapper = work / "k3d"
        self.wrapper.write_text(
            f"#!/bin/sh\nexport DOCKER_HOST={engine.host} DOCKER_CONFIG={engine.root}/client "
            f'K3D_FIX_DNS=0\nexec {binary} "$@"\n'
        )
        self.wrapper.chmod(0o755)

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def config(self, user: str, template: dict[str, Any] | None = None) -> tuple[Path, ClusterValues]:
        """The config file labd would write for user (labd's own renderer and default template)."""
        values = ClusterValues(
            user, f"lab-{user}", free_port(), free_port(), free_port(), "cis90", "fall2026", "lab.example.edu"
        )
        path = self.work / f"{values.cluster}.yaml"
        path.write_text(to_yaml(render_k3d_config(template or DEFAULT_TEMPLATE, values)))
        return path, values

    def listed(self) -> dict[str, Any]:
        done = self("cluster", "list", "-o", "json")
        assert done.returncode == 0, done.stderr
        return {item["name"]: item for item in json.loads(done.stdout)}

    def containers(self, cluster: str) -> dict[str, dict[str, Any]]:
        ids = self.engine.docker("ps", "-aq", "--filter", f"label=k3d.cluster={cluster}").stdout.split()
        if not ids:
            return {}
        inspected = json.loads(self.engine.docker("inspect", *ids).stdout)
        return {c["Name"].lstrip("/"): c for c in inspected}


def wait_running(labd: Labd, user: str, what: str) -> None:
    """Until labd reports user's cluster running; on time-out the message carries labd's record and log."""
    try:
        wait_for(lambda: labd.status(user)["state"] == "running", timeout=120, what=what)
    except AssertionError as err:
        log = (labd.root / "labd.log").read_text()[-3000:]
        raise AssertionError(f"{err}; labd says {labd.status(user)}; labd.log ends:\n{log}") from None
