"""labd's configuration file (JSON), validated once at start.

Every mistake is reported as one line naming the key, the value and what is
accepted, and labd exits with status 2 before touching anything.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import stat
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labd.engines import ENGINES, ROOTLESS, RootlessConfig
from labd.render import PLACEHOLDERS, ClusterValues, PublishAddressError, publish_address, render_k3d_config

TOP_LEVEL_K3D_KEYS = {
    "apiVersion",
    "kind",
    "metadata",
    "servers",
    "agents",
    "kubeAPI",
    "image",
    "network",
    "subnet",
    "token",
    "volumes",
    "manifests",
    "ports",
    "options",
    "env",
    "registries",
    "hostAliases",
}


class LabdConfigError(Exception):
    def __init__(self, key: str, value: Any, accepted: str) -> None:
        self.key, self.value, self.accepted = key, value, accepted
        super().__init__(f"config key '{key}': got {value!r}; expected {accepted}")


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: bytes
    timeout: float
    retries: int


@dataclass(frozen=True)
class LabdConfig:
    listen_host: str
    listen_port: int
    class_name: str
    term: str
    lab_domain: str
    state_file: str
    work_dir: str
    session_key: bytes
    admin_key: bytes
    k3d_binary: str
    k3d_timeout: float
    cluster_prefix: str
    idle_timeout: float
    stop_grace: float
    session_ttl: float
    reaper_interval: float
    max_clock_skew: float
    port_base: int
    port_limit: int
    backend_host: str
    kubeconfig_server: str
    traefik_file: str
    traefik_http_entrypoint: str
    traefik_https_entrypoint: str
    k3d_template: dict[str, Any]
    init_hook: WebhookConfig | None
    cleanup_hook: WebhookConfig | None
    roster_file: str
    # End of the term's access (epoch seconds), or None: after it no cluster starts.
    access_end: float | None = None
    # Seconds a client has to send one whole request (line, headers, body).
    request_timeout: float = 10.0
    # Connections served at once; more are answered 503 and closed.
    max_connections: int = 64
    # The lab host names (host or host:port, lower case) session-signed requests must name; () = any.
    host_names: tuple[str, ...] = ()
    # Which Docker engine a student's cluster runs under (labd.engines): "rootless" (default) or "shared".
    engine: str = ROOTLESS
    rootless: RootlessConfig = field(default_factory=RootlessConfig)
    extra: dict[str, Any] = field(default_factory=dict)


DEFAULT_TEMPLATE: dict[str, Any] = {
    "servers": 1,
    "agents": 0,
    "image": "docker.io/rancher/k3s:v1.31.5-k3s1",
    "options": {"k3d": {"wait": True, "timeout": "180s"}},
}


def _get(
    raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, accepted: str, prefix: str = ""
) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise LabdConfigError(prefix + key, value, accepted)
    if not isinstance(value, kind):
        raise LabdConfigError(prefix + key, value, accepted)
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float, minimum: float = 0.0) -> float:
    accepted = f"a number of seconds >= {minimum:g}"
    value = float(_get(raw, key, (int, float), default, accepted))
    if value < minimum:
        raise LabdConfigError(key, value, accepted)
    return value


def read_secret_file(path: str, key: str) -> bytes:
    """A key file must be private to root: anyone who reads it can forge requests."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise LabdConfigError(key, path, f"an existing file readable by labd ({err.strerror})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LabdConfigError(key, path, f"a file with mode 0600 or stricter (it is {oct(info.st_mode & 0o777)})")
    with open(path, "rb") as handle:
        secret = handle.read().strip()
    if len(secret) < 32:
        raise LabdConfigError(key, path, "a file holding at least 32 bytes of key material")
    return secret


def _webhook(raw: Any, key: str) -> WebhookConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise LabdConfigError(key, raw, "an object with url, secretFile, timeout, retries")
    url = _get(raw, "url", str, "", "an http:// or https:// URL", key + ".")
    if not re.fullmatch(r"https?://[^/\s]+\S*", url):
        raise LabdConfigError(key + ".url", url, "an http:// or https:// URL")
    secret = read_secret_file(_get(raw, "secretFile", str, "", "a path", key + "."), key + ".secretFile")
    timeout = float(_get(raw, "timeout", (int, float), 5, "seconds > 0", key + "."))
    retries = _get(raw, "retries", int, 3, "an integer 0..10", key + ".")
    if timeout <= 0:
        raise LabdConfigError(key + ".timeout", timeout, "seconds > 0")
    if not 0 <= retries <= 10:
        raise LabdConfigError(key + ".retries", retries, "an integer 0..10")
    return WebhookConfig(url=url, secret=secret, timeout=timeout, retries=retries)


def _rootless(raw: Any) -> RootlessConfig:
    key = "rootless"
    accepted = (
        "an object with optional userPrefix, dataDir, runDir, dockerdRootless, dockerBinary, "
        "dockerdArgs, preloadImages, startTimeout"
    )
    if not isinstance(raw, Mapping):
        raise LabdConfigError(key, raw, accepted)
    fields = {
        "userPrefix",
        "dataDir",
        "runDir",
        "dockerdRootless",
        "dockerBinary",
        "dockerdArgs",
        "preloadImages",
        "startTimeout",
    }
    for name in raw:
        if name not in fields:
            raise LabdConfigError(f"{key}.{name}", raw[name], accepted)
    default = RootlessConfig()
    prefix = _get(raw, "userPrefix", str, default.user_prefix, "a host user name prefix like 'labu-'", "rootless.")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", prefix):
        raise LabdConfigError(
            "rootless.userPrefix", prefix, "1..12 lowercase letters, digits or '-', starting with a letter"
        )
    paths = {}
    for name, value in (
        ("dataDir", default.data_dir),
        ("runDir", default.run_dir),
        ("dockerdRootless", default.dockerd_rootless),
        ("dockerBinary", default.docker_binary),
    ):
        paths[name] = _get(raw, name, str, value, "an absolute path", "rootless.")
        if not paths[name].startswith("/") or "\0" in paths[name]:
            raise LabdConfigError(f"rootless.{name}", paths[name], "an absolute path")
    # The socket is <runDir>/<host user>/docker.sock and containerd's deeper still: a unix socket path
    # holds at most 107 bytes.
    if len(paths["runDir"]) > 40:
        raise LabdConfigError("rootless.runDir", paths["runDir"], "an absolute path of at most 40 characters")
    lists = {}
    for name in ("dockerdArgs", "preloadImages"):
        value = _get(raw, name, list, [], "a list of strings", "rootless.")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise LabdConfigError(f"rootless.{name}[{index}]", item, "a non-empty string")
        lists[name] = tuple(value)
    timeout = float(_get(raw, "startTimeout", (int, float), default.start_timeout, "seconds 1..600", "rootless."))
    if not 1 <= timeout <= 600:
        raise LabdConfigError("rootless.startTimeout", timeout, "seconds 1..600")
    return RootlessConfig(
        user_prefix=prefix,
        data_dir=paths["dataDir"],
        run_dir=paths["runDir"],
        dockerd_rootless=paths["dockerdRootless"],
        docker_binary=paths["dockerBinary"],
        dockerd_args=lists["dockerdArgs"],
        preload_images=lists["preloadImages"],
        start_timeout=timeout,
    )


def parse_config(raw: Mapping[str, Any]) -> LabdConfig:
    known = {
        "listen",
        "class",
        "term",
        "labDomain",
        "stateFile",
        "workDir",
        "sessionKeyFile",
        "adminKeyFile",
        "k3dBinary",
        "k3dTimeout",
        "clusterPrefix",
        "idleTimeout",
        "stopGrace",
        "sessionTtl",
        "reaperInterval",
        "maxClockSkew",
        "portBase",
        "portLimit",
        "backendHost",
        "kubeconfigServer",
        "traefik",
        "k3d",
        "hooks",
        "rosterFile",
        "accessEnd",
        "requestTimeout",
        "maxConnections",
        "hostNames",
        "engine",
        "rootless",
    }
    for key in raw:
        if key not in known:
            raise LabdConfigError(key, raw[key], "one of the known keys: " + ", ".join(sorted(known)))
    listen = _get(raw, "listen", str, "127.0.0.1:8787", "HOST:PORT")
    match = re.fullmatch(r"(.+):(\d{1,5})", listen)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise LabdConfigError("listen", listen, "HOST:PORT with a port 1..65535")
    name_re = r"[a-z0-9][a-z0-9-]{0,39}"
    class_name = _get(raw, "class", str, "", "a class name like 'cis90'")
    term = _get(raw, "term", str, "", "a term like 'fall2026'")
    for key, value in (("class", class_name), ("term", term)):
        if not re.fullmatch(name_re, value):
            raise LabdConfigError(key, value, "lowercase letters, digits and '-', 1..40 characters")
    lab_domain = _get(raw, "labDomain", str, "", "a DNS domain like 'lab.example.edu'")
    if not re.fullmatch(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}|localhost", lab_domain):
        raise LabdConfigError("labDomain", lab_domain, "a lowercase DNS domain like 'lab.example.edu'")
    prefix = _get(raw, "clusterPrefix", str, "lab-", "a short hostname prefix like 'lab-'")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", prefix):
        raise LabdConfigError("clusterPrefix", prefix, "1..12 lowercase letters, digits or '-', starting with a letter")
    port_base = _get(raw, "portBase", int, 20000, "a port 1024..65000")
    port_limit = _get(raw, "portLimit", int, 29999, "a port above portBase, <= 65535")
    if not 1024 <= port_base <= 65000:
        raise LabdConfigError("portBase", port_base, "a port 1024..65000")
    if not port_base + 3 <= port_limit <= 65535:
        raise LabdConfigError("portLimit", port_limit, "a port at least portBase+3 and <= 65535")
    traefik = _get(raw, "traefik", dict, {}, "an object with file, httpEntryPoint, httpsEntryPoint")
    k3d = _get(raw, "k3d", dict, {}, "an object with 'template' (a k3d.io/v1alpha5 Simple config)")
    template = _get(k3d, "template", dict, DEFAULT_TEMPLATE, "a k3d.io/v1alpha5 Simple config object", "k3d.")
    for key in template:
        if key not in TOP_LEVEL_K3D_KEYS:
            raise LabdConfigError(
                f"k3d.template.{key}",
                template[key],
                "a k3d.io/v1alpha5 Simple field: " + ", ".join(sorted(TOP_LEVEL_K3D_KEYS)),
            )
    for key in ("servers", "agents"):
        if key in template:
            count = template[key]
            low = 1 if key == "servers" else 0
            if isinstance(count, bool) or not isinstance(count, int) or not low <= count <= 9:
                raise LabdConfigError(f"k3d.template.{key}", count, f"an integer {low}..9")
    if "apiVersion" in template and template["apiVersion"] != "k3d.io/v1alpha5":
        raise LabdConfigError("k3d.template.apiVersion", template["apiVersion"], "'k3d.io/v1alpha5'")
    try:
        render_k3d_config(template, ClusterValues("alice", "lab-alice", 1, 2, 3, class_name, term, lab_domain))
    except (KeyError, ValueError) as err:
        raise LabdConfigError(
            "k3d.template", str(err), "placeholders among " + ", ".join("$" + p for p in PLACEHOLDERS)
        ) from None
    kubeconfig_server = _get(
        raw, "kubeconfigServer", str, "$host", "a host name for students' kubectl, may use $host, $user, $lab_domain"
    )
    try:
        server_host = string.Template(kubeconfig_server).substitute(host="alice.x", user="alice", lab_domain="x")
    except (KeyError, ValueError):
        server_host = ""
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9a-fA-F:]+\]", server_host):
        raise LabdConfigError(
            "kubeconfigServer",
            kubeconfig_server,
            "a host name or address; placeholders $host (<user>.<labDomain>), $user, $lab_domain",
        )
    hooks = _get(raw, "hooks", dict, {}, "an object with optional 'init' and 'cleanup' webhooks")
    for key in hooks:
        if key not in ("init", "cleanup"):
            raise LabdConfigError(f"hooks.{key}", hooks[key], "'init' or 'cleanup'")
    access_end_text = _get(raw, "accessEnd", str, "", "the end of access as YYYY-MM-DDTHH:MM:SSZ (UTC)")
    access_end: float | None = None
    if access_end_text:
        try:
            access_end = calendar.timegm(time.strptime(access_end_text, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise LabdConfigError("accessEnd", access_end_text, "YYYY-MM-DDTHH:MM:SSZ (UTC)") from None
    request_timeout = _seconds(raw, "requestTimeout", 10, 0.5)
    if request_timeout > 300:
        raise LabdConfigError("requestTimeout", request_timeout, "a number of seconds 0.5..300")
    max_connections = _get(raw, "maxConnections", int, 64, "an integer 1..1024")
    if not 1 <= max_connections <= 1024:
        raise LabdConfigError("maxConnections", max_connections, "an integer 1..1024")
    host_names_accepted = (
        "a list of the names callers reach labd by, as host or host:port (e.g. 'lab1.example.edu:8787')"
    )
    host_names = _get(raw, "hostNames", list, [], host_names_accepted)
    for index, name in enumerate(host_names):
        if not isinstance(name, str) or not re.fullmatch(
            r"([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9a-fA-F:.]+\])(:\d{1,5})?", name
        ):
            raise LabdConfigError(f"hostNames[{index}]", name, host_names_accepted)
    engine = _get(raw, "engine", str, ROOTLESS, "one of " + ", ".join(repr(e) for e in ENGINES))
    if engine not in ENGINES:
        raise LabdConfigError("engine", engine, "one of " + ", ".join(repr(e) for e in ENGINES))
    rootless = _rootless(raw.get("rootless", {}))
    if engine != ROOTLESS and "rootless" in raw:
        raise LabdConfigError("rootless", raw["rootless"], "no 'rootless' settings unless engine is 'rootless'")
    return LabdConfig(
        engine=engine,
        rootless=rootless,
        access_end=access_end,
        request_timeout=request_timeout,
        max_connections=max_connections,
        host_names=tuple(name.lower() for name in host_names),
        listen_host=match.group(1).strip("[]"),
        listen_port=int(match.group(2)),
        class_name=class_name,
        term=term,
        lab_domain=lab_domain,
        state_file=_get(raw, "stateFile", str, "/var/lib/labd/state.json", "a path"),
        work_dir=_get(raw, "workDir", str, "/var/lib/labd/clusters", "a path"),
        session_key=read_secret_file(
            _get(raw, "sessionKeyFile", str, "/etc/labd/session.key", "a path"), "sessionKeyFile"
        ),
        admin_key=read_secret_file(_get(raw, "adminKeyFile", str, "/etc/labd/admin.key", "a path"), "adminKeyFile"),
        k3d_binary=_get(raw, "k3dBinary", str, "/usr/local/bin/k3d", "the path of the k3d binary"),
        k3d_timeout=_seconds(raw, "k3dTimeout", 300, 1),
        cluster_prefix=prefix,
        idle_timeout=_seconds(raw, "idleTimeout", 1800, 0.1),
        stop_grace=_seconds(raw, "stopGrace", 60, 0),
        session_ttl=_seconds(raw, "sessionTtl", 86400, 0.1),
        reaper_interval=_seconds(raw, "reaperInterval", 15, 0.05),
        max_clock_skew=_seconds(raw, "maxClockSkew", 60, 1),
        port_base=port_base,
        port_limit=port_limit,
        backend_host=_backend_host(raw),
        kubeconfig_server=kubeconfig_server,
        traefik_file=_get(traefik, "file", str, "", "a path for Traefik's file provider", "traefik."),
        traefik_http_entrypoint=_get(traefik, "httpEntryPoint", str, "web", "an entry point name", "traefik."),
        traefik_https_entrypoint=_get(traefik, "httpsEntryPoint", str, "websecure", "an entry point name", "traefik."),
        k3d_template=dict(template),
        init_hook=_webhook(hooks.get("init"), "hooks.init"),
        cleanup_hook=_webhook(hooks.get("cleanup"), "hooks.cleanup"),
        roster_file=_get(raw, "rosterFile", str, "", "a path to a file with one user name per line"),
    )


def _backend_host(raw: Mapping[str, Any]) -> str:
    """backendHost: where Traefik reaches cluster ports, and the one address labd publishes them on."""
    accepted = "an IPv4 address or 'localhost' (not 0.0.0.0, not a host name): Traefik's way to the clusters"
    host: str = _get(raw, "backendHost", str, "127.0.0.1", accepted)
    try:
        publish_address(host)
    except PublishAddressError:
        raise LabdConfigError("backendHost", host, accepted) from None
    return host


def load_config(path: str) -> LabdConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as err:
        raise LabdConfigError("--config", path, f"a readable JSON file ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise LabdConfigError("--config", path, f"valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(raw, dict):
        raise LabdConfigError("--config", path, "a JSON object at top level")
    return parse_config(raw)
