"""The pre-commit hooks run the checks CI runs, with the project's own tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".pre-commit-config.yaml"


def test_the_config_is_valid_and_every_hook_is_local() -> None:
    checked = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "pre-commit"), "validate-config", str(CONFIG)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    repos = yaml.safe_load(CONFIG.read_text())["repos"]
    assert [r["repo"] for r in repos] == ["local"]  # nothing to download


def test_the_hooks_run_the_unit_tiers_linter_tests() -> None:
    hooks = {h["id"]: h for r in yaml.safe_load(CONFIG.read_text())["repos"] for h in r["hooks"]}
    entry = hooks["lint-tests"]["entry"].split()
    for test in (
        "tests/unit/test_lint.py",
        "tests/unit/test_readme_reference.py",
        "tests/unit/test_schema_reference.py",
    ):
        assert test in entry and (ROOT / test).is_file()
    assert hooks["ruff"]["entry"].startswith(".venv/bin/ruff check")
    assert hooks["ruff-format"]["entry"].startswith(".venv/bin/ruff format --check")
