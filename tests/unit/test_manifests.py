"""Every Kubernetes object the program declares is schema-valid and scanned.

Manifests are rendered under mocks for several configurations, validated
against the Kubernetes 1.34 OpenAPI schema (kubernetes-validate, strict: no
unknown fields) and scanned with checkov. A checkov finding must be listed
with its reason in checkov-skips.yaml; a listed skip that no longer matches
anything fails too, so the list stays honest.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.harness import ROOT, manifests_for, stack_raw

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SKIPS = Path(__file__).with_name("checkov-skips.yaml")
K8S_VERSION = "1.34.0"


CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", stack_raw("dev")),
    "cis90": ("cis90-fall2026", stack_raw("cis90-fall2026")),
    "privileged": ("priv", {"privileged": True, "extraPorts": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    "unprivileged": (
        "unpriv",
        {
            "privileged": False,
            "createNamespace": False,
            "namespace": "shared-class",
            "service": {"type": "NodePort", "nodePort": 30022},
            "extraMounts": [{"name": "data", "path": "/srv/data", "size": "3Gi"}],
            "image": {"tag": "noble-1@sha256:" + "a" * 64, "pullPolicy": "Always", "pullSecrets": ["regcred"]},
        },
    ),
}


def manifests(config: str) -> list[dict[str, Any]]:
    stack, raw = CONFIGS[config]
    return manifests_for(raw, stack)


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("manifests")
    for config in CONFIGS:
        (directory / f"{config}.yaml").write_text(yaml.safe_dump_all(manifests(config), sort_keys=False))
    return directory


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_object_is_valid_against_the_kubernetes_schema(config: str) -> None:
    docs = manifests(config)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "PersistentVolumeClaim", "ConfigMap", "Service", "NetworkPolicy"} <= kinds
    for doc in docs:
        # Raises ValidationError naming the field on any schema mismatch.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_does_reject_a_broken_object() -> None:
    broken = next(d for d in manifests("dev") if d["kind"] == "StatefulSet")
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _load_skips() -> list[dict[str, Any]]:
    skips = yaml.safe_load(SKIPS.read_text())["skips"]
    for entry in skips:
        assert entry.get("reason", "").strip(), f"skip without a reason: {entry}"
        assert set(entry) <= {"check", "resource", "configs", "reason"}, entry
    return list(skips)


def _matches(entry: dict[str, Any], config: str, finding: dict[str, Any]) -> bool:
    return (
        entry["check"] == finding["check_id"]
        and fnmatch.fnmatch(finding["resource"], entry["resource"])
        and config in entry.get("configs", CONFIGS)
    )


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is installed by `make venv` into .venv-checkov")
def test_checkov_findings_are_fixed_or_explained(rendered_dir: Path) -> None:
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(rendered_dir),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    findings = [(Path(f["file_path"]).stem, f) for r in reports for f in r.get("results", {}).get("failed_checks", [])]
    passed = sum(len(r.get("results", {}).get("passed_checks", [])) for r in reports)
    assert passed > 50, "checkov scanned nothing: the manifests did not reach it"
    skips = _load_skips()
    unexplained = [
        f"{config}: {f['check_id']} {f['resource']} ({f['check_name']})"
        for config, f in findings
        if not any(_matches(s, config, f) for s in skips)
    ]
    assert not unexplained, "new checkov findings - fix them or explain them in checkov-skips.yaml:\n" + "\n".join(
        unexplained
    )
    stale = [s for s in skips if not any(_matches(s, config, f) for config, f in findings)]
    assert not stale, f"skips that match no finding any more (remove them): {stale}"
