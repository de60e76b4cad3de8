"""`labs` stack config: every mistake names the key, the value and what is accepted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.errors import ConfigError
from components.labconfig import DEFAULT_IDLE_TIMEOUT, parse_labs

# A real key: the schema checks that the engine could log in with it.
KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)
SECRET = "s" * 40


@dataclass(frozen=True)
class P:
    username: str
    labs: bool = True
    uid: int = 20000
    role: str = "student"


def labs(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "domain": "lab.example.edu",
        "hosts": [{"name": "lab1", "address": "10.0.0.5", "capacity": 20}],
        "ssh": {"privateKey": KEY},
        "sessionKey": SECRET,
        "adminKey": SECRET,
    }
    base.update(overrides)
    return base


def in_cluster_host(**extra: Any) -> dict[str, Any]:
    """A valid inCluster host entry, with extra keys on top."""
    return {"name": "l", "inCluster": True, "capacity": 1, "image": "r.example/lh:1", "engine": "shared", **extra}


def parse(value: Any, people: list[P] | None = None) -> Any:
    return parse_labs({"labs": value}, base_dir=Path("."), people=people if people is not None else [P("alice")])


def test_defaults_and_placement() -> None:
    cfg = parse(labs(), [P("alice"), P("bob"), P("carol", labs=False)])
    assert cfg.enabled and cfg.idle_timeout == DEFAULT_IDLE_TIMEOUT
    assert cfg.servers == 1 and cfg.agents == 0
    host = cfg.hosts[0]
    assert (host.port, host.user, host.labd_port, host.service_manager, host.cert_principal) == (
        22,
        "root",
        8787,
        "systemd",
        "10.0.0.5",
    )
    assert dict(cfg.placement) == {"alice": "lab1", "bob": "lab1"}
    template = cfg.labd_template()
    # Stack placeholders are filled in; student ones are renamed for labd.
    assert template["servers"] == 1 and template["image"].startswith("docker.io/rancher/k3s:")
    assert template["metadata"]["name"] == "${cluster}"
    assert "classroom.lab/user=${user}" in str(template["options"])


def test_absent_labs_is_disabled_unless_someone_needs_it() -> None:
    assert not parse_labs({}, base_dir=Path("."), people=[P("alice", labs=False)]).enabled
    with pytest.raises(ConfigError) as err:
        parse_labs({}, base_dir=Path("."), people=[P("alice")])
    assert err.value.key == "labs" and "alice" in err.value.accepted


def test_numbers_arrive_as_floats_from_the_engine() -> None:
    cfg = parse(labs(servers=3.0, hosts=[{"name": "lab1", "address": "h", "capacity": 5.0, "port": 2222.0}]))
    assert cfg.servers == 3 and cfg.hosts[0].capacity == 5 and cfg.hosts[0].port == 2222


def test_custom_template_with_placeholders() -> None:
    text = (
        "apiVersion: k3d.io/v1alpha5\nkind: Simple\nservers: ${servers}\nagents: ${agents}\n"
        "image: ${k3sImage}\nvolumes:\n  - volume: /srv/${username}:/data\n    nodeFilters: [server:0]\n"
        "options:\n  k3s:\n    extraArgs:\n      - arg: --tls-san=${host}\n        nodeFilters: [server:*]\n"
    )
    cfg = parse(labs(k3dConfigTemplate=text, agents=2, k3sImage="docker.io/rancher/k3s:v1.30.1-k3s1"))
    template = cfg.labd_template()
    assert template["agents"] == 2 and template["image"] == "docker.io/rancher/k3s:v1.30.1-k3s1"
    assert template["volumes"][0]["volume"] == "/srv/${user}:/data"


@pytest.mark.parametrize(
    ("value", "key", "shown", "accepted_part"),
    [
        (labs(domain="Lab_Example"), "labs.domain", "Lab_Example", "DNS domain"),
        (labs(idleTimeout="soon"), "labs.idleTimeout", "soon", "'30m'"),
        (labs(idleTimeout=0), "labs.idleTimeout", 0, "greater than 0"),
        (labs(servers=0), "labs.servers", 0, "from 1 to 9"),
        (labs(agents=True), "labs.agents", True, "from 0 to 9"),
        (labs(k3sImage="rancher/k3s:UPPER CASE"), "labs.k3sImage", "rancher/k3s:UPPER CASE", "image reference"),
        (
            labs(k3dConfigTemplate="metadata:\n  name: ${student}\n"),
            "labs.k3dConfigTemplate",
            "${student}",
            "${username}",
        ),
        (labs(k3dConfigTemplate="price: 5$\n"), "labs.k3dConfigTemplate", None, "$$"),
        (labs(k3dConfigTemplate="servers: [unclosed\n"), "labs.k3dConfigTemplate", None, "valid YAML"),
        (labs(k3dConfigTemplate="- a list\n"), "labs.k3dConfigTemplate", None, "YAML mapping"),
        (labs(k3dConfigTemplate="kind: Cluster\n"), "labs.k3dConfigTemplate.kind", "Cluster", "'Simple'"),
        (labs(k3dConfigTemplate="servers: 12\n"), "labs.k3dConfigTemplate.servers", 12, "from 1 to 9"),
        (labs(hosts=[]), "labs.hosts", [], "non-empty list"),
        (labs(hosts=[{"name": "Lab 1", "address": "h", "capacity": 1}]), "labs.hosts[0].name", "Lab 1", "lowercase"),
        (labs(hosts=[{"name": "lab1", "capacity": 1}]), "labs.hosts[0].address", None, "host name or IP"),
        (labs(hosts=[{"name": "lab1", "address": "h", "capacity": 0}]), "labs.hosts[0].capacity", 0, "from 1 to 1000"),
        (labs(hosts=[{"name": "lab1", "address": "h"}]), "labs.hosts[0].capacity", None, "from 1 to 1000"),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "port": 70000}]),
            "labs.hosts[0].port",
            70000,
            "from 1 to 65535",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "hostKey": "nonsense"}]),
            "labs.hosts[0].hostKey",
            "nonsense",
            "OpenSSH public key",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "colour": "red"}]),
            "labs.hosts[0].colour",
            "red",
            "known keys",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "inCluster": "yes"}]),
            "labs.hosts[0].inCluster",
            "yes",
            "true or false",
        ),
        (
            labs(hosts=[{"name": "lab1", "capacity": 1, "inCluster": True}]),
            "labs.hosts[0].image",
            None,
            "dockerd, sshd",
        ),
        (
            # The one lab host kind where cluster-admin is root on a machine: stated, never defaulted.
            labs(hosts=[{"name": "lab1", "capacity": 1, "inCluster": True, "image": "r.example/lh:1"}]),
            "labs.hosts[0].engine",
            None,
            "write engine: shared to accept that",
        ),
        (
            labs(
                hosts=[
                    {"name": "lab1", "capacity": 1, "inCluster": True, "image": "r.example/lh:1", "engine": "rootless"}
                ]
            ),
            "labs.hosts[0].engine",
            "rootless",
            "no rootlesskit",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "image": "docker:dind"}]),
            "labs.hosts[0].image",
            "docker:dind",
            "inCluster hosts only",
        ),
        (
            labs(hosts=[{"name": "lab1", "capacity": 1, "inCluster": True, "serviceManager": "systemd"}]),
            "labs.hosts[0].serviceManager",
            "systemd",
            "no systemd",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "serviceManager": "runit"}]),
            "labs.hosts[0].serviceManager",
            "runit",
            "'systemd' or 'none'",
        ),
        (labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "weight": 0}]), "labs.hosts[0].weight", 0, "> 0"),
        (
            labs(
                hosts=[{"name": "lab1", "address": "h", "capacity": 1}, {"name": "lab1", "address": "g", "capacity": 1}]
            ),
            "labs.hosts[1].name",
            "lab1",
            "no other lab host",
        ),
        (
            labs(hosts=[{"name": "lab1", "address": "h", "capacity": 4000}]),
            "labs.hosts[0].capacity",
            4000,
            "from 1 to 1000",
        ),
        (
            labs(portLimit=20010, hosts=[{"name": "lab1", "address": "h", "capacity": 5}]),
            "labs.hosts[0].capacity",
            5,
            "at most 3",
        ),
        (labs(ssh={}), "labs.ssh.privateKey", None, "private key"),
        (labs(ssh={"privateKey": "hunter2"}), "labs.ssh.privateKey", "<hidden>", "private key"),
        (labs(ssh={"agentSocket": "/run/agent", "pass": 1}), "labs.ssh.pass", 1, "known keys"),
        (labs(sessionKey="short"), "labs.sessionKey", "<hidden>", "at least 32"),
        (labs(adminKey=None), "labs.adminKey", None, "at least 32"),
        (labs(pins={"alice": "lab7"}), "labs.pins.alice", "lab7", "lab1"),
        (labs(pins={"zed": "lab1"}), "labs.pins.zed", "lab1", "labs: true"),
        (labs(hooks={"init": {"url": "ftp://x"}}), "labs.hooks.init.url", "ftp://x", "http"),
        (
            labs(hooks={"init": {"url": "https://h/i", "secret": SECRET, "retries": 11}}),
            "labs.hooks.init.retries",
            11,
            "from 0 to 10",
        ),
        (
            labs(hooks={"init": {"url": "https://h/i", "secret": SECRET, "timeout": "-1s"}}),
            "labs.hooks.init.timeout",
            "-1s",
            "duration",
        ),
        (labs(hooks={"reset": {}}), "labs.hooks.reset", {}, "known keys"),
        (
            labs(hosts=[in_cluster_host(cpu="lots")]),
            "labs.hosts[0].cpu",
            "lots",
            "CPU quantity",
        ),
        (
            labs(hosts=[in_cluster_host(memory="16GB")]),
            "labs.hosts[0].memory",
            "16GB",
            "memory quantity",
        ),
        (labs(clusterPrefix="Lab_"), "labs.clusterPrefix", "Lab_", "lowercase"),
        (labs(flavour="mint"), "labs.flavour", "mint", "known keys"),
        ("yes", "labs", "yes", "a mapping (key: value pairs)"),
    ],
)
def test_bad_values_name_key_value_and_accepted(value: Any, key: str, shown: Any, accepted_part: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(value)
    assert err.value.key == key
    if shown is not None:
        assert err.value.value == shown
    assert accepted_part in err.value.accepted
    message = str(err.value)
    assert key in message and "expected" in message


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse(labs(sessionKey="tooshort-but-secret"))
    assert "tooshort-but-secret" not in str(err.value)


def test_capacity_error_says_how_many_slots_are_missing() -> None:
    people = [P(f"s{i:02d}") for i in range(12)]
    hosts = [{"name": "lab1", "address": "a", "capacity": 4}, {"name": "lab2", "address": "b", "capacity": 4}]
    with pytest.raises(ConfigError) as err:
        parse(labs(hosts=hosts), people)
    assert err.value.key == "labs.hosts"
    assert "4 slot(s) in all" in err.value.accepted


def test_in_cluster_host_defaults() -> None:
    cfg = parse(
        labs(
            hosts=[
                {"name": "lab1", "inCluster": True, "capacity": 3, "image": "reg.example/labhost:1", "engine": "shared"}
            ]
        )
    )
    host = cfg.hosts[0]
    assert host.in_cluster and host.address == "labhost-lab1"
    assert host.install_root == "/data" and host.service_manager == "none"


def test_in_cluster_host_needs_a_private_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse(
            labs(
                ssh={"agentSocket": "/run/agent.sock"},
                hosts=[
                    {
                        "name": "l",
                        "inCluster": True,
                        "capacity": 1,
                        "image": "reg.example/labhost:1",
                        "engine": "shared",
                    }
                ],
            )
        )
    assert err.value.key == "labs.ssh.privateKey"


def test_pinned_host_key_is_normalised() -> None:
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 root@lab1"
    cfg = parse(labs(hosts=[{"name": "lab1", "address": "h", "capacity": 1, "hostKey": line}]))
    assert cfg.hosts[0].host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1"


def test_durations() -> None:
    assert parse(labs(idleTimeout="90s")).idle_timeout == 90
    assert parse(labs(idleTimeout="2h")).idle_timeout == 7200
    assert parse(labs(idleTimeout="45s")).idle_timeout == 45
    # One duration grammar for every key, unit required: 45 was seconds here and days in term.grace.
    with pytest.raises(ConfigError) as err:
        parse(labs(idleTimeout=45))
    assert err.value.key == "labs.idleTimeout" and "no unit" in err.value.accepted
