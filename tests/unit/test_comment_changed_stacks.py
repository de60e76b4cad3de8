"""Which stacks the preview/deploy workflows act on (ops.changed_stacks), against a real git repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops import changed_stacks as cs

ROOT = Path(__file__).resolve().parents[2]

STACKS = ["cis90-fall2026", "cis91-fall2026", "dev"]


@pytest.mark.parametrize(
    "paths,expected",
    [
        (["stacks/Pulumi.cis90-fall2026.yaml"], ["cis90-fall2026"]),
        (["stacks/Pulumi.cis90-fall2026.yaml", "README.md"], ["cis90-fall2026"]),
        (["README.md", "tests/unit/test_x.py", ".github/workflows/preview.yml"], []),
        (["components/server.py"], STACKS),
        (["components/scripts/rc.local"], STACKS),
        (["__main__.py"], STACKS),
        (["requirements.txt"], STACKS),
        (["requirements-dev.txt"], STACKS),
        (["Pulumi.yaml"], STACKS),
        (["policy/classroom_policies.py"], STACKS),
        # A stack file that no longer exists (term ended, file removed) is never acted on.
        (["stacks/Pulumi.cis99-spring2025.yaml"], []),
        # Only stack files directly under stacks/ count.
        (["stacks/old/Pulumi.cis90-fall2026.yaml", "docs/components/x.md"], []),
    ],
)
def test_changed_paths_select_stacks(paths: list[str], expected: list[str]) -> None:
    assert cs.changed_stacks(paths, STACKS) == expected


def test_exclude_leaves_out_the_dev_stack_even_for_program_changes() -> None:
    assert cs.changed_stacks(["components/ca.py"], STACKS, exclude=["dev"]) == STACKS[:2]
    assert cs.changed_stacks(["stacks/Pulumi.dev.yaml"], STACKS, exclude=["dev"]) == []


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "Pulumi.yaml").write_text("name: classroom\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    for stack in STACKS:
        (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "server.py").write_text("# server\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def run_cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.changed_stacks", "--root", str(repo), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_diffs_real_commits_and_writes_matrix_output(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    (repo / "stacks" / "Pulumi.cis91-fall2026.yaml").write_text("config: {classroom:x: 1}\n")
    git(repo, "commit", "-q", "-am", "change cis91")
    head = git(repo, "rev-parse", "HEAD")
    out = tmp_path / "gh-output"
    result = run_cli(repo, "--base", base, "--head", head, "--github-output", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["cis91-fall2026"]
    assert out.read_text().splitlines() == ['stacks=["cis91-fall2026"]', "any=true"]

    (repo / "components" / "server.py").write_text("# changed\n")
    git(repo, "commit", "-q", "-am", "change program")
    result = run_cli(repo, "--base", head, "--head", "HEAD", "--exclude", "dev")
    assert json.loads(result.stdout) == ["cis90-fall2026", "cis91-fall2026"]


def test_cli_new_branch_push_selects_every_stack(repo: Path) -> None:
    # GitHub sends before=000…0 for the first push of a branch; nothing to diff against.
    result = run_cli(repo, "--base", "0" * 40, "--head", "HEAD", "--exclude", "dev")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["cis90-fall2026", "cis91-fall2026"]


def test_cli_nothing_relevant_gives_empty_matrix(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("docs\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "docs")
    out = tmp_path / "gh-output"
    result = run_cli(repo, "--base", base, "--head", "HEAD", "--github-output", str(out))
    assert json.loads(result.stdout) == []
    assert "any=false" in out.read_text()


def test_cli_wrong_root_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--base", "HEAD~1")
    assert result.returncode == 2
    assert "--root:" in result.stderr and "has no Pulumi.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_manual_stack_must_exist(repo: Path) -> None:
    result = run_cli(repo, "--stack", "dev")
    assert result.returncode == 0 and json.loads(result.stdout) == ["dev"]
    result = run_cli(repo, "--stack", "cis90-fall2062")
    assert result.returncode == 2
    assert "--stack: 'cis90-fall2062' has no stacks/Pulumi.cis90-fall2062.yaml" in result.stderr
    assert "cis90-fall2026, cis91-fall2026, dev" in result.stderr
