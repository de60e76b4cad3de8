"""The pull-request comment built from captured `pulumi preview --diff --json` output."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops import comment

ROOT = Path(__file__).resolve().parents[2]

FIXTURES = ROOT / "tests" / "fixtures" / "preview"
STACK = "cis90-fall2026"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def build(name: str, **kwargs: Any) -> str:
    return comment.build_comment(STACK, comment.parse_preview(load(name)), **kwargs)


def test_marker_is_the_first_line_so_the_workflow_finds_the_comment() -> None:
    body = build("no-changes.json")
    assert body.splitlines()[0] == f"<!-- classroom-preview:{STACK} -->"


def test_summary_line_counts_each_operation() -> None:
    body = build("pvc-replace.json")
    assert "1 to create, 1 to update, 1 to replace, 0 to delete, 2 unchanged" in body


def test_pvc_replacement_is_shown_first_and_loudly() -> None:
    # The engine lists the PVC replacement last; the comment must lead with it.
    body = build("pvc-replace.json")
    heading = body.index("Student data at risk")
    assert "🛑" in body[:heading]
    first_section = body.index("<details>")
    assert heading < first_section
    warning = body[heading:first_section]
    assert "PersistentVolumeClaim `cis90-home`" in warning
    assert "**replaced**" in warning and "spec.storageClassName" in warning
    assert "Do not merge" in warning
    # The ordinary changes appear only in the diff below it.
    assert "cis90-login" not in warning
    assert body.index("cis90-login") > first_section


def test_without_the_diff_the_comment_keeps_the_data_risk_and_says_where_the_diff_is() -> None:
    # The workflow lets the Pulumi action post the diff (comment-on-pr); ours carries only the risk.
    body = build("pvc-replace.json", include_diff=False)
    assert body.splitlines()[0] == f"<!-- classroom-preview:{STACK} -->"
    assert "Student data at risk" in body and "PersistentVolumeClaim `cis90-home`" in body
    assert "<details>" not in body and "cis90-login" not in body
    assert "the Pulumi action's comment" in body
    assert "<details>" in build("pvc-replace.json")  # the default still carries the diff


def test_namespace_and_pvc_delete_are_both_flagged() -> None:
    body = build("namespace-delete.json")
    warning = body[body.index("Student data at risk") : body.index("<details>")]
    assert "Namespace `cis90`" in warning and "PersistentVolumeClaim `cis90-home`" in warning
    assert warning.count("**deleted**") == 2
    assert "0 to create, 0 to update, 0 to replace, 2 to delete" in body


def test_in_place_expansion_is_not_a_risk_and_shows_values() -> None:
    preview = comment.parse_preview(load("expand-and-update.json"))
    assert comment.data_risks(preview) == []
    body = comment.build_comment(STACK, preview)
    assert "Student data at risk" not in body
    assert body.splitlines()[1].startswith("### ✅")
    assert '~ spec.resources.requests.storage: "20Gi" => "40Gi"' in body
    # A quoted map key in the property path is looked up, not printed as absent.
    assert '+ metadata.labels["classroom.example/term"]: "fall2026"' in body


def test_pvc_without_retain_on_delete_is_flagged() -> None:
    # pulumi-policy cannot see retainOnDelete; the comment builder catches it in the new state.
    preview = comment.parse_preview(load("pvc-not-retained.json"))
    risks = comment.data_risks(preview)
    assert len(risks) == 1 and "`retainOnDelete`" in risks[0].reason and "protect" not in risks[0].reason


def test_no_changes_comment_is_calm() -> None:
    body = build("no-changes.json")
    assert "### ✅" in body and "0 to create, 0 to update, 0 to replace, 0 to delete, 3 unchanged" in body
    assert "Student data at risk" not in body and "Policy" not in body


def test_policy_violations_from_event_log_are_listed() -> None:
    lines = (FIXTURES / "policy-violations.events.jsonl").read_text().splitlines()
    violations = comment.parse_events([*lines, '{"policyEvent": {"message": "cut sho'])
    assert [v.policy for v in violations] == [
        "containers-have-requests-and-limits",
        "services-expose-configured-ports-only",
    ]
    body = build("expand-and-update.json", violations=violations, preview_exit_code=255)
    assert "⛔ Policy violations" in body and "### ❌" in body
    assert "**containers-have-requests-and-limits** (mandatory) on `cis90-login`" in body
    # Multi-line messages are folded onto one bullet line.
    assert "memory. Every container" in body
    assert "exit code 255" in body


def test_huge_diff_is_truncated_below_github_limit() -> None:
    data = load("expand-and-update.json")
    template = data["steps"][2]
    steps = [data["steps"][0]]
    for i in range(3000):
        step = copy.deepcopy(template)
        step["urn"] = step["urn"].replace("cis90-motd", f"cm-{i}")
        step["newState"]["inputs"]["data"]["motd"] = "é" * 400 + "🎓" * 50
        steps.append(step)
    data["steps"] = steps
    body = comment.build_comment(STACK, comment.parse_preview(data), stderr_text="warning: x\n" * 5000)
    assert len(body.encode("utf-8")) <= comment.GITHUB_COMMENT_LIMIT
    assert "more lines not shown" in body
    # Both folded sections still close properly.
    assert body.count("<details>") == 2 and body.count("</details>") == 2


def test_diff_containing_backticks_cannot_close_the_block() -> None:
    preview = comment.parse_preview(load("no-changes.json"))
    body = comment.build_comment(STACK, preview, diff_text="a ``` b\n~~~~ c")
    assert "````diff\na ``` b" in body


def test_stack_name_that_could_break_the_marker_is_refused() -> None:
    with pytest.raises(comment.CommentInputError, match="--stack: 'x --> <b>'"):
        comment.build_comment("x --> <b>", None)


def test_urn_and_property_paths_parse() -> None:
    urn = "urn:pulumi:s::p::classroom:index:LoginServer$kubernetes:core/v1:Service::ssh"
    assert comment.split_urn(urn) == ("kubernetes:core/v1:Service", "ssh")
    assert comment.parse_property_path("spec.ports[1].port") == ["spec", "ports", 1, "port"]
    assert comment.parse_property_path('metadata.annotations["a.b/c"]') == ["metadata", "annotations", "a.b/c"]


# --- command line -------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.comment", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_cli_writes_comment_and_github_outputs(tmp_path: Path) -> None:
    out = tmp_path / "comment.md"
    gh = tmp_path / "gh-output"
    result = run_cli(
        "--stack",
        STACK,
        "--preview",
        str(FIXTURES / "pvc-replace.json"),
        "--events",
        str(FIXTURES / "policy-violations.events.jsonl"),
        "--output",
        str(out),
        "--github-output",
        str(gh),
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith(f"<!-- classroom-preview:{STACK} -->")
    assert gh.read_text().splitlines() == ["at-risk=true", "violations=2", "failed=false"]


def test_cli_empty_preview_after_failed_engine_still_comments(tmp_path: Path) -> None:
    empty = tmp_path / "preview.json"
    empty.write_text("")
    stderr = tmp_path / "stderr"
    stderr.write_text("error: program failed: ConfigError: classroom:ports ...\n")
    result = run_cli("--stack", STACK, "--preview", str(empty), "--stderr", str(stderr), "--preview-exit-code", "255")
    assert result.returncode == 0, result.stderr
    assert "The preview failed" in result.stdout and "ConfigError" in result.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--preview", "/nonexistent/p.json"], "--preview: file '/nonexistent/p.json' does not exist"),
        (["--preview", "{bad}"], "is not valid JSON (line 1 column 2"),
        (["--preview", "{empty}"], "is empty but --preview-exit-code is 0"),
        (["--preview", "{good}", "--preview-exit-code", "boom"], "--preview-exit-code: 'boom' is not an integer"),
        (["--preview", "{good}", "--max-bytes", "99"], "--max-bytes: '99' is not accepted; use 1024.."),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    subst = {"{bad}": str(bad), "{empty}": str(empty), "{good}": str(FIXTURES / "no-changes.json")}
    result = run_cli("--stack", STACK, *[subst.get(a, a) for a in args])
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_protected_pvc_replacement_refused_by_engine_is_shown_first() -> None:
    # A protected claim makes the engine refuse the replacement with an error diagnostic; the
    # replace step may then be missing, but the comment must still lead with the claim.
    preview = comment.parse_preview(load("pvc-protected-replace.json"))
    assert not any(step.op == "replace" for step in preview.steps)
    body = comment.build_comment(STACK, preview, preview_exit_code=255)
    warning = body[body.index("Student data at risk") : body.index("#### Errors")]
    assert "PersistentVolumeClaim `cis90-home`" in warning and "**replaced**" in warning
    assert "refused because it is protected" in warning
    assert body.splitlines()[1].startswith("### 🛑")
    # No changeSummary in the digest: the counts come from the steps that are there.
    assert "1 to create, 1 to update, 0 to replace" in body
