"""The real engine against what a user would pick instead: the upstream chart with helm.

On one local control plane, interleaved in one run: a no-op `helm upgrade
--install` of the upstream cloud-server chart (../shared/anchors) with values
equivalent to the class stack, and the program's first `pulumi up`, no-op
`pulumi up` (with and without its preview), and `pulumi preview`, for the dev
stack and for the class stack with 1, 30 and 300 students. Figures go to
bench/results/engine.md with the ratios, the resource counts and how the time
grows with the roster.

`--program DIR` measures another checkout of the program (a git worktree of
an older commit, say) so a design change is shown before and after in the
same conditions.

Usage: python -m bench.engine_bench [--rounds N] [--program DIR] [--out FILE] [--sizes 1,30,300]
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import localcluster  # noqa: E402

from tests.e2e.project import toolchain_env  # noqa: E402

CHART = REPO.parent / "shared" / "anchors" / "cloud-server-chart" / "cloud-server"
RESULTS = REPO / "bench" / "results" / "engine.md"
LOCAL_PROVISIONER = "classroom.local/hostpath"


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def class_stack(students: int, namespace: str) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "stacks" / "Pulumi.cis90-fall2026.yaml").read_text())
    cfg = data["config"]
    cfg["classroom:storageProvisioner"] = LOCAL_PROVISIONER
    cfg["classroom:namespace"] = namespace
    cfg["classroom:service"] = {"type": "LoadBalancer", "port": 22}
    cfg.pop("classroom:ssh", None)
    cfg["classroom:roster"] = [{"username": f"s{i:04d}", "keys": [public_key()]} for i in range(students)]
    return data


# Programs with (almost) nothing in them: what any `pulumi up` costs before the program adds anything.
FLOOR_PROGRAMS = {
    "empty": "",
    "one-configmap": (
        "import pulumi_kubernetes as k8s\n\n"
        "k8s.core.v1.ConfigMap('floor', metadata={'name': 'floor', 'namespace': 'default'}, data={'a': 'b'})\n"
    ),
}


def floor_program(root: Path, name: str) -> Path:
    """A Pulumi project directory holding the floor program `name` (FLOOR_PROGRAMS)."""
    program = root / f"program-{name}"
    (program / "stacks").mkdir(parents=True)
    (program / "__main__.py").write_text(
        f'"""Floor program {name!r} of bench/engine_bench.py."""\n' + FLOOR_PROGRAMS[name]
    )
    (program / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": f"floor-{name}",
                "stackConfigDir": "stacks",
                "runtime": {"name": "python", "options": {}},
            }
        )
    )
    return program


def chart_values() -> dict[str, Any]:
    """The class stack's chart-level settings, as the chart spells them."""
    cfg = yaml.safe_load((REPO / "stacks" / "Pulumi.cis90-fall2026.yaml").read_text())["config"]
    get = lambda key: cfg[f"classroom:{key}"]  # noqa: E731
    return {
        "homeSize": get("homeSize"),
        "user": get("user"),
        "userID": get("userID"),
        "hostName": get("hostName"),
        "privileged": get("privileged"),
        "userSSHImport": get("userSSHImport"),
        "customizeRepo": get("customizeRepo"),
        "customizeRepoCommand": get("customizeRepoCommand"),
        "rcEnv": get("rcEnv"),
        "extraPorts": [{"port": p["port"], "proto": p["protocol"], "name": p["name"]} for p in get("extraPorts")],
        "extraMounts": [
            {"name": m["name"], "path": m["path"], "size": m["size"], "className": "local-retain"}
            for m in get("extraMounts")
        ],
        "homeStorageClassName": "local-retain",
        "image": get("image"),
        "resources": get("resources"),
        "podAnnotations": get("podAnnotations"),
        "service": {"type": "LoadBalancer", "port": 22},
    }


class Project:
    def __init__(self, root: Path, program: Path, stack: str, stack_data: dict[str, Any], env: dict[str, str]):
        self.dir = root / stack
        self.dir.mkdir(parents=True)
        for name in ("__main__.py", "components"):
            src = program / name
            if not src.exists():  # a floor program has no components
                continue
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, self.dir / name)
        (self.dir / "stacks").mkdir()
        for extra in (program / "stacks").iterdir():
            shutil.copy2(extra, self.dir / "stacks" / extra.name)
        (self.dir / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(stack_data, sort_keys=False))
        project = yaml.safe_load((program / "Pulumi.yaml").read_text())
        project["runtime"]["options"]["virtualenv"] = str(REPO / ".venv")
        (self.dir / "Pulumi.yaml").write_text(yaml.safe_dump(project))
        backend = root / f"{stack}-backend"
        backend.mkdir()
        self.stack = stack
        self.env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "bench",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "NO_COLOR": "1",
        }
        self.pulumi("stack", "select", "--create", stack)

    def pulumi(self, *args: str) -> float:
        cmd = ["pulumi", *args, "--non-interactive"]
        if args[:2] != ("stack", "select"):
            cmd += ["--stack", self.stack]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return seconds

    def resources(self) -> int:
        out = subprocess.run(
            ["pulumi", "stack", "export", "--stack", self.stack],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return len(json.loads(out)["deployment"]["resources"])


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f} s" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--program", type=Path, default=REPO, help="checkout of the program to measure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sizes", default="1,30,300")
    parser.add_argument("--label", default="", help="what this checkout is (written into the file)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    env = {**os.environ, **toolchain_env()}
    helm = shutil.which("helm", path=env["PATH"])
    if not helm:
        raise SystemExit("helm is not built: run tools/toolchain.sh helm")
    rows: list[tuple[str, int, dict[str, list[float]]]] = []
    with tempfile.TemporaryDirectory(prefix="classroom-engine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cluster = localcluster.LocalCluster(tmp / "cluster")
        with cluster:
            env["KUBECONFIG"] = str(cluster.kubeconfig)
            values = tmp / "values.yaml"
            values.write_text(yaml.safe_dump(chart_values()))
            helm_cmd = [
                helm,
                "upgrade",
                "--install",
                "cis90",
                str(CHART),
                "-n",
                "chart-bench",
                "--create-namespace",
                "-f",
                str(values),
            ]

            def helm_noop() -> float:
                start = time.perf_counter()
                subprocess.run(helm_cmd, env=env, check=True, capture_output=True, timeout=600)
                return time.perf_counter() - start

            helm_first = helm_noop()
            helm_times: list[float] = []
            dev = yaml.safe_load((args.program / "stacks" / "Pulumi.dev.yaml").read_text())
            dev["config"]["classroom:namespace"] = "bench-dev"
            stacks: list[tuple[str, Path, dict[str, Any]]] = [
                (name, floor_program(tmp, name), {"config": {}}) for name in FLOOR_PROGRAMS
            ]
            stacks.append(("dev", args.program, dev))
            for size in sizes:
                stacks.append((f"class{size}", args.program, class_stack(size, f"bench-class{size}")))
            for stack, program, data in stacks:
                proj = Project(tmp, program, stack, data, env)
                times: dict[str, list[float]] = {"first": [proj.pulumi("up", "--yes", "--skip-preview")]}
                measures: dict[str, tuple[str, ...]] = {
                    "up": ("up", "--yes", "--expect-no-changes"),
                    "up-skip-preview": ("up", "--yes", "--skip-preview"),
                    "preview": ("preview", "--expect-no-changes"),
                }
                for _ in range(args.rounds):
                    helm_times.append(helm_noop())
                    for key, command in measures.items():
                        times.setdefault(key, []).append(proj.pulumi(*command))
                rows.append((stack, proj.resources(), times))
                print(stack, {k: median(v) for k, v in times.items()}, flush=True)
    helm_med = statistics.median(helm_times)
    small = next((t for s, _, t in rows if s == f"class{sizes[0]}"), None)
    lines = [
        "# The engine against helm (bench/engine_bench.py)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores), {args.rounds} rounds, interleaved on one local control plane "
        f"(tools/localcluster.py, kwok nodes).{(' Program: ' + args.label + '.') if args.label else ''}",
        "",
        f"Alternative: `helm upgrade --install` of the upstream chart with the class stack's values, no-op: "
        f"median {helm_med:.2f} s ({spread(helm_times)}); its first install {helm_first:.2f} s.",
        "",
        "| stack | resources | first `up` | no-op `up` | no-op `up --skip-preview` | `preview` |"
        " `up` ÷ helm | `up` ÷ 1-student `up` |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stack, count, times in rows:
        up = statistics.median(times["up"])
        vs_small = f"{up / statistics.median(small['up']):.2f}×" if small else "-"
        lines.append(
            f"| {stack} | {count} | {median(times['first'])} | {median(times['up'])} ({spread(times['up'])}) | "
            f"{median(times['up-skip-preview'])} | {median(times['preview'])} | {up / helm_med:.1f}× | {vs_small} |"
        )
    lines += [
        "",
        "`up` is what `make up` runs (preview, then update); `--skip-preview` halves the engine's passes.",
        "`empty` and `one-configmap` are floor programs (nothing, and one ConfigMap through the kubernetes",
        "provider): what every `pulumi up` costs here before a program adds anything. Where the floor's no-op",
        "`up` is above 2× helm, no design of the class program can bring its own `up` within 2× helm.",
        "Resources count everything in the stack's state (providers and the stack itself included).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
