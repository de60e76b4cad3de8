"""components/contract.py is the one home of the names the program, the pod's scripts and the policy pack share."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from components import contract
from tests.harness import ROOT, render
from tests.unit.test_lab_session_wiring import in_cluster_labs, labs_config

SCRIPTS = ROOT / "components" / "scripts"


def policy_rules() -> Any:
    path = ROOT / "policy" / "classroom_policies.py"
    spec = importlib.util.spec_from_file_location("classroom_policies_contract", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_policy_packs_copy_of_the_names_is_the_contract() -> None:
    rules = policy_rules()
    assert rules.CA_ROLE_LABEL == contract.ROLE_LABEL
    assert rules.CA_ROLE_VALUE == contract.CA_ROLE
    assert rules.PRIVILEGED_ANNOTATION == contract.PRIVILEGED_ANNOTATION
    assert rules.ALLOWED_PORTS_ANNOTATION == contract.ALLOWED_PORTS_ANNOTATION
    assert rules.CA_KEY_ENTRY == contract.CA_KEY_ENTRY


def test_every_classroom_label_and_annotation_the_program_sets_is_in_the_contract() -> None:
    names = {value for key, value in vars(contract).items() if key.isupper() and isinstance(value, str)}
    used: set[str] = set()
    for raw in ({}, {"privileged": False}, labs_config(), in_cluster_labs()):
        r = render(raw, stack="cis90-fall2026")
        for manifest in r.manifests:
            for section in (
                manifest.get("metadata") or {},
                ((manifest.get("spec") or {}).get("template") or {}).get("metadata") or {},
            ):
                for kind in ("labels", "annotations"):
                    used |= {k for k in (section.get(kind) or {}) if k.startswith("classroom/")}
    assert used and used <= names, sorted(used - names)
    assert {contract.ROLE_LABEL, contract.PRIVILEGED_ANNOTATION, contract.HOST_PRINCIPALS_ANNOTATION} <= used


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()


def test_the_pod_scripts_use_the_contracts_paths() -> None:
    sshd = script("sshd_config")
    host_keys = re.findall(r"^Host(?:Key|Certificate) (\S+)$", sshd, re.M)
    assert host_keys and all(Path(p).parent == Path(contract.HOST_KEY_DIR) for p in host_keys)
    assert f"TrustedUserCAKeys {contract.CA_PUBLIC_DIR}/ca.pub" in sshd
    assert f"RevokedKeys {contract.REVOKED_KEYS_FILE}" in sshd
    rc_local = script("rc.local")
    assert f"{contract.ROSTER_MOUNT}/apply-roster.sh" in rc_local and f"lab_dir={contract.LAB_SCRIPTS_DIR}" in rc_local
    assert f"src=${{1:-{contract.LAB_SCRIPTS_DIR}}}" in script("install-lab-session.sh")
    hook = script("lab-session-hook")
    assert f'DEFAULT_CONFIG = "{contract.LAB_SESSION_DIR}/config.json"' in hook
    assert f'"{contract.LAB_SESSION_DIR}/session.key"' in hook
    assert f'"{contract.ROSTER_MOUNT}/roster.json"' in script("reconcile-roster")
