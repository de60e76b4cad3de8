"""Benchmark the real node and the walkthrough: image build cold and warm, node start, up to first login.

- login image: `tools/loginimage.py build` in an empty cache (debootstrap + buildah, cold), then again (warm);
- node: a local control plane with no kwok node, then tools/node.py's start (kubelet Ready, kube-proxy's rules);
- walkthrough: the login image imported, `pulumi up` of an unprivileged stack (real engine), then the
  first successful `ssh` with the certificate `classroom roster issue` wrote; login latency over 5 logins.

Needs root. Writes bench/results/node.md. Usage: .venv/bin/python -m bench.node_bench [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import localcluster  # noqa: E402
import loginimage  # noqa: E402
import node as realnode  # noqa: E402

from tests.e2e import test_walkthrough as walkthrough  # noqa: E402
from tests.e2e.project import PulumiProject, toolchain_env  # noqa: E402

RESULTS = REPO / "bench" / "results" / "node.md"


def image_build(cache: Path | None) -> float:
    env = {**os.environ, **({"CLASSROOM_CACHE": str(cache)} if cache else {})}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "loginimage.py"), "build"], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cold", action="store_true", help="do not rebuild the image from nothing")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="classroom-image-bench-") as cold:
            cold_s = image_build(Path(cold))
            rows.append(("login image build, cold (debootstrap + buildah, empty cache)", f"{cold_s:.0f} s"))
    image_build(None)  # make sure the real cache holds it
    rows.append(("login image build, warm (inputs unchanged)", f"{image_build(None):.2f} s"))

    env = toolchain_env()
    os.environ.update({k: v for k, v in env.items() if k in ("PATH", "PULUMI_HOME", "CLASSROOM_TOOLCHAIN_DIR")})
    with tempfile.TemporaryDirectory(prefix="classroom-node-bench-") as tmp:
        base = Path(tmp)
        keydir = base / "keys"
        keydir.mkdir()
        keys, pubs = {}, {}
        for user in ("alice", "bob"):
            keys[user], pubs[user] = walkthrough.keypair(keydir, user)
        t0 = time.perf_counter()
        with localcluster.LocalCluster(base / "cluster", fake_nodes=(), lb_pool=realnode.NODE_LB_POOL) as cluster:
            rows.append(("local control plane start (no kwok node)", f"{time.perf_counter() - t0:.1f} s"))
            with realnode.RealNode(cluster, base / "node") as node:
                rows.append(("real node start (kubelet Ready, kube-proxy's rules)", f"{node.started_in:.1f} s"))
                t1 = time.perf_counter()
                node.import_image(loginimage.build(walkthrough.RELEASE))
                rows.append(("login image import into the node's containerd", f"{time.perf_counter() - t1:.1f} s"))
                project = PulumiProject.create(base, walkthrough.STACK, env, str(cluster.kubeconfig))
                for key, value in walkthrough.stack_config(pubs, ["alice", "bob"]).items():
                    project.set_config(key, value)
                walk = walkthrough.Walk(cluster, node, project, keys, pubs, base / "certs")
                t2 = time.perf_counter()
                project.up()
                up_s = time.perf_counter() - t2
                address = walk.issue()
                walk.ssh_eventually("alice", "true", address, deadline=120)
                rows.append(("`pulumi up` from nothing (pod Ready on the real node)", f"{up_s:.1f} s"))
                rows.append(("`pulumi up` start to first successful ssh login", f"{time.perf_counter() - t2:.1f} s"))
                latencies = []
                for _ in range(5):
                    t3 = time.perf_counter()
                    walk.ssh("alice", "true", address)
                    latencies.append(time.perf_counter() - t3)
                rows.append(
                    (
                        "ssh login latency (connect, certificate auth, `true`, exit), median of 5",
                        f"{statistics.median(latencies) * 1000:.0f} ms",
                    )
                )
                project.run("destroy", "--yes", "--skip-preview", "--exclude-protected")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# The real node and the walkthrough (bench/node_bench.py)",
        "",
        f"{stamp} on {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), one round. "
        "Real kubelet + containerd + runc + CNI + kube-proxy (tools/node.py), the Debian login image "
        "built here (tools/loginimage.py), the real engine; a figure, never an assertion.",
        "",
        "| what | time |",
        "| --- | --- |",
        *[f"| {what} | {value} |" for what, value in rows],
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
