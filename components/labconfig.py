"""The `labs` stack key: lab hosts, the per-student k3d template, webhooks.

Pure parsing and validation (a mapping in, frozen dataclasses out), like
rosterdata.py: every mistake raises ConfigError(key, value, accepted) before a
resource is registered. components/config.py calls `parse_labs`.

Example (stacks/Pulumi.<class>-<term>.yaml):

    classroom:labs:
      domain: lab.example.edu
      idleTimeout: 30m
      servers: 1
      agents: 0
      k3sImage: docker.io/rancher/k3s:v1.31.5-k3s1
      hosts:
        - {name: lab1, address: lab1.example.edu, user: root, capacity: 20}
        - {name: lab2, inCluster: true, capacity: 10}
      ssh:
        privateKey: {secure: ...}
      sessionKey: {secure: ...}
      adminKey: {secure: ...}
      pins: {alice: lab2}
      hooks:
        init: {url: https://hooks.example.edu/init, secret: {secure: ...}, timeout: 5, retries: 3}
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.errors import ConfigError
from components.placement import Slot, place
from components.validate import boolean as _bool
from components.validate import integer as _int
from components.validate import mapping as _mapping

LAB_KEYS = ("labs",)

DEFAULT_K3S_IMAGE = "docker.io/rancher/k3s:v1.31.5-k3s1"
DEFAULT_IDLE_TIMEOUT = 30 * 60

# Placeholders resolved when the stack is deployed (same for every student).
STACK_PLACEHOLDERS = ("servers", "agents", "k3sImage")
# Placeholders resolved by labd when it creates one student's cluster, with
# the names the stack file uses -> the names labd's renderer knows.
STUDENT_PLACEHOLDERS = {
    "username": "user",
    "cluster": "cluster",
    "apiPort": "api_port",
    "httpPort": "http_port",
    "httpsPort": "https_port",
    "host": "host",
    "domain": "lab_domain",
    "class": "class",
    "term": "term",
}
PLACEHOLDERS = STACK_PLACEHOLDERS + tuple(STUDENT_PLACEHOLDERS)

DEFAULT_K3D_TEMPLATE = """\
apiVersion: k3d.io/v1alpha5
kind: Simple
metadata:
  name: ${cluster}
servers: ${servers}
agents: ${agents}
image: ${k3sImage}
options:
  k3d:
    wait: true
    timeout: 180s
  k3s:
    extraArgs:
      - arg: --tls-san=${host}
        nodeFilters: [server:*]
  runtime:
    labels:
      - label: classroom.lab/user=${username}
        nodeFilters: [server:*, agent:*, loadbalancer]
"""

_DNS_NAME = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z|^localhost\Z")
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z")
_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z|^\[?[0-9a-fA-F:]+\]?\Z")
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_IMAGE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9._+-]{1,128})?"
                    r"(@sha256:[0-9a-f]{64})?\Z")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*\Z")
_PUBKEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521))(-cert-v01@openssh\.com)? "
                     r"[A-Za-z0-9+/]+={0,3}( .*)?\Z")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\Z")

HOST_KEYS = ("name", "address", "port", "user", "capacity", "inCluster", "hostKey", "principal",
             "labdPort", "storageSize", "storageClassName", "image", "installRoot", "serviceManager",
             "k3dBinary", "traefikBinary", "python", "weight", "cpu", "memory")
LAB_FIELDS = ("domain", "idleTimeout", "servers", "agents", "k3sImage", "k3dConfigTemplate", "hosts", "ssh",
              "sessionKey", "adminKey", "pins", "hooks", "clusterPrefix", "portBase", "portLimit")
SSH_KEYS = ("privateKey", "privateKeyPassword", "agentSocket")
HOOK_KEYS = ("url", "secret", "timeout", "retries")


@dataclass(frozen=True)
class HookConfig:
    url: str
    secret: str
    timeout: float = 5.0
    retries: int = 3


@dataclass(frozen=True)
class LabHostSpec:
    """One lab host: an existing machine, or a Docker-in-Docker pod the stack runs."""

    name: str
    capacity: int
    address: str = ""
    weight: float = 1.0  # placement share; changing it moves students (capacity does not)
    port: int = 22
    user: str = "root"
    in_cluster: bool = False
    host_key: str = ""  # pinned key/certificate line; "" = verify through the CA
    principal: str = ""  # name the host certificate must carry; default: address
    labd_port: int = 8787
    storage_size: str = "50Gi"
    storage_class_name: str = ""
    image: str = ""  # inCluster only: dockerd + sshd + python3 + ssh-keygen + k3d
    cpu: str = "4"  # inCluster only: the pod's CPU limit (all its students' clusters share it)
    memory: str = "16Gi"  # inCluster only: the pod's memory limit
    install_root: str = ""  # "" = the real file system; tests install under a directory
    service_manager: str = "systemd"
    k3d_binary: str = "/usr/local/bin/k3d"
    traefik_binary: str = "/usr/local/bin/traefik"
    python: str = "/usr/bin/python3"

    @property
    def cert_principal(self) -> str:
        return self.principal or self.address


@dataclass(frozen=True)
class LabsConfig:
    """Everything LabHost needs, validated; `enabled` is False when `labs` is absent."""

    enabled: bool = False
    domain: str = ""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    servers: int = 1
    agents: int = 0
    k3s_image: str = DEFAULT_K3S_IMAGE
    k3d_template: str = DEFAULT_K3D_TEMPLATE
    hosts: tuple[LabHostSpec, ...] = ()
    private_key: str = ""
    private_key_password: str = ""
    agent_socket: str = ""
    session_key: str = ""
    admin_key: str = ""
    pins: Mapping[str, str] = field(default_factory=dict)
    init_hook: HookConfig | None = None
    cleanup_hook: HookConfig | None = None
    cluster_prefix: str = "lab-"
    port_base: int = 20000
    port_limit: int = 29999
    placement: Mapping[str, str] = field(default_factory=dict)  # username -> host name

    def host(self, name: str) -> LabHostSpec:
        return next(h for h in self.hosts if h.name == name)

    def students_on(self, host: str) -> tuple[str, ...]:
        return tuple(sorted(u for u, h in self.placement.items() if h == host))

    def labd_template(self) -> dict[str, Any]:
        """The k3d template as the JSON object labd's `k3d.template` expects."""
        return render_stack_template(self.k3d_template, self.servers, self.agents, self.k3s_image)


# ------------------------------------------------------------------ helpers




def _unknown(key: str, value: Mapping[str, Any], known: Sequence[str]) -> None:
    for k in value:
        if k not in known:
            raise ConfigError(f"{key}.{k}", value[k], "one of the known keys: " + ", ".join(known))




def _str(key: str, value: Any, pattern: re.Pattern[str] | None = None, accepted: str = "a string") -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ConfigError(key, value, accepted)
    return value




def _secret(key: str, value: Any, min_len: int = 32) -> str:
    accepted = f"a secret string of at least {min_len} characters (pulumi config set --secret)"
    if not isinstance(value, str) or len(value.strip()) < min_len:
        # Never echo a secret back, even a short one.
        raise ConfigError(key, "<hidden>" if isinstance(value, str) else value, accepted)
    return value.strip()


def parse_duration(key: str, value: Any) -> float:
    """'90s', '30m', '2h' or a number of seconds -> seconds (> 0)."""
    accepted = "a duration like '90s', '30m' or '2h' (or a number of seconds), greater than 0"
    if isinstance(value, bool):
        raise ConfigError(key, value, accepted)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(key, value, accepted)
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    if seconds <= 0:
        raise ConfigError(key, value, accepted)
    return seconds


def template_identifiers(text: str) -> list[str]:
    """Placeholders used in a template, or ValueError for a malformed `$`."""
    names: list[str] = []
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text[: match.start()].count("\n") + 1
            raise ValueError(f"a '$' on line {line} that starts no placeholder (write '$$' for a literal '$')")
        name = match.group("named") or match.group("braced")
        if name:
            names.append(name)
    return names


def render_stack_template(text: str, servers: int, agents: int, k3s_image: str) -> dict[str, Any]:
    """Resolve the stack placeholders; rename the student ones to labd's names.

    The result still holds `${user}`, `${api_port}`... for labd, which fills
    them per student when it creates the cluster.
    """
    values: dict[str, str] = {"servers": str(servers), "agents": str(agents), "k3sImage": k3s_image}
    values.update({ours: "${" + theirs + "}" for ours, theirs in STUDENT_PLACEHOLDERS.items()})
    rendered = string.Template(text).substitute(values)
    data = yaml.safe_load(rendered)
    if not isinstance(data, dict):
        raise ValueError("the template is not a YAML mapping")
    return data


def _template(key: str, text: Any, servers: int, agents: int, k3s_image: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, text, "a k3d.io/v1alpha5 Simple config as a YAML string")
    accepted = "placeholders among " + ", ".join("${" + p + "}" for p in PLACEHOLDERS) + " ('$$' for a literal '$')"
    try:
        used = template_identifiers(text)
    except ValueError as err:
        raise ConfigError(key, str(err), accepted) from None
    unknown = sorted(set(used) - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(key, "${" + unknown[0] + "}", accepted)
    try:
        data = render_stack_template(text, servers, agents, k3s_image)
    except yaml.YAMLError as err:
        raise ConfigError(key, str(err).splitlines()[0], "valid YAML once placeholders are filled in") from None
    except ValueError as err:
        raise ConfigError(key, str(err), "a k3d.io/v1alpha5 Simple config (a YAML mapping)") from None
    if data.get("apiVersion", "k3d.io/v1alpha5") != "k3d.io/v1alpha5":
        raise ConfigError(f"{key}.apiVersion", data.get("apiVersion"), "'k3d.io/v1alpha5'")
    if data.get("kind", "Simple") != "Simple":
        raise ConfigError(f"{key}.kind", data.get("kind"), "'Simple'")
    for count_key, lo in (("servers", 1), ("agents", 0)):
        count = data.get(count_key, lo)
        if isinstance(count, bool) or not isinstance(count, int) or not lo <= count <= 9:
            raise ConfigError(f"{key}.{count_key}", count, f"an integer from {lo} to 9")
    return text


def _hook(key: str, raw: Any) -> HookConfig | None:
    if raw is None:
        return None
    raw = _mapping(key, raw)
    _unknown(key, raw, HOOK_KEYS)
    url = _str(f"{key}.url", raw.get("url"), re.compile(r"^https?://[^/\s]+\S*\Z"), "an http:// or https:// URL")
    secret = _secret(f"{key}.secret", raw.get("secret"))
    timeout = parse_duration(f"{key}.timeout", raw.get("timeout", 5))
    retries = _int(f"{key}.retries", raw.get("retries", 3), 0, 10)
    return HookConfig(url=url, secret=secret, timeout=timeout, retries=retries)


def _host(key: str, raw: Any) -> LabHostSpec:
    raw = _mapping(key, raw)
    _unknown(key, raw, HOST_KEYS)
    name = _str(f"{key}.name", raw.get("name"), _HOST_NAME, "a short lowercase name like 'lab1' (a-z, 0-9, '-')")
    in_cluster = _bool(f"{key}.inCluster", raw.get("inCluster", False))
    capacity = _int(f"{key}.capacity", raw.get("capacity"), 1, 1000)
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 100:
        raise ConfigError(f"{key}.weight", weight, "a number > 0 and <= 100 (share of students; default 1)")
    port = _int(f"{key}.port", raw.get("port", 22), 1, 65535)
    if in_cluster:
        for forbidden in ("installRoot", "serviceManager"):
            if forbidden in raw:
                raise ConfigError(f"{key}.{forbidden}", raw[forbidden],
                                  "nothing: an inCluster host keeps everything on its volume under /data and "
                                  "has no systemd")
        # Default: the in-cluster Service name; set address when the engine
        # reaches the pod another way (a LoadBalancer, a port-forward).
        address = _str(f"{key}.address", raw.get("address", f"labhost-{name}"), _ADDRESS,
                       "the host name or IP address the Pulumi engine reaches the lab host's sshd on")
    else:
        address = _str(f"{key}.address", raw.get("address"), _ADDRESS,
                       "the host name or IP address the Pulumi engine reaches the lab host's sshd on")
    user = _str(f"{key}.user", raw.get("user", "root"), _UNIX_NAME, "a Unix user name with root or docker rights")
    host_key = raw.get("hostKey", "")
    if host_key:
        host_key = " ".join(_str(f"{key}.hostKey", host_key, _PUBKEY,
                                 "an OpenSSH public key or host certificate line 'TYPE BASE64'").split()[:2])
    principal = _str(f"{key}.principal", raw.get("principal", ""), re.compile(r"^[A-Za-z0-9.:_-]*\Z"),
                     "the host name the host certificate was issued for")
    storage_size = _str(f"{key}.storageSize", raw.get("storageSize", "50Gi"), _QUANTITY,
                        "a Kubernetes quantity like '50Gi'")
    install_root = _str(f"{key}.installRoot", raw.get("installRoot", "/data" if in_cluster else ""),
                        re.compile(r"^(/[A-Za-z0-9._/-]*)?\Z"),
                        "an absolute directory (tests only) or empty for the real file system")
    service_manager = _str(f"{key}.serviceManager", raw.get("serviceManager", "none" if in_cluster else "systemd"),
                           re.compile(r"^(systemd|none)\Z"),
                           "'systemd' or 'none' (plain processes with pid files: containers and test hosts)")
    path_re = re.compile(r"^/[A-Za-z0-9._/-]+\Z")
    return LabHostSpec(
        name=name,
        capacity=capacity,
        weight=float(weight),
        address=address,
        port=port,
        user=user,
        in_cluster=in_cluster,
        host_key=host_key,
        principal=principal,
        labd_port=_int(f"{key}.labdPort", raw.get("labdPort", 8787), 1, 65535),
        storage_size=storage_size,
        storage_class_name=_str(f"{key}.storageClassName", raw.get("storageClassName", ""),
                                re.compile(r"^[a-z0-9.-]*\Z"), "a StorageClass name"),
        image=_str(f"{key}.image", raw.get("image", "" if not in_cluster else None), re.compile(
            r"^$" if not in_cluster else _IMAGE.pattern),
            "a lab host image with dockerd, sshd, python3, ssh-keygen and k3d (inCluster hosts only)"),
        install_root=install_root.rstrip("/"),
        service_manager=service_manager,
        cpu=_str(f"{key}.cpu", raw.get("cpu", "4"), re.compile(r"^[0-9]+(\.[0-9]+)?m?\Z"),
                 "a CPU quantity like '4' or '3500m'"),
        memory=_str(f"{key}.memory", raw.get("memory", "16Gi"), _QUANTITY, "a memory quantity like '16Gi'"),
        k3d_binary=_str(f"{key}.k3dBinary", raw.get("k3dBinary", "/usr/local/bin/k3d"), path_re, "an absolute path"),
        traefik_binary=_str(f"{key}.traefikBinary", raw.get("traefikBinary", "/usr/local/bin/traefik"), path_re,
                            "an absolute path"),
        python=_str(f"{key}.python", raw.get("python", "/usr/bin/python3"), path_re,
                    "the absolute path of python3 (>= 3.11) on the lab host"),
    )


def parse_labs(raw: Mapping[str, Any], *, base_dir: Path, people: Sequence[Any]) -> LabsConfig:
    """Validate `labs` and place every person with `labs: true` on a host.

    `people` are roster entries (anything with `username` and `labs`).
    `base_dir` is the stack directory (kept for symmetry with parse_access;
    a template may be given inline only, so nothing is read from it).
    """
    del base_dir
    lab_people = sorted(p.username for p in people if getattr(p, "labs", False))
    value = raw.get("labs")
    if value is None or value == {}:
        if lab_people:
            raise ConfigError("labs", None, f"a labs section with hosts: {len(lab_people)} roster entr"
                              f"{'y has' if len(lab_people) == 1 else 'ies have'} labs: true "
                              f"({', '.join(lab_people[:5])}{'...' if len(lab_people) > 5 else ''})")
        return LabsConfig()
    labs = _mapping("labs", value)
    _unknown("labs", labs, LAB_FIELDS)
    domain = _str("labs.domain", labs.get("domain"), _DNS_NAME, "a lowercase DNS domain like 'lab.example.edu'")
    servers = _int("labs.servers", labs.get("servers", 1), 1, 9)
    agents = _int("labs.agents", labs.get("agents", 0), 0, 9)
    k3s_image = _str("labs.k3sImage", labs.get("k3sImage", DEFAULT_K3S_IMAGE), _IMAGE,
                     "a k3s image reference like 'docker.io/rancher/k3s:v1.31.5-k3s1'")
    template = _template("labs.k3dConfigTemplate", labs.get("k3dConfigTemplate", DEFAULT_K3D_TEMPLATE),
                         servers, agents, k3s_image)
    hosts_raw = labs.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise ConfigError("labs.hosts", hosts_raw, "a non-empty list of hosts ({name, address, capacity, ...})")
    hosts = tuple(_host(f"labs.hosts[{i}]", h) for i, h in enumerate(hosts_raw))
    seen: set[str] = set()
    for i, host in enumerate(hosts):
        if host.name in seen:
            raise ConfigError(f"labs.hosts[{i}].name", host.name, "a name no other lab host has")
        seen.add(host.name)
    ssh = _mapping("labs.ssh", labs.get("ssh", {}))
    _unknown("labs.ssh", ssh, SSH_KEYS)
    private_key = ssh.get("privateKey", "")
    agent_socket = _str("labs.ssh.agentSocket", ssh.get("agentSocket", ""), re.compile(r"^(/\S*)?\Z"),
                        "the absolute path of an ssh-agent socket")
    if private_key:
        if not isinstance(private_key, str) or "PRIVATE KEY-----" not in private_key:
            raise ConfigError("labs.ssh.privateKey", "<hidden>",
                              "an OpenSSH or PEM private key (pulumi config set --secret ... < key)")
    elif not agent_socket:
        raise ConfigError("labs.ssh.privateKey", None,
                          "a private key (secret) the engine logs in to the lab hosts with, or labs.ssh.agentSocket")
    if not private_key and any(h.in_cluster for h in hosts):
        raise ConfigError("labs.ssh.privateKey", None,
                          "a private key: an inCluster lab host authorizes its public key (an agent cannot be used)")
    pins_raw = _mapping("labs.pins", labs.get("pins", {}))
    pins = {str(u): _str(f"labs.pins.{u}", h, _HOST_NAME, "a host name") for u, h in pins_raw.items()}
    for user in pins:
        if user not in lab_people:
            raise ConfigError(f"labs.pins.{user}", pins[user], "pins only for roster entries with labs: true")
    hooks = _mapping("labs.hooks", labs.get("hooks", {}))
    _unknown("labs.hooks", hooks, ("init", "cleanup"))
    port_base = _int("labs.portBase", labs.get("portBase", 20000), 1024, 65000)
    port_limit = _int("labs.portLimit", labs.get("portLimit", 29999), port_base + 3, 65535)
    slots_per_host = (port_limit - port_base + 1) // 3
    for i, host in enumerate(hosts):
        if host.capacity > slots_per_host:
            raise ConfigError(f"labs.hosts[{i}].capacity", host.capacity,
                              f"at most {slots_per_host}: each cluster needs 3 ports in "
                              f"labs.portBase..labs.portLimit ({port_base}..{port_limit})")
    placement = place(lab_people, [Slot(h.name, h.capacity, h.weight) for h in hosts], pins)
    return LabsConfig(
        enabled=True,
        domain=domain,
        idle_timeout=parse_duration("labs.idleTimeout", labs.get("idleTimeout", "30m")),
        servers=servers,
        agents=agents,
        k3s_image=k3s_image,
        k3d_template=template,
        hosts=hosts,
        private_key=private_key,
        private_key_password=str(ssh.get("privateKeyPassword", "")),
        agent_socket=agent_socket,
        session_key=_secret("labs.sessionKey", labs.get("sessionKey")),
        admin_key=_secret("labs.adminKey", labs.get("adminKey")),
        pins=pins,
        init_hook=_hook("labs.hooks.init", hooks.get("init")),
        cleanup_hook=_hook("labs.hooks.cleanup", hooks.get("cleanup")),
        cluster_prefix=_str("labs.clusterPrefix", labs.get("clusterPrefix", "lab-"),
                            re.compile(r"^[a-z][a-z0-9-]{0,11}\Z"), "1..12 lowercase letters, digits or '-'"),
        port_base=port_base,
        port_limit=port_limit,
        placement=placement,
    )
