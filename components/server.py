"""LoginServer: the class's shared login server as a one-replica StatefulSet.

Layout inside the pod (one container, `login`; no init container):
  /etc/ssh/host        the Secret `ssh-host-keys`: host keys (0400) and their
                       certificates, made and signed by the program at deploy
                       time (hostkeys.py). No pod ever mounts the CA private key.
  /etc/ssh/classroom   the CA public key (and the revocation list);
  sshd_config, rc.env/rc.local/rc.user, /home and every extra mount.

Storage: the claims are declared by the program and referenced by name
(see storage.py) - never volumeClaimTemplates, which cannot change after the
StatefulSet exists (the lesson of the cloud-server chart's history).

Modes:
  privileged   systemd is PID 1 (the image's entrypoint) and runs rc.local via
               rc-local.service; needs `privileged: true`; SYS_ADMIN lets
               rc.local set the hostname. VM-like, students can get sudo.
  unprivileged the container runs classroom-entrypoint (rc.local, then sshd
               -D) as root but with only the capabilities sshd and account
               setup need, no privilege escalation (so no sudo for students),
               RuntimeDefault seccomp.

Labs (when the stack has them): a ConfigMap `lab-session-scripts` (the PAM
session hook, its PAM snippet and install-lab-session.sh) mounted at
/etc/classroom/lab-session, which rc.local installs; and a Secret
`lab-session` (config.json: user -> labd URL from the placement, hostId;
session.key: the class's labd session key) mounted read-only, mode 0400, at
/etc/lab-session-hook in the login container, root-only on disk, so students cannot sign requests.

A checksum over every script, config file and the CA public key is a pod
annotation, so changing any of them rolls the pod. The lab session Secret is
deliberately outside it: the hook reads config.json and session.key afresh on
every call from a directory mount that the kubelet keeps current, so a new
student (a new `urls` entry) or a rotated key reaches the pod without
restarting it and dropping every student's session (the roster's rule too).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import contract, podspec, storage
from components.config import Image, Mount, Port, Resources
from components.hostkeys import HostKeySet, host_key_secret, host_key_volume
from components.services import ALLOWED_PORTS_ANNOTATION, allowed_ports, container_ports

SCRIPTS = Path(__file__).parent / "scripts"

STATEFULSET_NAME = "login"
HEADLESS_SERVICE_NAME = "login-headless"
HOME_CLAIM = "home"
CHECKSUM_ANNOTATION = contract.CHECKSUM_ANNOTATION
PRIVILEGED_ANNOTATION = contract.PRIVILEGED_ANNOTATION
ENTRYPOINT_PATH = "/usr/local/sbin/classroom-entrypoint"
ROSTER_MOUNT = contract.ROSTER_MOUNT
CA_PUBLIC_DIR = contract.CA_PUBLIC_DIR
HOST_KEY_DIR = contract.HOST_KEY_DIR
HOST_KEYS_SECRET = "ssh-host-keys"
# sshd_config's RevokedKeys. The roster reconciler (re)builds it; rc.local
# creates an empty one first, because sshd refuses every key while it is
# missing and an empty file revokes nothing.
REVOKED_KEYS_FILE = contract.REVOKED_KEYS_FILE

# Lab session hook (labs enabled only).
LAB_SESSION_SECRET = "lab-session"
LAB_SESSION_DIR = contract.LAB_SESSION_DIR  # the hook's default config path lives here
LAB_SCRIPTS_CONFIG_MAP = "lab-session-scripts"
LAB_SCRIPTS_DIR = contract.LAB_SCRIPTS_DIR  # rc.local runs install-lab-session.sh from here
LAB_SESSION_ROLE = {contract.ROLE_LABEL: contract.LAB_SESSION_ROLE}
# Sessions are keyed by this id at labd; the pod name of the one replica is
# stable across restarts (the hostname is not: rc.local may change it).
LAB_HOST_ID = f"{STATEFULSET_NAME}-0"
LAB_SCRIPT_FILES = ("lab-session-hook", "pam-lab-session", "install-lab-session.sh")

# Unprivileged mode keeps only what sshd (privilege separation, PAM audit,
# port 22, pty ownership) and rc.local (useradd, install -o) need; Docker's
# default set minus MKNOD, NET_RAW, SETFCAP, SETPCAP and FSETID.
UNPRIVILEGED_CAPABILITIES = (
    "AUDIT_WRITE",  # sshd/PAM write login audit records
    "CHOWN",  # sshd chowns the session pty; useradd/install -o
    "DAC_OVERRIDE",  # root reads users' 0700 files (authorized keys checks, home setup)
    "FOWNER",  # chmod on files root does not own (pty, home skeleton)
    "KILL",  # sshd signals its privilege-separated children
    "NET_BIND_SERVICE",  # listen on port 22
    "SETGID",  # drop to the user's groups
    "SETUID",  # drop to the user
    "SYS_CHROOT",  # privsep child chroots to /run/sshd
)


def extra_claim_name(mount_name: str) -> str:
    return f"extra-{mount_name}"


def selector_labels(stack: str) -> dict[str, str]:
    """The labels that select the login pod (the StatefulSet's and every Service's selector)."""
    return {
        "app.kubernetes.io/name": "classroom",
        "app.kubernetes.io/instance": stack,
        "app.kubernetes.io/component": "login",
    }


def host_principals(host_name: str, namespace: str, ssh_service_name: str, extra: Sequence[str] = ()) -> list[str]:
    """Every name a student may use to reach the server (host-cert principals), `extra` last ("" skipped)."""
    ns = namespace
    names = [
        host_name,
        f"{STATEFULSET_NAME}-0",
        f"{STATEFULSET_NAME}-0.{HEADLESS_SERVICE_NAME}.{ns}.svc.cluster.local",
        ssh_service_name,
        f"{ssh_service_name}.{ns}",
        f"{ssh_service_name}.{ns}.svc",
        f"{ssh_service_name}.{ns}.svc.cluster.local",
    ]
    names.extend(name for name in extra if name)
    return list(dict.fromkeys(names))  # de-duplicate, keep order


@dataclass(frozen=True)
class DefaultUser:
    """The image's default account, as the cloud-server chart names it in rc.env."""

    name: str
    """`user`: the account rc.local creates (the instructor's own, or the chart's `human`)."""
    uid: int
    """`userId`: its UID."""
    ssh_key: str = ""
    """`userSshKey`: a public key rc.local installs for it."""
    ssh_import: str = ""
    """`userSshImport`: an `ssh-import-id` source (`gh:name`, `lp:name`)."""


@dataclass(frozen=True)
class BootFiles:
    """What the pod runs at boot: rc.env's variables and the stack's own rc files."""

    host_name: str
    """`hostName`: the hostname rc.local sets (and the first host-certificate principal)."""
    customize_repo: str = ""
    """`customizeRepo`: a git repository rc.local clones into the default user's home."""
    customize_repo_command: str = ""
    """`customizeRepoCommand`: run in that clone."""
    customize_command: str = ""
    """`customizeCommand`: run in the default user's home."""
    rc_env: str = ""
    """`rcEnv`: shell assignments appended to rc.env."""
    rc_env_is_secret: bool = False
    """`rcEnv` was set with `--secret`: rc.env becomes a Secret (mode 0400)."""
    rc_local: str = ""
    """`rcLocal`: replaces the shipped rc.local ("" = the shipped one)."""
    rc_user: str = ""
    """`rcUser`: replaces the shipped rc.user ("" = the shipped one)."""


@dataclass(frozen=True)
class HomeStorage:
    """The server's claims: /home and the extra mounts, and the Retain class for those without a class."""

    namespace: str
    """`namespace` as configured, for the claim guard: a plain name, so a change is refused at preview
    even though a replaced Namespace's name is unknown until it is applied."""
    home_size: str
    """`homeSize`."""
    home_storage_class_name: str
    """`homeStorageClassName` ("" = the class this stack manages)."""
    extra_mounts: Sequence[Mount]
    """`extraMounts`: one claim each."""
    managed_class_name: str
    """The Retain StorageClass the stack creates when any claim names no class."""
    provisioner: str
    """`storageProvisioner` of that class."""
    parameters: Mapping[str, str]
    """`storageParameters` of that class."""
    create_managed_class: bool
    """Create that class here: some claim of the stack names no class (an in-cluster lab host's too)."""


@dataclass(frozen=True)
class LoginPod:
    """How the login pod runs and where it is scheduled."""

    image: Image
    """`image`: repository, tag, pull policy and pull secrets."""
    resources: Resources
    """`resources`: the login container's requests and limits."""
    privileged: bool
    """`privileged`: systemd as PID 1 (VM-like) or the confined entrypoint."""
    ssh_port: int
    """`service.port`: the SSH port number Services publish (the container always listens on 22)."""
    extra_ports: Sequence[Port] = ()
    """`extraPorts`: container ports, named as the Service ports that target them."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """`nodeSelector`."""
    tolerations: Sequence[Mapping[str, object]] = ()
    """`tolerations`."""
    affinity: Mapping[str, object] = field(default_factory=dict)
    """`affinity`."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """`podAnnotations`: added to the pod template's annotations."""


def render_rc_env(user: DefaultUser, boot: BootFiles, privileged: bool) -> str:
    """/etc/rc.env: the chart's variables, shell-quoted and exported, then the stack's rcEnv.

    Names and `export` as the cloud-server chart writes them, so a chart
    user's own rcLocal/rcUser (which may source rc.env without `set -a`, and
    run rc.user as a child) keeps seeing them. DEFAULT_UID is this program's
    older name for DEFAULT_USER_ID, kept for scripts that use it.
    """
    variables = {
        "DEFAULT_USER": user.name,
        "DEFAULT_USER_ID": str(user.uid),
        "DEFAULT_UID": str(user.uid),
        "DEFAULT_KEY": user.ssh_key,
        "DEFAULT_KEY_IMPORT": user.ssh_import,
        "SET_HOSTNAME": boot.host_name,
        "CUSTOMIZE_REPO": boot.customize_repo,
        "CUSTOMIZE_REPO_COMMAND": boot.customize_repo_command,
        "CUSTOMIZE_COMMAND": boot.customize_command,
        "CLASSROOM_PRIVILEGED": "true" if privileged else "false",
    }
    lines = ["# Generated by the classroom Pulumi program from the stack config."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    text = "\n".join(lines) + "\n"
    if boot.rc_env:
        text += "# --- classroom:rcEnv ---\n" + boot.rc_env.rstrip("\n") + "\n"
    return text


def pod_files(user: DefaultUser, boot: BootFiles, privileged: bool) -> dict[str, str]:
    """Every file the pod gets from the program, keyed by ConfigMap/Secret name."""
    files = {
        "rc-env": render_rc_env(user, boot, privileged),
        "rc-local": boot.rc_local or (SCRIPTS / "rc.local").read_text(),
        "rc-user": boot.rc_user or (SCRIPTS / "rc.user").read_text(),
        "sshd-config": (SCRIPTS / "sshd_config").read_text(),
    }
    if not privileged:
        files["entrypoint"] = (SCRIPTS / "entrypoint-unprivileged.sh").read_text()
    return files


def lab_session_scripts() -> dict[str, str]:
    """The files of the lab-session-scripts ConfigMap, read from components/scripts."""
    return {name: (SCRIPTS / name).read_text() for name in LAB_SCRIPT_FILES}


def lab_session_config(urls: Mapping[str, str]) -> str:
    """The hook's /etc/lab-session-hook/config.json.

    Only `urls` (no `url` fallback): a user the placement does not name - the
    instructor, a student without labs - has no lab, and the hook ignores them.
    """
    config = {
        "urls": dict(sorted(urls.items())),
        "keyFile": f"{LAB_SESSION_DIR}/session.key",
        "hostId": LAB_HOST_ID,
        "minUid": 1000,
        "requestTimeout": 3,
        "readyTimeout": 900,
        "stateDir": "/run/lab-session-hook",
        "writeKubeconfig": True,
        # The PAM side runs detached with no terminal: without a file its errors are lost.
        "logFile": "/var/log/lab-session-hook.log",
    }
    return json.dumps(config, indent=1, sort_keys=True) + "\n"


def config_checksum(files: Mapping[str, str], *extra: str) -> str:
    """sha256 over all pod files (and e.g. the CA public key): changes roll the pod."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(sorted(files.items())), sort_keys=True).encode())
    for item in extra:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()


@dataclass
class LoginServerArgs:
    """What the login server needs, each piece narrow and typed (__main__ maps the stack config onto them)."""

    namespace: pulumi.Input[str]
    """The stack's namespace, as an Output of the Namespace when the stack creates it, so that every
    object in it depends on it (and a destroy can never delete it before the claims)."""
    stack: str
    """The stack name: the pods' `app.kubernetes.io/instance` label."""
    user: DefaultUser
    boot: BootFiles
    storage: HomeStorage
    pod: LoginPod
    ca_public_key: pulumi.Input[str]
    """The class CA's public key: sshd trusts user certificates signed by it."""
    ca_private_key: pulumi.Input[str]
    """Signs the host certificates in the program (a Pulumi secret); it never reaches the cluster."""
    extra_host_names: Sequence[pulumi.Input[str]] = ()
    """More host-certificate principals: the public Service's address (an Output: the one the load balancer
    assigned, which the `sshHost` output and the printed ssh command name), `service.loadBalancerIP` and
    `ssh.hostPrincipals`. An empty name (no address yet) is skipped."""
    ssh_service_name: str = "ssh"
    """The public Service's name (PortServices), whose DNS names are principals too."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels every object gets."""
    roster_config_map: pulumi.Input[str] | None = None
    """The roster ConfigMap mounted at /etc/classroom/roster; rc.local runs its apply-roster.sh at boot."""
    roster_revision: pulumi.Input[str] | None = None
    """A digest of the roster content, part of the pod checksum only when given (a change then rolls the pod)."""
    lab_urls: Mapping[str, pulumi.Input[str]] | None = None
    """Labs: user name -> URL of the labd holding that student's cluster (placement + LabHost.labd_url).
    None: the stack has no labs, and the pod gets no hook, no key and no sudo rule."""
    lab_session_key: str = ""
    """`labs.sessionKey`: signs the hook's requests to labd (required with lab_urls)."""


class LoginServer(pulumi.ComponentResource):
    """StatefulSet of one login server, its ConfigMaps and its volumes."""

    stateful_set: k8s.apps.v1.StatefulSet
    headless_service: k8s.core.v1.Service
    claims: dict[str, k8s.core.v1.PersistentVolumeClaim]
    storage_class: k8s.storage.v1.StorageClass | None
    selector_labels: dict[str, str]
    pod_config: list[pulumi.Resource]
    checksum: pulumi.Output[str]

    def __init__(self, name: str, args: LoginServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("classroom:index:LoginServer", name, None, opts)
        ns, home, pod = args.namespace, args.storage, args.pod
        child = pulumi.ResourceOptions(parent=self)
        self.selector_labels = selector_labels(args.stack)
        labels = {**args.labels, **self.selector_labels}

        # ---- storage: Retain class, claims (protected, retained)
        self.storage_class = None
        if home.create_managed_class:
            self.storage_class = storage.retain_storage_class(
                home.managed_class_name,
                home.provisioner,
                home.parameters,
                labels,
                opts=pulumi.ResourceOptions(parent=self),
            )
        checked: dict[str, pulumi.Output[str]] = {}

        def class_for(explicit: str, key: str) -> pulumi.Input[str]:
            if not explicit:
                assert self.storage_class is not None
                return self.storage_class.metadata.apply(lambda m: m.name or home.managed_class_name)
            if explicit not in checked:
                checked[explicit] = storage.require_retain_class(
                    f"class-{explicit}", explicit, key, opts=pulumi.ResourceOptions(parent=self)
                )
            return checked[explicit]

        # What shapes the claims, recorded so a later preview refuses any change
        # they cannot take in place (storage.refused_claim_changes).
        shape = {
            HOME_CLAIM: {
                "size": home.home_size,
                "storageClassName": home.home_storage_class_name,
                "key": "homeSize",
                "classKey": "homeStorageClassName",
            }
        }
        for index, mount in enumerate(home.extra_mounts):
            shape[extra_claim_name(mount.name)] = {
                "size": mount.size,
                "storageClassName": mount.storage_class_name,
                "key": f"extraMounts[{index}].size",
                "classKey": f"extraMounts[{index}].storageClassName",
            }
        guard = storage.ClaimGuard(
            "claim-guard",
            namespace=home.namespace,
            claims=shape,
            managed_class={"provisioner": home.provisioner, "parameters": dict(home.parameters)}
            if self.storage_class is not None
            else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        claim_deps = [guard]

        self.claims = {}
        self.claims[HOME_CLAIM] = storage.persistent_claim(
            "home",
            claim_name=HOME_CLAIM,
            namespace=ns,
            size=home.home_size,
            storage_class_name=class_for(home.home_storage_class_name, "homeStorageClassName"),
            labels=labels,
            depends_on=claim_deps,
            opts=pulumi.ResourceOptions(parent=self),
        )
        for index, mount in enumerate(home.extra_mounts):
            self.claims[mount.name] = storage.persistent_claim(
                f"extra-{mount.name}",
                claim_name=extra_claim_name(mount.name),
                namespace=ns,
                size=mount.size,
                storage_class_name=class_for(mount.storage_class_name, f"extraMounts[{index}].storageClassName"),
                labels=labels,
                depends_on=claim_deps,
                opts=pulumi.ResourceOptions(parent=self),
            )

        # ---- ConfigMaps (rc.env becomes a Secret when the stack marks it secret)
        files = pod_files(args.user, args.boot, pod.privileged)
        ca_pub = pulumi.Output.from_input(args.ca_public_key).apply(lambda k: k.strip() + "\n")
        ca_public_files: dict[str, pulumi.Input[str]] = {"ca.pub": ca_pub}
        # The pod mounts all of these; the StatefulSet waits for them so its
        # first pod does not sit in ContainerCreating on a missing volume.
        self.pod_config: list[pulumi.Resource] = []
        for cm_name, content in files.items():
            if cm_name == "rc-env" and args.boot.rc_env_is_secret:
                secret = k8s.core.v1.Secret(
                    cm_name,
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=cm_name, namespace=ns, labels=labels),
                    string_data={"rc.env": pulumi.Output.secret(content)},
                    opts=child,
                )
                self.pod_config.append(secret)
                continue
            config_map = k8s.core.v1.ConfigMap(
                cm_name,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=cm_name, namespace=ns, labels=labels),
                data={_file_key(cm_name): content},
                opts=child,
            )
            self.pod_config.append(config_map)
        ca_config_map = k8s.core.v1.ConfigMap(
            "ca-public-key",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="ca-public-key", namespace=ns, labels=labels),
            data=ca_public_files,
            opts=child,
        )
        self.pod_config.append(ca_config_map)

        # ---- host keys and certificates, signed here; the pod mounts only them.
        principals = pulumi.Output.all(ns, *args.extra_host_names).apply(
            lambda names: host_principals(args.boot.host_name, names[0], args.ssh_service_name, names[1:])
        )
        self.host_keys = HostKeySet(
            "host-keys",
            ca_private_key=args.ca_private_key,
            principals=principals,
            key_id=f"host:{args.boot.host_name}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.pod_config.append(
            host_key_secret(
                HOST_KEYS_SECRET,
                secret_name=HOST_KEYS_SECRET,
                namespace=ns,
                keys=self.host_keys,
                labels=labels,
                opts=child,
            )
        )

        # sshd reads its host certificates only at start: new principals roll the pod.
        checksum_files = dict(files)
        self.lab_session_secret: k8s.core.v1.Secret | None = None
        if args.lab_urls is not None:
            if not args.lab_session_key:
                raise ValueError("lab_urls given but the stack's labs.sessionKey is empty")
            scripts = lab_session_scripts()
            checksum_files.update({f"{LAB_SCRIPTS_CONFIG_MAP}/{k}": v for k, v in scripts.items()})
            self.pod_config.append(
                k8s.core.v1.ConfigMap(
                    LAB_SCRIPTS_CONFIG_MAP,
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=LAB_SCRIPTS_CONFIG_MAP, namespace=ns, labels={**labels, **LAB_SESSION_ROLE}
                    ),
                    data=scripts,
                    opts=child,
                )
            )
            urls: pulumi.Output[dict[str, str]] = (
                pulumi.Output.all(**dict(args.lab_urls)).apply(lambda u: {str(k): str(v) for k, v in u.items()})
                if args.lab_urls
                else pulumi.Output.from_input({})
            )
            self.lab_session_secret = k8s.core.v1.Secret(
                LAB_SESSION_SECRET,
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=LAB_SESSION_SECRET, namespace=ns, labels={**labels, **LAB_SESSION_ROLE}
                ),
                type="Opaque",
                string_data={
                    "config.json": urls.apply(lab_session_config),
                    "session.key": pulumi.Output.secret(args.lab_session_key.strip() + "\n"),
                },
                opts=child,
            )
            self.pod_config.append(self.lab_session_secret)

        checksum_parts: list[pulumi.Input[str]] = [args.ca_public_key]
        if args.roster_revision is not None:
            checksum_parts.append(args.roster_revision)
        self.checksum = pulumi.Output.all(principals, *checksum_parts).apply(
            lambda parts: config_checksum(
                {**checksum_files, "host-principals": json.dumps(parts[0])}, *[str(p) for p in parts[1:]]
            )
        )

        # ---- headless Service the StatefulSet names (stable pod DNS)
        self.headless_service = k8s.core.v1.Service(
            "headless",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=HEADLESS_SERVICE_NAME,
                namespace=ns,
                labels=labels,
                annotations={ALLOWED_PORTS_ANNOTATION: allowed_ports(pod.ssh_port, pod.extra_ports)},
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=self.selector_labels,
                # The same SSH port number as the public Service, so no Service
                # publishes a port the stack did not configure.
                ports=[k8s.core.v1.ServicePortArgs(name="ssh", port=pod.ssh_port, target_port="ssh", protocol="TCP")],
            ),
            opts=child,
        )

        pod_spec = build_pod_spec(args)
        self.stateful_set = k8s.apps.v1.StatefulSet(
            "statefulset",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STATEFULSET_NAME, namespace=ns, labels=labels),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1,
                service_name=HEADLESS_SERVICE_NAME,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector_labels),
                update_strategy=k8s.apps.v1.StatefulSetUpdateStrategyArgs(type="RollingUpdate"),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=labels,
                        annotations=self.checksum.apply(
                            lambda digest: {
                                **pod.annotations,
                                CHECKSUM_ANNOTATION: digest,
                                # Policy-pack contract: privileged pods say the stack asked for it.
                                PRIVILEGED_ANNOTATION: "true" if pod.privileged else "false",
                            }
                        ),
                    ),
                    spec=pod_spec,
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.claims.values(), *self.pod_config]),
        )
        self.register_outputs(
            {"stateful_set": self.stateful_set.metadata.apply(lambda m: m.name), "checksum": self.checksum}
        )


def _file_key(cm_name: str) -> str:
    return {
        "rc-env": "rc.env",
        "rc-local": "rc.local",
        "rc-user": "rc.user",
        "sshd-config": "sshd_config",
        "entrypoint": "classroom-entrypoint",
    }[cm_name]


def _file_mount(volume: str, path: str) -> k8s.core.v1.VolumeMountArgs:
    # subPath: one file from a ConfigMap without hiding the image's directory.
    return k8s.core.v1.VolumeMountArgs(name=volume, mount_path=path, sub_path=_file_key(volume), read_only=True)


def build_pod_spec(args: LoginServerArgs) -> k8s.core.v1.PodSpecArgs:
    """The pod: one container, `login`."""
    pod, mounts = args.pod, args.storage.extra_mounts
    volumes = [
        podspec.claim_volume("home", HOME_CLAIM),
        *[podspec.claim_volume(extra_claim_name(m.name), extra_claim_name(m.name)) for m in mounts],
        # A Secret volume is tmpfs on the node: the host private keys never touch its disk.
        host_key_volume("host-keys", HOST_KEYS_SECRET),
        podspec.config_map_volume("ca-public", "ca-public-key", mode=0o444, keys=["ca.pub"]),
        podspec.config_map_volume("sshd-config", "sshd-config", mode=0o444),
        podspec.config_map_volume("rc-local", "rc-local", mode=0o755),
        podspec.config_map_volume("rc-user", "rc-user", mode=0o755),
    ]
    if args.boot.rc_env_is_secret:
        volumes.append(
            k8s.core.v1.VolumeArgs(
                name="rc-env", secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name="rc-env", default_mode=0o400)
            )
        )
    else:
        volumes.append(podspec.config_map_volume("rc-env", "rc-env", mode=0o444))
    if not pod.privileged:
        volumes.append(podspec.config_map_volume("entrypoint", "entrypoint", mode=0o755))
    if args.roster_config_map is not None:
        volumes.append(
            k8s.core.v1.VolumeArgs(
                name="roster",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=args.roster_config_map, default_mode=0o444),
            )
        )
    if args.lab_urls is not None:
        volumes += [
            # Owner root, no group/other bits: the hook refuses anything looser.
            k8s.core.v1.VolumeArgs(
                name=LAB_SESSION_SECRET,
                secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name=LAB_SESSION_SECRET, default_mode=0o400),
            ),
            podspec.config_map_volume(LAB_SCRIPTS_CONFIG_MAP, LAB_SCRIPTS_CONFIG_MAP, mode=0o444),
        ]

    login_mounts = [
        k8s.core.v1.VolumeMountArgs(name="home", mount_path="/home"),
        *[k8s.core.v1.VolumeMountArgs(name=extra_claim_name(m.name), mount_path=m.path) for m in mounts],
        k8s.core.v1.VolumeMountArgs(name="host-keys", mount_path=HOST_KEY_DIR, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="ca-public", mount_path=CA_PUBLIC_DIR, read_only=True),
        _file_mount("sshd-config", "/etc/ssh/sshd_config"),
        _file_mount("rc-env", "/etc/rc.env"),
        _file_mount("rc-local", "/etc/rc.local"),
        _file_mount("rc-user", "/etc/rc.user"),
    ]
    if not pod.privileged:
        login_mounts.append(_file_mount("entrypoint", ENTRYPOINT_PATH))
    if args.roster_config_map is not None:
        login_mounts.append(k8s.core.v1.VolumeMountArgs(name="roster", mount_path=ROSTER_MOUNT, read_only=True))
    if args.lab_urls is not None:
        # Whole directories, not subPath: the kubelet then swaps in a changed
        # Secret (a new student's URL, a rotated key) without a pod restart.
        login_mounts += [
            k8s.core.v1.VolumeMountArgs(name=LAB_SESSION_SECRET, mount_path=LAB_SESSION_DIR, read_only=True),
            k8s.core.v1.VolumeMountArgs(name=LAB_SCRIPTS_CONFIG_MAP, mount_path=LAB_SCRIPTS_DIR, read_only=True),
        ]

    ports = container_ports(pod.extra_ports)

    if pod.privileged:
        security = podspec.privileged(add=["SYS_ADMIN"])
        command = None
    else:
        security = podspec.confined_root(read_only_root=False, add=UNPRIVILEGED_CAPABILITIES)
        command = [ENTRYPOINT_PATH]

    login = k8s.core.v1.ContainerArgs(
        name="login",
        image=pod.image.reference,
        image_pull_policy=pod.image.pull_policy,
        command=command,
        ports=ports,
        volume_mounts=login_mounts,
        resources=podspec.resources(pod.resources.requests, pod.resources.limits),
        security_context=security,
        # rc.local touches /ready when accounts and keys are in place.
        readiness_probe=k8s.core.v1.ProbeArgs(
            exec_=k8s.core.v1.ExecActionArgs(command=["test", "-f", "/ready"]),
            period_seconds=5,
            failure_threshold=3,
        ),
        # Customisation (git clone, package installs) may take minutes before
        # sshd listens; the startup probe holds the liveness probe off until then.
        startup_probe=k8s.core.v1.ProbeArgs(
            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=22),
            period_seconds=10,
            failure_threshold=60,
        ),
        liveness_probe=k8s.core.v1.ProbeArgs(
            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=22),
            period_seconds=20,
            timeout_seconds=5,
            failure_threshold=3,
        ),
    )

    return k8s.core.v1.PodSpecArgs(
        containers=[login],
        volumes=volumes,
        # Students must not get a Kubernetes API token.
        automount_service_account_token=False,
        enable_service_links=False,
        termination_grace_period_seconds=30,
        image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name=s) for s in pod.image.pull_secrets] or None,
        node_selector=dict(pod.node_selector) or None,
        tolerations=[dict(t) for t in pod.tolerations] or None,  # type: ignore[misc]
        affinity=dict(pod.affinity) or None,  # type: ignore[arg-type]
        # systemd (privileged mode) needs syscalls RuntimeDefault blocks, and a
        # privileged container is unconfined anyway: say so explicitly.
        security_context=k8s.core.v1.PodSecurityContextArgs(
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="Unconfined" if pod.privileged else "RuntimeDefault")
        ),
    )
