"""The local control plane behaves like the clusters the program targets.

These are the properties the Pulumi e2e tests rely on: workloads roll out to
Ready (so pulumi-kubernetes' await logic completes), claims of the default
class bind and expand in place, released volumes follow their reclaim
policy, LoadBalancer Services get an address, nothing listens beyond
loopback, and nothing is left running afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import localcluster
import pytest
from localcluster import ApiError, KubeApi, LocalCluster

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90) -> T:
    """Poll until probe() returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiError as e:
            last = e
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what}; last observation: {last!r}")


@pytest.fixture()
def namespace(local_cluster: LocalCluster) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    local_cluster.api().create("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


def pvc(name: str, size: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def bound_claim(api: KubeApi, ns: str, name: str) -> dict[str, Any] | None:
    claim = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")
    return claim if claim.get("status", {}).get("phase") == "Bound" else None


def listening_sockets(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by `pids` (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found: set[tuple[str, int]] = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.ip_address(words) if family == 4 else ipaddress.IPv6Address(words)
            found.add((str(addr), int(hex_port, 16)))
    return found


def test_statefulset_rolls_out_to_ready(local_cluster: LocalCluster, namespace: str) -> None:
    api = local_cluster.api()
    labels = {"app": "web"}
    api.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 22}]},
        },
    )
    api.create(
        f"/apis/apps/v1/namespaces/{namespace}/statefulsets",
        {
            "metadata": {"name": "web"},
            "spec": {
                "serviceName": "web",
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "initContainers": [{"name": "init", "image": "busybox"}],
                        "containers": [{"name": "sshd", "image": "debian", "ports": [{"containerPort": 22}]}],
                    },
                },
            },
        },
    )

    def rolled_out() -> dict[str, Any] | None:
        sts = api.get(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/web")
        st = sts.get("status", {})
        done = (
            st.get("readyReplicas") == 2
            and st.get("updatedReplicas") == 2
            and (st.get("currentRevision") == st.get("updateRevision"))
        )
        return sts if done else None

    wait_for("StatefulSet web to have 2 ready replicas", rolled_out)
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb")["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["web-0", "web-1"]
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in localcluster.FAKE_NODES
        assert ipaddress.ip_address(pod["status"]["podIP"])
    # the default ServiceAccount token was mounted: the SA and token machinery work
    assert pods[0]["spec"]["serviceAccountName"] == "default"


def test_pvc_of_default_class_binds_retains_and_expands(local_cluster: LocalCluster, namespace: str) -> None:
    api = local_cluster.api()
    api.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", pvc("home", "1Gi", None))
    claim = wait_for("claim home to bind", lambda: bound_claim(api, namespace, "home"))
    # no class given: the DefaultStorageClass admission picked local-retain
    assert claim["spec"]["storageClassName"] == "local-retain"
    pv = api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert Path(pv["spec"]["hostPath"]["path"]).is_dir()
    assert Path(pv["spec"]["hostPath"]["path"]).is_relative_to(local_cluster.dir)

    api.merge_patch(
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/home",
        {"spec": {"resources": {"requests": {"storage": "3Gi"}}}},
    )

    def expanded() -> dict[str, Any] | None:
        c = api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/home")
        return c if c.get("status", {}).get("capacity", {}).get("storage") == "3Gi" else None

    claim = wait_for("claim home to report 3Gi", expanded)
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"], "expansion must keep the same volume"
    pv = api.get(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
    assert pv["spec"]["capacity"]["storage"] == "3Gi"

    # Retain: deleting the claim releases the volume but keeps it and its data
    marker = Path(pv["spec"]["hostPath"]["path"]) / "student-file"
    marker.write_text("keep me")
    api.delete(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/home")
    released = wait_for(
        "volume to be Released",
        lambda: (lambda v: v if v.get("status", {}).get("phase") == "Released" else None)(
            api.get(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        ),
    )
    assert released["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert marker.read_text() == "keep me"


def test_delete_class_reclaims_released_volume(local_cluster: LocalCluster, namespace: str) -> None:
    api = local_cluster.api()
    api.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", pvc("scratch", "1Gi", "local-delete"))
    claim = wait_for("claim scratch to bind", lambda: bound_claim(api, namespace, "scratch"))
    pv_name = claim["spec"]["volumeName"]
    pv = api.get(f"/api/v1/persistentvolumes/{pv_name}")
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    path = Path(pv["spec"]["hostPath"]["path"])

    api.delete(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/scratch")

    def gone() -> bool:
        try:
            api.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
        except ApiError as e:
            return e.status == 404
        return False

    wait_for(f"volume {pv_name} to be deleted", gone)
    assert not path.exists()


def test_loadbalancer_service_gets_an_address_and_endpoints(local_cluster: LocalCluster, namespace: str) -> None:
    api = local_cluster.api()
    labels = {"app": "ssh"}
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "metadata": {"name": "ssh-0", "labels": labels},
            "spec": {"containers": [{"name": "sshd", "image": "debian", "ports": [{"containerPort": 22}]}]},
        },
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": "ssh"},
            "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"port": 22, "targetPort": 22}]},
        },
    )

    def ingress() -> list[dict[str, Any]] | None:
        svc = api.get(f"/api/v1/namespaces/{namespace}/services/ssh")
        return svc.get("status", {}).get("loadBalancer", {}).get("ingress")

    ips = [ipaddress.ip_address(i["ip"]) for i in wait_for("LoadBalancer address", ingress)]
    assert len(ips) == 1 and ips[0] in localcluster.LB_POOL

    def endpoint_addresses() -> list[dict[str, Any]] | None:
        ep = api.get(f"/api/v1/namespaces/{namespace}/endpoints/ssh")
        return [a for s in ep.get("subsets") or [] for a in s.get("addresses") or []] or None

    addresses = wait_for("ready endpoints behind the ssh Service", endpoint_addresses)
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/ssh-0")
    assert [a["ip"] for a in addresses] == [pod["status"]["podIP"]]


def test_only_loopback_listeners(local_cluster: LocalCluster) -> None:
    state = json.loads(local_cluster.state_file.read_text())
    pids = set(state["pids"].values())
    sockets = listening_sockets(pids)
    assert sockets, "expected the control plane to listen somewhere"
    outside = {(a, p) for a, p in sockets if not ipaddress.ip_address(a).is_loopback}
    assert not outside, f"listening beyond loopback: {sorted(outside)}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "localcluster.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_start_status_stop_leaves_nothing_behind(tmp_path: Path, local_cluster: LocalCluster) -> None:
    # depends on local_cluster only so that a missing toolchain skips/fails the same way
    cluster_dir = tmp_path / "cli-cluster"
    started = run_cli("start", "--dir", str(cluster_dir))
    try:
        assert started.returncode == 0, started.stderr
        assert f"KUBECONFIG={cluster_dir / 'kubeconfig'}" in started.stdout
        status = run_cli("status", "--dir", str(cluster_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["api_ready"] is True
        assert all(report["processes"].values()), report
        pids = set(json.loads((cluster_dir / "cluster.json").read_text())["pids"].values())
        ports = {p for _, p in listening_sockets(pids)}
        assert ports
    finally:
        stopped = run_cli("stop", "--dir", str(cluster_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not [p for p in pids if localcluster.pid_alive(p)], "components still running after stop"
    assert not listening_sockets(pids)
    status = run_cli("status", "--dir", str(cluster_dir))
    assert status.returncode == 1 and json.loads(status.stdout)["api_ready"] is False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_cluster_stops_when_its_owner_is_killed(tmp_path: Path, local_cluster: LocalCluster, sig: int) -> None:
    """SIGTERM: the context manager's handler stops the cluster before the owner dies.
    SIGKILL leaves no code to run: the controllers process notices its owner is gone."""
    cluster_dir = tmp_path / "orphan"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; import localcluster;"
            " c = localcluster.LocalCluster(sys.argv[1]); c.__enter__(); print('up', flush=True); time.sleep(600)",
            str(cluster_dir),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "tools")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "up", owner.stderr.read() if owner.stderr else ""
        pids = set(json.loads((cluster_dir / "cluster.json").read_text())["pids"].values())
        assert all(localcluster.pid_alive(p) for p in pids)
    finally:
        owner.send_signal(sig)
        owner.wait(timeout=60)
    assert owner.returncode == -sig, "the owner should still die of the signal"
    wait_for("orphaned components to stop", lambda: not [p for p in pids if localcluster.pid_alive(p)], 60)
    assert not listening_sockets(pids)
