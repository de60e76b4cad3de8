"""Files labd writes for other programs: k3d cluster configs and Traefik routes.

labd is stdlib-only, so it carries a small YAML emitter for the plain data it
produces (dicts, lists, strings, numbers, booleans). Every string is emitted
double-quoted with JSON escaping, which is valid YAML and can never be
misread as a number, boolean or anchor. The test double parses these files
with a real YAML parser, and the Traefik test feeds them to real Traefik.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import re
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labd.k3d import K3dError

K3D_API_VERSION = "k3d.io/v1alpha5"
# k3d prefixes container names with "k3d-" and uses the cluster name as a
# hostname, so keep it a short RFC 1123 label.
MAX_CLUSTER_NAME = 32
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for plain data."""
    return _emit(value, indent).rstrip("\n") + "\n"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quote(value)
    raise TypeError(f"cannot emit {type(value).__name__} as YAML")


def _quote(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, the rest escaped.

    Not json.dumps: JSON escapes astral characters as surrogate pairs, which
    YAML reads as two invalid code points rather than one character.
    """
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _emit(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            head = f"{pad}{_key(str(key))}:"
            if isinstance(item, Mapping | list | tuple) and item:
                out.append(head + "\n" + _emit(item, indent + 2))
            else:
                out.append(head + " " + (_flow_empty(item) or _scalar(item)) + "\n")
        return "".join(out)
    if isinstance(value, list | tuple):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                inner = _emit(item, indent + 2)
                out.append(pad + "- " + inner[indent + 2 :])
            else:
                out.append(pad + "- " + (_flow_empty(item) or _scalar(item)) + "\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# YAML 1.1 readers turn these plain words into booleans or null.
_RESERVED = {"y", "yes", "n", "no", "on", "off", "true", "false", "null"}


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) and key.lower() not in _RESERVED else _quote(key)


def _flow_empty(item: Any) -> str:
    if isinstance(item, Mapping) and not item:
        return "{}"
    if isinstance(item, list | tuple) and not item:
        return "[]"
    return ""


def write_atomic(path: str, data: str | bytes, mode: int = 0o600) -> None:
    """Replace path in one rename so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cluster_name(prefix: str, user: str) -> str:
    """A k3d cluster name for user: a valid hostname, unique per user.

    Unix names may hold '_' or '.', which a hostname cannot; such names (and
    long ones) get a hash suffix so two users can never map to one cluster.
    """
    clean = re.sub(r"[^a-z0-9-]", "-", user.lower()).strip("-") or "user"
    name = prefix + clean
    if clean != user or len(name) > MAX_CLUSTER_NAME:
        digest = hashlib.sha256(user.encode()).hexdigest()[:6]
        room = MAX_CLUSTER_NAME - len(prefix) - 7
        name = f"{prefix}{clean[:room].rstrip('-')}-{digest}"
    return name


def valid_cluster_label(name: str) -> bool:
    return len(name) <= MAX_CLUSTER_NAME and bool(_LABEL_RE.match(name))


@dataclass(frozen=True)
class ClusterValues:
    """What a per-student k3d config is rendered with."""

    user: str
    cluster: str
    api_port: int
    http_port: int
    https_port: int
    class_name: str
    term: str
    lab_domain: str
    # The lab host address the HTTP/HTTPS ingress ports are published on: labd's
    # backendHost, the address Traefik reaches them at (see publish_address).
    bind_host: str = "127.0.0.1"

    def mapping(self) -> dict[str, str]:
        return {
            "user": self.user,
            "cluster": self.cluster,
            "api_port": str(self.api_port),
            "http_port": str(self.http_port),
            "https_port": str(self.https_port),
            "class": self.class_name,
            "term": self.term,
            "lab_domain": self.lab_domain,
            "host": f"{self.user}.{self.lab_domain}",
        }


PLACEHOLDERS = tuple(ClusterValues("u", "c", 1, 2, 3, "k", "t", "d").mapping())


def _substitute(value: Any, values: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return string.Template(value).substitute(values)
    if isinstance(value, Mapping):
        return {k: _substitute(v, values, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class PublishAddressError(K3dError, ValueError):
    """backendHost cannot be the address k3d publishes a student's ingress on.

    A K3dError so that labd's ensure records it as the cluster's error (the
    student's status says why) instead of dying in its worker thread.
    """


def publish_address(backend_host: str) -> str:
    """The IPv4 address to publish a student's ingress ports on, from labd's backendHost.

    Without one, k3d (Docker) publishes them on 0.0.0.0: anyone on the lab
    host's network would reach a student's cluster directly, past Traefik's
    Host/SNI routing. So they are published on the one address Traefik uses.
    "localhost" means 127.0.0.1. Any other name is refused rather than
    resolved: Docker binds an address, and a name resolved once at create time
    would silently go stale when DNS changes. 0.0.0.0 is refused (it is the
    hole this closes). IPv6 literals are refused too: k3d's `[ip:]` form
    with an IPv6 address was not checked against the real k3d here.
    """
    host = backend_host.strip()
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise PublishAddressError(
            f"backendHost {backend_host!r} is a name; labd publishes students' ingress ports on an address "
            "(k3d binds addresses, and a name resolved at create time goes stale): give its IPv4 address"
        ) from None
    if address.version != 4:
        raise PublishAddressError(f"backendHost {backend_host!r}: only IPv4 addresses are supported for publishing")
    if address.is_unspecified:
        raise PublishAddressError(
            f"backendHost {backend_host!r} would publish every student's ingress on all addresses, past Traefik"
        )
    return str(address)


def render_k3d_config(template: Mapping[str, Any], values: ClusterValues) -> dict[str, Any]:
    """The k3d `Simple` config for one student.

    Placeholders ($user, $cluster, $api_port, $http_port, $https_port, $class,
    $term, $lab_domain, $host) are substituted in every string. labd then
    pins what it relies on: the cluster name, the API port it hands out in
    kubeconfigs, the HTTP/HTTPS ports Traefik routes to (published on
    values.bind_host only, see publish_address), and that k3d must not rewrite
    root's default kubeconfig on the lab host.

    The API port keeps k3d's default (all addresses, or the template's
    kubeAPI.hostIP): the kubeconfigs labd hands out point the login server at
    it, so it must stay reachable from there; it is the cluster's own TLS API,
    behind its client certificates, not a route Traefik guards.
    """
    config: dict[str, Any] = _substitute(copy.deepcopy(dict(template)), values.mapping(), "k3d.template")
    config["apiVersion"] = K3D_API_VERSION
    config["kind"] = "Simple"
    config["metadata"] = {**config.get("metadata", {}), "name": values.cluster}
    config["kubeAPI"] = {**config.get("kubeAPI", {}), "hostPort": str(values.api_port)}
    bind = publish_address(values.bind_host)
    wanted = [
        {"port": f"{bind}:{values.http_port}:80", "nodeFilters": ["loadbalancer"]},
        {"port": f"{bind}:{values.https_port}:443", "nodeFilters": ["loadbalancer"]},
    ]
    ours = {str(values.http_port), str(values.https_port)}
    # A template entry naming one of labd's host ports (with or without an
    # address) is replaced by labd's, so it cannot widen the binding.
    ports = [
        p
        for p in config.get("ports", [])
        if not (isinstance(p, Mapping) and _host_port(str(p.get("port", ""))) in ours)
    ]
    config["ports"] = ports + wanted
    options = dict(config.get("options", {}))
    kubeconfig = dict(options.get("kubeconfig", {}))
    kubeconfig.update({"updateDefaultKubeconfig": False, "switchCurrentContext": False})
    options["kubeconfig"] = kubeconfig
    config["options"] = options
    return config


def _host_port(spec: str) -> str | None:
    """The host port of a k3d `[ip:][hostPort:]containerPort[/proto]` spec, if it names one."""
    parts = spec.partition("/")[0].split(":")
    return parts[-2] if len(parts) >= 2 else None


def traefik_dynamic_config(
    routes: Sequence[tuple[str, str, int, int]],
    lab_domain: str,
    backend_host: str,
    http_entrypoint: str,
    https_entrypoint: str,
) -> dict[str, Any]:
    """Traefik file-provider config for (user, cluster, http_port, https_port) routes.

    HTTP is routed by Host to the student's cluster ingress; HTTPS is a TCP
    route matched by SNI with TLS passthrough, so the student's own ingress
    terminates TLS and Let's Encrypt inside the cluster works.
    """
    http_routers: dict[str, Any] = {}
    http_services: dict[str, Any] = {}
    tcp_routers: dict[str, Any] = {}
    tcp_services: dict[str, Any] = {}
    for user, cluster, http_port, https_port in sorted(routes):
        host = f"{user}.{lab_domain}"
        http_routers[cluster] = {
            "rule": f"Host(`{host}`)",
            "entryPoints": [http_entrypoint],
            "service": cluster,
        }
        http_services[cluster] = {"loadBalancer": {"servers": [{"url": f"http://{backend_host}:{http_port}"}]}}
        tcp_routers[cluster] = {
            "rule": f"HostSNI(`{host}`)",
            "entryPoints": [https_entrypoint],
            "service": cluster,
            "tls": {"passthrough": True},
        }
        tcp_services[cluster] = {"loadBalancer": {"servers": [{"address": f"{backend_host}:{https_port}"}]}}
    config: dict[str, Any] = {}
    if http_routers:
        config["http"] = {"routers": http_routers, "services": http_services}
        config["tcp"] = {"routers": tcp_routers, "services": tcp_services}
    return config
