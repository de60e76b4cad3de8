"""The classroom policy pack under the real Pulumi engine: `pulumi preview --policy-pack policy`.

A tiny Pulumi program is generated in a temp directory (local file backend, passphrase secrets)
once breaking every rule and once obeying them. The preview needs no cluster: the kubeconfig
points at a closed loopback port, so the Kubernetes provider previews offline (it warns that the
cluster is unreachable) while the engine still runs every resource through the policy pack.
This proves what unit tests cannot: that the engine finds and starts the pack with the project's
.venv (PulumiPolicy.yaml `virtualenv: ../.venv`), that the rules see the props/options shapes the
engine really sends, and that the readable messages reach the user and the event log.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from ops import comment

REPO = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import pulumi
    import pulumi_kubernetes as k8s

    bad = pulumi.Config().get_bool("bad") or False
    NS = "policy-e2e"
    keep = pulumi.ResourceOptions(protect=not bad, retain_on_delete=True)
    res = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}

    k8s.core.v1.Namespace("ns", metadata={"name": NS}, opts=keep)
    k8s.core.v1.Secret(
        "ca",
        metadata={"name": "ssh-ca", "namespace": NS, "labels": {"classroom/role": "ssh-ca"}},
        string_data={"ca": "not-a-real-key"},
    )
    k8s.core.v1.PersistentVolumeClaim(
        "home",
        metadata={"name": "home", "namespace": NS},
        spec={"access_modes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        opts=keep,
    )
    login = {
        "name": "login",
        "image": "busybox",
        "security_context": {"privileged": bad},
        "volume_mounts": [{"name": "ca", "mount_path": "/etc/ssh/ca"}] if bad else [],
    }
    if not bad:
        login["resources"] = res
    k8s.apps.v1.StatefulSet(
        "login",
        metadata={"name": "login", "namespace": NS},
        spec={
            "service_name": "login",
            "replicas": 1,
            "selector": {"match_labels": {"app": "login"}},
            "template": {
                "metadata": {"labels": {"app": "login"}},
                "spec": {
                    "containers": [login],
                    "volumes": [{"name": "ca", "secret": {"secret_name": "ssh-ca"}}],
                },
            },
        },
    )
    ports = [{"name": "ssh", "port": 22, "target_port": 22}]
    if bad:
        ports.append({"name": "web", "port": 8080, "target_port": 8080})
    k8s.core.v1.Service(
        "ssh",
        metadata={"name": "ssh", "namespace": NS, "annotations": {"classroom/allowed-ports": "22"}},
        spec={"selector": {"app": "login"}, "ports": ports},
    )
    """
)

UNREACHABLE_KUBECONFIG = textwrap.dedent(
    """
    apiVersion: v1
    kind: Config
    clusters:
    - name: nowhere
      cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
    users:
    - name: nobody
      user: {token: unused}
    contexts:
    - name: nowhere
      context: {cluster: nowhere, user: nobody}
    current-context: nowhere
    """
)


@pytest.fixture()
def project(tmp_path: Path, toolchain_env: dict[str, str], pulumi_bin: str) -> tuple[Path, dict[str, str]]:
    env = {
        **os.environ,
        **toolchain_env,
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": "policy-e2e",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        # --event-log is registered only with debug commands on (as in the workflows).
        "PULUMI_DEBUG_COMMANDS": "true",
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "NO_COLOR": "1",
    }
    (tmp_path / "backend").mkdir()
    (tmp_path / "kubeconfig").write_text(UNREACHABLE_KUBECONFIG)
    workdir = tmp_path / "program"
    workdir.mkdir()
    (workdir / "Pulumi.yaml").write_text(
        "name: policy-e2e\n"
        "runtime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / '.venv'}\n"
    )
    (workdir / "__main__.py").write_text(PROGRAM)
    subprocess.run(
        ["pulumi", "stack", "init", "dev", "--non-interactive"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return workdir, env


def preview(workdir: Path, env: dict[str, str], bad: bool, *extra: str) -> subprocess.CompletedProcess[str]:
    subprocess.run(
        ["pulumi", "config", "set", "bad", "true" if bad else "false", "--stack", "dev", "--non-interactive"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return subprocess.run(
        ["pulumi", "preview", "--stack", "dev", "--non-interactive", "--policy-pack", str(REPO / "policy"), *extra],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_violating_program_is_refused_with_readable_messages(project: tuple[Path, dict[str, str]]) -> None:
    workdir, env = project
    result = preview(workdir, env, True, "--diff")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    # CLI 3.274 prints each violation inline under its resource (with --diff), marked with pack and level
    assert "classroom-policies@v0.1.0 [mandatory]" in out, out
    for fragment in (
        "student-data-protected",
        "PersistentVolumeClaim 'policy-e2e/home' holds student home directories but is not protected",
        "Namespace 'policy-e2e' contains the class's PersistentVolumeClaims",
        "privileged-only-when-configured",
        "runs container 'login' privileged",
        "containers-have-requests-and-limits",
        "container 'login' has no resources.requests.cpu",
        "services-expose-configured-ports-only",
        "exposes port 8080 (web)",
        "ssh-ca-key-not-mounted",
        "container 'login' gets the SSH CA private key Secret",
    ):
        assert fragment in out, f"{fragment!r} missing from:\n{out}"


def test_compliant_program_passes_the_pack(project: tuple[Path, dict[str, str]]) -> None:
    workdir, env = project
    result = preview(workdir, env, False, "--diff")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "classroom-policies" in out  # the pack really ran (it is listed in the summary)
    assert "mandatory" not in out, out


def test_json_preview_and_event_log_feed_the_comment(project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    workdir, env = project
    events = tmp_path / "events.jsonl"
    result = preview(workdir, env, True, "--diff", "--json", "--event-log", str(events))
    assert result.returncode != 0
    digest = json.loads(result.stdout[result.stdout.index("{") :])
    parsed = comment.parse_preview(digest)
    types = {step.type for step in parsed.steps}
    assert {"kubernetes:core/v1:PersistentVolumeClaim", "kubernetes:apps/v1:StatefulSet"} <= types
    # The real engine records protect/retainOnDelete in the new state; the bad run has no protect.
    pvc = next(s for s in parsed.steps if s.type == "kubernetes:core/v1:PersistentVolumeClaim")
    assert pvc.op == "create" and pvc.protect is False and pvc.retain_on_delete is True
    violations = comment.parse_events(events.read_text().splitlines())
    assert {v.policy for v in violations} == {
        "student-data-protected",
        "privileged-only-when-configured",
        "containers-have-requests-and-limits",
        "services-expose-configured-ports-only",
        "ssh-ca-key-not-mounted",
    }
    assert all(v.level == "mandatory" and v.pack == "classroom-policies" for v in violations)
    body = comment.build_comment("dev", parsed, violations, preview_exit_code=result.returncode)
    assert body.index("Student data at risk") < body.index("⛔ Policy violations") < body.index("<details>")
