#!/usr/bin/env bash
# Runs every benchmark; each writes its figures to bench/results/*.md.
# Needs root (the roster and lab benchmarks create accounts and sshd sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh system venv toolchain toolchain-helm   # helm: the chart side of engine_bench
eval "$(tools/toolchain.sh env)"
for bench in engine_bench program_bench roster_bench labs_bench labd_bench k3d_bench node_bench; do
    echo "[bench] $bench" >&2
    .venv/bin/python -m "bench.$bench"
done
