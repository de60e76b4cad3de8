"""labd's own YAML emitter and naming rules, checked against a real YAML parser."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from labd.k3d import _published_ports
from labd.render import (
    ClusterValues,
    PublishAddressError,
    cluster_name,
    publish_address,
    render_k3d_config,
    to_yaml,
    valid_cluster_label,
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=30))
keys = st.text(min_size=1, max_size=12)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, documents, max_size=5))
def test_emitted_yaml_parses_back_to_the_same_data(document: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(document)) == (document or {})


@pytest.mark.parametrize("word", ["on", "yes", "no", "null", "true", "y", "012", "1e3", "- x", "a: b", "#c"])
def test_words_yaml_would_misread_stay_strings(word: str) -> None:
    assert yaml.safe_load(to_yaml({word: word, "list": [word]})) == {word: word, "list": [word]}


@given(st.from_regex(r"[a-z_][a-z0-9_.-]{0,31}", fullmatch=True))
def test_every_unix_name_maps_to_a_valid_distinct_cluster_name(user: str) -> None:
    name = cluster_name("lab-", user)
    assert valid_cluster_label(name)
    if re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", user) and len("lab-" + user) <= 32:
        assert name == "lab-" + user


def test_names_that_sanitise_alike_stay_distinct() -> None:
    names = {cluster_name("lab-", u) for u in ("a_b", "a.b", "a-b", "A_b".lower() + "_")}
    assert len(names) == 4


# --- where k3d publishes a student's ingress (the real k3d's side: test_k3d_real.py)

VALUES = ("alice", "lab-alice", 20000, 20001, 20002, "cis90", "fall2026", "lab.example.edu")


def rendered_ports(template: dict[str, Any], bind_host: str = "127.0.0.1") -> list[str]:
    config = render_k3d_config(template, ClusterValues(*VALUES, bind_host))
    return [p["port"] for p in config["ports"]]


def test_ingress_ports_are_published_on_backend_host_only() -> None:
    assert rendered_ports({}) == ["127.0.0.1:20001:80", "127.0.0.1:20002:443"]
    assert rendered_ports({}, "10.20.30.40") == ["10.20.30.40:20001:80", "10.20.30.40:20002:443"]
    assert rendered_ports({}, "localhost") == ["127.0.0.1:20001:80", "127.0.0.1:20002:443"]
    # ClusterValues' default is loopback, never all addresses
    assert ClusterValues(*VALUES).bind_host == "127.0.0.1"


def test_api_port_keeps_k3ds_default_address_or_the_templates() -> None:
    """The login server reaches the API port with the kubeconfig labd hands out: not narrowed to backendHost."""
    config = render_k3d_config({}, ClusterValues(*VALUES))
    assert config["kubeAPI"] == {"hostPort": "20000"}
    config = render_k3d_config({"kubeAPI": {"hostIP": "10.0.0.7"}}, ClusterValues(*VALUES))
    assert config["kubeAPI"] == {"hostIP": "10.0.0.7", "hostPort": "20000"}


def test_a_template_cannot_republish_labds_ports_on_all_addresses() -> None:
    template = {
        "ports": [
            {"port": "20001:80", "nodeFilters": ["loadbalancer"]},
            {"port": "0.0.0.0:20002:443", "nodeFilters": ["loadbalancer"]},
            {"port": "8080:8080", "nodeFilters": ["loadbalancer"]},
        ]
    }
    assert rendered_ports(template) == ["8080:8080", "127.0.0.1:20001:80", "127.0.0.1:20002:443"]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("lab.example.edu", "is a name"),
        ("traefik", "is a name"),
        ("0.0.0.0", "all addresses"),
        ("::1", "only IPv4"),
        ("[::1]", "only IPv4"),
    ],
)
def test_backend_hosts_k3d_cannot_publish_on_are_refused(host: str, why: str) -> None:
    with pytest.raises(PublishAddressError, match=re.escape(why)):
        publish_address(host)
    with pytest.raises(PublishAddressError):
        render_k3d_config({}, ClusterValues(*VALUES, host))


def lb(*bindings: tuple[str, str, str]) -> list[dict[str, Any]]:
    """`k3d cluster list -o json` nodes with a loadbalancer holding (key, HostIp, HostPort) bindings."""
    mappings: dict[str, list[dict[str, str]]] = {}
    for key, ip, port in bindings:
        mappings.setdefault(key, []).append({"HostIp": ip, "HostPort": port})
    return [{"role": "server", "portMappings": {}}, {"role": "loadbalancer", "portMappings": mappings}]


def test_published_ports_prefer_the_specific_address(caplog: pytest.LogCaptureFixture) -> None:
    # a template's own all-addresses binding of port 80 listed first must not be taken for labd's
    nodes = lb(
        ("6443", "0.0.0.0", "20000"),
        ("80/tcp", "0.0.0.0", "8080"),
        ("80/tcp", "127.0.0.1", "20001"),
        ("443/tcp", "127.0.0.1", "20002"),
    )
    with caplog.at_level(logging.WARNING, logger="labd.k3d"):
        assert _published_ports(nodes) == {"api": 20000, "http": 20001, "https": 20002}
    assert caplog.records == []


def test_published_ports_of_an_old_wide_open_cluster_are_adopted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    nodes = lb(("6443", "0.0.0.0", "20000"), ("80/tcp", "", "20001"), ("443/tcp", "0.0.0.0", "20002"))
    with caplog.at_level(logging.WARNING, logger="labd.k3d"):
        assert _published_ports(nodes) == {"api": 20000, "http": 20001, "https": 20002}
    assert [r.getMessage().split(" port ")[0] for r in caplog.records] == ["http", "https"]
    assert all("past Traefik" in r.getMessage() for r in caplog.records)


def test_published_ports_need_all_three() -> None:
    assert _published_ports(lb(("6443", "0.0.0.0", "20000"), ("80/tcp", "127.0.0.1", "20001"))) is None
    assert _published_ports(lb(("6443", "0.0.0.0", "x"), ("80/tcp", "", "1"), ("443/tcp", "", "2"))) is None
