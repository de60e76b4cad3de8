"""Typed, validated stack configuration: the only reader of Pulumi config.

`parse_config` is pure (a mapping in, frozen dataclasses out) so every rule is
unit-testable without the engine; `load_config` feeds it every `classroom:*`
key the engine passed to the program, so a misspelt key is caught instead of
silently ignored.

Every mistake raises `ConfigError(key, value, accepted)` before any resource is
registered; `load_config` turns it into `pulumi.RunError`, which the engine
prints as one line (no traceback).

Key names and defaults follow the `cloud-server` Helm chart where it has them.

Data-safety notes (see also components/storage.py):
- A PVC's name is derived from the mount `name` only, so renaming a mount is a
  *new* volume; the old one is protected and the plan fails instead of deleting
  it (removal is the documented, deliberate two-step teardown).
- Only `size` of an existing volume can change (in-place expansion). Shrinking
  cannot be detected here without state; Kubernetes rejects it at the API
  ("field can not be less than previous value") and the PVC is untouched.
- `storageClassName` of an existing claim is immutable in Kubernetes; the
  program ignores later changes to it (see storage.py) rather than plan a
  replacement, and documents that moving data means a new mount.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from components.errors import ConfigError
from components.labconfig import LAB_KEYS, LabsConfig, parse_labs
from components.rosterdata import ACCESS_KEYS, AccessConfig, check_reserved, parse_access
from components.validate import boolean as _bool
from components.validate import integer as _integral
from components.validate import mapping as _mapping

NAMESPACE = "classroom"

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/mike-matera/cloud-native-server"
DEFAULT_IMAGE_TAG = "jammy-2022070801"
DEFAULT_PROVISIONER = "rancher.io/local-path"

# Mounting over (or under) these would hide or replace parts of the OS image,
# or let a volume shadow the root-owned SSH configuration the access model
# depends on. /home itself is the home volume.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
)
# Exceptions under the system directories: a web root is the classic reason
# for an extra port (the chart's own extraPorts example is http/https).
ALLOWED_UNDER_SYSTEM = ("/var/www",)
# Mounting *under* these is fine as long as the path is not the directory
# itself (e.g. /home/cis90, /srv/data, /opt/tools).
NOT_ITSELF = ("/home", "/", "/srv", "/opt", "/mnt", "/media")

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?\Z")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\Z")
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?\Z")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?\Z"
)
_SSH_IMPORT = re.compile(r"^(gh|lp):[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_REPO_URL = re.compile(r"^(https?://|ssh://|git://|git@[^:]+:)\S+\Z")
# Names the image or Debian/Ubuntu reserve; taking them would clash with
# system accounts the login image already has.
_RESERVED_USERS = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "systemd-network",
        "systemd-resolve",
        "messagebus",
        "sshd",
        "syslog",
        "_apt",
        "ubuntu",
        "admin",
        "sudo",
        "staff",
        "users",
    }
)

TOP_LEVEL_KEYS = (
    "hostName",
    "user",
    "userID",
    "userSSHKey",
    "userSSHImport",
    "customizeRepo",
    "customizeRepoCommand",
    "customizeCommand",
    "privileged",
    "rcEnv",
    "rcLocal",
    "rcUser",
    "homeSize",
    "homeStorageClassName",
    "storageProvisioner",
    "storageParameters",
    "extraMounts",
    "extraPorts",
    "image",
    "resources",
    "initResources",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podAnnotations",
    "namespace",
    "createNamespace",
    "service",
    "ssh",
)
# Keys whose value is a plain string in the stack file: never JSON-decoded, so
# `rcEnv: "true"` stays the text "true".
STRING_KEYS = frozenset(
    {
        "hostName",
        "user",
        "userSSHKey",
        "userSSHImport",
        "customizeRepo",
        "customizeRepoCommand",
        "customizeCommand",
        "rcEnv",
        "rcLocal",
        "rcUser",
        "homeSize",
        "homeStorageClassName",
        "storageProvisioner",
        "namespace",
    }
)


# ---------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Mount:
    """An extra persistent volume mounted into the login container."""

    name: str
    path: str
    size: str
    storage_class_name: str  # "" = the class this stack manages (reclaim Retain)


@dataclass(frozen=True)
class Port:
    """An extra port the login server exposes next to SSH."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Image:
    repository: str = DEFAULT_IMAGE_REPOSITORY
    tag: str = DEFAULT_IMAGE_TAG
    pull_policy: str = "IfNotPresent"
    pull_secrets: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Resources:
    requests: Mapping[str, str]
    limits: Mapping[str, str]


# A login server for a class: modest requests so it schedules on small nodes,
# limits that leave room for compilers and editors.
DEFAULT_RESOURCES = Resources(requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "2Gi"})
# The init container only generates and signs two host keys.
DEFAULT_INIT_RESOURCES = Resources(requests={"cpu": "50m", "memory": "32Mi"}, limits={"cpu": "500m", "memory": "128Mi"})


@dataclass(frozen=True)
class ServiceConfig:
    type: str = "LoadBalancer"
    load_balancer_ip: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    port: int = 22
    node_port: int | None = None


@dataclass(frozen=True)
class SshConfig:
    existing_secret: str = ""
    ca_algorithm: str = "ed25519"
    known_hosts_patterns: tuple[str, ...] = ("*",)
    host_principals: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassroomConfig:
    """Every validated option the components need."""

    stack: str
    base_dir: Path
    host_name: str = "myserver"
    user: str = "human"
    user_id: int = 10000
    user_ssh_key: str = ""
    user_ssh_import: str = ""
    customize_repo: str = ""
    customize_repo_command: str = ""
    customize_command: str = ""
    privileged: bool = True
    rc_env: str = ""
    rc_env_is_secret: bool = False
    rc_local: str = ""
    rc_user: str = ""
    home_size: str = "2Gi"
    home_storage_class_name: str = ""
    storage_provisioner: str = DEFAULT_PROVISIONER
    storage_parameters: Mapping[str, str] = field(default_factory=dict)
    extra_mounts: tuple[Mount, ...] = ()
    extra_ports: tuple[Port, ...] = ()
    image: Image = field(default_factory=Image)
    resources: Resources = field(default_factory=lambda: DEFAULT_RESOURCES)
    init_resources: Resources = field(default_factory=lambda: DEFAULT_INIT_RESOURCES)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""
    create_namespace: bool = True
    service: ServiceConfig = field(default_factory=ServiceConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    labs: LabsConfig = field(default_factory=LabsConfig)

    @property
    def managed_storage_class(self) -> str:
        """Name of the Retain StorageClass this stack creates (cluster-scoped)."""
        return f"{self.namespace}-retain"

    @property
    def needs_managed_storage_class(self) -> bool:
        return self.home_storage_class_name == "" or any(m.storage_class_name == "" for m in self.extra_mounts)


# ---------------------------------------------------------------- helpers


def _closest(key: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not match:
        match = [k for k in known if k.lower() == key.lower()]
    return f"; did you mean '{match[0]}'?" if match else ""


def _reject_unknown(mapping: Mapping[str, Any], known: Sequence[str], where: str, aliases: Sequence[str] = ()) -> None:
    for key in mapping:
        if key not in known and key not in aliases:
            raise ConfigError(
                f"{where}{key}" if where else key,
                mapping[key],
                "one of the known keys: " + ", ".join(known) + _closest(key, known),
            )




def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, "a string")
    return value






def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, value, "a list")
    return value


def _string_map(key: str, value: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for k, v in _mapping(key, value).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"{key}.{k}", v, "string keys with string values (quote numbers)")
        result[k] = v
    return result


def quantity_value(text: str) -> Decimal:
    """Numeric value of a Kubernetes quantity ('2Gi' -> 2147483648)."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(text)
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def _quantity(key: str, value: Any, *, storage: bool = False) -> str:
    accepted = (
        "a Kubernetes quantity such as 2Gi, 500Mi or 1Ti"
        if storage
        else "a Kubernetes quantity such as 250m, 2, 512Mi or 2Gi"
    )
    if isinstance(value, float) and value.is_integer():
        value = str(int(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise ConfigError(key, value, accepted)
    try:
        amount = quantity_value(value)
    except (ValueError, InvalidOperation):
        raise ConfigError(key, value, accepted) from None
    if amount <= 0 or (storage and amount < 2**20):
        raise ConfigError(key, value, accepted + " (at least 1Mi for volumes)" if storage else accepted)
    return value


def _dns_label(key: str, value: Any, *, max_len: int = 63) -> str:
    text = _string(key, value)
    if len(text) > max_len or not _DNS_LABEL.match(text):
        raise ConfigError(
            key,
            value,
            f"a DNS label: lowercase letters, digits and '-', starting and ending with a "
            f"letter or digit, at most {max_len} characters",
        )
    return text


# ---------------------------------------------------------------- sections


def _parse_mounts(value: Any) -> tuple[Mount, ...]:
    known = ("name", "path", "size", "storageClassName")
    mounts: list[Mount] = []
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for index, raw in enumerate(_list("extraMounts", value)):
        where = f"extraMounts[{index}]"
        entry = _mapping(where, raw)
        # The chart's README example spells the class `className`; accept it.
        _reject_unknown(entry, known, f"{where}.", aliases=("className",))
        for required in ("name", "path", "size"):
            if required not in entry:
                raise ConfigError(f"{where}.{required}", None, "a value (name, path and size are required)")
        # The PVC is named home-style: "<name>"; keep it short enough to leave
        # room for the namespace-independent prefix the program adds.
        name = _dns_label(f"{where}.name", entry["name"], max_len=40)
        if name == "home":
            raise ConfigError(f"{where}.name", name, "any name except 'home' (the home volume uses it)")
        path = _mount_path(f"{where}.path", entry["path"])
        size = _quantity(f"{where}.size", entry["size"], storage=True)
        cls = entry.get("storageClassName", entry.get("className", ""))
        cls = _string(f"{where}.storageClassName", cls)
        if cls and not _DNS_SUBDOMAIN.match(cls):
            raise ConfigError(f"{where}.storageClassName", cls, "a StorageClass name (DNS subdomain) or ''")
        if name in seen_names:
            raise ConfigError(
                f"{where}.name",
                name,
                f"a name not already used by extraMounts[{seen_names[name]}]",
            )
        if path in seen_paths:
            raise ConfigError(
                f"{where}.path",
                path,
                f"a path not already mounted by extraMounts[{seen_paths[path]}]",
            )
        for other, other_index in seen_paths.items():
            if path.startswith(other + "/") or other.startswith(path + "/"):
                raise ConfigError(
                    f"{where}.path",
                    path,
                    f"a path that does not nest with extraMounts[{other_index}] ({other}): "
                    "one volume would hide the other",
                )
        seen_names[name] = index
        seen_paths[path] = index
        mounts.append(Mount(name=name, path=path, size=size, storage_class_name=cls))
    return tuple(mounts)


def _mount_path(key: str, value: Any) -> str:
    text = _string(key, value)
    accepted = (
        "an absolute path outside the system directories ("
        + ", ".join(SYSTEM_DIRS)
        + ") and not /home itself, e.g. /home/cis90, /srv/data or /var/www"
    )
    if not text.startswith("/") or ".." in text.split("/") or "\n" in text or ":" in text:
        raise ConfigError(key, value, accepted)
    path = posixpath.normpath(text)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path in NOT_ITSELF:
        raise ConfigError(key, value, accepted)
    if any(path == ok or path.startswith(ok + "/") for ok in ALLOWED_UNDER_SYSTEM):
        return path
    for system in SYSTEM_DIRS:
        if path == system or path.startswith(system + "/"):
            raise ConfigError(key, value, accepted)
    return path


def _parse_ports(value: Any, ssh_port: int) -> tuple[Port, ...]:
    known = ("name", "port", "protocol")
    ports: list[Port] = []
    names: dict[str, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    for index, raw in enumerate(_list("extraPorts", value)):
        where = f"extraPorts[{index}]"
        entry = _mapping(where, raw)
        # The chart spells protocol `proto`; accept it for parity.
        _reject_unknown(entry, known, f"{where}.", aliases=("proto",))
        for required in ("name", "port"):
            if required not in entry:
                raise ConfigError(f"{where}.{required}", None, "a value (name and port are required)")
        port = _integral(f"{where}.port", entry["port"], 1, 65535)
        protocol = _string(f"{where}.protocol", entry.get("protocol", entry.get("proto", "TCP")))
        protocol = protocol.upper()
        if protocol not in ("TCP", "UDP", "SCTP"):
            raise ConfigError(f"{where}.protocol", protocol, "TCP, UDP or SCTP")
        name = _string(f"{where}.name", entry["name"])
        if not _PORT_NAME.match(name) or not re.search("[a-z]", name) or "--" in name:
            raise ConfigError(
                f"{where}.name",
                name,
                "an IANA service name: at most 15 lowercase letters, digits and '-', with at least one letter",
            )
        if name == "ssh":
            raise ConfigError(f"{where}.name", name, "any name except 'ssh' (used by the SSH port)")
        if (port == 22 or port == ssh_port) and protocol == "TCP":
            raise ConfigError(f"{where}.port", port, "a port other than the SSH port (22/TCP)")
        if name in names:
            raise ConfigError(f"{where}.name", name, f"a name not already used by extraPorts[{names[name]}]")
        if (port, protocol) in numbers:
            raise ConfigError(
                f"{where}.port",
                port,
                f"a port not already exposed by extraPorts[{numbers[(port, protocol)]}]",
            )
        names[name] = index
        numbers[(port, protocol)] = index
        ports.append(Port(name=name, port=port, protocol=protocol))
    return tuple(ports)


def _parse_image(value: Any) -> Image:
    entry = _mapping("image", value)
    _reject_unknown(entry, ("repository", "tag", "pullPolicy", "pullSecrets"), "image.")
    repository = _string("image.repository", entry.get("repository", DEFAULT_IMAGE_REPOSITORY))
    if not re.fullmatch(r"[a-z0-9]+([._/:-][a-z0-9]+)*", repository):
        raise ConfigError("image.repository", repository, "an image repository such as ghcr.io/owner/name")
    tag = entry.get("tag", DEFAULT_IMAGE_TAG)
    if isinstance(tag, (int, float)) and not isinstance(tag, bool):
        tag = str(int(tag)) if float(tag).is_integer() else str(tag)
    tag = _string("image.tag", tag)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64}", tag):
        raise ConfigError("image.tag", tag, "an image tag (letters, digits, '_', '.', '-')")
    policy = _string("image.pullPolicy", entry.get("pullPolicy", "IfNotPresent"))
    if policy not in ("Always", "IfNotPresent", "Never"):
        raise ConfigError("image.pullPolicy", policy, "Always, IfNotPresent or Never")
    secrets = tuple(
        _dns_label(f"image.pullSecrets[{i}]", s, max_len=253)
        for i, s in enumerate(_list("image.pullSecrets", entry.get("pullSecrets", [])))
    )
    return Image(repository=repository, tag=tag, pull_policy=policy, pull_secrets=secrets)


def _parse_resources(key: str, value: Any, default: Resources) -> Resources:
    entry = _mapping(key, value)
    _reject_unknown(entry, ("requests", "limits"), f"{key}.")
    sections: dict[str, dict[str, str]] = {}
    for section, fallback in (("requests", default.requests), ("limits", default.limits)):
        given = _mapping(f"{key}.{section}", entry.get(section, {}))
        _reject_unknown(given, ("cpu", "memory", "ephemeral-storage"), f"{key}.{section}.")
        merged = dict(fallback)
        for name, amount in given.items():
            merged[name] = _quantity(f"{key}.{section}.{name}", amount)
        sections[section] = merged
    for name, request in sections["requests"].items():
        limit = sections["limits"].get(name)
        if limit is None:
            # Every container gets requests AND limits: a request without a
            # limit is capped at the request so the pod stays Guaranteed-ish.
            sections["limits"][name] = request
        elif quantity_value(request) > quantity_value(limit):
            raise ConfigError(f"{key}.requests.{name}", request, f"at most the limit ({limit})")
    for name, limit in sections["limits"].items():
        sections["requests"].setdefault(name, limit)
    return Resources(requests=sections["requests"], limits=sections["limits"])


def _parse_service(value: Any) -> ServiceConfig:
    entry = _mapping("service", value)
    _reject_unknown(entry, ("type", "loadBalancerIP", "annotations", "port", "nodePort"), "service.")
    svc_type = _string("service.type", entry.get("type", "LoadBalancer"))
    if svc_type not in ("LoadBalancer", "NodePort", "ClusterIP"):
        raise ConfigError("service.type", svc_type, "LoadBalancer, NodePort or ClusterIP")
    lb_ip = _string("service.loadBalancerIP", entry.get("loadBalancerIP", ""))
    if lb_ip:
        if svc_type != "LoadBalancer":
            raise ConfigError("service.loadBalancerIP", lb_ip, "empty unless service.type is LoadBalancer")
        if not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", lb_ip):
            raise ConfigError("service.loadBalancerIP", lb_ip, "an IPv4 or IPv6 address")
    annotations = _string_map("service.annotations", entry.get("annotations", {}))
    port = _integral("service.port", entry.get("port", 22), 1, 65535)
    node_port = None
    if entry.get("nodePort") is not None:
        if svc_type == "ClusterIP":
            raise ConfigError(
                "service.nodePort", entry["nodePort"], "unset unless service.type is NodePort or LoadBalancer"
            )
        node_port = _integral("service.nodePort", entry["nodePort"], 30000, 32767)
    return ServiceConfig(type=svc_type, load_balancer_ip=lb_ip, annotations=annotations, port=port, node_port=node_port)


def _parse_ssh(value: Any) -> SshConfig:
    entry = _mapping("ssh", value)
    # The chart's ca_key/ca_key_pub carry a private key in values; here the CA
    # is generated (key in Pulumi state as a secret) or an existing Secret.
    if "ca_key" in entry or "ca_key_pub" in entry:
        raise ConfigError(
            "ssh.ca_key",
            "<redacted>",
            "ssh.existingSecret naming a Secret with keys ca_key and ca_key_pub, or nothing "
            "(the stack generates its CA); private keys do not belong in stack files",
        )
    _reject_unknown(entry, ("existingSecret", "caAlgorithm", "knownHostsPatterns", "hostPrincipals"), "ssh.")
    existing = _string("ssh.existingSecret", entry.get("existingSecret", ""))
    if existing:
        _dns_label("ssh.existingSecret", existing, max_len=253)
    algorithm = _string("ssh.caAlgorithm", entry.get("caAlgorithm", "ed25519")).lower()
    if algorithm not in ("ed25519", "rsa"):
        raise ConfigError("ssh.caAlgorithm", algorithm, "ed25519 or rsa")
    if existing and "caAlgorithm" in entry:
        raise ConfigError("ssh.caAlgorithm", algorithm, "unset when ssh.existingSecret is given")
    patterns = tuple(
        _string(f"ssh.knownHostsPatterns[{i}]", p)
        for i, p in enumerate(_list("ssh.knownHostsPatterns", entry.get("knownHostsPatterns", ["*"])))
    )
    if not patterns:
        raise ConfigError("ssh.knownHostsPatterns", [], "at least one host pattern, e.g. '*' or '*.example.edu'")
    for i, p in enumerate(patterns):
        if not re.fullmatch(r"!?[A-Za-z0-9*?.\[\]:_-]+", p):
            raise ConfigError(f"ssh.knownHostsPatterns[{i}]", p, "a known_hosts host pattern such as *.example.edu")
    principals = tuple(
        _string(f"ssh.hostPrincipals[{i}]", p)
        for i, p in enumerate(_list("ssh.hostPrincipals", entry.get("hostPrincipals", [])))
    )
    for i, p in enumerate(principals):
        if not re.fullmatch(r"[A-Za-z0-9.:_-]+", p):
            raise ConfigError(f"ssh.hostPrincipals[{i}]", p, "a host name or IP address")
    return SshConfig(
        existing_secret=existing,
        ca_algorithm=algorithm,
        known_hosts_patterns=patterns,
        host_principals=principals,
    )


def _script(key: str, value: Any) -> str:
    text = _string(key, value)
    if text and not text.startswith("#!"):
        raise ConfigError(key, text[:40] + ("..." if len(text) > 40 else ""), "a script starting with '#!' or ''")
    return text


def _tolerations(value: Any) -> tuple[Mapping[str, Any], ...]:
    known = ("key", "operator", "value", "effect", "tolerationSeconds")
    result = []
    for index, raw in enumerate(_list("tolerations", value)):
        entry = _mapping(f"tolerations[{index}]", raw)
        _reject_unknown(entry, known, f"tolerations[{index}].")
        operator = entry.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            raise ConfigError(f"tolerations[{index}].operator", operator, "Equal or Exists")
        effect = entry.get("effect", "")
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ConfigError(f"tolerations[{index}].effect", effect, "NoSchedule, PreferNoSchedule or NoExecute")
        clean = dict(entry)
        if "tolerationSeconds" in clean:
            clean["tolerationSeconds"] = _integral(
                f"tolerations[{index}].tolerationSeconds", clean["tolerationSeconds"], 0, 2**31 - 1
            )
        result.append(clean)
    return tuple(result)


def _affinity(value: Any) -> Mapping[str, Any]:
    entry = _mapping("affinity", value)
    _reject_unknown(entry, ("nodeAffinity", "podAffinity", "podAntiAffinity"), "affinity.")
    return dict(entry)


# ---------------------------------------------------------------- entry points


def parse_config(
    raw: Mapping[str, Any], *, stack: str, base_dir: Path, secret_keys: frozenset[str] = frozenset()
) -> ClassroomConfig:
    """Validate `raw` (keys without the `classroom:` prefix) into a ClassroomConfig."""
    _reject_unknown(raw, TOP_LEVEL_KEYS + ACCESS_KEYS + LAB_KEYS, "")
    get = raw.get

    host_name = _dns_label("hostName", get("hostName", "myserver"))
    user = _string("user", get("user", "human"))
    if not _UNIX_NAME.match(user) or user in _RESERVED_USERS:
        raise ConfigError(
            "user",
            user,
            "a Unix user name: lowercase letter or '_' first, then up to 31 lowercase letters, "
            "digits, '_' or '-', and not a system account (root, daemon, nobody, ...)",
        )
    user_id = _integral("userID", get("userID", 10000), 1000, 59999)

    user_ssh_key = _string("userSSHKey", get("userSSHKey", "")).strip()
    if user_ssh_key and ("\n" in user_ssh_key or not _SSH_KEY.match(user_ssh_key)):
        raise ConfigError("userSSHKey", user_ssh_key, "one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... me@host'")
    user_ssh_import = _string("userSSHImport", get("userSSHImport", "")).strip()
    for ident in user_ssh_import.split():
        if not _SSH_IMPORT.match(ident):
            raise ConfigError(
                "userSSHImport",
                user_ssh_import,
                "ssh-import-id names such as 'gh:octocat' or 'lp:name', space separated",
            )
    customize_repo = _string("customizeRepo", get("customizeRepo", "")).strip()
    if customize_repo and not _REPO_URL.match(customize_repo):
        raise ConfigError(
            "customizeRepo", customize_repo, "a git URL (https://, ssh://, git:// or git@host:path) or ''"
        )
    repo_command = _string("customizeRepoCommand", get("customizeRepoCommand", ""))
    if repo_command and not customize_repo:
        raise ConfigError("customizeRepoCommand", repo_command, "'' unless customizeRepo is set")

    # Chart default is a privileged (systemd) container; unprivileged runs sshd only.
    privileged = _bool("privileged", get("privileged", True))

    home_size = _quantity("homeSize", get("homeSize", "2Gi"), storage=True)
    home_class = _string("homeStorageClassName", get("homeStorageClassName", ""))
    if home_class and not _DNS_SUBDOMAIN.match(home_class):
        raise ConfigError("homeStorageClassName", home_class, "a StorageClass name (DNS subdomain) or ''")
    provisioner = _string("storageProvisioner", get("storageProvisioner", DEFAULT_PROVISIONER))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}", provisioner):
        raise ConfigError(
            "storageProvisioner", provisioner, "a CSI/provisioner name such as rancher.io/local-path or ebs.csi.aws.com"
        )

    service = _parse_service(get("service", {}))

    default_namespace = f"classroom-{stack}".lower()
    namespace_given = "namespace" in raw
    namespace = _string("namespace", get("namespace", default_namespace))
    if len(namespace) > 55 or not _DNS_LABEL.match(namespace):
        raise ConfigError(
            "namespace" if namespace_given else "namespace (default from the stack name)",
            namespace,
            "a DNS label of at most 55 characters (room for the '-retain' StorageClass suffix); "
            "set classroom:namespace explicitly",
        )

    # Roster/term (components.rosterdata) and labs (components.labconfig) own
    # their keys' rules; they raise the same ConfigError.
    access = parse_access({k: raw[k] for k in ACCESS_KEYS if k in raw}, base_dir=base_dir)
    # rc.local creates the stack's own account; a roster entry with its name or
    # UID would be refused by the reconciler in the pod — say so now instead.
    check_reserved(access, names=[user], uids=[user_id])
    config = ClassroomConfig(
        stack=stack,
        base_dir=base_dir,
        host_name=host_name,
        user=user,
        user_id=user_id,
        user_ssh_key=user_ssh_key,
        user_ssh_import=user_ssh_import,
        customize_repo=customize_repo,
        customize_repo_command=repo_command,
        customize_command=_string("customizeCommand", get("customizeCommand", "")),
        privileged=privileged,
        rc_env=_string("rcEnv", get("rcEnv", "")),
        rc_env_is_secret="rcEnv" in secret_keys,
        rc_local=_script("rcLocal", get("rcLocal", "")),
        rc_user=_script("rcUser", get("rcUser", "")),
        home_size=home_size,
        home_storage_class_name=home_class,
        storage_provisioner=provisioner,
        storage_parameters=_string_map("storageParameters", get("storageParameters", {})),
        extra_mounts=_parse_mounts(get("extraMounts", [])),
        extra_ports=_parse_ports(get("extraPorts", []), service.port),
        image=_parse_image(get("image", {})),
        resources=_parse_resources("resources", get("resources", {}), DEFAULT_RESOURCES),
        init_resources=_parse_resources("initResources", get("initResources", {}), DEFAULT_INIT_RESOURCES),
        node_selector=_string_map("nodeSelector", get("nodeSelector", {})),
        tolerations=_tolerations(get("tolerations", [])),
        affinity=_affinity(get("affinity", {})),
        pod_annotations=_string_map("podAnnotations", get("podAnnotations", {})),
        namespace=namespace,
        create_namespace=_bool("createNamespace", get("createNamespace", True)),
        service=service,
        ssh=_parse_ssh(get("ssh", {})),
        access=access,
        labs=parse_labs({k: raw[k] for k in LAB_KEYS if k in raw}, base_dir=base_dir, people=access.people),
    )
    for key in config.pod_annotations:
        if key.startswith("classroom/"):
            raise ConfigError(
                f"podAnnotations.{key}",
                config.pod_annotations[key],
                "keys outside the 'classroom/' prefix (the program owns it)",
            )
    return config


def decode_raw(values: Mapping[str, str]) -> dict[str, Any]:
    """Turn engine config (`classroom:key` -> text) into key -> Python value.

    The engine hands every value over as text; structured values (lists,
    objects, numbers, booleans) are JSON. String-typed keys stay text so that
    `rcEnv: "true"` is not turned into a boolean.
    """
    decoded: dict[str, Any] = {}
    prefix = NAMESPACE + ":"
    for full_key, text in values.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in STRING_KEYS or not isinstance(text, str):
            decoded[key] = text
            continue
        try:
            decoded[key] = json.loads(text)
        except json.JSONDecodeError:
            decoded[key] = text
    return decoded


def load_config() -> ClassroomConfig:
    """Read every `classroom:*` key the engine passed and validate it."""
    import pulumi  # local: keeps parse_config importable without the engine
    from pulumi.runtime import config as runtime_config

    # The language host passes config as PULUMI_CONFIG (JSON); the automation
    # API and tests set it in-process. Merge both so nothing is missed.
    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | set(runtime_config._SECRET_KEYS.get())
    raw = decode_raw(values)
    secrets = frozenset(k[len(NAMESPACE) + 1 :] for k in secret_keys if k.startswith(NAMESPACE + ":"))
    try:
        return parse_config(
            raw,
            stack=pulumi.get_stack(),
            base_dir=Path.cwd(),
            secret_keys=secrets,
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
