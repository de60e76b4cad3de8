#!/usr/bin/env python3
"""Benchmark: the real k3d on a real Docker engine, directly, through plain docker, and through labd.

A throwaway dockerd (tests/labs/docker_env.py) with the STAND-IN node images
(tests/labs/k3s_standin: busybox scripts, not k3s; a real k3s server takes
far longer to come up), the toolchain's real k3d v5.8.3, and a real labd on
127.0.0.1 driving that k3d. Per round:

- k3d directly: `k3d cluster create --config` (labd's rendered config), `stop`, `start`, `delete`;
- plain docker, what one might use instead of k3d stop/start: `docker stop` / `docker start`
  of the cluster's two containers (no wait for the node's readiness line, which k3d start does);
- labd's HTTP API as the session hook uses it: session open -> the cluster running (first open:
  create; later: start), and last session close -> the cluster stopped (stopGrace 0, reaper every
  0.1 s), each timed until labd reports the state (and k3d agrees).

Run as root (network namespace, dockerd), with the toolchain on PATH:
  eval "$(tools/toolchain.sh env)"; .venv/bin/python bench/k3d_bench.py [--rounds N]
Writes bench/results/k3d.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "containers" / "labd"))

from tests.labs.docker_env import Dockerd, build_standin_images  # noqa: E402
from tests.labs.support import Labd  # noqa: E402
from tests.labs.test_k3d_real import RealK3d  # noqa: E402


def timed(step: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start


def run_k3d(k3d: RealK3d, *args: str) -> None:
    ok(k3d(*args))


def docker_each(engine: Dockerd, verb: str, *names: str) -> None:
    """One docker call per container, in order (k3d too starts the server before the loadbalancer)."""
    for name in names:
        engine.docker(verb, name)


def ok(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, done.args))} exited {done.returncode}: {done.stderr.strip()[-500:]}")


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f}"


def until_state(labd: Labd, user: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while labd.status(user)["state"] != state:
        if time.monotonic() > deadline:
            raise SystemExit(f"{user} not {state} within {timeout:g}s: {labd.status(user)}")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "k3d.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("k3d_bench: run as root (it starts a dockerd in a network namespace)", file=sys.stderr)
        return 2
    k3d_binary = shutil.which("k3d")
    if k3d_binary is None:
        print('k3d_bench: no k3d on PATH (eval "$(tools/toolchain.sh env)")', file=sys.stderr)
        return 2
    results: dict[str, list[float]] = {
        k: []
        for k in (
            "k3d create",
            "k3d stop",
            "k3d start",
            "k3d delete",
            "docker stop",
            "docker start",
            "labd create",
            "labd stop",
            "labd start",
        )
    }
    with tempfile.TemporaryDirectory(prefix="k3d-bench-") as tmp:
        engine = Dockerd(Path(tmp) / "engine")
        try:
            engine.start()
            build_standin_images(engine)
            k3d = RealK3d(k3d_binary, engine, Path(tmp))
            labd = Labd(
                Path(tmp) / "labd",
                k3dBinary=str(k3d.wrapper),
                k3dTimeout=120,
                stopGrace=0,
                idleTimeout=3600,
                reaperInterval=0.1,
            )
            labd.start()
            try:
                for index in range(args.rounds):
                    # k3d directly, on labd's own rendered config
                    path, values = k3d.config(f"direct{index}")
                    results["k3d create"].append(timed(run_k3d, k3d, "cluster", "create", "--config", str(path)))
                    results["k3d stop"].append(timed(run_k3d, k3d, "cluster", "stop", values.cluster))
                    results["k3d start"].append(timed(run_k3d, k3d, "cluster", "start", values.cluster))
                    # plain docker on the same two containers
                    server, lb = f"k3d-{values.cluster}-server-0", f"k3d-{values.cluster}-serverlb"
                    results["docker stop"].append(timed(docker_each, engine, "stop", lb, server))
                    results["docker start"].append(timed(docker_each, engine, "start", server, lb))
                    assert f"ingress {server}" in (engine.fetch(values.http_port) or ""), "not serving after start"
                    results["k3d delete"].append(timed(run_k3d, k3d, "cluster", "delete", values.cluster))

                    # labd, as the session hook drives it
                    user = f"user{index}"
                    session = {"session": f"s{index}", "host": "login-0"}

                    def open_session(u: str = user, s: dict[str, str] = session) -> None:
                        status, body = labd.request("POST", f"/v1/users/{u}/sessions", u, s)
                        assert status in (200, 202), body
                        until_state(labd, u, "running")

                    def close_session(u: str = user, s: dict[str, str] = session) -> None:
                        status, body = labd.request("DELETE", f"/v1/users/{u}/sessions/{s['session']}", u)
                        assert status == 200, body
                        until_state(labd, u, "stopped")

                    results["labd create"].append(timed(open_session))
                    results["labd stop"].append(timed(close_session))
                    assert k3d.listed()[f"lab-{user}"]["serversRunning"] == 0
                    results["labd start"].append(timed(open_session))
                    assert k3d.listed()[f"lab-{user}"]["serversRunning"] == 1
                    close_session()
                    status, body = labd.request("DELETE", f"/v1/users/{user}", "admin", key_id="admin")
                    assert status == 200, body
            finally:
                labd.stop()
        finally:
            engine.stop()

    r = results
    cpu = os.cpu_count()
    text = f"""# k3d benchmark (real k3d, real Docker engine, STAND-IN node image)

`bench/k3d_bench.py`, {args.rounds} rounds, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, on this
{cpu}-core machine ({platform.machine()}, Linux {platform.release()}). The real k3d v5.8.3 (toolchain build)
on a throwaway Debian dockerd 20.10 (overlay2, cgroupfs, in its own network namespace), with the
**stand-in** node, proxy and tools images of tests/labs/k3s_standin: busybox scripts that print what k3d
waits for. They are not k3s: a real k3s server node takes many seconds more to start (and its image
must be pulled once), so these figures are k3d's and Docker's own overhead, the floor under the real thing.
One server node plus the loadbalancer per cluster, as labd's default template makes it.

| operation (ms) | median | best | worst |
| --- | --- | --- | --- |
| `k3d cluster create --config` (labd's rendered config) | {summary(r["k3d create"])} |
| `k3d cluster stop` | {summary(r["k3d stop"])} |
| `k3d cluster start` (waits for the node's readiness line) | {summary(r["k3d start"])} |
| `k3d cluster delete` | {summary(r["k3d delete"])} |
| instead of k3d: `docker stop` of the cluster's 2 containers | {summary(r["docker stop"])} |
| instead of k3d: `docker start` of the 2 containers (no readiness wait) | {summary(r["docker start"])} |
| labd: session open -> cluster running, first login (k3d create) | {summary(r["labd create"])} |
| labd: session open -> cluster running, later login (k3d start) | {summary(r["labd start"])} |
| labd: last session closed -> cluster stopped (`stopGrace` 0) | {summary(r["labd stop"])} |

labd's figures are timed from its HTTP request (as the session hook sends it) until labd's status says
running / stopped, polled every 20 ms; they hold its `k3d cluster list` before each operation, the
reaper's 0.1 s period on the stop path, and writing the Traefik routes. The session hook, sshd and the
login server are not in them (bench/results/labd.md has those, with the k3d double). In production
`stopGrace` (default 60 s) delays the stop on purpose. Where `k3d cluster start` spends its seconds
beyond `docker start` (it waits for the node's and the loadbalancer's log lines) was not profiled.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
