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

Then the same labd operations with `"engine": "rootless"` (labd's default), the real labd as root
with tests/labs/rootless_env.py's RootlessLab (the stand-in images `docker save`d from the throwaway
engine and preloaded by labd, `--iptables=false`, the CAP_SYS_RESOURCE-dropping runtime wrapper):
a new student per round, so the first login holds useradd, the engine's start, the image preload
and k3d create; the later login the engine's start and k3d start; the last close k3d stop and the
engine's stop (timed until the student's last engine process is gone). The engine alone is timed
through labd.engines.RootlessEngines on the same settings (another user prefix, labd does not see it).

Run as root (network namespace, dockerd), with the toolchain on PATH:
  eval "$(tools/toolchain.sh env)"; .venv/bin/python bench/k3d_bench.py [--rounds N] [--engines shared,rootless]
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
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "containers" / "labd"))
from labd.engines import RootlessConfig, RootlessEngines  # noqa: E402

from bench import publish  # noqa: E402
from tests.labs.docker_env import Dockerd, build_standin_images  # noqa: E402
from tests.labs.real_k3d import RealK3d  # noqa: E402
from tests.labs.rootless_env import RootlessLab, missing_tools, tun_problem  # noqa: E402
from tests.labs.support import Labd  # noqa: E402


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
    if not values:
        return "- | - | -"
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f}"


def until_state(labd: Labd, user: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while labd.status(user)["state"] != state:
        if time.monotonic() > deadline:
            log = (labd.root / "labd.log").read_text()[-2000:]
            raise SystemExit(f"{user} not {state} within {timeout:g}s: {labd.status(user)}; labd.log ends:\n{log}")
        time.sleep(0.02)


def until_no_process(uid: int, timeout: float = 60) -> None:
    """Until no host process runs as uid (a student's engine is gone only when all of it is)."""
    deadline = time.monotonic() + timeout
    while RootlessLab._pids_of_uid(uid):
        if time.monotonic() > deadline:
            raise SystemExit(f"uid {uid} still runs {RootlessLab._pids_of_uid(uid)} after {timeout:g}s")
        time.sleep(0.05)


def session_ops(labd: Labd, user: str, index: int, timeout: float) -> tuple[Callable[[], None], Callable[[], None]]:
    """open(): a session opened -> labd says running; close(): the last one closed -> labd says stopped."""
    session = {"session": f"s{index}", "host": "login-0"}

    def open_session() -> None:
        status, body = labd.request("POST", f"/v1/users/{user}/sessions", user, session)
        assert status in (200, 202), body
        until_state(labd, user, "running", timeout)

    def close_session() -> None:
        status, body = labd.request("DELETE", f"/v1/users/{user}/sessions/{session['session']}", user)
        assert status == 200, body
        until_state(labd, user, "stopped", timeout)

    return open_session, close_session


def version(tool: str, word: int = -1) -> str:
    """A word (the last by default) of tool's first --version line (e.g. "1.1.0"), or "?"."""
    try:
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return "?"
    lines = done.stdout.strip().splitlines()
    try:
        return lines[0].split()[word].rstrip(",")
    except IndexError:
        return "?"


def host_fetch(port: int) -> str:
    """GET http://127.0.0.1:port/ on the host (where rootlesskit publishes): the body, or "" if nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def delete_student(labd: Labd, user: str) -> None:
    status, body = labd.request("DELETE", f"/v1/users/{user}", "admin", key_id="admin")
    assert status == 200, body


def bench_shared(engine: Dockerd, k3d_binary: str, tmp: Path, rounds: int, results: dict[str, list[float]]) -> None:
    k3d = RealK3d(k3d_binary, engine, tmp)
    labd = Labd(
        tmp / "labd",
        k3dBinary=str(k3d.wrapper),
        k3dTimeout=120,
        stopGrace=0,
        idleTimeout=3600,
        reaperInterval=0.1,
    )
    labd.start()
    try:
        for index in range(rounds):
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
            open_session, close_session = session_ops(labd, user, index, 120)
            results["shared create"].append(timed(open_session))
            results["shared stop"].append(timed(close_session))
            assert k3d.listed()[f"lab-{user}"]["serversRunning"] == 0
            results["shared start"].append(timed(open_session))
            assert k3d.listed()[f"lab-{user}"]["serversRunning"] == 1
            close_session()
            results["shared delete"].append(timed(delete_student, labd, user))
    finally:
        labd.stop()


def bench_rootless(engine: Dockerd, k3d_binary: str, rounds: int, results: dict[str, list[float]]) -> None:
    lab = RootlessLab(k3d_binary, engine)
    try:
        settings = lab.rootless
        # The engine alone, on labd's settings; its host users carry another prefix (lab.prefix + "e"), so
        # labd does not count them as its students, and RootlessLab.stop still removes them.
        direct = RootlessEngines(
            RootlessConfig(
                user_prefix=lab.prefix + "e",
                data_dir=settings["dataDir"],
                run_dir=settings["runDir"],
                dockerd_rootless=settings["dockerdRootless"],
                docker_binary=settings["dockerBinary"],
                dockerd_args=tuple(settings["dockerdArgs"]),
                preload_images=tuple(settings["preloadImages"]),
                start_timeout=float(settings["startTimeout"]),
            )
        )
        for index in range(rounds):
            student = f"e{index}"
            results["engine useradd"].append(timed(direct.ensure_account, student))
            uid = direct.identity(student)[0]
            results["engine first start"].append(timed(direct.env, student))
            assert direct.running(student)

            def stop_engine(s: str = student, u: int = uid) -> None:
                direct.stop(s)
                until_no_process(u)

            results["engine stop"].append(timed(stop_engine))
            results["engine start"].append(timed(direct.env, student))
            results["engine stop"].append(timed(stop_engine))
            direct.remove(student)

        lab.labd.start()
        for index in range(rounds):
            user = f"r{index}"
            open_session, close_session = session_ops(lab.labd, user, index, 240)
            results["rootless create"].append(timed(open_session))
            http = lab.labd.status(user)["ports"]["http"]
            assert f"ingress k3d-lab-{user}-server-0" in host_fetch(http), "not serving from its own engine"
            uid = lab.host_user(user).pw_uid
            start = time.perf_counter()
            close_session()
            results["rootless stop"].append(time.perf_counter() - start)
            until_no_process(uid)
            results["rootless stop+engine"].append(time.perf_counter() - start)
            results["rootless start"].append(timed(open_session))
            assert RootlessLab._pids_of_uid(uid), "no engine process after the later login"
            close_session()
            until_no_process(uid)
            results["rootless delete"].append(timed(delete_student, lab.labd, user))
    finally:
        lab.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="shared,rootless", help="shared, rootless or both (comma-separated)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "k3d.md"))
    args = parser.parse_args()
    engines = set(args.engines.split(","))
    if not engines or engines - {"shared", "rootless"}:
        parser.error("--engines: shared, rootless or shared,rootless")
    if os.geteuid() != 0:
        print("k3d_bench: run as root (it starts dockerds, host users and rootless engines)", file=sys.stderr)
        return 2
    k3d_binary = shutil.which("k3d")
    if k3d_binary is None:
        print('k3d_bench: no k3d on PATH (eval "$(tools/toolchain.sh env)")', file=sys.stderr)
        return 2
    if "rootless" in engines and (tun_problem() or missing_tools()):
        print(f"k3d_bench: no rootless engines here: {tun_problem() or ''} {missing_tools()}", file=sys.stderr)
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
            "shared create",
            "shared stop",
            "shared start",
            "shared delete",
            "rootless create",
            "rootless stop",
            "rootless stop+engine",
            "rootless start",
            "rootless delete",
            "engine useradd",
            "engine first start",
            "engine start",
            "engine stop",
        )
    }
    loads = [os.getloadavg()]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="k3d-bench-") as tmp:
        engine = Dockerd(Path(tmp) / "engine")
        try:
            engine.start()
            build_standin_images(engine)
            if "shared" in engines:
                bench_shared(engine, k3d_binary, Path(tmp), args.rounds, results)
                loads.append(os.getloadavg())
            if "rootless" in engines:
                bench_rootless(engine, k3d_binary, args.rounds, results)
                loads.append(os.getloadavg())
        finally:
            engine.stop()
    elapsed = time.monotonic() - started
    load = ", ".join(f"{one:.2f}" for one, _, _ in loads)

    r = results
    cpu = os.cpu_count()
    versions = (
        f"dockerd {version('dockerd', 2).split('+')[0]}, rootlesskit {version('rootlesskit')}, "
        f"slirp4netns {version('slirp4netns')}"
    )
    rounds = f"{args.rounds} round{'s' if args.rounds != 1 else ''}"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    side_by_side = "\n".join(
        f"| {label} | {summary(r[shared])} | {summary(r[rootless])} |"
        for label, shared, rootless in (
            (
                "session open -> cluster running, first login (shared: k3d create; "
                "rootless: useradd, engine start, image preload, k3d create)",
                "shared create",
                "rootless create",
            ),
            (
                "session open -> cluster running, later login (shared: k3d start; rootless: engine start, k3d start)",
                "shared start",
                "rootless start",
            ),
            ("last session closed -> labd says stopped (`stopGrace` 0; k3d stop)", "shared stop", "rootless stop"),
            (
                "last session closed -> cluster stopped and the student's engine gone (no process of its host user)",
                "shared stop",
                "rootless stop+engine",
            ),
            (
                "delete the student (`DELETE /v1/users/<u>`, cluster stopped; rootless: engine start, "
                "k3d delete, engine stop, data and host user removed)",
                "shared delete",
                "rootless delete",
            ),
        )
    )
    engine_alone = "\n".join(
        f"| {label} | {summary(r[key])} |"
        for label, key in (
            ("host user made (`useradd`, with its /etc/subuid and /etc/subgid range)", "engine useradd"),
            (
                "first start: dockerd-rootless.sh until `docker version` answers, plus the stand-in images' "
                "`docker load`",
                "engine first start",
            ),
            ("later start (images already there)", "engine start"),
            ("stop (SIGTERM to rootlesskit, until no process of the host user is left; 2 per round)", "engine stop"),
        )
    )
    text = f"""# k3d benchmark (real k3d, real Docker engines, STAND-IN node image)

`bench/k3d_bench.py`, {rounds}, {when}, on this
{cpu}-core machine ({platform.machine()}, Linux {platform.release()}), {elapsed / 60:.0f} min in all.
1-minute load average at the start, then after each engine's part: {load} (the first is the rest of
the machine; the later ones are mostly this bench's own engines and clusters on 2 cores).
The real k3d v5.8.3 (toolchain build)
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

## labd: shared engine vs rootless engine per student

The same real labd and k3d, once with `"engine": "shared"` (every cluster on the throwaway engine
above) and once with `"engine": "rootless"`, labd's default, set up as tests/labs/rootless_env.py does:
labd as root makes a host user per student and starts Debian's dockerd-rootless.sh as that user
({versions}; slirp4netns networking, rootlesskit's builtin port driver,
`--iptables=false`), with tests/labs/docker-runtime-wrapper as default runtime (runc minus
CAP_SYS_RESOURCE, which this sandbox lacks), the stand-in images preloaded from a `docker save` tarball
(`rootless.preloadImages`), and runs k3d as that user. A new student each round, so every first login
is a student's first. With the shared engine there is no engine to stop: its two stop rows are the same.

| operation (ms) | shared: median | best | worst | rootless: median | best | worst |
| --- | --- | --- | --- | --- | --- | --- |
{side_by_side}

The rootless engine alone (labd.engines.RootlessEngines on the same settings, no k3d, no cluster):

| operation (ms) | median | best | worst |
| --- | --- | --- | --- |
{engine_alone}

What the rootless cost buys: a student's cluster-admin (root in a privileged k3d node) is their own
unprivileged host user, not root on the lab host (tests/labs/test_isolation.py, containers/labd/SECURITY.md).
A lab whose students may all be trusted with root on the host can pick `"engine": "shared"` instead and
get the shared-engine column: no engine to start at login and none to stop at the last close.

labd's figures are timed from its HTTP request (as the session hook sends it) until labd's status says
running / stopped, polled every 20 ms; they hold its `k3d cluster list` before each operation, the
reaper's 0.1 s period on the stop path, and writing the Traefik routes. On the rootless stop path labd
says stopped after k3d stop and only then stops the engine, so the engine's stop is the difference of
the two stop rows. Of the engine's stop, about 1.1 s is rootlesskit and dockerd shutting down (labd's
`stop` returns once rootlesskit has exited, polling every 0.1 s). The session hook, sshd and the login
server are not in them (bench/results/labd.md has those, with the k3d double). In production `stopGrace`
(default 60 s) delays the stop on purpose. Where `k3d cluster start` spends its seconds beyond `docker
start` (it waits for the node's and the loadbalancer's log lines) was not profiled.
"""
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
