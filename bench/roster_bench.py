"""Benchmark reconcile-roster: 500 accounts from nothing, then a no-op pass over the same 500.

Runs the real script with the real useradd/gpasswd/chage inside a throwaway
Debian chroot (tests/ssh/rootfs.py; needs root). Targets: < 10 s and < 1 s.
Writes bench/results/roster.md. Usage: .venv/bin/python -m bench.roster_bench [--people N]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.rosterdata import parse_access, roster_document  # noqa: E402
from tests.ssh.rootfs import overlay_root  # noqa: E402

RESULTS = REPO / "bench" / "results" / "roster.md"


def key_line(index: int) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    seed = index.to_bytes(4, "big") * 8
    public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def timed(root: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        ["chroot", str(root), "python3", "/usr/local/sbin/reconcile-roster", "--offline"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"reconcile-roster failed: {result.stderr[-2000:]}")
    return elapsed, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=500)
    args = parser.parse_args()
    people = [
        {"username": f"s{i:04d}", "keys": [key_line(i)], "role": "ta" if i % 50 == 0 else "student", "labs": i % 3 == 0}
        for i in range(args.people)
    ]
    access = parse_access(
        {
            "roster": people,
            "term": {"start": "2026-08-24", "end": "2026-12-18", "grace": "7d"},
            "revocations": {"serials": [1, 2, 3]},
        },
        base_dir=REPO,
    )
    doc = roster_document(access, stack="bench-fall2026")
    with overlay_root() as root:
        shutil.copy(REPO / "components/scripts/reconcile-roster", root / "usr/local/sbin/reconcile-roster")
        (root / "etc/classroom/roster").mkdir(parents=True)
        (root / "etc/classroom/roster/roster.json").write_text(json.dumps(doc))
        (root / "etc/ssh/classroom").mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "tmp/ca")], check=True)
        shutil.copy(root / "tmp/ca.pub", root / "etc/ssh/classroom/ca.pub")
        cold, cold_summary = timed(root)
        warm, warm_summary = timed(root)
        warm2, _ = timed(root)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        f"# reconcile-roster benchmark\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()} host, Debian bookworm chroot, "
        f"overlayfs over the cached rootfs). Command: `.venv/bin/python -m bench.roster_bench`.\n\n"
        f"| pass | people | seconds | target | summary |\n|---|---:|---:|---:|---|\n"
        f"| from nothing (accounts, groups, homes, keys, KRL) | {args.people} | {cold:.2f} | < 10 | {cold_summary} |\n"
        f"| no-op (nothing changed) | {args.people} | {warm:.2f} | < 1 | {warm_summary} |\n"
        f"| no-op, again | {args.people} | {warm2:.2f} | < 1 | |\n\n"
        "For comparison, the first version ran `groupadd` + `useradd -m` per person: 22.6 s for 500 on the\n"
        "same machine (each call rewrites the four account files and copies /etc/skel). The reconciler now\n"
        "adds new accounts in one rewrite under the lckpwdf lock; later changes still use usermod, gpasswd\n"
        "and chage. A restarted pod starts from the image's /etc/passwd, so this is the wait before a class\n"
        "of 500 can log in again.\n"
    )
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
