"""The `labs` stack key: lab hosts, the per-student k3d template, webhooks.

The keys, their rules and their documentation are declared in
components/schema.py (`LabsModel`); this module turns the validated section
into the frozen dataclasses LabHost consumes and places students on hosts.
Every mistake raises ConfigError(key, value, accepted) before a resource is
registered.

Example (stacks/Pulumi.<class>-<term>.yaml):

    classroom:labs:
      domain: lab.example.edu
      idleTimeout: 30m
      servers: 1
      agents: 0
      k3sImage: docker.io/rancher/k3s:v1.31.5-k3s1
      hosts:
        - {name: lab1, address: lab1.example.edu, user: root, capacity: 20}
        - {name: lab2, inCluster: true, capacity: 10, image: registry.example.edu/labhost:1, engine: shared}
      ssh:
        privateKey: {secure: ...}
      sessionKey: {secure: ...}
      adminKey: {secure: ...}
      pins: {alice: lab2}
      hooks:
        init: {url: https://hooks.example.edu/init, secret: {secure: ...}, timeout: 5s, retries: 3}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.errors import ConfigError
from components.placement import Slot, place
from components.schema import (
    DEFAULT_K3D_TEMPLATE,
    DEFAULT_K3S_IMAGE,
    PLACEHOLDERS,
    STACK_PLACEHOLDERS,
    STUDENT_PLACEHOLDERS,
    HookModel,
    LabHostModel,
    LabsModel,
    render_stack_template,
    template_identifiers,
    validate_section,
)

__all__ = [
    "DEFAULT_K3D_TEMPLATE",
    "DEFAULT_K3S_IMAGE",
    "PLACEHOLDERS",
    "STACK_PLACEHOLDERS",
    "STUDENT_PLACEHOLDERS",
    "render_stack_template",
    "template_identifiers",
]

LAB_KEYS = ("labs",)
DEFAULT_IDLE_TIMEOUT = 30 * 60
HOST_KEYS = tuple(LabHostModel.model_fields)
LAB_FIELDS = tuple(LabsModel.model_fields)


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
    # labd's "engine": "rootless" (a dockerd per student, as their own host user) or "shared"
    engine: str = "rootless"
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


# ------------------------------------------------------------------ from the schema


def _hook(model: HookModel | None) -> HookConfig | None:
    if model is None:
        return None
    return HookConfig(url=model.url, secret=model.secret, timeout=model.timeout.total_seconds(), retries=model.retries)


def _host(model: LabHostModel) -> LabHostSpec:
    in_cluster = model.inCluster
    install_root = model.installRoot if model.installRoot is not None else ("/data" if in_cluster else "")
    return LabHostSpec(
        name=model.name,
        capacity=model.capacity,
        weight=model.weight,
        # Default of an inCluster host: its in-cluster Service name; set address
        # when the engine reaches the pod another way (a LoadBalancer, a port-forward).
        address=model.address if model.address is not None else f"labhost-{model.name}",
        port=model.port,
        user=model.user,
        in_cluster=in_cluster,
        host_key=model.hostKey,
        principal=model.principal,
        labd_port=model.labdPort,
        storage_size=model.storageSize,
        storage_class_name=model.storageClassName,
        image=model.image,
        install_root=install_root.rstrip("/"),
        service_manager=model.serviceManager or ("none" if in_cluster else "systemd"),
        engine=model.engine or ("shared" if in_cluster else "rootless"),
        cpu=model.cpu,
        memory=model.memory,
        k3d_binary=model.k3dBinary,
        traefik_binary=model.traefikBinary,
        python=model.python,
    )


def labs_from_model(model: LabsModel | None, *, people: Sequence[Any]) -> LabsConfig:
    """The validated `labs` section as LabsConfig, with every `labs: true` person placed on a host.

    `people` are roster entries (anything with `username` and `labs`).
    """
    lab_people = sorted(p.username for p in people if getattr(p, "labs", False))
    if model is None:
        if lab_people:
            raise ConfigError(
                "labs",
                None,
                f"a labs section with hosts: {len(lab_people)} roster entr"
                f"{'y has' if len(lab_people) == 1 else 'ies have'} labs: true "
                f"({', '.join(lab_people[:5])}{'...' if len(lab_people) > 5 else ''})",
            )
        return LabsConfig()
    for user, host in model.pins.items():
        if user not in lab_people:
            raise ConfigError(f"labs.pins.{user}", host, "pins only for roster entries with labs: true")
    hosts = tuple(_host(h) for h in model.hosts)
    placement = place(lab_people, [Slot(h.name, h.capacity, h.weight) for h in hosts], dict(model.pins))
    return LabsConfig(
        enabled=True,
        domain=model.domain,
        idle_timeout=model.idleTimeout.total_seconds(),
        servers=model.servers,
        agents=model.agents,
        k3s_image=model.k3sImage,
        k3d_template=model.k3dConfigTemplate,
        hosts=hosts,
        private_key=model.ssh.privateKey,
        private_key_password=model.ssh.privateKeyPassword,
        agent_socket=model.ssh.agentSocket,
        session_key=model.sessionKey,
        admin_key=model.adminKey,
        pins=dict(model.pins),
        init_hook=_hook(model.hooks.init),
        cleanup_hook=_hook(model.hooks.cleanup),
        cluster_prefix=model.clusterPrefix,
        port_base=model.portBase,
        port_limit=model.portLimit,
        placement=placement,
    )


def parse_labs(raw: Mapping[str, Any], *, base_dir: Path, people: Sequence[Any]) -> LabsConfig:
    """Validate `labs` (the schema's LabsModel) and place every person with `labs: true` on a host.

    `base_dir` is kept for symmetry with parse_access; a template is given
    inline only, so nothing is read from it.
    """
    del base_dir
    value = raw.get("labs")
    model = None if value is None or value == {} else validate_section(LabsModel, value, "labs")
    return labs_from_model(model, people=people)
