"""tests/conftest.py turns a prerequisite skip into a failure under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SAMPLE = """
import pytest

def test_needs_a_missing_tool():
    pytest.skip("sshd is not installed")

def test_needs_the_engine():
    pytest.skip("no pulumi CLI: run tools/toolchain.sh engine")

def test_depends_on_the_repository():
    pytest.skip("Pulumi.x.yaml holds encrypted values the mocks cannot decrypt")

def test_runs():
    assert True
"""


def run_sample(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("ci", [True, False])
def test_prerequisite_skips_fail_only_in_ci_the_engine_included(tmp_path: Path, ci: bool) -> None:
    proc = run_sample(tmp_path, ci)
    last = proc.stdout.strip().splitlines()[-1]
    if ci:
        assert proc.returncode == 1, proc.stdout
        assert "2 failed, 1 passed, 1 skipped" in last
        assert "skipped in CI, where the test command installs every prerequisite: sshd is not installed" in proc.stdout
        assert "every prerequisite: no pulumi CLI" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout
        assert "1 passed, 3 skipped" in last
