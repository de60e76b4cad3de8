"""LabHost: one Docker host that runs labd, Traefik and the students' k3d clusters.

A lab host is either an existing machine reached over SSH, or (for a
department with no spare machine) a privileged Docker-in-Docker pod the stack
runs itself. Either way the program drives it with pulumi-command over SSH:

1. verify-host (command.local.Command, on the machine running the engine):
   OpenSSH checks the host's certificate against the class CA (signature,
   host-certificate type, principal, validity) and prints the certificate the
   host presented. pulumi-command 1.2.1 cannot check a certificate against a
   CA: its `hostKey` only compares the presented key with one pinned string.
   So the verified certificate becomes that pin for every remote step below;
   a host presenting anything else is refused. A `hostKey` in the stack config
   skips this step and is pinned as given.
2. labd-files (remote.CopyToRemote): labd's package to a staging directory
   whose name carries the content hash, so new code is a new path.
3. install (remote.Command): labhost-install.py swaps labd into place, writes
   its config, keys, roster, Traefik's static config and the units, and
   restarts only what reads a changed file.
4. cluster-<user> (remote.Command), one per student placed on this host:
   `create` asks labd to create the cluster and stops it again; `delete`
   deletes it. Each is its own resource named by the username with triggers
   on that student's inputs only, so adding, removing or changing one student
   never touches another student's cluster.

Students never get a Docker socket: by default (engine "rootless") each
student's clusters run under a rootless dockerd of a host user of their own,
which labd (root) starts and drives on their behalf; see
containers/labd/SECURITY.md.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
from cryptography.hazmat.primitives import serialization

from components import contract, podspec, storage
from components.hostkeys import HOST_KEY_TYPES, HostKeySet, host_key_secret, host_key_volume, key_file
from components.labconfig import LabHostSpec, LabsConfig
from components.rosterdata import utc_stamp
from components.services import ingress_only_on

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"
LABD_PACKAGE = REPO / "containers" / "labd" / "labd"
VERIFY_SCRIPT = SCRIPTS / "labhost-verify-host.sh"
INSTALL_SCRIPT = SCRIPTS / "labhost-install.py"
CLUSTER_SCRIPT = SCRIPTS / "labhost-cluster.py"
# An in-cluster lab host's sshd reads the host keys the program made from here.
LABHOST_KEY_DIR = contract.HOST_KEY_DIR
HOST_PRINCIPALS_ANNOTATION = contract.HOST_PRINCIPALS_ANNOTATION

# Reads the manifest from stdin and runs the installer it carries, so one
# resource ships the installer, the files and the secrets together.
INSTALL_BOOTSTRAP = (
    "import json,sys;m=json.load(sys.stdin);g={'__name__':'labhost_install'};"
    "exec(compile(m.pop('installer'),'labhost-install.py','exec'),g);sys.exit(g['run'](m))"
)


def tree_hash(directory: Path) -> str:
    """Content hash of a source tree (names and bytes; caches ignored)."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def public_key_of(private_key: str, password: str = "") -> str:
    """The OpenSSH public key line of the engine's private key (for in-cluster hosts)."""
    # The schema accepts OpenSSH and PEM keys (components/schema.py private_key_problem): load either.
    secret = password.encode() or None
    if "BEGIN OPENSSH PRIVATE KEY" in private_key:
        key: Any = serialization.load_ssh_private_key(private_key.encode(), secret)
    else:
        key = serialization.load_pem_private_key(private_key.encode(), secret)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def install_command(spec: LabHostSpec) -> str:
    """The shell command that runs labhost-install.py from the manifest on its stdin."""
    return f"{shlex.quote(spec.python)} -c {shlex.quote(INSTALL_BOOTSTRAP)}"


def cluster_commands(spec: LabHostSpec, user: str) -> tuple[str, str]:
    """(create, delete) shell commands for one student's cluster on spec's host."""
    root = spec.install_root
    base = (
        f"PYTHONPATH={shlex.quote(root + '/opt/classroom-lab')} {shlex.quote(spec.python)} "
        f"{shlex.quote(root + '/opt/classroom-lab/bin/lab-cluster')} "
        f"--config {shlex.quote(root + '/etc/labd/labd.json')}"
    )
    return f"{base} create {shlex.quote(user)}", f"{base} delete {shlex.quote(user)}"


def labd_config(
    spec: LabHostSpec, labs: LabsConfig, class_name: str, term: str, access_end: datetime | None = None
) -> dict[str, Any]:
    """labd.json. `access_end` (the term's, UTC) makes labd refuse to start clusters after it.

    Without a term there is no accessEnd key: labd then has no end of access
    (it starts clusters as long as the login server lets the student in).
    """
    root = spec.install_root
    config: dict[str, Any] = {
        "listen": f"0.0.0.0:{spec.labd_port}",  # the login servers' session hook calls in (HMAC-signed)
        "class": class_name,
        "term": term,
        "labDomain": labs.domain,
        "stateFile": f"{root}/var/lib/labd/state.json",
        "workDir": f"{root}/var/lib/labd/clusters",
        "sessionKeyFile": f"{root}/etc/labd/session.key",
        "adminKeyFile": f"{root}/etc/labd/admin.key",
        "k3dBinary": spec.k3d_binary,
        "idleTimeout": labs.idle_timeout,
        "clusterPrefix": labs.cluster_prefix,
        "portBase": labs.port_base,
        "portLimit": labs.port_limit,
        "traefik": {"file": f"{root}/var/lib/labd/traefik/labs.yaml"},
        "k3d": {"template": labs.labd_template()},
        "rosterFile": f"{root}/etc/labd/roster",
        # The name the login server's hook calls this labd by (LabHost.labd_url): a session request
        # signed for another lab host of the class is refused here, not replayed.
        "hostNames": [f"{spec.address}:{spec.labd_port}"],
        # containers/labd/SECURITY.md: with "rootless" a student's cluster-admin is an unprivileged host user
        # of their own; "shared" (the inCluster host's pod dockerd) is one engine for all.
        "engine": spec.engine,
    }
    if spec.engine == "rootless":
        # Each engine's data (images, containers) under labd's state; sockets under /run/labd/engines.
        config["rootless"] = {"dataDir": f"{root}/var/lib/labd/engines"}
    if access_end is not None:
        # labd's own parser: YYYY-MM-DDTHH:MM:SSZ, the roster's format too.
        config["accessEnd"] = utc_stamp(access_end)
    hooks = {}
    for event, hook in (("init", labs.init_hook), ("cleanup", labs.cleanup_hook)):
        if hook is not None:
            hooks[event] = {
                "url": hook.url,
                "secretFile": f"{root}/etc/labd/hooks/{event}.secret",
                "timeout": hook.timeout,
                "retries": hook.retries,
            }
    if hooks:
        config["hooks"] = hooks
    return config


def traefik_static_config(spec: LabHostSpec) -> str:
    return (
        json.dumps(
            {
                "entryPoints": {"web": {"address": ":80"}, "websecure": {"address": ":443"}},
                "providers": {
                    "file": {"filename": f"{spec.install_root}/var/lib/labd/traefik/labs.yaml", "watch": True}
                },
                "log": {"level": "INFO"},
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )  # JSON is YAML; Traefik reads it as its static config


def systemd_unit(
    description: str, argv: Sequence[str], env: Mapping[str, str], service_lines: Sequence[str] = ()
) -> str:
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        f"ExecStart={' '.join(shlex.quote(a) for a in argv)}",
        "Restart=on-failure",
        *service_lines,
    ]
    lines += [f"Environment={k}={v}" for k, v in sorted(env.items())]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def install_manifest(
    spec: LabHostSpec,
    labs: LabsConfig,
    class_name: str,
    term: str,
    stage: str,
    students: Sequence[str],
    access_end: datetime | None = None,
) -> dict[str, Any]:
    """What labhost-install.py receives on stdin (holds the keys: always a secret)."""
    root = spec.install_root
    labd_env = {"PYTHONPATH": f"{root}/opt/classroom-lab"}
    labd_argv = [spec.python, "-m", "labd", "serve", "--config", f"{root}/etc/labd/labd.json"]
    traefik_argv = [spec.traefik_binary, f"--configFile={root}/etc/classroom-lab/traefik.yaml"]
    rootless = spec.engine == "rootless"

    def file(path: str, mode: str, content: str, restart: Sequence[str] = ()) -> dict[str, Any]:
        return {"path": path, "mode": mode, "content": content, "restart": list(restart)}

    files = [
        file(
            "/etc/labd/labd.json",
            "0600",
            json.dumps(labd_config(spec, labs, class_name, term, access_end), indent=2, sort_keys=True) + "\n",
            ["labd"],
        ),
        file("/etc/labd/session.key", "0600", labs.session_key + "\n", ["labd"]),
        file("/etc/labd/admin.key", "0600", labs.admin_key + "\n", ["labd"]),
        # labd re-reads the roster when it changes: no restart for a new student.
        file("/etc/labd/roster", "0644", "".join(f"{u}\n" for u in students)),
        file("/opt/classroom-lab/bin/lab-cluster", "0755", CLUSTER_SCRIPT.read_text()),
        file("/etc/classroom-lab/traefik.yaml", "0644", traefik_static_config(spec), ["traefik"]),
    ]
    for event, hook in (("init", labs.init_hook), ("cleanup", labs.cleanup_hook)):
        if hook is not None:
            files.append(file(f"/etc/labd/hooks/{event}.secret", "0600", hook.secret + "\n", ["labd"]))
    if spec.service_manager == "systemd":
        files.append(
            file(
                "/etc/systemd/system/classroom-labd.service",
                "0644",
                systemd_unit("classroom labd", labd_argv, labd_env, LABD_ROOTLESS_UNIT if rootless else ()),
                ["labd"],
            )
        )
        files.append(
            file(
                "/etc/systemd/system/classroom-traefik.service",
                "0644",
                systemd_unit("classroom lab edge router (Traefik)", traefik_argv, {}),
                ["traefik"],
            )
        )
    manifest: dict[str, Any] = {
        "installer": INSTALL_SCRIPT.read_text(),
        "root": root,
        "stage": stage,
        "serviceManager": spec.service_manager,
        "files": files,
        "services": {
            "labd": {"argv": labd_argv, "env": labd_env, "health": f"http://127.0.0.1:{spec.labd_port}/healthz"},
            "traefik": {"argv": traefik_argv, "optional": True},
        },
    }
    if rootless:
        # What labd's rootless engines need on the host (labd.engines); the installer apt-installs the missing.
        manifest["packages"] = list(ROOTLESS_PACKAGES)
    return manifest


def uninstall_command(spec: LabHostSpec) -> str:
    """Stop the services on destroy; files, clusters' images and labd's state stay."""
    if spec.service_manager == "systemd":
        return "systemctl disable --now classroom-labd.service classroom-traefik.service || true"
    run = shlex.quote(spec.install_root + "/run/classroom-lab")
    return f'for p in {run}/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; rm -f "$p"; done; true'


# Debian packages of a lab host whose labd runs each student's clusters under a rootless dockerd
# (containers/labd/SECURITY.md): docker.io ships dockerd-rootless.sh, the rest its user namespace and network.
ROOTLESS_PACKAGES = ("docker.io", "rootlesskit", "slirp4netns", "uidmap", "fuse-overlayfs")
# The students' engines are labd's children but must outlive a labd restart, as docker.service's containers did
# (labd adopts them again); labd is root, for useradd and to start each engine as its own user.
LABD_ROOTLESS_UNIT = ("KillMode=process",)

LAB_HOST_TYPE = "classroom:index:LabHost"
FORMER_LAB_HOST_TYPE = "classroom:labs:LabHost"  # until 2026-12; tests/labhost/test_labhost_token.py


@dataclass
class LabHostArgs:
    """What one lab host needs; the `inCluster` fields are required only for a host the stack runs itself."""

    spec: LabHostSpec
    """The host (`labs.hosts[i]`): address, ports, user, and the inCluster pod's image and sizes."""
    labs: LabsConfig
    """The class's `labs` section: the engine's SSH key, the cluster template, keys, the placement."""
    ca_public_key: pulumi.Input[str]
    """The class CA's public key: the host's certificate is checked against it before anything is copied."""
    class_name: str
    """The class, for labd's cluster labels (from the stack name)."""
    term: str
    """The term, for labd's cluster labels (from the stack name)."""
    access_end: datetime | None = None
    """The end of access: labd refuses ensure and session opens after it (None: no term, no end)."""
    namespace: pulumi.Input[str] | None = None
    """inCluster: the stack's namespace, as an Output of the Namespace so the claim depends on it."""
    ca_private_key: pulumi.Input[str] | None = None
    """inCluster: signs the pod's host certificate in the program (it never reaches the pod)."""
    storage_class_name: pulumi.Input[str] | None = None
    """inCluster: a StorageClass with reclaimPolicy Retain for the host's volume."""


class LabHost(pulumi.ComponentResource):
    """One lab host and the k3d clusters of the students placed on it."""

    host_key: pulumi.Output[str]
    connection: command.remote.ConnectionArgs
    install: command.remote.Command
    clusters: dict[str, command.remote.Command]
    labd_url: pulumi.Output[str]
    stateful_set: k8s.apps.v1.StatefulSet | None
    volume: k8s.core.v1.PersistentVolumeClaim | None
    service: k8s.core.v1.Service | None
    network_policy: k8s.networking.v1.NetworkPolicy | None

    def __init__(self, name: str, args: LabHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        spec, labs, ca_public_key = args.spec, args.labs, args.ca_public_key
        class_name, term, access_end = args.class_name, args.term, args.access_end
        namespace, ca_private_key, storage_class_name = args.namespace, args.ca_private_key, args.storage_class_name
        # The same token scheme as the other components; stacks deployed under the old token keep every
        # URN (the engine follows the alias to the parent and, through it, to every child).
        super().__init__(
            LAB_HOST_TYPE,
            name,
            None,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=FORMER_LAB_HOST_TYPE)])
            ),
        )
        child = pulumi.ResourceOptions(parent=self)
        students = labs.students_on(spec.name)
        self.stateful_set = self.volume = self.service = self.network_policy = None
        if spec.in_cluster:
            if namespace is None or ca_private_key is None or storage_class_name is None:
                raise ValueError(
                    "an inCluster lab host needs the stack's namespace, the CA private key and a "
                    "Retain StorageClass for its volume"
                )
            self._declare_pod(name, spec, labs, namespace, ca_private_key, storage_class_name, child)

        private_key = pulumi.Output.secret(labs.private_key) if labs.private_key else None
        if spec.host_key:
            self.host_key = pulumi.Output.from_input(spec.host_key)
            verify_deps: list[pulumi.Resource] = []
        else:
            pod_deps: list[pulumi.Resource] = [self.stateful_set] if self.stateful_set is not None else []
            env: dict[str, pulumi.Input[str]] = {
                "LABHOST_ADDRESS": spec.address,
                "LABHOST_PORT": str(spec.port),
                "LABHOST_USER": spec.user,
                "LABHOST_PRINCIPAL": spec.cert_principal,
                "LABHOST_CA": ca_public_key,
            }
            if private_key is not None:
                env["LABHOST_KEY"] = private_key
            elif labs.agent_socket:
                env["LABHOST_AGENT"] = labs.agent_socket
            verify = command.local.Command(
                f"{name}-verify-host",
                create=VERIFY_SCRIPT.read_text(),
                interpreter=["/bin/sh", "-c"],
                environment=env,
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=pod_deps),
            )
            self.host_key = verify.stdout.apply(lambda out: out.strip())
            verify_deps = [verify]

        self.connection = command.remote.ConnectionArgs(
            host=spec.address,
            port=float(spec.port),
            user=spec.user,
            private_key=private_key,
            private_key_password=pulumi.Output.secret(labs.private_key_password) if labs.private_key_password else None,
            agent_socket_path=labs.agent_socket or None,
            host_key=self.host_key,
            per_dial_timeout=15,
            dial_error_limit=4,
        )

        code_hash = tree_hash(LABD_PACKAGE)
        stage = f"{spec.install_root}/var/lib/classroom-lab/stage/labd-{code_hash}"
        files = command.remote.CopyToRemote(
            f"{name}-labd-files",
            connection=self.connection,
            source=pulumi.FileArchive(str(LABD_PACKAGE)),
            remote_path=stage,
            triggers=[code_hash],
            opts=pulumi.ResourceOptions(parent=self, depends_on=verify_deps),
        )
        manifest = json.dumps(
            install_manifest(spec, labs, class_name, term, stage, students, access_end), sort_keys=True
        )
        install_cmd = install_command(spec)
        self.install = command.remote.Command(
            f"{name}-install",
            connection=self.connection,
            create=install_cmd,
            update=install_cmd,
            delete=uninstall_command(spec),
            stdin=pulumi.Output.secret(manifest),
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[files]),
        )

        self.clusters = {}
        for user in students:
            create, delete = cluster_commands(spec, user)
            self.clusters[user] = command.remote.Command(
                f"{name}-cluster-{user}",
                connection=self.connection,
                create=create,
                # A changed connection (key rotation, re-verified host) re-runs
                # the idempotent create: it keeps an existing cluster as is.
                update=create,
                delete=delete,
                triggers=[user, spec.name, labs.cluster_prefix],
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.install], delete_before_replace=False),
            )

        self.labd_url = pulumi.Output.from_input(f"http://{spec.address}:{spec.labd_port}")
        self.register_outputs({"hostKey": self.host_key, "labdUrl": self.labd_url, "students": list(students)})

    def _declare_pod(
        self,
        name: str,
        spec: LabHostSpec,
        labs: LabsConfig,
        namespace: pulumi.Input[str],
        ca_private_key: pulumi.Input[str],
        storage_class_name: pulumi.Input[str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """A privileged Docker-in-Docker pod with sshd: StatefulSet of 1 and its own protected volume.

        The volume is a PVC declared here (not a volumeClaimTemplate, which
        cannot change after creation), protected and retained like the
        homes: Docker's images, the clusters and labd's state live on it.
        Privilege is confined to this pod; the login server never gets it.
        """
        base = f"labhost-{spec.name}"
        labels = {"app.kubernetes.io/name": "classroom-labhost", "app.kubernetes.io/instance": base}
        # The policy pack's contract: privileged pods and Service ports are declared, not incidental.
        privileged = {contract.PRIVILEGED_ANNOTATION: "true"}
        service_ports = (22, spec.labd_port, 80, 443)
        meta = k8s.meta.v1.ObjectMetaArgs
        claim = f"{base}-data"
        # Protected and retained like the homes, on a Retain class: Docker's images, the clusters and
        # labd's state outlive the claim. The namespace (an Output of the Namespace) is an input: the
        # claim depends on it, so the namespace can never be deleted before the claim.
        self.volume = storage.persistent_claim(
            f"{name}-data",
            claim_name=claim,
            namespace=namespace,
            size=spec.storage_size,
            storage_class_name=storage_class_name,
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Every name the engine or a login server may use for this pod.
        principals = pulumi.Output.from_input(namespace).apply(
            lambda ns: list(
                dict.fromkeys(
                    [spec.cert_principal, base, f"{base}.{ns}", f"{base}.{ns}.svc", f"{base}.{ns}.svc.cluster.local"]
                )
            )
        )
        # Signed here, at deploy time: the pod gets its host keys and certificates, never the CA key.
        self.host_keys = HostKeySet(
            f"{name}-host-keys",
            ca_private_key=ca_private_key,
            principals=principals,
            key_id=f"host:{spec.cert_principal}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        host_keys_secret = host_key_secret(
            f"{name}-host-key-secret",
            secret_name=f"{base}-host-keys",
            namespace=namespace,
            keys=self.host_keys,
            labels=labels,
            opts=child,
        )
        # sshd reads its certificates only at start: new principals roll the pod.
        template_annotations = principals.apply(
            lambda names: {
                **privileged,
                HOST_PRINCIPALS_ANNOTATION: hashlib.sha256(json.dumps(names).encode()).hexdigest(),
            }
        )
        scripts = k8s.core.v1.ConfigMap(
            f"{name}-scripts",
            metadata=meta(name=f"{base}-scripts", namespace=namespace, labels=labels),
            data={
                "start.sh": (
                    "set -eu\n"
                    "mkdir -p /run/sshd /data/docker /data/var\n"
                    "/usr/sbin/sshd -f /etc/ssh/classroom/sshd_config -e\n"
                    # labd and Traefik were installed onto the volume by the engine;
                    # bring them back after a pod restart without waiting for `pulumi up`.
                    "if [ -f /data/etc/labd/labd.json ]; then\n"
                    "  (sleep 5; PYTHONPATH=/data/opt/classroom-lab python3 -m labd serve "
                    "--config /data/etc/labd/labd.json >>/data/var/labd.log 2>&1) &\n"
                    "fi\n"
                    "exec dockerd-entrypoint.sh --data-root /data/docker\n"
                ),
                "sshd_config": (
                    "Port 22\n"
                    + "".join(
                        f"HostKey {LABHOST_KEY_DIR}/{key_file(kind)}\n"
                        f"HostCertificate {LABHOST_KEY_DIR}/{key_file(kind)}-cert.pub\n"
                        for kind in HOST_KEY_TYPES
                    )
                    + "AuthorizedKeysFile /etc/ssh/classroom/authorized_keys\n"
                    "PermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\n"
                    "X11Forwarding no\n"
                    "AllowTcpForwarding no\n"
                ),
                "authorized_keys": public_key_of(labs.private_key, labs.private_key_password) + "\n",
            },
            opts=child,
        )
        # Only the Service's ports reach the pod. Students' pods share the cluster network with it, and
        # dockerd (its API on 2375/2376 in Docker-in-Docker images), the k3d API servers and anything a
        # student's cluster publishes on the pod must stay out of their reach.
        self.network_policy = ingress_only_on(
            f"{name}-ingress",
            name=f"{base}-ingress",
            namespace=namespace,
            selector=labels,
            ports=[(port, "TCP") for port in service_ports],
            labels=labels,
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-svc",
            metadata=meta(
                name=base,
                namespace=namespace,
                labels=labels,
                annotations={contract.ALLOWED_PORTS_ANNOTATION: ",".join(str(p) for p in service_ports)},
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=labels,
                ports=[
                    k8s.core.v1.ServicePortArgs(name="ssh", port=22, target_port=22),
                    k8s.core.v1.ServicePortArgs(name="labd", port=spec.labd_port, target_port=spec.labd_port),
                    k8s.core.v1.ServicePortArgs(name="http", port=80, target_port=80),
                    k8s.core.v1.ServicePortArgs(name="https", port=443, target_port=443),
                ],
            ),
            opts=child,
        )
        mounts = k8s.core.v1.VolumeMountArgs
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-pod",
            metadata=meta(name=base, namespace=namespace, labels=labels, annotations=privileged),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1,
                service_name=base,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=meta(labels=labels, annotations=template_annotations),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="labhost",
                                image=spec.image,
                                command=["/bin/sh", "/scripts/start.sh"],
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(name="ssh", container_port=22),
                                    k8s.core.v1.ContainerPortArgs(name="labd", container_port=spec.labd_port),
                                    k8s.core.v1.ContainerPortArgs(name="http", container_port=80),
                                    k8s.core.v1.ContainerPortArgs(name="https", container_port=443),
                                ],
                                # Docker-in-Docker needs a privileged container; this
                                # pod is the only privileged thing the stack runs.
                                security_context=podspec.privileged(),
                                resources=podspec.resources(
                                    {"cpu": "500m", "memory": "1Gi"}, {"cpu": spec.cpu, "memory": spec.memory}
                                ),
                                volume_mounts=[
                                    mounts(name="data", mount_path="/data"),
                                    mounts(name="scripts", mount_path="/scripts", read_only=True),
                                    mounts(name="sshd", mount_path="/etc/ssh/classroom", read_only=True),
                                    mounts(name="host-keys", mount_path=LABHOST_KEY_DIR, read_only=True),
                                ],
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=22), period_seconds=10
                                ),
                            )
                        ],
                        volumes=[
                            podspec.claim_volume("data", claim),
                            podspec.config_map_volume("scripts", scripts.metadata.name, keys=["start.sh"]),
                            podspec.config_map_volume(
                                "sshd", scripts.metadata.name, mode=0o644, keys=["sshd_config", "authorized_keys"]
                            ),
                            host_key_volume(
                                "host-keys", host_keys_secret.metadata.apply(lambda m: m.name or f"{base}-host-keys")
                            ),
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.volume, scripts, host_keys_secret]),
        )
