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
from components.server import (
    BootFiles,
    DefaultUser,
    HomeStorage,
    LoginPod,
    LoginServer,
    LoginServerArgs,
    selector_labels,
)
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
            f"lab-{spec.name}-class", spec.storage_class_name, f"labs.hosts[{index}].storageClassName"
        )
    return cfg.managed_storage_class


def default_user(cfg: ClassroomConfig) -> DefaultUser:
    return DefaultUser(name=cfg.user, uid=cfg.user_id, ssh_key=cfg.user_ssh_key, ssh_import=cfg.user_ssh_import)


def boot_files(cfg: ClassroomConfig) -> BootFiles:
    return BootFiles(
        host_name=cfg.host_name,
        customize_repo=cfg.customize_repo,
        customize_repo_command=cfg.customize_repo_command,
        customize_command=cfg.customize_command,
        rc_env=cfg.rc_env,
        rc_env_is_secret=cfg.rc_env_is_secret,
        rc_local=cfg.rc_local,
        rc_user=cfg.rc_user,
    )


def home_storage(cfg: ClassroomConfig) -> HomeStorage:
    return HomeStorage(
        namespace=cfg.namespace,
        home_size=cfg.home_size,
        home_storage_class_name=cfg.home_storage_class_name,
        extra_mounts=cfg.extra_mounts,
        managed_class_name=cfg.managed_storage_class,
        provisioner=cfg.storage_provisioner,
        parameters=cfg.storage_parameters,
        create_managed_class=cfg.needs_managed_storage_class,
    )


def login_pod(cfg: ClassroomConfig) -> LoginPod:
    return LoginPod(
        image=cfg.image,
        resources=cfg.resources,
        privileged=cfg.privileged,
        ssh_port=cfg.service.port,
        extra_ports=cfg.extra_ports,
        node_selector=cfg.node_selector,
        tolerations=cfg.tolerations,
        affinity=cfg.affinity,
        annotations=cfg.pod_annotations,
    )


def build(cfg: ClassroomConfig) -> Classroom:
    labels = {
        "app.kubernetes.io/part-of": "classroom",
        "app.kubernetes.io/managed-by": "pulumi",
        contract.STACK_LABEL: cfg.stack,
    }
    # Every component gets the namespace as an Output of the Namespace (when the
    # stack creates it): everything in it, the claims first, depends on it
    # through that input, so a destroy can never delete it before them.
    namespace_name: pulumi.Input[str] = cfg.namespace
    if cfg.create_namespace:
        namespace = storage.create_namespace(cfg.namespace, labels)
        namespace_name = namespace.metadata.apply(lambda m: m.name or cfg.namespace)

    ca = SshCertificateAuthority(
        "ssh-ca",
        SshCertificateAuthorityArgs(
            namespace=namespace_name,
            algorithm=cfg.ssh.ca_algorithm,
            existing_secret=cfg.ssh.existing_secret,
            known_hosts_patterns=cfg.ssh.known_hosts_patterns,
        ),
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
            )
    lab_urls = (
        {user: lab_hosts[host].labd_url for user, host in cfg.labs.placement.items()} if cfg.labs.enabled else None
    )
    ports = PortServices(
        "ports",
        PortServicesArgs(
            namespace=namespace_name,
            service=cfg.service,
            extra_ports=cfg.extra_ports,
            selector=selector_labels(cfg.stack),
            labels=labels,
        ),
    )
    server = LoginServer(
        "login",
        LoginServerArgs(
            namespace=namespace_name,
            stack=cfg.stack,
            user=default_user(cfg),
            boot=boot_files(cfg),
            storage=home_storage(cfg),
            pod=login_pod(cfg),
            ca_public_key=ca.public_key,
            ca_private_key=ca.private_key_openssh,
            # The address students are told to use (sshHost) must be a principal, even one the
            # load balancer picked itself: else StrictHostKeyChecking refuses the certificate.
            extra_host_names=[ports.host, cfg.service.load_balancer_ip, *cfg.ssh.host_principals],
            ssh_service_name=SSH_SERVICE_NAME,
            labels=labels,
            roster_config_map=roster.config_map_name if roster else None,
            lab_urls=lab_urls,
            lab_session_key=cfg.labs.session_key,
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
