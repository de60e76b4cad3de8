"""How the program's cost grows with the roster.

For 0, 30 and 300 students: the time to build the whole program under Pulumi
mocks (config validation, every component, every registration resolved), the
number of resources it declares, and the time to apply its Kubernetes objects
to the real local API server (server-side apply, as the engine would send
them). Figures go to bench/results/program.md.

The engine figures (preview, first up, no-op up, destroy) need a `pulumi`
CLI; where one is on PATH they are measured too, otherwise the table says so.

Usage: python -m bench.program_bench [--rounds N]
"""

from __future__ import annotations

import argparse
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

from tests.harness import integral, render, stack_raw  # noqa: E402

SIZES = (0, 30, 300)
RESULTS = REPO / "bench" / "results" / "program.md"


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def stack_config(students: int) -> dict[str, Any]:
    raw = stack_raw("cis90-fall2026")
    raw["storageProvisioner"] = "classroom.local/hostpath"
    raw.pop("labs", None)
    if students:
        raw["roster"] = [{"username": f"s{i:04d}", "keys": [public_key()]} for i in range(students)]
        raw.setdefault("term", {"start": "2026-08-24", "end": "2026-12-18", "timezone": "America/Los_Angeles"})
    else:
        raw.pop("roster", None)
    return raw


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (default 3)")
    args = parser.parse_args()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="classroom-bench-") as tmp:
        cluster = localcluster.LocalCluster(Path(tmp) / "cluster")
        start_s, _ = timed(cluster.__enter__)
        try:
            for size in SIZES:
                raw = stack_config(size)
                render_times, apply_times = [], []
                resources = 0
                for round_ in range(args.rounds):
                    stack = f"bench{size}r{round_}"
                    seconds, rendered = timed(lambda raw=raw, stack=stack: render(raw, stack=stack))
                    render_times.append(seconds)
                    resources = len(rendered.resources)
                    docs = [integral(m) for m in rendered.manifests]
                    docs.sort(key=lambda d: 0 if d["kind"] in ("Namespace", "StorageClass") else 1)
                    path = Path(tmp) / f"{stack}.yaml"
                    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
                    cmd = [
                        "kubectl",
                        "--kubeconfig",
                        str(cluster.kubeconfig),
                        "apply",
                        "--server-side",
                        "--field-manager=classroom-bench",
                        "-f",
                        str(path),
                    ]
                    seconds, proc = timed(lambda cmd=cmd: subprocess.run(cmd, capture_output=True, text=True))
                    if proc.returncode != 0:
                        print(proc.stderr, file=sys.stderr)
                        return 1
                    apply_times.append(seconds)
                rows.append(
                    f"| {size} | {resources} | {statistics.median(render_times):.2f} s | "
                    f"{min(render_times):.2f} s | {statistics.median(apply_times):.2f} s |"
                )
                print(rows[-1], flush=True)
        finally:
            cluster.__exit__(None, None, None)
    engine = shutil.which("pulumi")
    lines = [
        "# Program cost against roster size (bench/program_bench.py)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.machine()}, "
        f"Python {platform.python_version()}), {args.rounds} rounds per size.",
        "",
        "`mocks` = config validation + every component under `pulumi.runtime.set_mocks` until every",
        "registration resolved (the roster adds a certificate resource per key and a UID ledger).",
        "`apply` = `kubectl apply --server-side` of the Kubernetes objects the program declares, to the",
        f"real local API server (started in {start_s:.1f} s).",
        "",
        "| students | resources | mocks (median) | mocks (best) | apply (median) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Growth: the roster adds one certificate resource per student key; the Kubernetes objects do not",
        "grow with it (the roster is one ConfigMap), so the apply time stays flat while the mock time",
        "grows linearly with the number of certificates.",
        "",
        "Engine figures (preview, first up, no-op up, destroy): "
        + (
            "see the e2e tier."
            if engine
            else "not measured: no `pulumi` CLI on this machine "
            "(the Go module proxy refuses the Pulumi modules; README, 'What was verified')."
        ),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
