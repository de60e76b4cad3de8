"""Drive the real Pulumi CLI on a copy of this project (file backend, passphrase secrets).

The copy keeps the repository's working tree clean: `pulumi stack init` writes an
`encryptionsalt` into the stack file, and tests edit stack config freely.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("__main__.py", "components", "requirements.txt")


@dataclass
class PulumiProject:
    """A copy of the program with its own backend and stack."""

    workdir: Path
    stack: str
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path, stack: str, env: dict[str, str], kubeconfig: str) -> PulumiProject:
        workdir = root / "project"
        workdir.mkdir(parents=True)
        for name in PROJECT_FILES:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, workdir / name)
        (workdir / "stacks").mkdir()
        for stack_file in (REPO / "stacks").glob("Pulumi.*.yaml"):
            shutil.copy2(stack_file, workdir / "stacks" / stack_file.name)
        for extra in (REPO / "stacks").iterdir():
            if extra.is_file() and not extra.name.startswith("Pulumi."):
                shutil.copy2(extra, workdir / "stacks" / extra.name)
        project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
        project["runtime"]["options"]["virtualenv"] = str(REPO / ".venv")
        (workdir / "Pulumi.yaml").write_text(yaml.safe_dump(project))
        backend = root / "backend"
        backend.mkdir()
        full_env = {
            **os.environ,
            **env,
            "KUBECONFIG": kubeconfig,
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "NO_COLOR": "1",
        }
        proj = cls(workdir=workdir, stack=stack, env=full_env)
        proj.run("stack", "select", "--create", stack)
        return proj

    @property
    def backend_dir(self) -> Path:
        return Path(self.env["PULUMI_BACKEND_URL"].removeprefix("file://"))

    @property
    def stack_file(self) -> Path:
        return self.workdir / "stacks" / f"Pulumi.{self.stack}.yaml"

    def run(
        self, *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["pulumi", *args, "--non-interactive"]
        if args[:2] != ("stack", "select"):
            cmd += ["--stack", self.stack]
        proc = subprocess.run(
            cmd, cwd=self.workdir, env={**self.env, **(env or {})}, text=True, capture_output=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`{' '.join(cmd)}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                f"\n--- stderr\n{proc.stderr[-6000:]}"
            )
        return proc

    def up(
        self, *extra: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", *extra, check=check, env=env)

    def preview_json(self) -> dict[str, Any]:
        proc = self.run("preview", "--diff", "--json")
        return json.loads(proc.stdout)

    def set_config(self, key: str, value: Any) -> None:
        """Edit the stack file directly (structured values, like an instructor would)."""
        data = yaml.safe_load(self.stack_file.read_text())
        data.setdefault("config", {})[f"classroom:{key}"] = value
        self.stack_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def del_config(self, key: str) -> None:
        data = yaml.safe_load(self.stack_file.read_text())
        data.get("config", {}).pop(f"classroom:{key}", None)
        self.stack_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def get_config(self, key: str) -> Any:
        data = yaml.safe_load(self.stack_file.read_text())
        return data.get("config", {}).get(f"classroom:{key}")

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.run("stack", "output", "--json").stdout)

    def state_text(self) -> str:
        files = list(self.backend_dir.rglob(f"{self.stack}.json"))
        assert files, f"no state file for {self.stack} under {self.backend_dir}"
        return "\n".join(f.read_text() for f in files)


def toolchain_env() -> dict[str, str]:
    """The whole environment after `eval "$(tools/toolchain.sh env)"` (PATH, PULUMI_HOME, ...)."""
    out = subprocess.run(
        ["bash", "-c", f'eval "$(bash {REPO / "tools" / "toolchain.sh"} env)" && env -0'],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def kubectl(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], text=True, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def kget(kubeconfig: str, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)


def steps_by_type(preview: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    """The preview steps acting on resources of a type (e.g. kubernetes:core/v1:PersistentVolumeClaim)."""
    found = []
    for step in preview.get("steps", []):
        state = step.get("newState") or step.get("oldState") or {}
        if state.get("type") == type_:
            found.append(step)
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    """Until check() is true; the local cluster's controllers act on their next pass, not at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
