"""The declared schema (components/schema.py): every bad value is one named ConfigError, before anything exists.

- a property test puts values of the wrong kind at every key the schema
  declares (top level and nested) and asserts one ConfigError line naming
  that key, and that arbitrary values anywhere never raise anything else;
- the same mistakes through the engine path (`load_config` under mocks)
  register nothing;
- each value class the issue found silently accepted or crashing is a named
  error now.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any, get_args

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from components import schema
from components.config import ConfigError, load_config, parse_config
from tests.harness import MAIN, ClusterMocks, RecordingMonitor, render

ROOT = Path(__file__).resolve().parents[2]
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCzQlyG2Us+el5qs4O0ifwlYIyvk49DaRbP7kq4smnw"
ENGINE_KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)
SECRET = "s" * 40


def full_config() -> dict[str, Any]:
    """A valid stack that sets every section, so a mutation anywhere is reached."""
    return {
        "hostName": "opus",
        "user": "mmatera",
        "userID": 10000,
        "userSSHKey": USER_KEY,
        "customizeRepo": "https://example.com/setup.git",
        "customizeRepoCommand": "./install.sh",
        "extraMounts": [{"name": "cis90", "path": "/home/cis90", "size": "1Gi"}],
        "extraPorts": [{"name": "http", "port": 80}],
        "image": {"tag": "noble-1"},
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
        "initResources": {"limits": {"memory": "256Mi"}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "class", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
                }
            }
        },
        "podAnnotations": {"example.com/owner": "cis"},
        "service": {"type": "LoadBalancer", "loadBalancerIP": "172.20.2.100", "annotations": {"a.b/c": "d"}},
        "ssh": {"knownHostsPatterns": ["*"], "hostPrincipals": ["opus.example.edu"]},
        "roster": [{"username": "alice", "keys": [USER_KEY], "labs": True}],
        "term": {"start": "2026-08-24", "end": "2026-12-18", "timezone": "America/Los_Angeles", "grace": "7d"},
        "revocations": {"serials": [12345], "keys": []},
        "labs": {
            "domain": "lab.example.edu",
            "hosts": [{"name": "lab1", "address": "10.0.0.5", "capacity": 20}],
            "ssh": {"privateKey": ENGINE_KEY},
            "sessionKey": SECRET,
            "adminKey": SECRET,
            "hooks": {"init": {"url": "https://h.example.edu/i", "secret": SECRET, "timeout": "5s"}},
        },
    }


def parse(raw: dict[str, Any], stack: str = "cis90-fall2026") -> Any:
    return parse_config(raw, stack=stack, base_dir=ROOT)


def error(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    return caught.value


def test_the_full_config_is_valid() -> None:
    cfg = parse(full_config())
    assert cfg.labs.enabled and cfg.access.term is not None
    # Every key is valid; the one kept only for old stack files says it does nothing.
    assert len(cfg.warnings) == 1 and "'initResources' has no effect" in cfg.warnings[0]


# ------------------------------------------------------------------ every key, by its declared kind

# Where each section sits in full_config(), so a nested key can be reached.
_PLACES: dict[type[BaseModel], tuple[str | int, ...]] = {
    schema.StackModel: (),
    schema.MountModel: ("extraMounts", 0),
    schema.PortModel: ("extraPorts", 0),
    schema.ImageModel: ("image",),
    schema.ResourcesModel: ("resources",),
    schema.ServiceModel: ("service",),
    schema.SshModel: ("ssh",),
    schema.PersonModel: ("roster", 0),
    schema.TermModel: ("term",),
    schema.RevocationsModel: ("revocations",),
    schema.LabsModel: ("labs",),
    schema.LabHostModel: ("labs", "hosts", 0),
    schema.LabSshModel: ("labs", "ssh"),
    schema.HookModel: ("labs", "hooks", "init"),
}


def _kind(annotation: Any) -> str:
    """The JSON kind a field takes: what a value of another kind must be refused as."""
    text = str(annotation)
    choices = [a for a in get_args(annotation) if a is not type(None)]
    if " | " in text and len(choices) > 1:
        return "any"  # e.g. a roster key: one key or a list of them
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is timedelta:
        return "duration"
    if "date" in text:
        return "date"
    if annotation in (str, str | None):
        return "str"
    if text.startswith(("tuple", "list")) or "list[" in text:
        return "list"
    if text.startswith("dict") or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "map"
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "map"
    return "any"


def _fields() -> list[tuple[tuple[str | int, ...], str]]:
    out = []
    for model, place in _PLACES.items():
        for name, info in model.model_fields.items():
            out.append(((*place, name), _kind(info.annotation)))
    return out


FIELDS = [f for f in _fields() if f[1] != "any"]
# Values of the wrong kind for each declared kind (numbers count as text for
# strings only where the schema says so: image.tag and quantities).
_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.one_of(
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    ),
    "int": st.one_of(
        st.text(alphabet="abc -", min_size=1, max_size=5),
        st.lists(st.integers(), max_size=2),
        st.booleans(),
        st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer()),
    ),
    "duration": st.one_of(
        st.integers(min_value=1),
        st.text(alphabet="xyz", min_size=1, max_size=4),
        st.lists(st.integers(), max_size=2),
        st.booleans(),
    ),
    "date": st.one_of(st.integers(), st.text(alphabet="xyz", max_size=4), st.lists(st.integers(), max_size=2)),
    "bool": st.one_of(st.integers(), st.text(alphabet="xyz", max_size=4), st.lists(st.booleans(), max_size=2)),
    "list": st.one_of(st.integers(), st.text(alphabet="xyz", max_size=4), st.booleans()),
    "map": st.one_of(
        st.integers(min_value=1),
        st.text(alphabet="xyz", min_size=1, max_size=4),
        st.lists(st.integers(), min_size=1, max_size=2),
    ),
}


def _set(config: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _path_text(path: tuple[str | int, ...]) -> str:
    return schema.key_path(path)


def test_every_declared_key_is_covered() -> None:
    covered = {p[-1] for p, _ in FIELDS}
    assert {"hostName", "loadBalancerIP", "privateKey", "timeout", "grace", "serials", "capacity"} <= covered
    assert len(FIELDS) > 100


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_a_value_of_the_wrong_kind_anywhere_is_one_config_error_naming_its_key(field: Any, data: Any) -> None:
    path, kind = field
    value = data.draw(_WRONG[kind])
    config = full_config()
    _set(config, path, value)
    with pytest.raises(ConfigError) as caught:
        parse(config)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert caught.value.key.startswith(_path_text(path)), (caught.value.key, path)


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
PATHS = [p for p, _ in _fields()]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=_ANY)
def test_any_value_anywhere_is_accepted_or_one_config_error_never_a_crash(path: Any, value: Any) -> None:
    config = full_config()
    _set(config, path, value)
    try:
        parse(config)
    except ConfigError as err:
        assert "\n" not in str(err)


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=12), value=_ANY)
def test_an_unknown_key_at_the_top_is_refused(key: str, value: Any) -> None:
    if key in schema.StackModel.model_fields:
        return
    err = error({**full_config(), key: value})
    assert "one of the known keys" in err.accepted and "\n" not in str(err)


# ------------------------------------------------------------------ nothing registered


def _engine_run(raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[BaseException | None, list[Any]]:
    """__main__ as the engine runs it (load_config from PULUMI_CONFIG, then build) under mocks."""
    from pulumi.runtime import config as runtime_config

    monkeypatch.setenv(
        "PULUMI_CONFIG",
        json.dumps({f"classroom:{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in raw.items()}),
    )
    runtime_config.set_all_config({})
    mocks = ClusterMocks({}, {})
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="classroom", stack="cis90-fall2026", preview=True, monitor=monitor)
    caught: list[BaseException] = []

    @pulumi.runtime.test
    def run() -> None:
        try:
            MAIN.export(MAIN.build(load_config()))
        except pulumi.RunError as err:
            caught.append(err)

    run()
    return (caught[0] if caught else None), monitor.registered


BAD = {
    "loadBalancerIP": {"service": {"loadBalancerIP": "not-an-ip"}},
    "userSSHKey": {"userSSHKey": "ssh-ed25519 AAAAnotakey"},
    "annotation key": {"podAnnotations": {"bad key!": "x"}},
    "label value": {"nodeSelector": {"disk": "solid state"}},
    "toleration": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "Sometimes"}]},
    "affinity": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": "x"}}},
    "term decades ago": {"term": {"start": "1996-08-24", "end": "1996-12-18"}},
    "grace of years": {"term": {"start": "2026-08-24", "end": "2026-12-18", "grace": "150w"}},
    "serial": {"revocations": {"serials": [1.5]}},
    "empty time zone": {"term": {"start": "2026-08-24", "end": "2026-12-18", "timezone": ""}},
    "calendar edge": {"term": {"start": "2026-08-24", "end": "9999-12-31"}},
    "calendar start": {"term": {"start": "0001-01-01T00:00:00+14:00", "end": "2026-12-18"}},
    "privateKey": {"labs": {**full_config()["labs"], "ssh": {"privateKey": "-----BEGIN PRIVATE KEY-----\nAA\n"}}},
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_mistake_through_the_engine_path_registers_nothing(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {**full_config(), **BAD[case]}
    err, registered = _engine_run(raw, monkeypatch)
    assert err is not None and "\n" not in str(err) and "config key '" in str(err)
    assert registered == []


def test_the_engine_path_of_a_good_config_registers_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    err, registered = _engine_run({"hostName": "opus"}, monkeypatch)
    assert err is None and registered


# ------------------------------------------------------------------ the classes the issue found

NAMED = [
    ({"service": {"loadBalancerIP": "172.20.2"}}, "service.loadBalancerIP", "IPv4 or IPv6"),
    ({"userSSHKey": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"}, "userSSHKey", "OpenSSH public key"),
    ({"userSSHKey": "hello world"}, "userSSHKey", "OpenSSH public key"),
    ({"podAnnotations": {"-bad": "x"}}, "podAnnotations.-bad", "Kubernetes key"),
    ({"service": {"annotations": {"a/b/c": "x"}}}, "service.annotations.a/b/c", "Kubernetes key"),
    ({"nodeSelector": {"disk": "x" * 64}}, "nodeSelector.disk", "label value"),
    ({"nodeSelector": {"Bad_Prefix.com/disk": "ssd"}}, "nodeSelector.Bad_Prefix.com/disk", "Kubernetes key"),
    ({"tolerations": [{"key": "a", "tolerationSeconds": "soon"}]}, "tolerations[0].tolerationSeconds", "integer"),
    ({"tolerations": [{"key": "a", "colour": 1}]}, "tolerations[0].colour", "Toleration"),
    ({"tolerations": [{"key": "a", "efect": "NoSchedule"}]}, "tolerations[0].efect", "did you mean 'effect'"),
    (
        {"labs": {**full_config()["labs"], "hosts": [{"name": "l", "address": "h", "capacity": 1, "cpu": "lots"}]}},
        "labs.hosts[0].cpu",
        "CPU quantity",
    ),
    ({"tolerations": [{"key": "a b"}]}, "tolerations[0].key", "Kubernetes key"),
    (
        {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}}},
        "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
        "required",
    ),
    (
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]
                    }
                }
            }
        },
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].operator",
        "In, NotIn",
    ),
    ({"term": {"start": "1970-01-01", "end": "2026-12-18"}}, "term.start", "between 2000-01-01"),
    ({"term": {"start": "2026-08-24", "end": "2026-12-18", "grace": "2y"}}, "term.grace", "duration"),
    ({"term": {"start": "2026-08-24", "end": "2026-12-18", "grace": "1000d"}}, "term.grace", "at most"),
    ({"term": {"start": "2026-08-24", "end": "2026-12-18", "grace": 7}}, "term.grace", "no unit"),
    ({"term": {"start": "2026-08-24", "end": "2028-12-18"}}, "term.end", "at most 400 days"),
    ({"term": {"start": "2026-08-24", "end": "2026-12-18", "timezone": ""}}, "term.timezone", "IANA"),
    ({"term": {"start": "2026-08-24", "end": "9999-12-31"}}, "term.end", "2099-12-31"),
    ({"revocations": {"serials": [2.5]}}, "revocations.serials[0]", "whole numbers"),
    ({"revocations": {"serials": [True]}}, "revocations.serials[0]", "whole numbers"),
    ({"labs": {**full_config()["labs"], "idleTimeout": 30}}, "labs.idleTimeout", "unit"),
    (
        {"labs": {**full_config()["labs"], "ssh": {"privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"}}},
        "labs.ssh.privateKey",
        "unusable",
    ),
    (
        {"extraMounts": [{"name": "a", "path": "/srv/a", "size": "1Gi", "className": "x", "storageClassName": "y"}]},
        "extraMounts[0].storageClassName",
        "only one of",
    ),
]


@pytest.mark.parametrize(("patch", "key", "accepted"), NAMED, ids=[n[1] + ":" + n[2] for n in NAMED])
def test_each_class_found_silently_accepted_or_crashing_is_a_named_error(
    patch: dict[str, Any], key: str, accepted: str
) -> None:
    err = error({**full_config(), **patch})
    assert (err.key, accepted in err.accepted) == (key, True), str(err)
    assert "\n" not in str(err)


def test_secrets_are_never_echoed() -> None:
    bad_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbytes\n"
    err = error({**full_config(), "labs": {**full_config()["labs"], "ssh": {"privateKey": bad_key}}})
    assert "secretbytes" not in str(err) and "<hidden>" in str(err)
    err = error({**full_config(), "labs": {**full_config()["labs"], "sessionKey": "short-secret"}})
    assert "short-secret" not in str(err)


def test_the_chart_spellings_are_accepted() -> None:
    cfg = parse(
        {
            "extraMounts": [{"name": "a", "path": "/srv/a", "size": "1Gi", "className": "fast"}],
            "extraPorts": [{"name": "web", "port": 80, "proto": "udp"}],
        }
    )
    assert cfg.extra_mounts[0].storage_class_name == "fast" and cfg.extra_ports[0].protocol == "UDP"


def _pem(key: Any, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "engine_key",
    [
        _pem(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            serialization.PrivateFormat.TraditionalOpenSSL,
        ),
        _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        _pem(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8),
    ],
    ids=["rsa-pem", "ecdsa-pkcs8", "ed25519-pkcs8"],
)
def test_a_pem_engine_key_works_for_an_in_cluster_lab_host(engine_key: str) -> None:
    # The error message always said PEM keys are accepted; an inCluster host used to crash on one
    # after resources were registered (its public half is authorized on the host).
    labs = {
        **full_config()["labs"],
        "ssh": {"privateKey": engine_key},
        "hosts": [
            {"name": "lab1", "inCluster": True, "capacity": 5, "image": "ghcr.io/x/labhost:1", "engine": "shared"}
        ],
    }
    r = render({**full_config(), "labs": labs}, stack="cis90-fall2026")
    assert r.of_type("kubernetes:apps/v1:StatefulSet")


def test_an_encrypted_key_needs_its_password() -> None:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
        .decode()
    )
    labs = {**full_config()["labs"], "ssh": {"privateKey": key}}
    assert "privateKeyPassword" in error({**full_config(), "labs": labs}).accepted
    labs["ssh"] = {"privateKey": key, "privateKeyPassword": "wrong"}
    assert "unusable" in error({**full_config(), "labs": labs}).accepted
    labs["ssh"] = {"privateKey": key, "privateKeyPassword": "pw"}
    assert parse({**full_config(), "labs": labs}).labs.private_key == key


def test_one_duration_grammar() -> None:
    cfg = parse(
        {
            **full_config(),
            "term": {**full_config()["term"], "grace": "36h"},
            "labs": {**full_config()["labs"], "idleTimeout": "2h"},
        }
    )
    assert cfg.access.term.grace == timedelta(hours=36) and cfg.labs.idle_timeout == 7200
    assert parse({**full_config(), "term": {**full_config()["term"], "grace": "0"}}).access.term.grace == timedelta(0)


def test_a_term_may_start_today() -> None:
    today = date.today()
    term = {"start": today.isoformat(), "end": (today + timedelta(days=100)).isoformat()}
    assert parse({**full_config(), "term": term}).access.term is not None


# ------------------------------------------------------------------ rcLocal and /ready


def test_an_rc_local_that_never_touches_ready_is_a_visible_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse({"rcLocal": "#!/bin/bash\necho hi\n"})
    assert len(cfg.warnings) == 1 and "/ready" in cfg.warnings[0]
    assert parse({"rcLocal": "#!/bin/bash\ntouch /ready\n"}).warnings == ()
    from pulumi.runtime import config as runtime_config

    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"classroom:rcLocal": "#!/bin/sh\nexit 0\n"}))
    runtime_config.set_all_config({})
    load_config()
    assert warned and "rcLocal" in warned[0]


# ------------------------------------------------------------------ chart parity

# The rc.env names the cloud-server chart documents and writes (templates/config.yaml), all exported.
CHART_RC_ENV = (
    "DEFAULT_USER",
    "DEFAULT_USER_ID",
    "DEFAULT_KEY",
    "DEFAULT_KEY_IMPORT",
    "SET_HOSTNAME",
    "CUSTOMIZE_REPO",
    "CUSTOMIZE_REPO_COMMAND",
    "CUSTOMIZE_COMMAND",
)


def test_rc_env_exports_every_chart_variable() -> None:
    env = render({"user": "alice", "userID": 12345}).config_map("rc-env")["data"]["rc.env"]
    for name in CHART_RC_ENV:
        assert f"\nexport {name}=" in env, name
    assert "\nexport DEFAULT_USER_ID=12345\n" in env and "\nexport DEFAULT_UID=12345\n" in env


def test_chart_template_names_match_when_the_chart_is_at_hand() -> None:
    chart = ROOT.parent / "shared" / "anchors" / "cloud-server-chart" / "cloud-server" / "templates" / "config.yaml"
    if not chart.exists():
        return  # the list above is the contract; the chart is only a cross-check where it is present
    import re

    assert set(re.findall(r"export (\w+)=", chart.read_text())) == set(CHART_RC_ENV)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"namespace": "cis90\n"}, "namespace"),
        ({"hostName": "opus\n"}, "hostName"),
        ({"homeStorageClassName": "fast\n"}, "homeStorageClassName"),
        ({"image": {"repository": "ghcr.io/x/y\n"}}, "image.repository"),
        ({"extraPorts": [{"name": "http\n", "port": 80}]}, "extraPorts[0].name"),
        ({"ssh": {"existingSecret": "ca\n"}}, "ssh.existingSecret"),
        ({"user": "alice\n"}, "user"),
    ],
)
def test_a_whole_value_is_validated_a_trailing_newline_included(raw: dict[str, Any], key: str) -> None:
    # `re.match` with a `$` anchor would let "value\n" through; every whole-value check is a fullmatch.
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        parse(raw)
