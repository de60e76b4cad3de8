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

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import schema
from components.errors import ConfigError
from components.labconfig import LabsConfig, labs_from_model
from components.rosterdata import AccessConfig, check_reserved, parse_access
from components.schema import ALLOWED_UNDER_SYSTEM, NOT_ITSELF, STRING_KEYS, SYSTEM_DIRS, StackModel
from components.vocabulary import DNS_LABEL, quantity_value

__all__ = [
    "ALLOWED_UNDER_SYSTEM",
    "NOT_ITSELF",
    "STRING_KEYS",
    "SYSTEM_DIRS",
    "ConfigError",
    "quantity_value",
]

NAMESPACE = "classroom"

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/mike-matera/cloud-native-server"
DEFAULT_IMAGE_TAG = "jammy-2022070801"
DEFAULT_PROVISIONER = "rancher.io/local-path"

# Every key of a stack file, in the order of the schema (components/schema.py).
TOP_LEVEL_KEYS = tuple(StackModel.model_fields)
# The access and labs keys, which components.rosterdata and components.labconfig turn into typed values.
ACCESS_KEYS = ("roster", "term", "revocations", "staffKeepOwnKeys", "adoptedUids")
LAB_KEYS = ("labs",)


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
# What `initResources` was checked against when a host-key init container existed; the key is
# still validated the same way, so a value that was accepted before stays accepted.
FORMER_INIT_RESOURCES = Resources(requests={"cpu": "50m", "memory": "32Mi"}, limits={"cpu": "500m", "memory": "128Mi"})


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
    # Shown in the preview (pulumi.log.warn): allowed, but probably a mistake.
    warnings: tuple[str, ...] = ()

    @property
    def managed_storage_class(self) -> str:
        """Name of the Retain StorageClass this stack creates (cluster-scoped)."""
        return f"{self.namespace}-retain"

    @property
    def needs_managed_storage_class(self) -> bool:
        return (
            self.home_storage_class_name == ""
            or any(m.storage_class_name == "" for m in self.extra_mounts)
            or any(h.in_cluster and h.storage_class_name == "" for h in self.labs.hosts)
        )


# ---------------------------------------------------------------- from the schema to the components


def _resources(model: schema.ResourcesModel, default: Resources) -> Resources:
    """The stack's values over the defaults; a side given alone is mirrored to the other.

    Every container gets requests AND limits: a request without a limit is
    capped at the request, a limit without a request requests the limit.
    """
    requests = {**default.requests, **model.requests}
    limits = {**default.limits, **model.limits}
    for name, request in requests.items():
        limit = limits.get(name)
        if limit is None:
            limits[name] = request
        elif quantity_value(request) > quantity_value(limit):
            raise ConfigError(f"{{key}}.requests.{name}", request, f"at most the limit ({limit})")
    for name, limit in limits.items():
        requests.setdefault(name, limit)
    return Resources(requests=requests, limits=limits)


def _resources_at(key: str, model: schema.ResourcesModel, default: Resources) -> Resources:
    try:
        return _resources(model, default)
    except ConfigError as err:
        raise ConfigError(err.key.replace("{key}", key), err.value, err.accepted) from None


def _namespace(model: StackModel, stack: str) -> str:
    given = model.namespace is not None
    namespace = model.namespace if model.namespace is not None else f"classroom-{stack}".lower()
    if len(namespace) > 55 or not DNS_LABEL.fullmatch(namespace):
        raise ConfigError(
            "namespace" if given else "namespace (default from the stack name)",
            namespace,
            "a DNS label of at most 55 characters (room for the '-retain' StorageClass suffix); "
            "set classroom:namespace explicitly",
        )
    return namespace


def rc_local_warnings(rc_local: str) -> tuple[str, ...]:
    """A replaced rc.local that never creates /ready leaves the pod unready forever."""
    if rc_local and "/ready" not in rc_local:
        return (
            "config key 'rcLocal': the script never touches /ready, so the login server will never report "
            "ready (the built-in rc.local ends with `touch /ready`)",
        )
    return ()


def unused_key_warnings(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """Keys still accepted (stack files and chart values carry them) that no longer change anything."""
    if "initResources" in raw:
        return (
            "config key 'initResources' has no effect and can be removed: the login pod has no init "
            "container (host certificates are signed by the program at deploy time)",
        )
    return ()


# ---------------------------------------------------------------- entry points


def parse_config(
    raw: Mapping[str, Any], *, stack: str, base_dir: Path, secret_keys: frozenset[str] = frozenset()
) -> ClassroomConfig:
    """Validate `raw` (keys without the `classroom:` prefix) into a ClassroomConfig."""
    model = schema.validate_stack(raw)
    # Still checked (a wrong value is still a mistake worth one clear line), then unused.
    _resources_at("initResources", model.initResources, FORMER_INIT_RESOURCES)
    namespace = _namespace(model, stack)
    # Roster/term (components.rosterdata) and labs (components.labconfig)
    # turn their validated sections into what the components consume.
    access = parse_access({k: raw[k] for k in ACCESS_KEYS if k in raw}, base_dir=base_dir)
    # rc.local creates the stack's own account; a roster entry with its name or
    # UID would be refused by the reconciler in the pod — say so now instead.
    check_reserved(access, names=[model.user], uids=[model.userID])
    service = model.service
    ssh = model.ssh
    return ClassroomConfig(
        stack=stack,
        base_dir=base_dir,
        host_name=model.hostName,
        user=model.user,
        user_id=model.userID,
        user_ssh_key=model.userSSHKey,
        user_ssh_import=model.userSSHImport,
        customize_repo=model.customizeRepo,
        customize_repo_command=model.customizeRepoCommand,
        customize_command=model.customizeCommand,
        privileged=model.privileged,
        rc_env=model.rcEnv,
        rc_env_is_secret="rcEnv" in secret_keys,
        rc_local=model.rcLocal,
        rc_user=model.rcUser,
        home_size=model.homeSize,
        home_storage_class_name=model.homeStorageClassName,
        storage_provisioner=model.storageProvisioner,
        storage_parameters=dict(model.storageParameters),
        extra_mounts=tuple(
            Mount(name=m.name, path=m.path, size=m.size, storage_class_name=m.storageClassName)
            for m in model.extraMounts
        ),
        extra_ports=tuple(Port(name=p.name, port=p.port, protocol=p.protocol) for p in model.extraPorts),
        image=Image(
            repository=model.image.repository,
            tag=model.image.tag,
            pull_policy=model.image.pullPolicy,
            pull_secrets=model.image.pullSecrets,
        ),
        resources=_resources_at("resources", model.resources, DEFAULT_RESOURCES),
        node_selector=dict(model.nodeSelector),
        tolerations=model.tolerations,
        affinity=dict(model.affinity),
        pod_annotations=dict(model.podAnnotations),
        namespace=namespace,
        create_namespace=model.createNamespace,
        service=ServiceConfig(
            type=service.type,
            load_balancer_ip=service.loadBalancerIP,
            annotations=dict(service.annotations),
            port=service.port,
            node_port=service.nodePort,
        ),
        ssh=SshConfig(
            existing_secret=ssh.existingSecret,
            ca_algorithm=ssh.caAlgorithm,
            known_hosts_patterns=ssh.knownHostsPatterns,
            host_principals=ssh.hostPrincipals,
        ),
        access=access,
        labs=labs_from_model(model.labs, people=access.people),
        warnings=rc_local_warnings(model.rcLocal) + unused_key_warnings(raw),
    )


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
        config = parse_config(
            raw,
            stack=pulumi.get_stack(),
            base_dir=Path.cwd(),
            secret_keys=secrets,
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    except Exception as error:  # a bug in a validator: still one line for the instructor, never a traceback
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise pulumi.RunError(f"the stack config could not be validated ({detail}); please report this") from None
    for warning in config.warnings:
        pulumi.log.warn(warning)
    return config
