"""The lab session hook wired into the login server (under mocks).

With labs, the login pod gets a Secret `lab-session` (the hook's config.json
with one labd URL per placed student, and the session key) mounted root-only
in the login container only, the hook + PAM snippet + installer in a
ConfigMap, and rc.local installs them. Without labs none of it exists.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml

import components.server as server
from tests.harness import FAKE_CA_PRIVATE, ROOT, Rendered, render
from tests.hookmodule import load_hook

SECRET = "kubernetes:core/v1:Secret"
CM = "kubernetes:core/v1:ConfigMap"
STS = "kubernetes:apps/v1:StatefulSet"
SESSION_KEY = "s3ss10n-" + "k" * 40
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl someone@laptop"
TERM = {"start": "2026-08-24", "end": "2026-12-18", "timezone": "UTC", "grace": "7d"}
LAB_STUDENTS = ("alice", "bob", "carol", "dave", "erin")
SCRIPTS = ROOT / "components" / "scripts"
HOOK = SCRIPTS / "lab-session-hook"


def labs_config(students: tuple[str, ...] = LAB_STUDENTS, **extra: Any) -> dict[str, Any]:
    return {
        "roster": [{"username": u, "keys": [KEY], "labs": True} for u in students]
        + [{"username": "frank", "keys": [KEY]}],  # no labs: must get no URL
        "term": TERM,
        "labs": {
            "domain": "lab.example.edu",
            "hosts": [
                {"name": "lab1", "address": "10.0.0.5", "capacity": 10},
                {"name": "lab2", "address": "lab2.example.edu", "capacity": 10, "labdPort": 9000},
            ],
            # Both hosts are used whatever the placement does with the rest.
            "pins": {"alice": "lab1", "carol": "lab2"},
            "ssh": {"privateKey": FAKE_CA_PRIVATE},
            "sessionKey": SESSION_KEY,
            "adminKey": "a" * 48,
        },
        **extra,
    }


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes(r: Rendered) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in r.pod["volumes"]}


def secret_data(r: Rendered) -> dict[str, str]:
    return dict(r.one(SECRET, "lab-session").inputs["stringData"])


def checksum(r: Rendered) -> str:
    return str(r.statefulset["spec"]["template"]["metadata"]["annotations"][server.CHECKSUM_ANNOTATION])


@pytest.fixture(scope="module", params=[True, False], ids=["privileged", "unprivileged"])
def labs(request: pytest.FixtureRequest) -> Rendered:
    return render(labs_config(privileged=request.param), stack="cis90-fall2026")


def test_secret_holds_one_labd_url_per_placed_student(labs: Rendered) -> None:
    secret = labs.one(SECRET, "lab-session")
    assert secret.inputs["metadata"]["name"] == "lab-session"
    assert secret.inputs["metadata"]["labels"]["classroom/role"] == "lab-session"
    config = json.loads(secret_data(labs)["config.json"])
    placement = labs.config.labs.placement
    expected_host = {"lab1": "http://10.0.0.5:8787", "lab2": "http://lab2.example.edu:9000"}
    assert config["urls"] == {user: expected_host[placement[user]] for user in LAB_STUDENTS}
    assert config["urls"]["alice"] == "http://10.0.0.5:8787"
    assert config["urls"]["carol"] == "http://lab2.example.edu:9000"
    # No catch-all: the instructor and students without labs have no lab.
    assert "url" not in config and "frank" not in config["urls"] and "human" not in config["urls"]
    assert config["hostId"] == "login-0"
    assert config["keyFile"] == "/etc/lab-session-hook/session.key"


def test_session_key_is_in_the_secret_and_nowhere_else(labs: Rendered) -> None:
    assert secret_data(labs)["session.key"] == SESSION_KEY + "\n"
    elsewhere = [
        f"{r.type}::{r.name}"
        for r in labs.resources
        if r.type.startswith("kubernetes:") and r.name != "lab-session" and SESSION_KEY in json.dumps(r.inputs)
    ]
    assert elsewhere == []
    assert SESSION_KEY not in json.dumps(labs.outputs)


def test_secret_is_mounted_root_only_in_the_login_container_only(labs: Rendered) -> None:
    volume = volumes(labs)["lab-session"]
    assert volume["secret"]["secretName"] == "lab-session"
    assert int(volume["secret"]["defaultMode"]) == 0o400
    mount = mounts(labs.container("login"))["/etc/lab-session-hook"]
    assert mount["name"] == "lab-session" and mount["readOnly"] is True
    # A directory mount (no subPath): the kubelet updates it in place.
    assert "subPath" not in mount
    assert "initContainers" not in labs.pod
    users = [m for c in labs.pod["containers"] for m in c.get("volumeMounts", []) if m["name"] == "lab-session"]
    assert len(users) == 1


def test_scripts_config_map_ships_hook_pam_snippet_and_installer(labs: Rendered) -> None:
    data = labs.config_map("lab-session-scripts")["data"]
    assert set(data) == {"lab-session-hook", "pam-lab-session", "install-lab-session.sh"}
    for name, content in data.items():
        assert content == (SCRIPTS / name).read_text()
    mount = mounts(labs.container("login"))["/etc/classroom/lab-session"]
    assert mount["readOnly"] is True
    assert volumes(labs)[mount["name"]]["configMap"]["name"] == "lab-session-scripts"


def test_statefulset_waits_for_the_secret_and_the_scripts(labs: Rendered) -> None:
    deps = labs.one(STS, "statefulset").dependencies
    assert labs.one(SECRET, "lab-session").urn in deps
    assert labs.one(CM, "lab-session-scripts").urn in deps


def test_rc_local_runs_the_installer_and_starts_the_sync_loop() -> None:
    rc_local = (SCRIPTS / "rc.local").read_text()
    assert 'sh "$lab_dir/install-lab-session.sh" "$lab_dir"' in rc_local
    assert "lab_dir=/etc/classroom/lab-session" in rc_local
    assert re.search(r"lab-session-hook sync .*sleep", rc_local)
    assert "LAB_SESSION_SYNC_INTERVAL:-60" in rc_local
    # Guarded by the mounted installer: a stack without labs runs none of it.
    assert 'if [ -f "$lab_dir/install-lab-session.sh" ]' in rc_local


def test_installer_installs_hook_pam_include_and_sudo_rule_for_the_hooks_student_commands() -> None:
    install = (SCRIPTS / "install-lab-session.sh").read_text()
    assert 'install -o root -g root -m 0755 "$src/lab-session-hook" "$root$hook"' in install
    assert "hook=/usr/local/sbin/lab-session-hook" in install
    assert '"$root/etc/pam.d/lab-session"' in install
    assert "grep -qx '@include lab-session'" in install
    assert "/etc/sudoers.d/lab-session" in install
    # The sudo rule names exactly the hook's student subcommands (its own usage text).
    hook = HOOK.read_text()
    usage = re.search(r"argv\[0\] in \(([^)]*)\)", hook)
    assert usage is not None
    student_commands = re.findall(r'"(\w+)"', usage.group(1))
    assert student_commands == ["status", "ensure", "stop", "kubeconfig"]
    rule = next(line for line in install.splitlines() if "NOPASSWD:" in line)
    allowed = re.findall(r"\$hook (\w+)", rule)
    assert allowed == student_commands and "sync" not in rule
    assert (
        (SCRIPTS / "pam-lab-session")
        .read_text()
        .rstrip()
        .endswith("session optional pam_exec.so quiet /usr/local/sbin/lab-session-hook")
    )


def test_the_hook_reads_the_rendered_config(labs: Rendered, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the hook accepts only root-owned config files")
    hook = load_hook()
    key = tmp_path / "session.key"
    key.write_text(secret_data(labs)["session.key"])
    key.chmod(0o600)
    config = json.loads(secret_data(labs)["config.json"])
    config["keyFile"] = str(key)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o400)
    loaded = hook.load_config(str(path))
    assert loaded["key"] == SESSION_KEY.encode()
    placement = labs.config.labs.placement
    for user in LAB_STUDENTS:
        assert hook.lab_url(loaded, user) == config["urls"][user]
        assert (placement[user] == "lab2") == hook.lab_url(loaded, user).endswith(":9000")
    assert hook.lab_url(loaded, "frank") == ""
    assert hook.all_urls(loaded) == ["http://10.0.0.5:8787", "http://lab2.example.edu:9000"]


def test_a_new_student_changes_the_secret_but_does_not_roll_the_pod(labs: Rendered) -> None:
    more = render(labs_config((*LAB_STUDENTS, "gina"), privileged=labs.config.privileged), stack="cis90-fall2026")
    assert "gina" in json.loads(secret_data(more)["config.json"])["urls"]
    assert "gina" not in json.loads(secret_data(labs)["config.json"])["urls"]
    # The hook reads config.json afresh from a directory mount on every call.
    assert checksum(more) == checksum(labs)


def test_a_changed_hook_script_rolls_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    before = render(labs_config(), stack="cis90-fall2026")
    original = server.lab_session_scripts

    def patched() -> dict[str, str]:
        files = original()
        files["lab-session-hook"] += "# changed\n"
        return files

    monkeypatch.setattr(server, "lab_session_scripts", patched)
    after = render(labs_config(), stack="cis90-fall2026")
    assert after.config_map("lab-session-scripts")["data"]["lab-session-hook"].endswith("# changed\n")
    assert checksum(after) != checksum(before)


def test_without_labs_there_is_no_hook_key_or_mount() -> None:
    for raw in ({}, {"privileged": False}, {"roster": [{"username": "alice", "keys": [KEY]}], "term": TERM}):
        r = render(raw, stack="cis90-fall2026")
        assert [s.name for s in r.of_type(SECRET) if s.name == "lab-session"] == []
        assert [c.name for c in r.of_type(CM) if c.name == "lab-session-scripts"] == []
        assert "lab-session" not in volumes(r) and "lab-session-scripts" not in volumes(r)
        login = mounts(r.container("login"))
        assert "/etc/lab-session-hook" not in login and "/etc/classroom/lab-session" not in login
        # Only rc.local mentions it (its guarded install step finds no installer).
        others = [m for m in r.manifests if m["metadata"]["name"] != "rc-local"]
        assert not any("lab-session" in json.dumps(m) for m in others)
        assert "pam_exec" not in json.dumps(r.manifests)


# ------------------------------------------------------------------ schema and checkov on a labs stack

K8S_VERSION = "1.34.0"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SKIPS = Path(__file__).with_name("checkov-skips.yaml")


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def test_labs_manifests_are_schema_valid(labs: Rendered) -> None:
    docs = [_integral(m) for m in labs.manifests]
    assert {"Secret", "ConfigMap", "StatefulSet"} <= {d["kind"] for d in docs}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is installed by `make venv` into .venv-checkov")
def test_checkov_raises_nothing_new_for_the_lab_session_objects(tmp_path: Path) -> None:
    # The same stack with labs, in each mode: the skips listed for the plain
    # "privileged"/"unprivileged" test configurations apply to it too.
    for mode, privileged in (("privileged", True), ("unprivileged", False)):
        docs = [_integral(m) for m in render(labs_config(privileged=privileged), stack="cis90-fall2026").manifests]
        (tmp_path / f"{mode}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "-o", "json", "--compact"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    findings = [(Path(f["file_path"]).stem, f) for r in reports for f in r.get("results", {}).get("failed_checks", [])]
    passed = [f for r in reports for f in r.get("results", {}).get("passed_checks", [])]
    assert any("lab-session" in f["resource"] for f in passed), "checkov did not see the lab-session Secret"
    skips = yaml.safe_load(SKIPS.read_text())["skips"]
    unexplained = [
        f"{mode}: {f['check_id']} {f['resource']} ({f['check_name']})"
        for mode, f in findings
        if not any(
            s["check"] == f["check_id"]
            and fnmatch.fnmatch(f["resource"], s["resource"])
            and mode in s.get("configs", [mode])
            for s in skips
        )
    ]
    assert not unexplained, "new checkov findings on a labs stack:\n" + "\n".join(unexplained)


def test_the_policy_pack_accepts_a_labs_stack(labs: Rendered) -> None:
    # The lab-session Secret is mounted into the login container: the pack's
    # CA-key rule must tell it apart from the CA key (label classroom/role).
    from tests.unit.test_policy_program import rules, run_resource_rule, run_stack_rule

    for rule in (
        rules.validate_student_data_protected,
        rules.validate_requests_and_limits,
        rules.validate_privileged_only_when_configured,
        rules.validate_service_ports,
    ):
        assert run_resource_rule(rule, labs) == [], rule.__name__
    assert run_stack_rule(rules.validate_ca_key_not_mounted, labs) == []


# ------------------------------------------------------------------ an in-cluster lab host's volume

IN_CLUSTER_HOST = {
    "name": "lab1",
    "inCluster": True,
    "capacity": 10,
    "image": "registry.example.edu/labhost:1",
    "engine": "shared",
}


def in_cluster_labs(**host: Any) -> dict[str, Any]:
    raw = labs_config()
    raw["labs"] = {**raw["labs"], "hosts": [{**IN_CLUSTER_HOST, **host}], "pins": {}}
    return raw


def lab_claim(r: Rendered) -> dict[str, Any]:
    (claim,) = [c for c in r.of_type("kubernetes:core/v1:PersistentVolumeClaim") if c.name == "lab-lab1-data"]
    return dict(claim.inputs)


def test_an_in_cluster_lab_volume_uses_the_stacks_retain_class_even_when_the_homes_name_theirs() -> None:
    raw = {**in_cluster_labs(), "homeStorageClassName": "fast-retain"}
    r = render(raw, stack="cis90-fall2026", class_reclaim={"fast-retain": "Retain"})
    (managed,) = r.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert managed.inputs["reclaimPolicy"] == "Retain"
    assert lab_claim(r)["spec"]["storageClassName"] == managed.inputs["metadata"]["name"]


def test_an_in_cluster_lab_volume_depends_on_the_namespace_through_its_input() -> None:
    # The namespace must outlive the claim: a destroy deletes the claim first.
    r = render(in_cluster_labs(), stack="cis90-fall2026")
    namespace = r.one("kubernetes:core/v1:Namespace", "namespace")
    (claim,) = [c for c in r.of_type("kubernetes:core/v1:PersistentVolumeClaim") if c.name == "lab-lab1-data"]
    assert namespace.urn in claim.dependencies
    assert claim.protect and claim.retain_on_delete


def test_an_in_cluster_lab_volume_class_must_be_retain() -> None:
    r = render(in_cluster_labs(storageClassName="lab-ssd"), stack="cis90-fall2026", class_reclaim={"lab-ssd": "Retain"})
    assert lab_claim(r)["spec"]["storageClassName"] == "lab-ssd"
    with pytest.raises(pulumi.RunError, match=r"labs\.hosts\[0\]\.storageClassName.*'lab-ssd'.*Delete.*Retain"):
        render(in_cluster_labs(storageClassName="lab-ssd"), stack="cis90-fall2026", class_reclaim={"lab-ssd": "Delete"})


def _hook_config(tmp_path: Path, urls: dict[str, str]) -> str:
    """A config.json (and key) the hook accepts apart from what the test puts in `urls`."""
    tmp_path.mkdir(exist_ok=True)
    key = tmp_path / "session.key"
    key.write_text(SESSION_KEY + "\n")
    key.chmod(0o600)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"urls": urls, "keyFile": str(key)}))
    path.chmod(0o400)
    return str(path)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8787\n", "http://10.0.0.5:8787/ x", "ftp://10.0.0.5"])
def test_the_hook_refuses_a_config_whose_urls_are_not_whole_urls(url: str, tmp_path: Path) -> None:
    # The check was `$`-anchored: it let a URL with a trailing newline through.
    hook = load_hook()
    with pytest.raises(hook.HookError, match="key 'urls' must map user names to labd URLs"):
        hook.load_config(_hook_config(tmp_path, {"alice": url}))
    assert hook.load_config(_hook_config(tmp_path / "ok", {"alice": "http://10.0.0.5:8787/"}))["urls"]
