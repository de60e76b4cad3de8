"""LabHost under Pulumi mocks: per-student clusters, host trust, the in-cluster DinD manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pulumi_kubernetes as k8s
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.hostkeys import HostKeySetProvider
from components.labconfig import LabsConfig, parse_labs
from components.labs import LabHost, LabHostArgs, cluster_commands
from tests.hostkeys import verified_host_certificate

REPO = Path(__file__).resolve().parents[2]
CA_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3RjYQ class-ca"
PRESENTED = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t"
PRIVATE_KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)
CA_PRIVATE = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)
SECRET = "k" * 48
IMAGE = "registry.example.edu/classroom/labhost:2026.1"


@dataclass(frozen=True)
class P:
    username: str
    labs: bool = True


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the mock monitor marks a secret value


def unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG in value:
            secrets.add(path)
            return unwrap(value["value"], path, secrets)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    secrets: set[str]


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "command:local:Command":
            outputs["stdout"] = PRESENTED + "\n"  # what the verify script prints
        elif args.typ == "pulumi-python:dynamic:Resource":
            outputs = dict(HostKeySetProvider().create(unwrap(dict(args.inputs), "", set())).outs)
        secrets: set[str] = set()
        inputs = unwrap(dict(args.inputs), "", secrets)
        self.resources.append(Registered(args.typ, args.name, inputs, secrets))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def config(people: list[P], hosts: list[dict[str, Any]] | None = None, **extra: Any) -> LabsConfig:
    raw = {
        "domain": "lab.example.edu",
        "hosts": hosts
        or [
            {"name": "lab1", "address": "10.0.0.5", "capacity": 100},
            {"name": "lab2", "address": "10.0.0.6", "capacity": 100},
        ],
        "ssh": {"privateKey": PRIVATE_KEY},
        "sessionKey": SECRET,
        "adminKey": SECRET,
        **extra,
    }
    return parse_labs({"labs": raw}, base_dir=REPO / "stacks", people=people)


def run(
    labs: LabsConfig, *, with_namespace: bool = False, **kwargs: Any
) -> tuple[Mocks, dict[str, LabHost], dict[str, pulumi.ResourceOptions]]:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="classroom", stack="cis90-fall2026", preview=False)
    hosts: dict[str, LabHost] = {}
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts
        return None

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        deps: list[pulumi.Resource] = []
        if with_namespace:
            deps.append(k8s.core.v1.Namespace("ns", metadata=k8s.meta.v1.ObjectMetaArgs(name="classroom")))
        for spec in labs.hosts:
            hosts[spec.name] = LabHost(
                spec.name,
                LabHostArgs(spec=spec, labs=labs, ca_public_key=CA_PUB, class_name="cis90", term="fall2026", **kwargs),
                opts=pulumi.ResourceOptions(transformations=[capture], depends_on=deps),
            )
        return pulumi.Output.all(*[h.host_key for h in hosts.values()])

    program()
    return mocks, hosts, options


def by_type(mocks: Mocks, typ: str) -> dict[str, Registered]:
    return {r.name: r for r in mocks.resources if r.typ == typ}


def clusters(mocks: Mocks) -> dict[str, Registered]:
    return {n: r for n, r in by_type(mocks, "command:remote:Command").items() if "-cluster-" in n}


PEOPLE = [P("alice"), P("bob"), P("carol"), P("dave"), P("erin"), P("frank", labs=False)]


def test_one_cluster_resource_per_labs_student_with_the_right_commands() -> None:
    labs = config(PEOPLE)
    mocks, hosts, _ = run(labs)
    found = clusters(mocks)
    expected = {f"{labs.placement[u]}-cluster-{u}" for u in ("alice", "bob", "carol", "dave", "erin")}
    assert set(found) == expected
    for name, resource in found.items():
        host_name, _, user = name.partition("-cluster-")
        spec = labs.host(host_name)
        create, delete = cluster_commands(spec, user)
        assert resource.inputs["create"] == create and resource.inputs["update"] == create
        assert resource.inputs["delete"] == delete
        assert create.endswith(f" create {user}") and delete.endswith(f" delete {user}")
        # Triggers carry only this student's inputs: no roster-wide value that
        # would replace everyone's cluster when one student changes.
        assert resource.inputs["triggers"] == [user, host_name, "lab-"]
        assert resource.inputs["connection"]["host"] == spec.address
    assert all(set(h.clusters) == set(labs.students_on(n)) for n, h in hosts.items())


def test_cluster_resources_never_replace_before_deleting() -> None:
    _, _, options = run(config(PEOPLE))
    for name, opts in options.items():
        if "-cluster-" in name:
            assert opts.delete_before_replace is False


def test_removing_a_student_changes_nothing_but_their_own_resource() -> None:
    first, _, _ = run(config(PEOPLE))
    second, _, _ = run(config([p for p in PEOPLE if p.username != "carol"]))
    before, after = clusters(first), clusters(second)
    gone = set(before) - set(after)
    assert len(gone) == 1 and next(iter(gone)).endswith("-cluster-carol")
    assert set(after) <= set(before)
    for name, resource in after.items():
        assert resource.inputs == before[name].inputs, name
    # The only other change is the roster file labd reads on that student's host.
    installs_before = by_type(first, "command:remote:Command")
    installs_after = by_type(second, "command:remote:Command")
    changed = {n for n in installs_after if "-install" in n and installs_after[n].inputs != installs_before[n].inputs}
    assert changed == {next(iter(gone)).split("-cluster-")[0] + "-install"}


def test_adding_a_student_adds_one_resource_and_moves_nobody() -> None:
    first, _, _ = run(config(PEOPLE))
    second, _, _ = run(config([*PEOPLE, P("zoe")]))
    before, after = clusters(first), clusters(second)
    assert {n.split("-cluster-")[1] for n in set(after) - set(before)} == {"zoe"}
    assert set(before) <= set(after)
    assert all(after[n].inputs == before[n].inputs for n in before)


def test_host_is_trusted_through_the_ca_and_pinned() -> None:
    mocks, _hosts, _ = run(config(PEOPLE))
    verify = by_type(mocks, "command:local:Command")
    assert set(verify) == {"lab1-verify-host", "lab2-verify-host"}
    env = verify["lab1-verify-host"].inputs["environment"]
    assert env["LABHOST_CA"] == CA_PUB and env["LABHOST_PRINCIPAL"] == "10.0.0.5"
    assert env["LABHOST_KEY"] == PRIVATE_KEY
    assert "StrictHostKeyChecking=yes" in verify["lab1-verify-host"].inputs["create"]
    assert "@cert-authority" in verify["lab1-verify-host"].inputs["create"]
    # Every SSH step pins exactly the certificate OpenSSH verified.
    remote = [r for r in mocks.resources if r.typ.startswith("command:remote:")]
    assert remote and all(r.inputs["connection"]["hostKey"] == PRESENTED for r in remote)


def test_a_pinned_host_key_skips_the_verify_step() -> None:
    pinned = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinned"
    labs = config([P("alice")], hosts=[{"name": "lab1", "address": "h", "capacity": 5, "hostKey": pinned}])
    mocks, _, _ = run(labs)
    assert not by_type(mocks, "command:local:Command")
    remote = [r for r in mocks.resources if r.typ.startswith("command:remote:")]
    assert all(r.inputs["connection"]["hostKey"] == pinned for r in remote)


def test_install_ships_labd_config_and_keys_as_a_secret_stdin() -> None:
    labs = config(PEOPLE, hooks={"init": {"url": "https://hooks.example.edu/init", "secret": SECRET}})
    mocks, _hosts, _ = run(labs)
    install = by_type(mocks, "command:remote:Command")["lab1-install"]
    manifest = json.loads(install.inputs["stdin"])
    files = {f["path"]: f for f in manifest["files"]}
    assert files["/etc/labd/admin.key"]["mode"] == "0600"
    assert files["/etc/labd/roster"]["content"].split() == list(labs.students_on("lab1"))
    assert files["/etc/labd/roster"]["restart"] == []  # a new student does not restart labd
    labd = json.loads(files["/etc/labd/labd.json"]["content"])
    assert labd["labDomain"] == "lab.example.edu" and labd["idleTimeout"] == 1800
    # labd refuses a session request signed for another lab host: it knows the name the hook calls it by.
    (host,) = [h for h in labs.hosts if h.name == "lab1"]
    assert labd["hostNames"] == [f"{host.address}:{host.labd_port}"]
    assert labd["k3d"]["template"]["metadata"]["name"] == "${cluster}"
    assert labd["hooks"]["init"]["secretFile"] == "/etc/labd/hooks/init.secret"
    assert "/etc/systemd/system/classroom-labd.service" in files
    copy = by_type(mocks, "command:remote:CopyToRemote")["lab1-labd-files"]
    assert copy.inputs["remotePath"] in manifest["stage"] + "/"
    # The keys travel only as secrets: stdin, the connection's private key, the verify step's env.
    assert "stdin" in install.secrets and "connection" in install.secrets
    assert "environment" in by_type(mocks, "command:local:Command")["lab1-verify-host"].secrets
    assert SECRET not in json.dumps({k: v for k, v in install.inputs.items() if k != "stdin"})


def test_the_double_free_program_never_mounts_a_docker_socket() -> None:
    # The login server side (everything but the lab host pod) must never see
    # a Docker socket or a hostPath; the DinD pod runs its own dockerd.
    labs = config(
        PEOPLE, hosts=[{"name": "lab1", "inCluster": True, "capacity": 100, "image": IMAGE, "engine": "shared"}]
    )
    mocks, _, _ = run(labs, namespace="classroom", ca_private_key=CA_PRIVATE, storage_class_name="classroom-retain")
    dumped = json.dumps([r.inputs for r in mocks.resources], default=str)
    assert "docker.sock" not in dumped and "hostPath" not in dumped
    for path in (REPO / "components").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".sh", "") and path.name != "labs.py":
            assert "docker.sock" not in path.read_text(errors="replace"), path


def in_cluster_manifests() -> tuple[Mocks, dict[str, pulumi.ResourceOptions]]:
    labs = config(
        PEOPLE,
        hosts=[
            {
                "name": "lab1",
                "inCluster": True,
                "capacity": 100,
                "storageSize": "80Gi",
                "image": IMAGE,
                "engine": "shared",
            }
        ],
    )
    mocks, _, options = run(
        labs,
        with_namespace=True,
        namespace="classroom",
        ca_private_key=CA_PRIVATE,
        storage_class_name="classroom-retain",
    )
    mocks.resources = [r for r in mocks.resources if r.name != "ns"]
    return mocks, options


def test_in_cluster_host_is_a_privileged_dind_statefulset_with_a_protected_volume() -> None:
    mocks, options = in_cluster_manifests()
    sts = by_type(mocks, "kubernetes:apps/v1:StatefulSet")["lab1-pod"].inputs
    assert sts["spec"]["replicas"] == 1 and "volumeClaimTemplates" not in sts["spec"]
    pod = sts["spec"]["template"]["spec"]
    privileged = {c["name"]: c.get("securityContext", {}).get("privileged", False) for c in pod["containers"]}
    assert privileged == {"labhost": True} and "initContainers" not in pod
    assert {c["image"] for c in pod["containers"]} == {IMAGE}
    # Host keys and certificates were signed by the program; the pod mounts only them, never the CA key.
    files = by_type(mocks, "kubernetes:core/v1:Secret")["lab1-host-key-secret"].inputs["stringData"]
    assert CA_PRIVATE not in json.dumps(files)
    cert, _ = verified_host_certificate(files["ssh_host_ed25519_key-cert.pub"])
    assert cert.type == serialization.SSHCertificateType.HOST
    assert [p.decode() for p in cert.valid_principals] == [
        "labhost-lab1",
        "labhost-lab1.classroom",
        "labhost-lab1.classroom.svc",
        "labhost-lab1.classroom.svc.cluster.local",
    ]
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret_volumes == {"host-keys": "labhost-lab1-host-keys"}
    host_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "host-keys")
    assert host_mount["mountPath"] == "/etc/ssh/host" and host_mount["readOnly"] is True
    claim = by_type(mocks, "kubernetes:core/v1:PersistentVolumeClaim")["lab1-data"].inputs
    assert claim["spec"]["resources"]["requests"]["storage"] == "80Gi"
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == [
        claim["metadata"]["name"]
    ]
    assert options["lab1-data"].protect is True and options["lab1-data"].retain_on_delete is True
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    svc = by_type(mocks, "kubernetes:core/v1:Service")["lab1-svc"].inputs
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"ssh": 22, "labd": 8787, "http": 80, "https": 443}
    # Only the Service's ports are admitted: dockerd's API (2375/2376) and k3d's API servers are not.
    policy = by_type(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["lab1-ingress"].inputs["spec"]
    assert policy["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert "from" not in rule and sorted(p["port"] for p in rule["ports"]) == [22, 80, 443, 8787]
    # The engine's public key is what the pod authorizes.
    config_map = by_type(mocks, "kubernetes:core/v1:ConfigMap")["lab1-scripts"].inputs
    assert config_map["data"]["authorized_keys"].startswith("ssh-ed25519 ")
    assert "HostCertificate /etc/ssh/host/ssh_host_ed25519_key-cert.pub" in config_map["data"]["sshd_config"]
    # An in-cluster host installs onto its volume and has no systemd.
    install = json.loads(by_type(mocks, "command:remote:Command")["lab1-install"].inputs["stdin"])
    assert install["root"] == "/data" and install["serviceManager"] == "none"


@pytest.mark.parametrize("kind", ["StatefulSet", "PersistentVolumeClaim", "Service", "ConfigMap", "NetworkPolicy"])
def test_in_cluster_manifests_match_the_kubernetes_schema(kind: str) -> None:
    mocks, _ = in_cluster_manifests()
    api = {"StatefulSet": "apps/v1", "NetworkPolicy": "networking.k8s.io/v1"}.get(kind, "v1")
    typ = f"kubernetes:{'core/v1' if api == 'v1' else api}:{kind}"
    (resource,) = by_type(mocks, typ).values()
    manifest = {"apiVersion": api, "kind": kind, **resource.inputs}
    kubernetes_validate.validate(manifest, "1.34.0", strict=True)


def test_in_cluster_manifests_pass_the_policy_pack() -> None:
    import classroom_policies as rules  # policy/, on pytest's pythonpath (pyproject.toml)
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
    from pulumi_policy.proxy import unknown_checking_proxy

    mocks, options = in_cluster_manifests()
    findings: list[str] = []
    checked = 0
    for resource in mocks.resources:
        if not resource.typ.startswith("kubernetes:"):
            continue
        opts = options[resource.name]
        policy_opts = PolicyResourceOptions(bool(opts.protect), [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
        args = ResourceValidationArgs(
            resource.typ,
            unknown_checking_proxy(resource.inputs),
            f"urn:{resource.name}",
            resource.name,
            policy_opts,
            None,
        )
        for rule in (
            rules.validate_student_data_protected,
            rules.validate_privileged_only_when_configured,
            rules.validate_requests_and_limits,
            rules.validate_service_ports,
        ):
            rule(args, lambda message, urn=None: findings.append(message))
        checked += 1
    # StatefulSet, claim, Service, NetworkPolicy, scripts ConfigMap and the host-key Secret.
    assert checked == 6 and findings == []


def labd_json(mocks: Mocks, host: str = "lab1") -> dict[str, Any]:
    manifest = json.loads(by_type(mocks, "command:remote:Command")[f"{host}-install"].inputs["stdin"])
    return dict(json.loads({f["path"]: f for f in manifest["files"]}["/etc/labd/labd.json"]["content"]))


def parsed_by_labd(rendered: dict[str, Any], tmp_path: Path) -> Any:
    """labd's own parser reads the rendered file (key files pointed at private temporary ones)."""
    from labd.config import parse_config

    raw = dict(rendered)
    for key in ("sessionKeyFile", "adminKeyFile"):
        path = tmp_path / key
        path.write_text(SECRET + "\n")
        path.chmod(0o600)
        raw[key] = str(path)
    return parse_config(raw)


def test_every_lab_host_gets_the_terms_access_end_in_labds_format(tmp_path: Path) -> None:
    # Through the whole program: the term's accessEnd (end + grace, UTC) reaches
    # every host's labd.json, so labd answers 403 to ensure/session-open after it.
    from components.rosterdata import utc_stamp
    from tests.harness import render
    from tests.unit.test_lab_session_wiring import labs_config

    rendered = render(labs_config(), stack="cis90-fall2026")
    term = rendered.config.access.term
    assert term is not None
    installs = {r.name: r for r in rendered.of_type("command:remote:Command") if r.name.endswith("-install")}
    assert set(installs) == {"lab-lab1-install", "lab-lab2-install"}
    for install in installs.values():
        files = {f["path"]: f for f in json.loads(install.inputs["stdin"])["files"]}
        labd = json.loads(files["/etc/labd/labd.json"]["content"])
        # TERM ends 2026-12-18 (the whole day, UTC) with 7 days' grace.
        assert labd["accessEnd"] == utc_stamp(term.access_end) == "2026-12-26T00:00:00Z"
        assert files["/etc/labd/labd.json"]["restart"] == ["labd"]  # a moved end reaches labd
        assert parsed_by_labd(labd, tmp_path).access_end == term.access_end.timestamp()


def test_lab_host_without_a_term_writes_no_access_end(tmp_path: Path) -> None:
    # A LabHost given no term writes no key; labd then has no end of access
    # (the login server's own term is the only one). The program never builds
    # that: a roster, which labs need, is refused without a term.
    mocks, _, _ = run(config(PEOPLE))
    labd = labd_json(mocks)
    assert "accessEnd" not in labd
    assert parsed_by_labd(labd, tmp_path).access_end is None


def test_access_end_is_written_to_the_second_in_utc(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    end = datetime(2027, 5, 22, 1, 30, 15, 999_000, tzinfo=timezone(timedelta(hours=-7)))
    mocks, _, _ = run(config(PEOPLE), access_end=end)
    for host in ("lab1", "lab2"):
        labd = labd_json(mocks, host)
        assert labd["accessEnd"] == "2027-05-22T08:30:15Z"
        # Truncated, never later than the term's end.
        assert parsed_by_labd(labd, tmp_path).access_end == datetime(2027, 5, 22, 8, 30, 15, tzinfo=UTC).timestamp()


def test_lab_hosts_run_students_clusters_under_rootless_engines_by_default(tmp_path: Path) -> None:
    """labs.hosts[i].engine: rootless unless chosen otherwise; labd's own parser reads what is written."""
    mocks, _, _ = run(
        config(
            PEOPLE,
            hosts=[
                {"name": "lab1", "address": "10.0.0.5", "capacity": 100},
                {"name": "lab2", "address": "10.0.0.6", "capacity": 100, "engine": "shared"},
            ],
        )
    )
    first, second = labd_json(mocks, "lab1"), labd_json(mocks, "lab2")
    assert first["engine"] == "rootless" and first["rootless"] == {"dataDir": "/var/lib/labd/engines"}
    assert second["engine"] == "shared" and "rootless" not in second
    parsed = parsed_by_labd(first, tmp_path)
    assert (parsed.engine, parsed.rootless.data_dir, parsed.rootless.run_dir) == (
        "rootless",
        "/var/lib/labd/engines",
        "/run/labd/engines",
    )
    assert parsed_by_labd(second, tmp_path).engine == "shared"
    installs = by_type(mocks, "command:remote:Command")
    manifests = {host: json.loads(installs[f"{host}-install"].inputs["stdin"]) for host in ("lab1", "lab2")}
    # the rootless host gets the packages its engines need, and a labd unit that lets them outlive a restart
    assert {"rootlesskit", "slirp4netns", "uidmap", "docker.io"} <= set(manifests["lab1"]["packages"])
    assert "packages" not in manifests["lab2"]
    units = {
        host: {f["path"]: f for f in m["files"]}["/etc/systemd/system/classroom-labd.service"]["content"]
        for host, m in manifests.items()
    }
    assert "KillMode=process" in units["lab1"] and "KillMode=process" not in units["lab2"]
    assert "User=" not in units["lab1"]  # root: useradd and each engine's own uid


def test_an_in_cluster_host_uses_its_pods_engine_and_refuses_rootless() -> None:
    host = {
        "name": "lab1",
        "capacity": 5,
        "inCluster": True,
        "image": "registry.example.edu/labhost:1",
        "engine": "shared",
    }
    (spec,) = config(PEOPLE, hosts=[host]).hosts
    assert spec.engine == "shared"
    with pytest.raises(Exception, match=r"labs\.hosts\[0\]\.engine"):
        config(PEOPLE, hosts=[{**host, "engine": "rootless"}])
    with pytest.raises(Exception, match=r"labs\.hosts\[0\]\.engine"):
        config(PEOPLE, hosts=[{"name": "lab1", "address": "h", "capacity": 1, "engine": "root"}])
