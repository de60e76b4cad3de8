#!/usr/bin/env python3
"""Benchmark: how long the stack takes to declare the per-student k3d clusters.

For 30 and 300 students with labs spread over 3 lab hosts:
- mocks: parse_labs + placement + LabHost construction under
  `pulumi.runtime.set_mocks`, until every registration has resolved;
- engine: `pulumi preview` of tests/labhost/program with the REAL engine and
  the command provider (no SSH happens in a preview: host keys are pinned in
  the config), when the toolchain's pulumi and command plugin are installed.

Figures only (no assertion). Usage: .venv/bin/python bench/labs_bench.py [--rounds N]
Writes bench/results/labs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pulumi  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from components.labconfig import parse_labs  # noqa: E402
from components.labs import LabHost, LabHostArgs  # noqa: E402

SIZES = (30, 300)
PIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkPinnedHostKeyxxxxxxxxxxxxxxxxxxxx"
KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)


@dataclass(frozen=True)
class Person:
    username: str
    labs: bool = True


def labs_raw(students: int) -> dict[str, Any]:
    capacity = students  # generous: the benchmark measures declaration, not fitting
    return {
        "domain": "lab.example.edu",
        "hosts": [
            {"name": f"lab{i}", "address": f"10.0.0.{i}", "capacity": capacity, "hostKey": PIN} for i in (1, 2, 3)
        ],
        "ssh": {"privateKey": KEY},
        "sessionKey": "s" * 48,
        "adminKey": "a" * 48,
    }


def people(students: int) -> list[Person]:
    return [Person(f"s{i:04d}") for i in range(students)]


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.count = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.count += 1
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def mocks_once(students: int) -> tuple[float, int]:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="classroom", stack="bench", preview=False)
    start = time.perf_counter()

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        labs = parse_labs({"labs": labs_raw(students)}, base_dir=REPO, people=people(students))
        hosts = [
            LabHost(s.name, LabHostArgs(spec=s, labs=labs, ca_public_key=PIN, class_name="bench", term="t1"))
            for s in labs.hosts
        ]
        return pulumi.Output.all(*[c.id for h in hosts for c in h.clusters.values()])

    program()
    return time.perf_counter() - start, mocks.count


def engine_env() -> dict[str, str] | None:
    env = dict(os.environ)
    out = subprocess.run(
        ["bash", str(REPO / "tools" / "toolchain.sh"), "env"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("export PATH="):
            env["PATH"] = line.split("=", 1)[1].split(":")[0].strip("'\"") + ":" + env["PATH"]
    if not shutil.which("pulumi", path=env["PATH"]):
        return None
    listed = subprocess.run(
        ["pulumi", "plugin", "ls", "--json"], capture_output=True, text=True, env=env, check=False
    ).stdout
    try:
        plugins = json.loads(listed or "[]") or []
    except json.JSONDecodeError:
        return None
    return env if any(p.get("name") == "command" and p.get("version") == "1.2.1" for p in plugins) else None


def engine_once(env: dict[str, str], students: int) -> float:
    with tempfile.TemporaryDirectory(prefix="labs-bench-") as tmp:
        root = Path(tmp)
        program = root / "program"
        shutil.copytree(REPO / "tests" / "labhost" / "program", program)
        (program / "Pulumi.yaml").write_text(
            "name: labs-bench\nruntime:\n  name: python\n  options:\n"
            f"    toolchain: pip\n    virtualenv: {REPO / '.venv'}\n"
        )
        (root / "backend").mkdir()
        (root / "labs.json").write_text(
            json.dumps(
                {
                    "labs": labs_raw(students),
                    "people": [{"username": p.username} for p in people(students)],
                    "caPublicKey": PIN,
                }
            )
        )
        run_env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
            "PULUMI_CONFIG_PASSPHRASE": "bench",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "CLASSROOM_REPO": str(REPO),
            "LABHOST_TEST_CONFIG": str(root / "labs.json"),
        }
        subprocess.run(
            ["pulumi", "stack", "init", "bench", "--non-interactive"],
            cwd=program,
            env=run_env,
            check=True,
            capture_output=True,
        )
        start = time.perf_counter()
        done = subprocess.run(
            ["pulumi", "preview", "--non-interactive", "--json"],
            cwd=program,
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"pulumi preview failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: list[str] = []
    for students in SIZES:
        times, count = [], 0
        for _ in range(args.rounds):
            elapsed, count = mocks_once(students)
            times.append(elapsed)
        rows.append(f"| mocks | {students} | {count} | {statistics.median(times):.2f} s | {min(times):.2f} s |")
    env = engine_env()
    if env is None:
        rows.append("| engine preview | - | - | not run: toolchain pulumi + command 1.2.1 plugin missing | - |")
    else:
        for students in SIZES:
            times = [engine_once(env, students) for _ in range(max(1, args.rounds - 1))]
            rows.append(f"| engine preview | {students} | - | {statistics.median(times):.2f} s | {min(times):.2f} s |")
    out = REPO / "bench" / "results" / "labs.md"
    out.write_text(
        "# Declaring per-student k3d clusters (bench/labs_bench.py)\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} CPUs, shared), Python {platform.python_version()}, {args.rounds} rounds.\n"
        "3 lab hosts with pinned host keys; every student has labs. `mocks` = parse_labs + placement + "
        "LabHost under `pulumi.runtime.set_mocks` until all registrations resolve (resources = all "
        "registered, 3 per host + 1 per student). `engine preview` = `pulumi preview` of "
        "tests/labhost/program with the real engine and command provider on an empty stack (no SSH).\n\n"
        "| run | students | resources | median | best |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
