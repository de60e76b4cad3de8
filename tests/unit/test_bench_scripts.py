"""Every benchmark script starts (its imports resolve outside pytest) and `make bench` runs each one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*_bench.py"))


def test_make_bench_runs_every_script() -> None:
    listed = re.search(r"^for bench in ([\w ]+); do$", (REPO / "tools" / "bench.sh").read_text(), re.M)
    assert listed is not None, "tools/bench.sh: no 'for bench in ...' loop"
    assert sorted(listed.group(1).split()) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts_as_make_bench_runs_it(script: str) -> None:
    # as tools/bench.sh runs it: `python -m bench.NAME` from the repository, no pytest pythonpath
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{script}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:200]
