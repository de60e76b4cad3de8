"""A real node: kubelet + containerd + runc + CNI + kube-proxy (tools/node.py).

A local control plane with no kwok node and one real node.  A pod from an
image imported into the node's containerd (busybox-static, built here: no
registry) really runs: its readiness probe is the kubelet's own TCP dial, its
log comes from the kubelet through the API server, and it answers on its pod
IP, its ClusterIP and its LoadBalancer address through kube-proxy's rules in
the node's network namespace.  A second pod reaches the Service but neither
the host nor the node's uplink.  While it runs the host's own iptables and
nfacct are untouched; after stop() nothing of the node is left on the host.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import localcluster
import node as realnode
import pytest

REPO = Path(__file__).resolve().parents[2]


TOKEN = secrets.token_hex(8)
WEB_IMAGE = "classroom.local/node-test-web:1"
CLIENT_IMAGE = "classroom.local/node-test-client:1"


class Started:
    def __init__(self, cluster: localcluster.LocalCluster, node: realnode.RealNode, before: dict[str, Any]) -> None:
        self.cluster, self.node, self.before = cluster, node, before
        self.api = cluster.api()


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, toolchain_env: dict[str, str]) -> Iterator[Started]:
    try:
        localcluster.find_binaries()
        realnode.find_node_binaries()
    except (localcluster.ClusterError, realnode.NodeError) as e:
        pytest.fail(str(e))
    base = tmp_path_factory.mktemp("realnode")
    before = realnode.host_state()
    with localcluster.LocalCluster(base / "cluster", fake_nodes=(), lb_pool=realnode.NODE_LB_POOL) as cluster:
        node = realnode.RealNode(cluster, base / "node")
        try:
            node.start()
            node.import_image(
                realnode.busybox_image(
                    base / "web.tar",
                    WEB_IMAGE,
                    [
                        "/bin/busybox",
                        "sh",
                        "-c",
                        'mkdir -p /www && echo "$TOKEN" > /www/index.html && echo "serving $TOKEN" '
                        "&& exec /bin/busybox httpd -f -p 8080 -h /www",
                    ],
                )
            )
            node.import_image(realnode.busybox_image(base / "client.tar", CLIENT_IMAGE, ["/bin/busybox", "true"]))
            yield Started(cluster, node, before)
        finally:
            node.stop()


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (OSError, localcluster.ApiError, KeyError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def ready(api: localcluster.KubeApi, name: str) -> dict[str, Any] | None:
    pod: dict[str, Any] = api.get(f"/api/v1/namespaces/default/pods/{name}")
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    return pod if conditions.get("Ready") == "True" else None


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode().strip())


@pytest.fixture(scope="module")
def web(started: Started) -> dict[str, Any]:
    api = started.api
    api.create(
        "/api/v1/namespaces/default/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": WEB_IMAGE,
                        "imagePullPolicy": "Never",
                        "env": [{"name": "TOKEN", "value": TOKEN}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}},
                    }
                ]
            },
        },
    )
    api.create(
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    pod = wait_for("the web pod Ready", lambda: ready(api, "web"))
    svc = wait_for(
        "a LoadBalancer address",
        lambda: (
            (s := api.get("/api/v1/namespaces/default/services/web"))["status"].get("loadBalancer", {}).get("ingress")
            and s
        ),
    )
    return {"pod": pod, "service": svc}


def test_the_pod_runs_on_the_real_node_in_its_cgroup_subtree(started: Started, web: dict[str, Any]) -> None:
    pod = web["pod"]
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    assert realnode.POD_CIDR.overlaps(realnode.ipaddress.ip_network(pod["status"]["podIP"]))
    # the container's processes live in the node's own cgroup subtree
    pids = started.node._cgroup_pids()
    assert any(f"TOKEN={TOKEN}" in environ(p) for p in pids), "the web container is not in the node's cgroups"


def environ(pid: int) -> str:
    """A process's environment, or "" if it ended after it was listed (a probe's exec, runc)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except (ProcessLookupError, FileNotFoundError):
        return ""


def test_the_pod_answers_on_its_ip_its_cluster_ip_and_its_load_balancer_address(web: dict[str, Any]) -> None:
    pod_ip = web["pod"]["status"]["podIP"]
    cluster_ip = web["service"]["spec"]["clusterIP"]
    lb_ip = web["service"]["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert realnode.ipaddress.ip_address(lb_ip) in realnode.NODE_LB_POOL
    assert get(f"http://{pod_ip}:8080/") == TOKEN
    assert wait_for("kube-proxy's ClusterIP rule", lambda: get(f"http://{cluster_ip}/") == TOKEN, 30)
    assert wait_for("kube-proxy's LoadBalancer rule", lambda: get(f"http://{lb_ip}/") == TOKEN, 30)


def test_logs_come_from_the_kubelet_through_the_api_server(started: Started, web: dict[str, Any]) -> None:
    logs = started.api.request("GET", "/api/v1/namespaces/default/pods/web/log")
    assert f"serving {TOKEN}" in logs


def test_a_pod_reaches_the_service_but_not_the_host(started: Started, web: dict[str, Any]) -> None:
    # a server on the host side of the node's uplink: the host reaches it, a pod must not
    server = http.server.ThreadingHTTPServer((started.node.host_ip, 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host_url = f"http://{started.node.host_ip}:{server.server_address[1]}/"
        with urllib.request.urlopen(host_url, timeout=5) as resp:
            assert resp.status == 200
        cluster_ip = web["service"]["spec"]["clusterIP"]
        # busybox nc, not wget: static busybox's wget crashes in glibc's NSS here
        port = server.server_address[1]
        request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
        script = (
            f"if {request} | nc -w 3 {cluster_ip} 80 | grep -q {TOKEN}; then echo SERVICE-OK; "
            f"else echo SERVICE-FAILED; fi; "
            f"if {request} | nc -w 3 {started.node.host_ip} {port} | grep -q HTTP/1; then echo HOST-REACHED; "
            f"else echo HOST-BLOCKED; fi"
        )
        started.api.create(
            "/api/v1/namespaces/default/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "client"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "client",
                            "image": CLIENT_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["/bin/busybox", "sh", "-c", script],
                        }
                    ],
                },
            },
        )
        wait_for(
            "the client pod to finish",
            lambda: (
                started.api.get("/api/v1/namespaces/default/pods/client")["status"].get("phase")
                in ("Succeeded", "Failed")
            ),
        )
        logs = started.api.request("GET", "/api/v1/namespaces/default/pods/client/log")
        assert "SERVICE-OK" in logs and "HOST-BLOCKED" in logs, logs
    finally:
        server.shutdown()
        server.server_close()


def test_the_host_tables_are_untouched_while_the_node_runs(started: Started, web: dict[str, Any]) -> None:
    now = realnode.host_state()
    for key in ("iptables", "ip6tables", "nfacct"):
        if key == "nfacct":  # kube-proxy's own counter objects in its netns: removed by stop()
            assert set(now[key]) - set(started.before[key]) <= set(realnode.KUBE_PROXY_NFACCT)
        else:
            assert now[key] == started.before[key], key
    rules = realnode.run("iptables-save", "-t", "nat", netns=started.node.netns)
    assert "KUBE-SERVICES" in rules and web["service"]["spec"]["clusterIP"] in rules


def test_stop_leaves_nothing_on_the_host(started: Started, web: dict[str, Any]) -> None:
    started.node.stop()
    assert realnode.leftovers(started.before, started.node.dir) == {}
    nodes = started.api.get("/api/v1/nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == []
