"""The real engine against the local control plane: a term's life, in order.

Each test builds on the state the previous one left (one stack, one cluster),
as an instructor's term does: up, no-op up, config change, home growth,
end-of-term destroy, adoption of the kept homes by a fresh up.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.project import PulumiProject, kget, kubectl, steps_by_type, wait_for
from tests.hostkeys import verified_host_certificate

STACK = "cis90-fall2026"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
LOCAL_PROVISIONER = "classroom.local/hostpath"
NAMESPACE = "e2e-program"
OUT = Path(__file__).resolve().parents[2] / "out"


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    pulumi_bin: str,
    local_cluster: Any,
    toolchain_env: dict[str, str],
) -> Iterator[PulumiProject]:
    proj = PulumiProject.create(tmp_path_factory.mktemp("e2e"), STACK, toolchain_env, str(local_cluster.kubeconfig))
    # The class stack names its real cluster's provisioner; here the local
    # control plane's own provisioner backs the stack's Retain class.
    proj.set_config("storageProvisioner", LOCAL_PROVISIONER)
    # One session cluster serves the whole tier: a namespace (and so a
    # Retain class name) of its own keeps this module off the objects that
    # test_apiserver.py applies for the same stack.
    proj.set_config("namespace", NAMESPACE)
    yield proj


def namespace(project: PulumiProject) -> str:
    # not from the outputs: after a release the stack has none, and the claims are still there
    assert project.get_config("namespace") == NAMESPACE
    return NAMESPACE


def pvcs(project: PulumiProject) -> dict[str, dict[str, Any]]:
    items = kget(project.env["KUBECONFIG"], "pvc", "-n", namespace(project))["items"]
    return {i["metadata"]["name"]: i for i in items}


def host_keys(project: PulumiProject) -> dict[str, str]:
    secret = kget(project.env["KUBECONFIG"], "secret", "ssh-host-keys", "-n", namespace(project))
    return {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}


def test_up_from_nothing_rolls_out_and_keeps_ca_key_secret(project: PulumiProject) -> None:
    log = project.up(env={"PULUMI_DEBUG_COMMANDS": "true"})
    ns = namespace(project)
    kc = project.env["KUBECONFIG"]
    sts = kget(kc, "statefulset", "-n", ns)["items"]
    assert len(sts) == 1
    assert sts[0]["status"].get("readyReplicas") == 1
    services = kget(kc, "service", "-n", ns)["items"]
    lb = [s for s in services if s["spec"]["type"] == "LoadBalancer"]
    assert lb and all(s["status"]["loadBalancer"].get("ingress") for s in lb)
    outputs = project.outputs()
    assert outputs["knownHostsLine"].startswith("@cert-authority ")
    # Every home PVC is bound; the CA private key is in state only encrypted.
    assert all(p["status"]["phase"] == "Bound" for p in pvcs(project).values())
    state = project.state_text()
    assert "PRIVATE KEY" not in state
    assert '"ciphertext"' in state
    # ... and never in what the engine printed, nor in any output (shown with secrets revealed)
    assert "PRIVATE KEY" not in log.stdout + log.stderr
    revealed = project.run("stack", "output", "--json", "--show-secrets").stdout
    assert "PRIVATE KEY" not in revealed and "ssh-ed25519-cert-v01" in revealed
    # The engine ran the host-key provider: the pod's certificate is signed by this stack's CA.
    files = host_keys(project)
    cert, signer = verified_host_certificate(files["ssh_host_ed25519_key-cert.pub"])
    assert signer.split() == outputs["caPublicKey"].split()[:2]
    assert "ca_key" not in files and all("CA" not in n for n in files)
    # The address the local load balancer assigned (its pool, not the stack's loadBalancerIP) is
    # the one sshHost and the ssh command name: the certificate must list it.
    assert outputs["sshHost"] and outputs["sshHost"] in outputs["sshCommand"]
    assert outputs["sshHost"].encode() in cert.valid_principals


def test_second_up_reports_no_changes(project: PulumiProject) -> None:
    proc = project.run("preview", "--expect-no-changes", "--diff")
    assert "no changes" in proc.stdout.lower() or "unchanged" in proc.stdout.lower()


def test_rc_env_change_updates_config_and_rolls_pod_without_touching_pvcs(project: PulumiProject) -> None:
    kc = project.env["KUBECONFIG"]
    ns = namespace(project)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kget(kc, "pod", "-n", ns)["items"]}
    keys_before = host_keys(project)
    project.set_config("rcEnv", "COURSE_BANNER=welcome-e2e\n")
    preview = project.preview_json()
    ops = {s["op"] for s in steps_by_type(preview, PVC)}
    assert ops <= {"same"}, f"PVC steps planned: {ops}"
    cm_ops = {s["op"] for s in steps_by_type(preview, "kubernetes:core/v1:ConfigMap")}
    assert "update" in cm_ops or "replace" in cm_ops
    project.up()
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kget(kc, "pod", "-n", ns)["items"]}
    assert before.keys() == after.keys()
    assert all(before[n] != after[n] for n in before), "the pod was not rolled"
    # A new pod, the same host keys and certificates: the engine kept them in state.
    assert host_keys(project) == keys_before
    env_maps = [
        c
        for c in kget(kc, "configmap", "-n", ns)["items"]
        if "COURSE_BANNER=welcome-e2e" in json.dumps(c.get("data", {}))
    ]
    assert env_maps, "rcEnv did not reach a ConfigMap"


def test_a_new_host_name_re_signs_the_certificate_keeps_the_key_and_rolls_the_pod(project: PulumiProject) -> None:
    kc = project.env["KUBECONFIG"]
    ns = namespace(project)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kget(kc, "pod", "-n", ns)["items"]}
    keys_before = host_keys(project)
    original = project.get_config("ssh")
    project.set_config("ssh", {**(original or {}), "hostPrincipals": ["login.e2e.example.edu"]})
    try:
        project.up()
        keys_after = host_keys(project)
        for kind in ("ed25519", "rsa"):
            name = f"ssh_host_{kind}_key"
            assert keys_after[name] == keys_before[name] and keys_after[f"{name}.pub"] == keys_before[f"{name}.pub"]
            assert keys_after[f"{name}-cert.pub"] != keys_before[f"{name}-cert.pub"]
            cert: Any = serialization.load_ssh_public_identity(
                " ".join(keys_after[f"{name}-cert.pub"].split()[:2]).encode()
            )
            assert b"login.e2e.example.edu" in cert.valid_principals
        after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kget(kc, "pod", "-n", ns)["items"]}
        assert all(before[n] != after[n] for n in before), "sshd would keep serving the old certificate"
    finally:
        if original is None:
            project.del_config("ssh")
        else:
            project.set_config("ssh", original)
        project.up()


def test_home_growth_is_an_in_place_expansion(project: PulumiProject) -> None:
    old = pvcs(project)
    # cis90 asks 50Gi: growing to 60Gi (the old test's 5Gi was a shrink, refused since)
    project.set_config("homeSize", "60Gi")
    preview = project.preview_json()
    ops = [s["op"] for s in steps_by_type(preview, PVC)]
    assert "update" in ops
    assert not {"replace", "create-replacement", "delete-replaced", "delete"} & set(ops)
    (OUT / "preview").mkdir(parents=True, exist_ok=True)
    # Item 7: the PR workflow posts exactly this kind of output.
    (OUT / "preview" / f"{project.stack}-homeSize.json").write_text(json.dumps(preview, indent=1))
    diff = project.run("preview", "--diff").stdout
    (OUT / "preview" / f"{project.stack}-homeSize.diff").write_text(diff)
    assert "60Gi" in diff
    project.up()
    new = pvcs(project)
    assert {n: p["metadata"]["uid"] for n, p in new.items()} == {n: p["metadata"]["uid"] for n, p in old.items()}
    homes = [p for p in new.values() if p["spec"]["resources"]["requests"]["storage"] == "60Gi"]
    assert homes, "no PVC asks for 60Gi"
    # The resizer (the local cluster's, like a CSI external-resizer) grows status.capacity on its next pass.
    grown = [p["metadata"]["name"] for p in homes]
    wait_for(
        "the grown homes' status.capacity to reach 60Gi",
        lambda: all(pvcs(project)[n]["status"]["capacity"]["storage"] == "60Gi" for n in grown),
        timeout=60,
    )


def claim_sizes(kubeconfig: str) -> dict[str, tuple[str, str]]:
    items = kget(kubeconfig, "pvc", "-n", NAMESPACE)["items"]
    return {i["metadata"]["name"]: (i["metadata"]["uid"], i["spec"]["resources"]["requests"]["storage"]) for i in items}


def _renamed_mount(project: PulumiProject) -> list[dict[str, Any]]:
    mounts = [dict(m) for m in project.get_config("extraMounts")]
    mounts[-1]["name"] = mounts[-1]["name"] + "2"
    return mounts


def _reclassed_mount(project: PulumiProject) -> list[dict[str, Any]]:
    mounts = [dict(m) for m in project.get_config("extraMounts")]
    mounts[0]["storageClassName"] = "local-retain"
    return mounts


@pytest.mark.parametrize(
    ("key", "change", "fragment"),
    [
        ("namespace", lambda p: "e2e-program-moved", "config key 'namespace'"),
        ("extraMounts", _renamed_mount, "config key 'extraMounts'"),
        ("extraMounts", _reclassed_mount, "config key 'extraMounts[0].storageClassName'"),
        ("homeSize", lambda p: "1Gi", "config key 'homeSize': 60Gi -> 1Gi"),
        ("storageProvisioner", lambda p: "example.com/other", "config key"),
        ("storageParameters", lambda p: {"tier": "fast"}, "storageParameters"),
    ],
)
def test_a_change_no_claim_can_take_is_refused_at_preview(
    project: PulumiProject, key: str, change: Any, fragment: str
) -> None:
    kc = project.env["KUBECONFIG"]
    before = claim_sizes(kc)
    old = project.get_config(key)
    project.set_config(key, change(project))
    try:
        proc = project.run("preview", "--diff", check=False)
        up = project.run("up", "--yes", check=False)
    finally:
        project.set_config(key, old) if old is not None else project.del_config(key)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and up.returncode != 0, text
    assert "refused, nothing applied" in text and fragment in text, text
    # The refusal is a plain check failure; the only traceback the engine may add is the Python
    # SDK's own when the engine stops the program ("context canceled", or a KeyboardInterrupt in the
    # SDK's lock wait, seen once in CI), never a frame of ours.
    assert "/components/" not in text and "ClaimChangeRefused" not in text, text
    if "Traceback" in text:
        stopped = "context canceled" in text or "KeyboardInterrupt" in text
        assert text.index("refused, nothing applied") < text.index("Traceback") and stopped, text
    assert claim_sizes(kc) == before
    project.run("preview", "--expect-no-changes")


def test_plain_destroy_refuses_and_deletes_nothing(project: PulumiProject) -> None:
    kc = project.env["KUBECONFIG"]
    ns = namespace(project)
    before = kget(kc, "statefulset,service,configmap,pvc", "-n", ns)["items"]
    proc = project.run("destroy", "--yes", check=False)
    assert proc.returncode != 0
    assert "protect" in (proc.stdout + proc.stderr).lower()
    after = kget(kc, "statefulset,service,configmap,pvc", "-n", ns)["items"]
    assert sorted(i["metadata"]["uid"] for i in before) == sorted(i["metadata"]["uid"] for i in after)


def test_end_of_term_keeps_homes_bound_to_their_volumes(project: PulumiProject) -> None:
    kc = project.env["KUBECONFIG"]
    ns = namespace(project)
    homes = {n: (p["metadata"]["uid"], p["spec"]["volumeName"]) for n, p in pvcs(project).items()}
    project.run("destroy", "--yes", "--exclude-protected")
    assert kget(kc, "statefulset", "-n", ns)["items"] == []
    kept = pvcs(project)
    assert {n: (p["metadata"]["uid"], p["spec"]["volumeName"]) for n, p in kept.items()} == homes
    assert all(p["status"]["phase"] == "Bound" for p in kept.values())
    for _, pv in homes.values():
        assert kget(kc, "pv", pv)["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    pytest.homes = homes  # type: ignore[attr-defined]


def test_new_up_after_release_adopts_the_same_homes(project: PulumiProject) -> None:
    homes: dict[str, tuple[str, str]] = pytest.homes  # type: ignore[attr-defined]
    # Release the homes from state (README: "Releasing homes"): protected
    # resources are unprotected, then dropped from state while retained.
    project.run("state", "unprotect", "--all", "--yes")
    project.run("destroy", "--yes")
    assert {n: (p["metadata"]["uid"], p["spec"]["volumeName"]) for n, p in pvcs(project).items()} == homes
    # README "Adopting kept homes": one run with upserts allowed.
    project.up(env={"PULUMI_K8S_UPSERT_EXISTING_OBJECTS": "true"})
    assert {n: (p["metadata"]["uid"], p["spec"]["volumeName"]) for n, p in pvcs(project).items()} == homes
    project.run("preview", "--expect-no-changes")
    sts = kget(project.env["KUBECONFIG"], "statefulset", "-n", namespace(project))["items"]
    assert sts and sts[0]["status"].get("readyReplicas") == 1


def test_broken_config_fails_preview_with_the_config_message(project: PulumiProject) -> None:
    good = project.get_config("extraPorts")
    project.set_config("extraPorts", [{"port": 70000, "protocol": "TCP", "name": "web"}])
    try:
        proc = project.run("preview", check=False)
    finally:
        project.set_config("extraPorts", good)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "extraPorts" in text and "70000" in text
    assert "Traceback" not in text
    assert not re.search(r"File \".*\.py\", line \d+", text)


def test_deliberate_teardown_removes_homes(project: PulumiProject) -> None:
    kc = project.env["KUBECONFIG"]
    ns = namespace(project)
    volumes = [p["spec"]["volumeName"] for p in pvcs(project).values()]
    # README "Deleting home directories": release, then delete by hand.
    project.run("state", "unprotect", "--all", "--yes")
    project.run("destroy", "--yes")
    kubectl(kc, "delete", "pvc", "--all", "-n", ns, "--wait=true")
    kubectl(kc, "delete", "pv", *volumes, "--wait=true")
    assert kget(kc, "pvc", "-n", ns)["items"] == []
    for pv in volumes:
        assert kubectl(kc, "get", "pv", pv, check=False).returncode != 0
