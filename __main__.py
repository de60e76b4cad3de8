"""classroom: read config -> build components -> export outputs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import contract, storage
from components.ca import SshCertificateAuthority, SshCertificateAuthorityArgs
from components.config import ClassroomConfig, load_config
from components.labconfig import LabHostSpec
from components.labs import LabHost, LabHostArgs
from components.roster import Roster, RosterArgs
from components.rosterdata import class_and_term_names
from components.server import LoginServer, LoginServerArgs
from components.services import SSH_SERVICE_NAME, PortServices, PortServicesArgs


@dataclass
class Classroom:
    """What the program built (tests and later components use it)."""

    config: ClassroomConfig
    ca: SshCertificateAuthority
    server: LoginServer
    ports: PortServices
    roster: Roster | None
    lab_hosts: dict[str, LabHost]


def lab_storage_class(cfg: ClassroomConfig, spec: LabHostSpec, index: int) -> pulumi.Input[str]:
    """An in-cluster lab host's volume class: the one named (checked to be Retain), or the stack's Retain class."""
    if spec.storage_class_name:
        return storage.require_retain_class(
            f"lab-{spec.name}-class", spec.storage_class_name, f"labs.hosts[{index}].storageClassName")
    return cfg.managed_storage_class


def build(cfg: ClassroomConfig) -> Classroom:
    labels = {
        "app.kubernetes.io/part-of": "classroom",
        "app.kubernetes.io/managed-by": "pulumi",
        contract.STACK_LABEL: cfg.stack,
    }
    # Everything namespaced waits for the namespace; the claims depend on it
    # explicitly so a destroy can never delete the namespace before them.
    namespace_deps: list[pulumi.Resource] = []
    namespace_name: pulumi.Input[str] = cfg.namespace
    if cfg.create_namespace:
        namespace = storage.create_namespace(cfg.namespace, labels)
        namespace_deps.append(namespace)
        namespace_name = namespace.metadata.apply(lambda m: m.name or cfg.namespace)
    in_namespace = pulumi.ResourceOptions(depends_on=namespace_deps)

    ca = SshCertificateAuthority(
        "ssh-ca",
        SshCertificateAuthorityArgs(
            namespace=namespace_name,
            algorithm=cfg.ssh.ca_algorithm,
            existing_secret=cfg.ssh.existing_secret,
            known_hosts_patterns=cfg.ssh.known_hosts_patterns,
        ),
        opts=in_namespace,
    )
    # Accounts, term window and certificates: a ConfigMap the login server
    # mounts; its in-pod reconciler follows changes without a pod restart,
    # so the roster's revision is deliberately not part of the pod checksum.
    roster = None
    if cfg.access.people:
        roster = Roster(
            "roster",
            RosterArgs(
                access=cfg.access,
                namespace=namespace_name,
                ca_private_key=ca.private_key_openssh,
                stack=cfg.stack,
                labels=labels,
            ),
            opts=in_namespace,
        )
    # Lab hosts first: the login server's session hook needs each one's labd URL.
    lab_hosts: dict[str, LabHost] = {}
    if cfg.labs.enabled:
        class_name, term_name = class_and_term_names(cfg.stack, cfg.access.term)
        for index, spec in enumerate(cfg.labs.hosts):
            lab_hosts[spec.name] = LabHost(
                f"lab-{spec.name}",
                LabHostArgs(
                    spec=spec,
                    labs=cfg.labs,
                    ca_public_key=ca.public_key,
                    class_name=class_name,
                    term=term_name,
                    # labd refuses ensure and session opens after it (no term: no end).
                    access_end=cfg.access.term.access_end if cfg.access.term is not None else None,
                    namespace=namespace_name,
                    ca_private_key=ca.private_key_openssh,
                    storage_class_name=lab_storage_class(cfg, spec, index) if spec.in_cluster else None,
                ),
                opts=in_namespace,
            )
    lab_urls = (
        {user: lab_hosts[host].labd_url for user, host in cfg.labs.placement.items()} if cfg.labs.enabled else None
    )
    server = LoginServer(
        "login",
        LoginServerArgs(
            config=cfg,
            ca_public_key=ca.public_key,
            ca_private_key=ca.private_key_openssh,
            ssh_service_name=SSH_SERVICE_NAME,
            labels=labels,
            depends_on=namespace_deps,
            roster_config_map=roster.config_map_name if roster else None,
            lab_urls=lab_urls,
        ),
    )
    ports = PortServices(
        "ports",
        PortServicesArgs(
            namespace=cfg.namespace,
            service=cfg.service,
            extra_ports=cfg.extra_ports,
            selector=server.selector_labels,
            labels=labels,
            depends_on=namespace_deps,
        ),
    )
    return Classroom(config=cfg, ca=ca, server=server, ports=ports, roster=roster, lab_hosts=lab_hosts)


def export(room: Classroom) -> None:
    cfg = room.config
    pulumi.export("namespace", cfg.namespace)
    pulumi.export("sshHost", room.ports.host)
    pulumi.export("sshPort", room.ports.port)
    pulumi.export("caPublicKey", room.ca.public_key)
    pulumi.export("knownHostsLine", room.ca.known_hosts_line)
    pulumi.export(
        "sshCommand",
        room.ports.host.apply(lambda host: f"ssh -p {cfg.service.port} {cfg.user}@{host or '<pending address>'}"),
    )

    if room.roster is not None:
        pulumi.export("roster", room.roster.summary)
        # Secret: certificates are not keys, but they are per-person access.
        pulumi.export("studentCertificates", room.roster.certificates)
    if room.lab_hosts:
        pulumi.export("labHosts", {name: h.labd_url for name, h in room.lab_hosts.items()})


if __name__ == "__main__":
    export(build(load_config()))
