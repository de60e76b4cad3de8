#!/usr/bin/env python3
"""Benchmark: login -> cluster ensure at k3d, and last logout -> cluster stop at k3d.

Real sshd (private mount namespace, test PAM stack running the session hook),
real labd over HTTP on 127.0.0.1, and the k3d DOUBLE in place of k3d (which
answers at once, so these figures are labd + hook + sshd overhead, not k3d's
own create/start time).

Run as root: .venv/bin/python bench/labd_bench.py [--rounds N]
Writes bench/results/labd.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(
    0, str(REPO / "containers" / "labd")
)  # labd, imported by the tests helpers (pytest has it on pythonpath)
from bench import publish  # noqa: E402
from tests.labs.sshd_env import SshdEnv, home  # noqa: E402
from tests.labs.support import Labd, wait_for  # noqa: E402


def first_call_after(labd: Labd, verb: set[str], since: float) -> float:
    def find() -> float | None:
        for call in labd.double.calls():
            if call["argv"][:2] in [["cluster", v] for v in verb] and call["started"] >= since:
                return float(call["started"])
        return None

    return float(wait_for(find, timeout=60, what=f"k3d {verb} call"))


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "labd.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("labd_bench: run as root (it starts sshd and creates test users)", file=sys.stderr)
        return 2
    login_to_call: list[float] = []
    login_to_kubeconfig: list[float] = []
    logout_to_stop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="labd-bench-") as tmp:
        labd = Labd(Path(tmp) / "labd", stopGrace=0, idleTimeout=3600, reaperInterval=0.05)
        labd.start()
        env = SshdEnv(labd, users=1)
        try:
            env.start()
            user = env.users[0]
            kube = home(user) / ".kube" / "config"
            for _ in range(args.rounds):
                if kube.exists():
                    kube.unlink()
                t_login = time.time()
                client = env.ssh(user)
                login_to_call.append(first_call_after(labd, {"create", "start"}, t_login) - t_login)
                wait_for(kube.exists, timeout=60, what="kubeconfig")
                login_to_kubeconfig.append(kube.stat().st_mtime - t_login)
                assert client.stdin is not None
                t_logout = time.time()
                client.stdin.close()
                client.wait()
                logout_to_stop.append(first_call_after(labd, {"stop"}, t_logout) - t_logout)
                wait_for(lambda: labd.double.running(f"lab-{user}") is False, what="stopped")
        finally:
            env.stop()
            labd.stop()
    text = f"""# labd benchmark

`bench/labd_bench.py`, {args.rounds} rounds, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, on this
2-core machine. Real OpenSSH sshd with the PAM session hook, real labd on 127.0.0.1, the k3d **double**
in place of k3d (it answers immediately), `stopGrace` 0.

| interval (ms) | median | min | max |
| --- | --- | --- | --- |
| `ssh` started -> labd runs `k3d cluster create/start` | {summary(login_to_call)} |
| `ssh` started -> `~/.kube/config` written in the student's home | {summary(login_to_kubeconfig)} |
| last session ends (client closes) -> labd runs `k3d cluster stop` | {summary(logout_to_stop)} |

The first round creates the cluster, later rounds start it. With real k3d, add k3d's own create or
start time (not measured here: no Docker on this machine) to the kubeconfig figure, and `stopGrace`
(default 60 s) to the stop figure. Neither login nor logout waits for any of this: the hook returns to
PAM at once and does its work in a detached process.
"""
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
