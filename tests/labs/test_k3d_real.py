"""The real k3d v5.8.3 binary on a throwaway dockerd, with the STAND-IN node images.

What labd relies on, checked against the real CLI rather than assumed: the
config labd renders is accepted; `k3d cluster list -o json` names, counts and
running state (what labd.k3d.K3d.list parses); the node names, labels and
port bindings (API, HTTP and HTTPS on the loadbalancer) that reach the node;
stop/start of the same containers; delete; and the exit codes of each verb
for a cluster that does not exist. The k3d double's claims are cross-checked
against the same calls at the end.

The node is tests/labs/k3s_standin/k3s, not k3s (see its header): it answers
plain HTTP, so these tests check that a published port reaches the node's
container, not that a Kubernetes API is behind it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from labd.config import DEFAULT_TEMPLATE
from labd.k3d import K3d
from labd.render import ClusterValues

from tests.labs.docker_env import Dockerd
from tests.labs.real_k3d import RealK3d, wait_running
from tests.labs.support import DOUBLE, Labd, free_port


@pytest.fixture(scope="module")
def k3d(k3d_binary: str, docker_engine: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> RealK3d:
    return RealK3d(k3d_binary, docker_engine, tmp_path_factory.mktemp("k3d-real"))


@pytest.fixture(scope="module")
def alice(k3d: RealK3d) -> Iterator[ClusterValues]:
    """One cluster made as labd makes it, shared by the lifecycle tests below (creation costs seconds)."""
    path, values = k3d.config("alice")
    done = k3d("cluster", "create", "--config", str(path))
    assert done.returncode == 0, done.stderr
    yield values
    k3d("cluster", "delete", values.cluster)


def test_create_from_labds_config_lists_what_labd_parses(k3d: RealK3d, alice: ClusterValues) -> None:
    item = k3d.listed()[alice.cluster]
    assert (item["serversCount"], item["serversRunning"], item["agentsCount"], item["agentsRunning"]) == (1, 1, 0, 0)
    assert item["hasLoadbalancer"] is True
    nodes = {n["name"]: n for n in item["nodes"]}
    server, lb = f"k3d-{alice.cluster}-server-0", f"k3d-{alice.cluster}-serverlb"
    assert set(nodes) == {server, lb}
    assert nodes[server]["role"] == "server" and nodes[lb]["role"] == "loadbalancer"
    assert all(n["State"]["Running"] is True for n in nodes.values())
    assert all(n["runtimeLabels"]["k3d.cluster"] == alice.cluster for n in nodes.values())
    # labd's own parser, on the real output
    assert K3d(str(k3d.wrapper), 60).list()[alice.cluster].running is True


def test_ports_and_labels_labd_relies_on(k3d: RealK3d, alice: ClusterValues) -> None:
    containers = k3d.containers(alice.cluster)
    server, lb = containers[f"k3d-{alice.cluster}-server-0"], containers[f"k3d-{alice.cluster}-serverlb"]
    assert server["Config"]["Labels"]["k3d.role"] == "server"
    assert server["Config"]["Labels"]["k3d.server.api.port"] == str(alice.api_port)
    assert lb["Config"]["Labels"]["k3d.role"] == "loadbalancer"
    assert server["HostConfig"]["Privileged"] is True  # k3d insists; the runtime wrapper drops one capability
    bindings = {
        port: [(b["HostIp"], b["HostPort"]) for b in binds] for port, binds in lb["HostConfig"]["PortBindings"].items()
    }
    # k3d writes the API port's key without a protocol ("6443", not "6443/tcp"). The ingress
    # ports are on backendHost (127.0.0.1 here) only; the API on all addresses (k3d's default)
    assert bindings == {
        "6443": [("0.0.0.0", str(alice.api_port))],
        "80/tcp": [("127.0.0.1", str(alice.http_port))],
        "443/tcp": [("127.0.0.1", str(alice.https_port))],
    }
    # what `k3d cluster list -o json` reports (what labd re-adopts from) says the same
    listed = next(n for n in k3d.listed()[alice.cluster]["nodes"] if n["role"] == "loadbalancer")
    assert {k: [(b["HostIp"], b["HostPort"]) for b in v] for k, v in listed["portMappings"].items()} == bindings
    assert server["HostConfig"]["PortBindings"] in ({}, None)  # everything goes through the loadbalancer
    # the published ports reach the server node's container through the loadbalancer
    assert f"k3s STAND-IN api k3d-{alice.cluster}-server-0" in (k3d.engine.fetch(alice.api_port) or "")
    assert f"k3s STAND-IN ingress k3d-{alice.cluster}-server-0" in (k3d.engine.fetch(alice.http_port) or "")


def other_addresses(engine: Dockerd) -> list[str]:
    """The engine namespace's IPv4 addresses other than loopback (the k3d networks' gateways)."""
    out = engine.in_netns("ip", "-4", "-o", "addr", "show").stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]
    assert found, out
    return found


def connects(engine: Dockerd, host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds inside the engine's namespace."""
    script = "import socket, sys\nsocket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
    return engine.in_netns(sys.executable, "-c", script, host, str(port)).returncode == 0


def test_ingress_is_unreachable_on_any_other_address(k3d: RealK3d, alice: ClusterValues) -> None:
    """Published on backendHost only: from another address of the lab host (here: the engine's
    namespace) a student's HTTP/HTTPS ports refuse, so Traefik is the only way in. The API port
    stays open there (the login server uses it; it is the cluster's own TLS API)."""
    assert k3d.listed()[alice.cluster]["serversRunning"] == 1
    assert connects(k3d.engine, "127.0.0.1", alice.http_port)
    assert connects(k3d.engine, "127.0.0.1", alice.https_port)
    for address in other_addresses(k3d.engine):
        assert not connects(k3d.engine, address, alice.http_port), address
        assert not connects(k3d.engine, address, alice.https_port), address
        assert k3d.engine.fetch(alice.http_port, host=address) is None
        assert f"k3s STAND-IN api k3d-{alice.cluster}-server-0" in (
            k3d.engine.fetch(alice.api_port, host=address) or ""
        )


def test_kubeconfig_get_and_labds_rewrite(k3d: RealK3d, alice: ClusterValues) -> None:
    done = k3d("kubeconfig", "get", alice.cluster)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert config["current-context"] == f"k3d-{alice.cluster}"
    assert config["clusters"][0]["cluster"]["server"] == f"https://0.0.0.0:{alice.api_port}"
    assert set(config["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}


def test_stop_and_start_the_same_containers(k3d: RealK3d, alice: ClusterValues) -> None:
    before = {name: c["Id"] for name, c in k3d.containers(alice.cluster).items()}
    done = k3d("cluster", "stop", alice.cluster)
    assert done.returncode == 0, done.stderr
    item = k3d.listed()[alice.cluster]
    assert (item["serversCount"], item["serversRunning"]) == (1, 0)
    assert all(n["State"]["Running"] is False for n in item["nodes"])
    assert K3d(str(k3d.wrapper), 60).list()[alice.cluster].running is False
    assert k3d.engine.fetch(alice.api_port) is None
    assert all(not c["State"]["Running"] for c in k3d.containers(alice.cluster).values())

    done = k3d("cluster", "start", alice.cluster)
    assert done.returncode == 0, done.stderr
    assert k3d.listed()[alice.cluster]["serversRunning"] == 1
    assert {name: c["Id"] for name, c in k3d.containers(alice.cluster).items()} == before
    # the node's second start, in the same container (its file system kept the first's count)
    assert f"k3s STAND-IN api k3d-{alice.cluster}-server-0 start 2" in (k3d.engine.fetch(alice.api_port) or "")
    # starting a running cluster is not an error
    assert k3d("cluster", "start", alice.cluster).returncode == 0


# (argv after the verb's own words, exit status) for a cluster that does not exist; the double must agree
UNKNOWN = [
    (("cluster", "start", "lab-nobody"), 1),
    (("cluster", "stop", "lab-nobody"), 1),
    (("cluster", "delete", "lab-nobody"), 0),
    (("cluster", "list", "lab-nobody", "-o", "json"), 1),
    (("kubeconfig", "get", "lab-nobody"), 1),
]


@pytest.mark.parametrize(("argv", "rc"), UNKNOWN, ids=[" ".join(a[:2]) for a, _ in UNKNOWN])
def test_exit_status_for_an_unknown_cluster(k3d: RealK3d, argv: tuple[str, ...], rc: int) -> None:
    assert k3d(*argv).returncode == rc


def test_create_twice_and_port_clash_fail_and_roll_back(k3d: RealK3d, alice: ClusterValues) -> None:
    path = k3d.work / f"{alice.cluster}.yaml"
    done = k3d("cluster", "create", "--config", str(path))
    assert done.returncode == 1 and "already exists" in done.stderr
    assert k3d.listed()[alice.cluster]["serversRunning"] == 1  # the first is untouched
    # bob asks for alice's HTTP port (a labd that lost its state could do that)
    clash, bob = k3d.config(
        "bob", {**DEFAULT_TEMPLATE, "ports": [{"port": f"{alice.http_port}:80", "nodeFilters": ["loadbalancer"]}]}
    )
    done = k3d("cluster", "create", "--config", str(clash))
    assert done.returncode == 1
    assert bob.cluster not in k3d.listed()
    assert k3d.containers(bob.cluster) == {}


def test_delete_removes_containers_and_network(k3d: RealK3d) -> None:
    path, carol = k3d.config("carol")
    assert k3d("cluster", "create", "--config", str(path)).returncode == 0
    assert k3d.engine.docker("network", "inspect", f"k3d-{carol.cluster}", check=False).returncode == 0
    done = k3d("cluster", "delete", carol.cluster)
    assert done.returncode == 0, done.stderr
    assert carol.cluster not in k3d.listed()
    assert k3d.containers(carol.cluster) == {}
    assert k3d.engine.docker("network", "inspect", f"k3d-{carol.cluster}", check=False).returncode != 0


def _shape(item: dict[str, Any]) -> dict[str, Any]:
    """What the double claims of a `cluster list -o json` item, in a comparable form."""
    keys = ("name", "serversCount", "serversRunning", "agentsCount", "agentsRunning", "hasLoadbalancer")
    lb = next(n for n in item["nodes"] if n["role"] == "loadbalancer")
    return {
        **{k: item[k] for k in keys},
        "nodes": sorted((n["name"], n["role"], n["State"]["Running"]) for n in item["nodes"]),
        "published": {
            port: [(b["HostIp"], b["HostPort"]) for b in binds] for port, binds in lb["portMappings"].items()
        },
    }


def test_the_double_claims_what_the_real_k3d_does(k3d: RealK3d, tmp_path: Path) -> None:
    """Every claim of k3d_double.py that labd's tests rest on, replayed against the real k3d."""

    def double(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(DOUBLE), *args],
            capture_output=True,
            text=True,
            check=False,
            env={"K3D_DOUBLE_DIR": str(tmp_path / "double"), "PATH": "/usr/bin:/bin"},
        )

    # with one more port of the template's own, published without an address (k3d: on 0.0.0.0)
    path, dave = k3d.config(
        "dave", {**DEFAULT_TEMPLATE, "ports": [{"port": f"{free_port()}:8080", "nodeFilters": ["loadbalancer"]}]}
    )
    clash, ivan = k3d.config(
        "ivan", {**DEFAULT_TEMPLATE, "ports": [{"port": f"{dave.http_port}:80", "nodeFilters": ["loadbalancer"]}]}
    )
    real_list: list[Any] = []
    double_list: list[Any] = []
    try:
        for run, seen in ((k3d, real_list), (double, double_list)):
            steps = [
                ("cluster", "create", "--config", str(path)),
                ("cluster", "create", "--config", str(clash)),
                ("cluster", "list", "-o", "json"),
                ("cluster", "stop", dave.cluster),
                ("cluster", "list", "-o", "json"),
                ("cluster", "start", dave.cluster),
                ("kubeconfig", "get", dave.cluster),
            ]
            for step in steps:
                done = run(*step)
                seen.append((step[:2], done.returncode))
                if step[1] == "list":
                    listed = {i["name"]: i for i in json.loads(done.stdout)}
                    seen.append((_shape(listed[dave.cluster]), ivan.cluster in listed))
                if step[0] == "kubeconfig":
                    config = yaml.safe_load(done.stdout)
                    seen.append(
                        (
                            config["current-context"],
                            config["clusters"][0]["cluster"]["server"],
                            config["contexts"][0]["context"],
                            sorted(config["users"][0]["user"]),
                        )
                    )
            for argv, _ in UNKNOWN:
                seen.append((argv, run(*argv).returncode))
            seen.append(("delete", run("cluster", "delete", dave.cluster).returncode))
            seen.append(
                (
                    "after delete",
                    [
                        i["name"]
                        for i in json.loads(run("cluster", "list", "-o", "json").stdout)
                        if i["name"] == dave.cluster
                    ],
                )
            )
    finally:
        k3d("cluster", "delete", dave.cluster)
        k3d("cluster", "delete", ivan.cluster)
    for index, (claimed, real) in enumerate(zip(double_list, real_list, strict=True)):
        assert claimed == real, f"step {index}: the double claims {claimed!r}, the real k3d gives {real!r}"


def test_labd_drives_the_real_k3d(k3d: RealK3d, tmp_path: Path, labd_factory: list[Labd]) -> None:
    """ensure -> running cluster on the ports labd hands out; stop; ensure starts the same containers; delete."""
    labd = Labd(tmp_path / "labd", k3dBinary=str(k3d.wrapper), k3dTimeout=120)
    labd_factory.append(labd)
    labd.start()

    status, body = labd.request("POST", "/v1/users/erin/ensure", "erin")
    assert status == 202, body
    wait_running(labd, "erin", "erin's cluster running")
    ports = labd.status("erin")["ports"]
    lb = k3d.containers("lab-erin")["k3d-lab-erin-serverlb"]
    bindings = {port: (b[0]["HostIp"], b[0]["HostPort"]) for port, b in lb["HostConfig"]["PortBindings"].items()}
    assert bindings == {
        "6443": ("0.0.0.0", str(ports["api"])),
        "80/tcp": ("127.0.0.1", str(ports["http"])),
        "443/tcp": ("127.0.0.1", str(ports["https"])),
    }
    assert "k3s STAND-IN ingress k3d-lab-erin-server-0" in (k3d.engine.fetch(ports["http"]) or "")
    status, kubeconfig = labd.request("GET", "/v1/users/erin/kubeconfig", "erin")
    assert status == 200, kubeconfig
    assert yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{ports['api']}"
    ids = {name: c["Id"] for name, c in k3d.containers("lab-erin").items()}

    status, body = labd.request("POST", "/v1/users/erin/stop", "erin")
    assert status == 200 and body["state"] == "stopped", body
    assert k3d.listed()["lab-erin"]["serversRunning"] == 0
    assert k3d.engine.fetch(ports["http"]) is None

    status, body = labd.request("POST", "/v1/users/erin/ensure", "erin")
    assert status == 202, body
    wait_running(labd, "erin", "erin's cluster started again")
    assert {name: c["Id"] for name, c in k3d.containers("lab-erin").items()} == ids
    assert labd.status("erin")["ports"] == ports

    status, body = labd.request("DELETE", "/v1/users/erin", "admin", key_id="admin")
    assert status == 200 and body["state"] == "deleted", body
    assert "lab-erin" not in k3d.listed()
    assert k3d.containers("lab-erin") == {}


def test_labd_readopts_real_clusters_on_their_published_ports_after_losing_its_state(
    k3d: RealK3d, tmp_path: Path, labd_factory: list[Labd]
) -> None:
    """State file gone: labd adopts both clusters from `k3d cluster list` on the ports k3d really published,
    so each student's domain still routes to that student's own cluster."""
    labd = Labd(tmp_path / "labd", k3dBinary=str(k3d.wrapper), k3dTimeout=120)
    labd_factory.append(labd)
    labd.start()
    # gina first: she gets the first ports, so a re-allocation in k3d's (alphabetical) order would swap them
    for user in ("gina", "frank"):
        status, body = labd.request("POST", f"/v1/users/{user}/ensure", user)
        assert status == 202, body
        wait_running(labd, user, f"{user}'s cluster running")
    ports = {u: labd.status(u)["ports"] for u in ("frank", "gina")}
    routes_file = Path(labd.config["traefik"]["file"])
    routes = yaml.safe_load(routes_file.read_text())
    labd.stop()
    Path(labd.config["stateFile"]).unlink()
    routes_file.unlink()

    labd.start()
    try:
        assert {u: labd.status(u)["ports"] for u in ("frank", "gina")} == ports
        assert yaml.safe_load(routes_file.read_text()) == routes
        for user in ("frank", "gina"):
            assert labd.status(user)["state"] == "running"
            body = k3d.engine.fetch(ports[user]["http"]) or ""
            assert f"ingress k3d-lab-{user}-server-0" in body
            # still on backendHost only, after re-adoption as before
            lb = k3d.containers(f"lab-{user}")[f"k3d-lab-{user}-serverlb"]["HostConfig"]["PortBindings"]
            assert [b["HostIp"] for b in lb["80/tcp"] + lb["443/tcp"]] == ["127.0.0.1", "127.0.0.1"]
        # a new student gets ports neither adopted cluster uses
        status, body = labd.request("POST", "/v1/users/hana/ensure", "hana")
        assert status == 202, body
        wait_running(labd, "hana", "hana's cluster running")
        taken = {p for u in ("frank", "gina") for p in ports[u].values()}
        assert not set(labd.status("hana")["ports"].values()) & taken
    finally:
        for user in ("frank", "gina", "hana"):
            k3d("cluster", "delete", f"lab-{user}")
