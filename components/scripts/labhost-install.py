"""Install or upgrade labd and the edge router on a lab host (run by LabHost over SSH).

Reads one JSON manifest on stdin (stdin, not argv, because it carries labd's
keys and must not show up in `ps`):

    {"root": "", "stage": DIR, "serviceManager": "systemd"|"none", "python": "/usr/bin/python3",
     "files": [{"path": P, "mode": "0600", "content": TEXT, "restart": ["labd"]}, ...],
     "services": {"labd": {"argv": [...], "health": URL}, "traefik": {"argv": [...], "optional": true}}}

Idempotent: a file is rewritten only when its bytes differ, and a service is
restarted only when something it reads changed (or it is not running), so a
re-run with the same manifest changes nothing. Prints a JSON summary.
Stdlib only: it runs under the host's python3.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any


def write_if_changed(path: str, content: bytes, mode: int) -> bool:
    try:
        with open(path, "rb") as handle:
            same = handle.read() == content
        if same and (os.stat(path).st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # one rename: labd never reads half a config
    return True


def tree_bytes(directory: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for base, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            full = os.path.join(base, name)
            with open(full, "rb") as handle:
                out[os.path.relpath(full, directory)] = handle.read()
    return out


def install_package(stage: str, target: str) -> bool:
    """Swap the staged labd package into place if it differs from what is there."""
    source = stage if os.path.exists(os.path.join(stage, "__init__.py")) else os.path.join(stage, "labd")
    if not os.path.exists(os.path.join(source, "__init__.py")):
        raise SystemExit(f"labhost-install: no labd package under {stage}")
    if os.path.isdir(target) and tree_bytes(source) == tree_bytes(target):
        return False
    fresh = target + ".new"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(source, fresh, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    old = target + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(target):
        os.rename(target, old)
    os.rename(fresh, target)
    shutil.rmtree(old, ignore_errors=True)
    return True


def prune_stages(stage: str) -> None:
    """Staged copies of older labd versions (CopyToRemote never deletes what it copied)."""
    parent, current = os.path.split(stage.rstrip("/"))
    for name in os.listdir(parent):
        if name.startswith("labd-") and name != current:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def pid_alive(pidfile: str) -> int:
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def restart_plain(name: str, spec: dict[str, Any], run_dir: str, log_dir: str) -> None:
    """serviceManager 'none': a detached process with a pid file (test hosts without systemd)."""
    pidfile = os.path.join(run_dir, f"{name}.pid")
    pid = pid_alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pidfile):
                break
            time.sleep(0.1)
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, f"{name}.log"), "ab")  # noqa: SIM115 (handed to the child)
    # A new session and no inherited descriptors: the SSH channel must be
    # able to close while the service keeps running.
    proc = subprocess.Popen(
        spec["argv"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **spec.get("env", {})},
    )
    with open(pidfile, "w", encoding="ascii") as handle:
        handle.write(str(proc.pid))


def wait_healthy(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"labhost-install: {url} did not answer within {seconds:g}s")
        time.sleep(0.2)


# The command each Debian package gives labd, for a host without dpkg (installed some other way).
PROVIDES = {
    "docker.io": "dockerd",
    "rootlesskit": "rootlesskit",
    "slirp4netns": "slirp4netns",
    "uidmap": "newuidmap",
    "fuse-overlayfs": "fuse-overlayfs",
}


def _installed(name: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return shutil.which(PROVIDES.get(name, name)) is not None
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False)
    return status.stdout.strip() == "install ok installed"


def install_packages(packages: list[str]) -> list[str]:
    """apt-get install whichever of packages is missing (labd's rootless engines need them); the installed."""
    missing = [name for name in packages if not _installed(name)]
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        needed = ", ".join(f"{name} (for {PROVIDES.get(name, name)})" for name in missing)
        raise SystemExit(
            f"labhost-install: labd's rootless engines need {needed} and this host has no apt-get: "
            "install them with the host's own package manager, or set the host's engine to shared"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        # apt's progress goes to stderr: stdout is this script's one JSON summary.
        done = subprocess.run(argv, env=env, stdout=sys.stderr, check=False)
        if done.returncode != 0:
            raise SystemExit(
                f"labhost-install: '{' '.join(argv)}' failed (exit {done.returncode}); "
                f"labd's rootless engines need {', '.join(missing)}"
            )
    return missing


def run(manifest: dict[str, Any]) -> int:
    root = manifest.get("root", "")
    changed: dict[str, bool] = {}
    for name in install_packages(manifest.get("packages", [])):
        changed[f"package {name}"] = True
    restart: set[str] = set()
    if install_package(manifest["stage"], root + "/opt/classroom-lab/labd"):
        changed["/opt/classroom-lab/labd"] = True
        restart.add("labd")
    prune_stages(manifest["stage"])
    for item in manifest["files"]:
        if write_if_changed(root + item["path"], item["content"].encode(), int(item["mode"], 8)):
            changed[item["path"]] = True
            restart.update(item.get("restart", []))
    manager = manifest.get("serviceManager", "systemd")
    services: dict[str, Any] = manifest.get("services", {})
    run_dir, log_dir = root + "/run/classroom-lab", root + "/var/log/classroom-lab"
    started: list[str] = []
    for name, spec in services.items():
        if spec.get("optional") and not os.access(spec["argv"][0], os.X_OK):
            continue  # e.g. Traefik not installed on this host yet: routes are still written
        if manager == "systemd":
            unit = f"classroom-{name}.service"
            if (
                name in restart
                or subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode != 0
            ):
                subprocess.run(["systemctl", "daemon-reload"], check=True)
                subprocess.run(["systemctl", "enable", unit], check=True, stdout=subprocess.DEVNULL)
                subprocess.run(["systemctl", "restart", unit], check=True)
                started.append(name)
        elif name in restart or not pid_alive(os.path.join(run_dir, f"{name}.pid")):
            restart_plain(name, spec, run_dir, log_dir)
            started.append(name)
        if spec.get("health"):
            wait_healthy(spec["health"])
    print(json.dumps({"changed": sorted(changed), "restarted": started}, sort_keys=True))
    return 0


def main() -> int:
    return run(json.load(sys.stdin))


if __name__ == "__main__":
    sys.exit(main())
