"""Stack config: every option is parsed, every mistake is one clear ConfigError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.config import (
    ClassroomConfig,
    ConfigError,
    Mount,
    Port,
    decode_raw,
    load_config,
    parse_config,
    quantity_value,
)

ROOT = Path(__file__).resolve().parents[2]


def parse(raw: dict[str, Any], stack: str = "dev", **kwargs: Any) -> ClassroomConfig:
    return parse_config(raw, stack=stack, base_dir=ROOT, **kwargs)


def error(raw: dict[str, Any], stack: str = "dev") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(raw, stack)
    return caught.value


# ------------------------------------------------------------------ defaults


def test_chart_defaults() -> None:
    cfg = parse({})
    assert (cfg.host_name, cfg.user, cfg.user_id) == ("myserver", "human", 10000)
    assert cfg.privileged is True
    assert cfg.home_size == "2Gi"
    assert cfg.home_storage_class_name == ""
    assert cfg.image.reference == "ghcr.io/mike-matera/cloud-native-server:jammy-2022070801"
    assert cfg.image.pull_policy == "IfNotPresent"
    assert cfg.image.pull_secrets == ()
    assert cfg.namespace == "classroom-dev"
    assert cfg.create_namespace is True
    assert cfg.service.type == "LoadBalancer" and cfg.service.port == 22
    assert cfg.ssh.ca_algorithm == "ed25519" and cfg.ssh.existing_secret == ""
    assert cfg.ssh.known_hosts_patterns == ("*",)
    assert cfg.extra_mounts == () and cfg.extra_ports == ()
    # every container gets requests AND limits
    assert set(cfg.resources.requests) == set(cfg.resources.limits) == {"cpu", "memory"}
    assert cfg.warnings == ()


def test_every_option_is_parsed() -> None:
    cfg = parse(
        {
            "hostName": "opus",
            "user": "mmatera",
            "userID": 20000.0,  # mocks and some YAML paths give floats
            "userSSHKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCzQlyG2Us+el5qs4O0ifwlYIyvk49DaRbP7kq4smnw me@laptop",
            "userSSHImport": "gh:octocat lp:someone",
            "customizeRepo": "https://github.com/example/setup.git",
            "customizeRepoCommand": "./install.sh",
            "customizeCommand": "make -C ~/dotfiles",
            "privileged": False,
            "rcEnv": "API_KEY=abc\n",
            "rcLocal": "#!/bin/bash\ntouch /ready\n",
            "rcUser": "#!/bin/bash\ntrue\n",
            "homeSize": "10Gi",
            "homeStorageClassName": "fast-retain",
            "storageProvisioner": "ebs.csi.aws.com",
            "storageParameters": {"type": "gp3"},
            "extraMounts": [{"name": "cis90", "path": "/home/cis90/", "size": "1Gi", "className": "hdd"}],
            "extraPorts": [
                {"name": "http", "port": 80, "proto": "tcp"},
                {"name": "dns", "port": 53.0, "protocol": "UDP"},
            ],
            "image": {
                "repository": "ghcr.io/me/login",
                "tag": "noble-1",
                "pullPolicy": "Always",
                "pullSecrets": ["regcred"],
            },
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": 4, "memory": "4Gi"}},
            "initResources": {"limits": {"cpu": "1"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "class", "operator": "Equal", "value": "cis90", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "podAnnotations": {"example.com/owner": "cis"},
            "namespace": "cis90",
            "createNamespace": "false",
            "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.5", "annotations": {"a": "b"}, "port": 2222},
            "ssh": {
                "caAlgorithm": "RSA",
                "knownHostsPatterns": ["*.example.edu"],
                "hostPrincipals": ["opus.example.edu"],
            },
        }
    )
    assert cfg.host_name == "opus" and cfg.user == "mmatera" and cfg.user_id == 20000
    assert cfg.user_ssh_key.startswith("ssh-ed25519 ")
    assert cfg.user_ssh_import == "gh:octocat lp:someone"
    assert cfg.customize_repo_command == "./install.sh" and cfg.customize_command == "make -C ~/dotfiles"
    assert cfg.privileged is False
    assert cfg.rc_env == "API_KEY=abc\n" and cfg.rc_local.startswith("#!") and cfg.rc_user.startswith("#!")
    assert cfg.home_size == "10Gi" and cfg.home_storage_class_name == "fast-retain"
    assert cfg.storage_provisioner == "ebs.csi.aws.com" and cfg.storage_parameters == {"type": "gp3"}
    assert cfg.extra_mounts == (Mount("cis90", "/home/cis90", "1Gi", "hdd"),)
    assert cfg.extra_ports == (Port("http", 80, "TCP"), Port("dns", 53, "UDP"))
    assert cfg.image.reference == "ghcr.io/me/login:noble-1" and cfg.image.pull_secrets == ("regcred",)
    assert cfg.image.pull_policy == "Always"
    assert cfg.resources.limits == {"cpu": "4", "memory": "4Gi"}
    # Accepted from older stack files and chart values, and said to do nothing.
    assert [w for w in cfg.warnings if "'initResources'" in w and "no effect" in w]
    assert cfg.node_selector == {"kubernetes.io/os": "linux"}
    assert cfg.tolerations[0]["value"] == "cis90"
    assert cfg.affinity == {"nodeAffinity": {}}
    assert cfg.pod_annotations == {"example.com/owner": "cis"}
    assert cfg.namespace == "cis90" and cfg.create_namespace is False
    assert cfg.service.load_balancer_ip == "10.0.0.5" and cfg.service.port == 2222
    assert cfg.service.annotations == {"a": "b"}
    assert cfg.ssh.ca_algorithm == "rsa" and cfg.ssh.known_hosts_patterns == ("*.example.edu",)
    assert cfg.ssh.host_principals == ("opus.example.edu",)
    assert cfg.managed_storage_class == "cis90-retain"
    assert cfg.needs_managed_storage_class is False


def test_web_root_is_the_one_allowed_mount_under_var() -> None:
    raw = {"extraMounts": [{"name": "www", "path": "/var/www", "size": "1Gi"}]}
    assert parse(raw).extra_mounts[0].path == "/var/www"
    assert error({"extraMounts": [{"name": "a", "path": "/var/lib/mysql", "size": "1Gi"}]}).key == "extraMounts[0].path"


def test_existing_secret_for_the_ca() -> None:
    assert parse({"ssh": {"existingSecret": "my-ca"}}).ssh.existing_secret == "my-ca"


def test_a_limit_alone_sets_the_request_and_a_request_alone_the_limit() -> None:
    cfg = parse({"resources": {"requests": {"ephemeral-storage": "1Gi"}, "limits": {"cpu": "3"}}})
    assert cfg.resources.limits["ephemeral-storage"] == "1Gi"
    assert cfg.resources.requests["cpu"] == "250m" and cfg.resources.limits["cpu"] == "3"


def test_quantities() -> None:
    assert quantity_value("2Gi") == 2 * 2**30
    assert quantity_value("250m") * 4 == 1
    assert quantity_value("1.5G") == 1_500_000_000


# ------------------------------------------------------------------ errors (one per rule)

ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, raw, key named in the message, fragment of what is accepted)
    ("unknown-key", {"hostname": "x"}, "hostname", "did you mean 'hostName'"),
    ("unknown-key-typo", {"homeSzie": "1Gi"}, "homeSzie", "did you mean 'homeSize'"),
    ("unknown-nested-key", {"service": {"tpye": "NodePort"}}, "service.tpye", "did you mean 'type'"),
    (
        "unknown-mount-key",
        {"extraMounts": [{"name": "a", "path": "/srv/a", "size": "1Gi", "sise": 1}]},
        "extraMounts[0].sise",
        "did you mean 'size'",
    ),
    ("port-out-of-range", {"extraPorts": [{"name": "web", "port": 70000}]}, "extraPorts[0].port", "1 to 65535"),
    ("port-zero", {"extraPorts": [{"name": "web", "port": 0}]}, "extraPorts[0].port", "1 to 65535"),
    ("port-fractional", {"extraPorts": [{"name": "web", "port": 80.5}]}, "extraPorts[0].port", "integer"),
    ("port-ssh-clash", {"extraPorts": [{"name": "alt", "port": 22}]}, "extraPorts[0].port", "other than the SSH port"),
    (
        "port-dup-number",
        {"extraPorts": [{"name": "a", "port": 80}, {"name": "b", "port": 80.0}]},
        "extraPorts[1].port",
        "not already exposed by extraPorts[0]",
    ),
    (
        "port-dup-name",
        {"extraPorts": [{"name": "web", "port": 80}, {"name": "web", "port": 81}]},
        "extraPorts[1].name",
        "not already used by extraPorts[0]",
    ),
    ("port-bad-name", {"extraPorts": [{"name": "Web_Server", "port": 80}]}, "extraPorts[0].name", "IANA service name"),
    (
        "port-name-too-long",
        {"extraPorts": [{"name": "a-very-long-port-name", "port": 80}]},
        "extraPorts[0].name",
        "at most 15",
    ),
    ("port-reserved-name", {"extraPorts": [{"name": "ssh", "port": 2222}]}, "extraPorts[0].name", "except 'ssh'"),
    (
        "port-protocol",
        {"extraPorts": [{"name": "web", "port": 80, "protocol": "HTTP"}]},
        "extraPorts[0].protocol",
        "TCP, UDP or SCTP",
    ),
    ("port-missing", {"extraPorts": [{"name": "web"}]}, "extraPorts[0].port", "required"),
    ("service-port-range", {"service": {"port": 65536}}, "service.port", "1 to 65535"),
    ("node-port-range", {"service": {"type": "NodePort", "nodePort": 80}}, "service.nodePort", "30000 to 32767"),
    ("service-type", {"service": {"type": "External"}}, "service.type", "LoadBalancer, NodePort or ClusterIP"),
    (
        "lb-ip-not-lb",
        {"service": {"type": "ClusterIP", "loadBalancerIP": "1.2.3.4"}},
        "service.loadBalancerIP",
        "unless service.type is LoadBalancer",
    ),
    ("size-not-quantity", {"homeSize": "2 GB"}, "homeSize", "Kubernetes quantity"),
    ("size-negative", {"homeSize": "-1Gi"}, "homeSize", "Kubernetes quantity"),
    ("size-tiny", {"homeSize": "10k"}, "homeSize", "at least 1Mi"),
    (
        "mount-size",
        {"extraMounts": [{"name": "a", "path": "/srv/a", "size": "lots"}]},
        "extraMounts[0].size",
        "Kubernetes quantity",
    ),
    ("cpu-not-quantity", {"resources": {"limits": {"cpu": "two"}}}, "resources.limits.cpu", "Kubernetes quantity"),
    (
        "request-over-limit",
        {"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "1Gi"}}},
        "resources.requests.memory",
        "at most the limit",
    ),
    (
        "mount-over-home",
        {"extraMounts": [{"name": "a", "path": "/home", "size": "1Gi"}]},
        "extraMounts[0].path",
        "not /home itself",
    ),
    (
        "mount-over-etc",
        {"extraMounts": [{"name": "a", "path": "/etc", "size": "1Gi"}]},
        "extraMounts[0].path",
        "outside the system directories",
    ),
    (
        "mount-under-etc",
        {"extraMounts": [{"name": "a", "path": "/etc/ssh/x", "size": "1Gi"}]},
        "extraMounts[0].path",
        "outside the system directories",
    ),
    (
        "mount-under-usr",
        {"extraMounts": [{"name": "a", "path": "/usr/local", "size": "1Gi"}]},
        "extraMounts[0].path",
        "outside the system directories",
    ),
    ("mount-root", {"extraMounts": [{"name": "a", "path": "/", "size": "1Gi"}]}, "extraMounts[0].path", "absolute"),
    (
        "mount-relative",
        {"extraMounts": [{"name": "a", "path": "data", "size": "1Gi"}]},
        "extraMounts[0].path",
        "absolute path",
    ),
    (
        "mount-dotdot",
        {"extraMounts": [{"name": "a", "path": "/srv/../etc", "size": "1Gi"}]},
        "extraMounts[0].path",
        "absolute path",
    ),
    (
        "mount-dup-path",
        {
            "extraMounts": [
                {"name": "a", "path": "/srv/a", "size": "1Gi"},
                {"name": "b", "path": "/srv/a/", "size": "1Gi"},
            ]
        },
        "extraMounts[1].path",
        "not already mounted by extraMounts[0]",
    ),
    (
        "mount-nested",
        {
            "extraMounts": [
                {"name": "a", "path": "/srv/a", "size": "1Gi"},
                {"name": "b", "path": "/srv/a/b", "size": "1Gi"},
            ]
        },
        "extraMounts[1].path",
        "does not nest",
    ),
    (
        "mount-dup-name",
        {
            "extraMounts": [
                {"name": "a", "path": "/srv/a", "size": "1Gi"},
                {"name": "a", "path": "/srv/b", "size": "1Gi"},
            ]
        },
        "extraMounts[1].name",
        "not already used by extraMounts[0]",
    ),
    (
        "mount-name-home",
        {"extraMounts": [{"name": "home", "path": "/srv/a", "size": "1Gi"}]},
        "extraMounts[0].name",
        "except 'home'",
    ),
    (
        "mount-name-invalid",
        {"extraMounts": [{"name": "CIS_90", "path": "/srv/a", "size": "1Gi"}]},
        "extraMounts[0].name",
        "DNS label",
    ),
    ("mount-missing-size", {"extraMounts": [{"name": "a", "path": "/srv/a"}]}, "extraMounts[0].size", "required"),
    ("mounts-not-list", {"extraMounts": {"name": "a"}}, "extraMounts", "a list"),
    ("user-invalid", {"user": "Bob Smith"}, "user", "Unix user name"),
    ("user-leading-digit", {"user": "1bob"}, "user", "Unix user name"),
    ("user-system", {"user": "root"}, "user", "not a system account"),
    ("user-not-string", {"user": 5}, "user", "a string"),
    ("uid-low", {"userID": 0}, "userID", "1000 to 59999"),
    ("uid-string", {"userID": "ten"}, "userID", "integer"),
    ("uid-bool", {"userID": True}, "userID", "integer"),
    ("privileged-type", {"privileged": "yes"}, "privileged", "true or false"),
    ("create-ns-type", {"createNamespace": 1}, "createNamespace", "true or false"),
    ("hostname", {"hostName": "My_Server"}, "hostName", "DNS label"),
    ("namespace", {"namespace": "Class 90"}, "namespace", "DNS label"),
    ("ssh-key", {"userSSHKey": "not a key"}, "userSSHKey", "OpenSSH public key"),
    ("ssh-import", {"userSSHImport": "github:octocat"}, "userSSHImport", "gh:octocat"),
    ("repo-url", {"customizeRepo": "ftp://x/y"}, "customizeRepo", "git URL"),
    ("repo-command-without-repo", {"customizeRepoCommand": "make"}, "customizeRepoCommand", "unless customizeRepo"),
    ("rc-local-shebang", {"rcLocal": "echo hi"}, "rcLocal", "starting with '#!'"),
    ("rc-env-type", {"rcEnv": ["A=1"]}, "rcEnv", "a string"),
    ("image-policy", {"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy", "Always, IfNotPresent or Never"),
    ("image-repo", {"image": {"repository": "Not A Repo"}}, "image.repository", "image repository"),
    ("image-tag", {"image": {"tag": "bad tag"}}, "image.tag", "image tag"),
    ("image-type", {"image": "ghcr.io/x/y:1"}, "image", "a mapping"),
    ("node-selector-values", {"nodeSelector": {"zone": 1}}, "nodeSelector.zone", "string values"),
    (
        "tolerations-operator",
        {"tolerations": [{"key": "a", "operator": "Maybe"}]},
        "tolerations[0].operator",
        "Equal or Exists",
    ),
    ("affinity-key", {"affinity": {"nodeAfinity": {}}}, "affinity.nodeAfinity", "did you mean 'nodeAffinity'"),
    (
        "pod-annotation-prefix",
        {"podAnnotations": {"classroom/config-checksum": "x"}},
        "podAnnotations.classroom/config-checksum",
        "outside the 'classroom/' prefix",
    ),
    ("ca-algorithm", {"ssh": {"caAlgorithm": "dsa"}}, "ssh.caAlgorithm", "ed25519 or rsa"),
    ("ca-key-in-config", {"ssh": {"ca_key": "-----BEGIN"}}, "ssh.ca_key", "existingSecret"),
    ("storage-class-name", {"homeStorageClassName": "Fast SSD"}, "homeStorageClassName", "StorageClass name"),
    ("storage-params", {"storageParameters": {"iops": 3000}}, "storageParameters.iops", "string values"),
]


@pytest.mark.parametrize(("raw", "key", "accepted"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_each_mistake_names_key_value_and_what_is_accepted(raw: dict[str, Any], key: str, accepted: str) -> None:
    err = error(raw)
    assert err.key == key
    assert accepted in err.accepted
    message = str(err)
    assert f"config key '{key}'" in message and "expected" in message


def test_the_message_quotes_the_offending_value() -> None:
    assert "got 70000" in str(error({"extraPorts": [{"name": "web", "port": 70000}]}))
    assert "got 'Bob Smith'" in str(error({"user": "Bob Smith"}))


def test_ca_private_key_is_never_echoed_in_the_error() -> None:
    assert "BEGIN" not in str(error({"ssh": {"ca_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}}))


def test_a_stack_name_that_is_no_namespace_asks_for_one() -> None:
    err = error({}, stack="CIS90_Fall")
    assert err.key.startswith("namespace") and "set classroom:namespace" in err.accepted
    assert parse({"namespace": "cis90"}, stack="CIS90_Fall").namespace == "cis90"


def test_access_keys_are_handed_to_the_roster_parser() -> None:
    # `term`, `roster`... belong to components.rosterdata; they are not "unknown".
    cfg = parse({})
    assert cfg.access is not None


# ------------------------------------------------------------------ engine plumbing


def test_decode_raw_keeps_strings_and_decodes_structures() -> None:
    raw = decode_raw(
        {
            "classroom:rcEnv": "true",
            "classroom:userID": "10001",
            "classroom:privileged": "false",
            "classroom:extraPorts": json.dumps([{"name": "web", "port": 80}]),
            "classroom:hostName": "42",
            "kubernetes:context": "ignored",
        }
    )
    assert raw == {
        "rcEnv": "true",
        "userID": 10001,
        "privileged": False,
        "extraPorts": [{"name": "web", "port": 80}],
        "hostName": "42",
    }


def test_load_config_turns_mistakes_into_a_one_line_run_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi.runtime import config as runtime_config

    # The language host hands config over as PULUMI_CONFIG (JSON).
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"classroom:homeSzie": "1Gi"}))
    runtime_config.set_all_config({})
    with pytest.raises(pulumi.RunError) as caught:
        load_config()
    # RunError is what the language host prints as one line without a traceback.
    assert not isinstance(caught.value, ConfigError)
    assert "homeSzie" in str(caught.value) and "did you mean 'homeSize'" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "\n" not in str(caught.value)


def test_load_config_reads_every_key_and_marks_secret_rc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi.runtime import config as runtime_config

    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    runtime_config.set_all_config(
        {"classroom:user": "alice", "classroom:rcEnv": "TOKEN=s3cret", "classroom:homeSize": "3Gi"},
        ["classroom:rcEnv"],
    )
    try:
        cfg = load_config()
    finally:
        runtime_config.set_all_config({}, [])
    assert cfg.user == "alice" and cfg.home_size == "3Gi"
    assert cfg.rc_env_is_secret is True


def test_labs_keys_are_handed_to_the_labs_parser() -> None:
    assert parse({"labs": {}}).labs.enabled is False
    err = error({"labs": {"domain": "lab.example.edu"}})
    assert err.key == "labs.hosts"


def _as_engine_passes_it(value: Any) -> str:
    # The CLI hands every config value to the program as text: structured
    # values as JSON, scalars as their YAML text (true/false, 10000).
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.parametrize("stack", ["dev", "cis90-fall2026"])
def test_checked_in_stacks_load_through_the_engine_path(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from pulumi.runtime import config as runtime_config

    data = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({k: _as_engine_passes_it(v) for k, v in data.items()}))
    runtime_config.set_all_config({})
    via_engine = load_config()
    direct = parse({k.split(":", 1)[1]: v for k, v in data.items()}, stack=stack)
    assert via_engine.extra_mounts == direct.extra_mounts and via_engine.extra_ports == direct.extra_ports
    assert via_engine.resources == direct.resources and via_engine.service == direct.service
    assert via_engine.rc_env == direct.rc_env and via_engine.privileged == direct.privileged
    assert via_engine.user_id == direct.user_id
