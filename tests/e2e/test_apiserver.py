"""The program's objects on a real API server, without the Pulumi engine.

The engine cannot be built here (the Go module proxy refuses the Pulumi
modules; see README "What was verified"), so this tier takes the objects the
program declares — rendered under Pulumi mocks, exactly what the engine would
send — and applies them server-side to the real local control plane: the API
server validates them, the StatefulSet controller rolls the pod out on a kwok
node, the claims bind through the stack's Retain class, the LoadBalancer gets
an address, a config change rolls the pod and a larger home is expanded in
place. What only the engine does (protect, retainOnDelete, await logic,
adoption) is covered by tests/e2e/test_program.py where an engine exists.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.e2e.project import kget, kubectl, wait_for
from tests.harness import manifests_for, stack_raw
from tests.hostkeys import verified_host_certificate

STACK = "cis90-fall2026"
REPO = Path(__file__).resolve().parents[2]


def stack_config(stack: str = STACK) -> dict[str, Any]:
    raw = stack_raw(stack)
    # The class stack names its real cluster's provisioner; the local control
    # plane provisions for this one.
    raw["storageProvisioner"] = "classroom.local/hostpath"
    return raw


def apply(kubeconfig: str, raw: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    docs = manifests_for(raw, STACK)
    # Namespaces and classes first, as the engine orders them by dependency.
    order = {"Namespace": 0, "StorageClass": 0, "Secret": 1, "ConfigMap": 1, "PersistentVolumeClaim": 1}
    docs.sort(key=lambda d: order.get(d["kind"], 2))
    path = workdir / "objects.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=classroom-e2e", "-f", str(path))
    return docs


@pytest.fixture(scope="module")
def cluster(local_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return str(local_cluster.kubeconfig), tmp_path_factory.mktemp("apply")


def namespace_of(docs: list[dict[str, Any]]) -> str:
    return next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")


def ready_pod(kc: str, ns: str) -> dict[str, Any] | None:
    pods = kget(kc, "pod", "-n", ns)["items"]
    for pod in pods:
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            return pod
    return None


def test_objects_pass_server_side_dry_run_for_every_stack(cluster: tuple[str, Path]) -> None:
    kc, workdir = cluster
    for stack_file in sorted((REPO / "stacks").glob("Pulumi.*.yaml")):
        stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
        docs = manifests_for(stack_config(stack), stack)
        ns_docs = [d for d in docs if d["kind"] in ("Namespace", "StorageClass")]
        path = workdir / f"{stack}.yaml"
        path.write_text(yaml.safe_dump_all(ns_docs, sort_keys=False))
        kubectl(kc, "apply", "--server-side", "--field-manager=classroom-e2e", "-f", str(path))
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        proc = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                kc,
                "apply",
                "--server-side",
                "--field-manager=classroom-e2e",
                "--dry-run=server",
                "-f",
                str(path),
            ],
            text=True,
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{stack}: {proc.stderr}"


def test_objects_roll_out_bind_and_get_an_address(cluster: tuple[str, Path]) -> None:
    kc, workdir = cluster
    docs = apply(kc, stack_config(), workdir)
    ns = namespace_of(docs)

    def sts_ready() -> bool:
        items = kget(kc, "statefulset", "-n", ns)["items"]
        return bool(items) and items[0]["status"].get("readyReplicas") == 1

    wait_for("the StatefulSet to be ready", sts_ready)
    claims = kget(kc, "pvc", "-n", ns)["items"]
    declared = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert {c["metadata"]["name"] for c in claims} == declared
    assert all(c["status"]["phase"] == "Bound" for c in claims)
    for claim in claims:
        pv = kget(kc, "pv", claim["spec"]["volumeName"])
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

    def has_address() -> bool:
        services = kget(kc, "service", "-n", ns)["items"]
        lbs = [s for s in services if s["spec"]["type"] == "LoadBalancer"]
        return bool(lbs) and all(s["status"].get("loadBalancer", {}).get("ingress") for s in lbs)

    wait_for("a LoadBalancer address", has_address)


def test_rc_env_change_rolls_the_pod_and_keeps_the_claims(cluster: tuple[str, Path]) -> None:
    kc, workdir = cluster
    raw = stack_config()
    ns = namespace_of(apply(kc, raw, workdir))
    before_pod = ready_pod(kc, ns)
    assert before_pod is not None
    claims_before = {c["metadata"]["name"]: c["metadata"]["uid"] for c in kget(kc, "pvc", "-n", ns)["items"]}
    raw["rcEnv"] = "COURSE_BANNER=rolled-by-e2e\n"
    apply(kc, raw, workdir)

    def rolled() -> bool:
        pod = ready_pod(kc, ns)
        return pod is not None and pod["metadata"]["uid"] != before_pod["metadata"]["uid"]

    wait_for("the pod to be replaced", rolled)
    maps = kget(kc, "configmap", "-n", ns)["items"]
    assert any("COURSE_BANNER=rolled-by-e2e" in json.dumps(m.get("data", {})) for m in maps)
    claims_after = {c["metadata"]["name"]: c["metadata"]["uid"] for c in kget(kc, "pvc", "-n", ns)["items"]}
    assert claims_after == claims_before


def test_larger_home_is_expanded_in_place_and_shrinking_is_refused(cluster: tuple[str, Path]) -> None:
    kc, workdir = cluster
    raw = stack_config()
    docs = apply(kc, raw, workdir)
    ns = namespace_of(docs)
    home = next(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "PersistentVolumeClaim" and d["spec"]["resources"]["requests"]["storage"] == raw["homeSize"]
    )
    uid = kget(kc, "pvc", home, "-n", ns)["metadata"]["uid"]
    grown = f"{int(raw['homeSize'].removesuffix('Gi')) + 10}Gi"
    raw["homeSize"] = grown
    apply(kc, raw, workdir)

    def expanded() -> bool:
        claim = kget(kc, "pvc", home, "-n", ns)
        return claim["status"].get("capacity", {}).get("storage") == grown

    wait_for(f"{home} to be expanded to {grown}", expanded)
    assert kget(kc, "pvc", home, "-n", ns)["metadata"]["uid"] == uid
    raw["homeSize"] = "1Gi"
    with pytest.raises(AssertionError, match=r"(?i)forbidden|less than previous"):
        apply(kc, raw, workdir)
    assert kget(kc, "pvc", home, "-n", ns)["spec"]["resources"]["requests"]["storage"] == grown


def test_ca_private_key_reaches_no_pod_only_signed_host_keys_do(cluster: tuple[str, Path]) -> None:
    kc, _ = cluster
    ns = namespace_of(manifests_for(stack_config(), STACK))
    pod = ready_pod(kc, ns)
    assert pod is not None
    secrets = kget(kc, "secret", "-n", ns)["items"]
    # No Secret in the namespace is a CA: by label or by the chart's ca_key entry.
    assert [
        s["metadata"]["name"]
        for s in secrets
        if (s["metadata"].get("labels") or {}).get("classroom/role") == "ssh-ca" or "ca_key" in (s.get("data") or {})
    ] == []
    assert "initContainers" not in pod["spec"]
    mounted = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert "ssh-host-keys" in mounted and mounted <= {"ssh-host-keys", "lab-session", "rc-env"}
    # The host certificate the server presents was signed by the class CA students trust.
    host_keys = next(s for s in secrets if s["metadata"]["name"] == "ssh-host-keys")
    cert_line = base64.b64decode(host_keys["data"]["ssh_host_ed25519_key-cert.pub"]).decode()
    cert, signer = verified_host_certificate(cert_line)
    ca_pub = kget(kc, "configmap", "ca-public-key", "-n", ns)["data"]["ca.pub"]
    assert signer.split() == ca_pub.split()[:2]
    assert cert.type == serialization.SSHCertificateType.HOST and b"login-0" in cert.valid_principals
