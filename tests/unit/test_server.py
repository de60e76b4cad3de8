"""What the program registers: workloads, volumes, secrets, options, services."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization

from components import server as server_module
from components.server import CHECKSUM_ANNOTATION, UNPRIVILEGED_CAPABILITIES
from tests.harness import FAKE_CA_PRIVATE, FAKE_CA_PUBLIC, LB_ADDRESS, MAIN, Rendered, render
from tests.hostkeys import verified_host_certificate

PVC = "kubernetes:core/v1:PersistentVolumeClaim"
NS = "kubernetes:core/v1:Namespace"
SC = "kubernetes:storage.k8s.io/v1:StorageClass"
SVC = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
CM = "kubernetes:core/v1:ConfigMap"

CIS90: dict[str, Any] = {
    "extraMounts": [
        {"name": "cis90", "path": "/home/cis90", "size": "1Gi"},
        {"name": "depot", "path": "/srv/depot", "size": "5Gi"},
    ],
    "extraPorts": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes(r: Rendered) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in r.pod["volumes"]}


# ------------------------------------------------------------------ data safety


def test_claims_are_protected_retained_and_wait_for_the_namespace() -> None:
    r = render(CIS90)
    namespace = r.one(NS, "namespace")
    assert namespace.protect and namespace.retain_on_delete
    claims = r.of_type(PVC)
    assert sorted(c.inputs["metadata"]["name"] for c in claims) == ["extra-cis90", "extra-depot", "home"]
    for claim in claims:
        assert claim.protect and claim.retain_on_delete, claim.name
        assert namespace.urn in claim.dependencies, claim.name


def test_claims_cannot_plan_a_replacement() -> None:
    r = render(CIS90)
    for claim in r.of_type(PVC):
        # Every immutable spec field is ignored, so only the size can change.
        assert {"spec.storageClassName", "spec.accessModes", "spec.volumeMode", "spec.volumeName"} <= set(
            claim.ignore_changes
        )
        assert "spec.resources" not in " ".join(claim.ignore_changes)
        spec = claim.inputs["spec"]
        assert spec["accessModes"] == ["ReadWriteOnce"] and spec["volumeMode"] == "Filesystem"


def test_size_is_the_only_thing_that_follows_the_config() -> None:
    small = render({"homeSize": "2Gi"}).one(PVC, "home").inputs
    large = render({"homeSize": "20Gi"}).one(PVC, "home").inputs
    assert small["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert large["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert small["metadata"] == large["metadata"]
    small["spec"].pop("resources"), large["spec"].pop("resources")
    assert small["spec"] == large["spec"]


def test_no_volume_claim_templates_pods_use_program_declared_claims() -> None:
    r = render(CIS90)
    assert "volumeClaimTemplates" not in r.statefulset["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in r.pod["volumes"] if "persistentVolumeClaim" in v}
    declared = {c.inputs["metadata"]["name"] for c in r.of_type(PVC)}
    assert claims == declared
    # The StatefulSet waits for the claims.
    sts = r.one("kubernetes:apps/v1:StatefulSet", "statefulset")
    assert {c.urn for c in r.of_type(PVC)} <= set(sts.dependencies)
    # ...and for every ConfigMap its pod mounts.
    assert {c.urn for c in r.of_type(CM)} <= set(sts.dependencies)


def test_managed_storage_class_is_retain_and_expandable() -> None:
    r = render({"storageProvisioner": "ebs.csi.aws.com", "storageParameters": {"type": "gp3"}})
    sc = r.one(SC, "retain-class").inputs
    assert sc["reclaimPolicy"] == "Retain" and sc["allowVolumeExpansion"] is True
    assert sc["provisioner"] == "ebs.csi.aws.com" and sc["parameters"] == {"type": "gp3"}
    assert sc["metadata"]["name"] == "classroom-dev-retain"
    assert r.one(PVC, "home").inputs["spec"]["storageClassName"] == "classroom-dev-retain"


def test_an_explicit_retain_class_is_used_and_no_class_is_created() -> None:
    r = render({"homeStorageClassName": "nfs-retain"}, class_reclaim={"nfs-retain": "Retain"})
    assert r.of_type(SC) == []
    assert r.one(PVC, "home").inputs["spec"]["storageClassName"] == "nfs-retain"
    assert any(x.read and x.type == SC for x in r.resources)


@pytest.mark.parametrize("policy", ["Delete", ""])
def test_an_explicit_class_that_would_delete_data_is_refused(policy: str) -> None:
    with pytest.raises(Exception, match=r"homeStorageClassName.*reclaimPolicy.*Retain") as caught:
        render({"homeStorageClassName": "standard"}, class_reclaim={"standard": policy} if policy else {})
    assert isinstance(caught.value, pulumi.RunError)
    # Refused before the claim was registered.


def test_an_extra_mount_class_is_checked_too() -> None:
    raw = {"extraMounts": [{"name": "a", "path": "/srv/a", "size": "1Gi", "storageClassName": "hdd"}]}
    with pytest.raises(pulumi.RunError, match=r"extraMounts\[0\]\.storageClassName"):
        render(raw, class_reclaim={"hdd": "Delete"})
    assert render(raw, class_reclaim={"hdd": "Retain"}).one(PVC, "extra-a").inputs["spec"]["storageClassName"] == "hdd"


def test_existing_namespace_is_not_created() -> None:
    r = render({"createNamespace": False, "namespace": "shared"})
    assert r.of_type(NS) == []
    assert all(m["metadata"].get("namespace") in (None, "shared") for m in r.manifests)


# ------------------------------------------------------------------ the CA key


def host_certificate(line: str) -> Any:
    return serialization.load_ssh_public_identity(" ".join(line.split()[:2]).encode())


def test_ca_private_key_reaches_no_pod() -> None:
    r = render()
    # The program makes no Secret with the CA key; the one Secret the pod gets holds host keys only.
    assert [s.inputs["metadata"]["name"] for s in r.of_type(SECRET)] == ["ssh-host-keys"]
    host_files = r.one(SECRET, "ssh-host-keys").inputs["stringData"]
    assert FAKE_CA_PRIVATE not in str(host_files) and "ca_key" not in host_files
    assert "initContainers" not in r.pod
    secret_volumes = {v["secret"]["secretName"] for v in r.pod["volumes"] if "secret" in v}
    assert secret_volumes == {"ssh-host-keys"}
    login = r.container("login")
    assert "env" not in login and "envFrom" not in login
    for cm in r.of_type(CM):
        assert "PRIVATE KEY" not in str(cm.inputs.get("data"))


def test_the_address_the_load_balancer_assigned_is_a_host_certificate_principal() -> None:
    # sshHost (and the printed ssh command) is the Service's assigned address; with only the
    # configured names in the certificate, StrictHostKeyChecking would refuse the server there.
    r = render({"hostName": "opus", "service": {"type": "LoadBalancer"}})
    assert r.outputs["host"] == LB_ADDRESS
    principals = r.one("pulumi-python:dynamic:Resource", "host-keys").inputs["principals"]
    assert LB_ADDRESS in principals and principals[0] == "opus"
    ssh_service = r.one("kubernetes:core/v1:Service", "ssh")
    assert ssh_service.urn in r.one("pulumi-python:dynamic:Resource", "host-keys").dependencies
    # A ClusterIP Service's address is its DNS name, already a principal: nothing is added twice.
    internal = render({"service": {"type": "ClusterIP"}})
    names = internal.one("pulumi-python:dynamic:Resource", "host-keys").inputs["principals"]
    assert internal.outputs["host"] in names and len(names) == len(set(names))


def test_host_certificates_are_signed_at_deploy_time_for_every_name_students_use() -> None:
    r = render({"hostName": "opus", "service": {"loadBalancerIP": "10.1.2.3"}, "ssh": {"hostPrincipals": ["opus.edu"]}})
    files = r.one(SECRET, "ssh-host-keys").inputs["stringData"]
    assert set(files) == {f"ssh_host_{k}_key{s}" for k in ("ed25519", "rsa") for s in ("", ".pub", "-cert.pub")}
    ca = serialization.load_ssh_public_identity(FAKE_CA_PUBLIC.encode())
    for kind in ("ed25519", "rsa"):
        cert, signer = verified_host_certificate(files[f"ssh_host_{kind}_key-cert.pub"])
        assert cert.type == serialization.SSHCertificateType.HOST
        principals = [p.decode() for p in cert.valid_principals]
        assert principals[0] == "opus" and cert.key_id == b"host:opus"
        assert {"login-0", "ssh", "ssh.classroom-dev.svc.cluster.local", "10.1.2.3", "opus.edu"} <= set(principals)
        assert signer == ca.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        # The certificate is for the key the pod gets, and the private half is that key's.
        private = serialization.load_ssh_private_key(files[f"ssh_host_{kind}_key"].encode(), password=None)
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert files[f"ssh_host_{kind}_key.pub"].split()[:2] == public.decode().split()[:2]
        assert (
            cert.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) == public
        )
    volume = volumes(r)["host-keys"]["secret"]
    modes = {item["path"]: item["mode"] for item in volume["items"]}
    assert volume["secretName"] == "ssh-host-keys" and set(modes) == set(files)
    assert all(mode == (0o444 if path.endswith(".pub") else 0o400) for path, mode in modes.items())
    assert mounts(r.container("login"))["/etc/ssh/host"]["readOnly"] is True


def test_host_keys_survive_a_rerender_of_unchanged_inputs_only_through_state() -> None:
    # Keys are made once by the provider's create; two fresh renders (no state) make different keys,
    # which is why they are kept in Pulumi state rather than derived.
    first = render().one(SECRET, "ssh-host-keys").inputs["stringData"]["ssh_host_ed25519_key.pub"]
    second = render().one(SECRET, "ssh-host-keys").inputs["stringData"]["ssh_host_ed25519_key.pub"]
    assert first != second


def test_ca_public_key_and_revocation_list_sit_where_sshd_config_expects_them() -> None:
    r = render()
    sshd_config = r.config_map("sshd-config")["data"]["sshd_config"]
    trusted = re.search(r"^TrustedUserCAKeys (\S+)$", sshd_config, re.M)
    revoked = re.search(r"^RevokedKeys (\S+)$", sshd_config, re.M)
    assert trusted and revoked
    mount = mounts(r.container("login"))["/etc/ssh/classroom"]
    assert trusted.group(1) == "/etc/ssh/classroom/ca.pub"
    assert r.config_map("ca-public-key")["data"] == {"ca.pub": FAKE_CA_PUBLIC + "\n"}
    assert volumes(r)[mount["name"]]["configMap"]["items"] == [{"key": "ca.pub", "path": "ca.pub"}]
    # The revocation list is not in a read-only mount: rc.local creates it
    # (empty) before sshd starts, the roster reconciler rebuilds it.
    assert revoked.group(1) == server_module.REVOKED_KEYS_FILE
    assert not revoked.group(1).startswith("/etc/ssh/classroom/")
    assert (
        f"install -o root -g root -m 0644 /dev/null {revoked.group(1)}" in r.config_map("rc-local")["data"]["rc.local"]
    )
    host_keys = re.findall(r"^Host(?:Key|Certificate) (\S+)$", sshd_config, re.M)
    assert host_keys and all(p.startswith("/etc/ssh/host/") for p in host_keys)


def test_outputs_are_public_material_only() -> None:
    r = render({"ssh": {"knownHostsPatterns": ["*.cabrillo.edu", "172.20.2.100"]}})
    assert r.outputs["public_key"] == FAKE_CA_PUBLIC
    assert r.outputs["known_hosts_line"] == f"@cert-authority *.cabrillo.edu,172.20.2.100 {FAKE_CA_PUBLIC}"
    assert all("PRIVATE" not in str(v) for v in r.outputs.values())


def test_generated_ca_key_is_protected_so_students_keep_trusting_the_server() -> None:
    r = render()
    assert r.one("tls:index/privateKey:PrivateKey", "ssh-ca-key").protect is True


def test_rsa_ca_on_request() -> None:
    key = render({"ssh": {"caAlgorithm": "rsa"}}).one("tls:index/privateKey:PrivateKey", "ssh-ca-key").inputs
    assert key["algorithm"] == "RSA" and key["rsaBits"] == 4096
    key = render().one("tls:index/privateKey:PrivateKey", "ssh-ca-key").inputs
    assert key["algorithm"] == "ED25519"


def test_existing_ca_secret_signs_but_is_mounted_nowhere_and_nothing_is_generated() -> None:
    r = render(
        {"ssh": {"existingSecret": "class-ca"}},
        existing_secret={"ca_key": FAKE_CA_PRIVATE, "ca_key_pub": FAKE_CA_PUBLIC},
    )
    assert r.of_type("tls:index/privateKey:PrivateKey") == []
    assert [s.inputs["metadata"]["name"] for s in r.of_type(SECRET)] == ["ssh-host-keys"]
    assert all(v.get("secret", {}).get("secretName") != "class-ca" for v in r.pod["volumes"])
    _, signer = verified_host_certificate(
        r.one(SECRET, "ssh-host-keys").inputs["stringData"]["ssh_host_ed25519_key-cert.pub"]
    )
    assert signer == " ".join(FAKE_CA_PUBLIC.split()[:2])
    assert r.outputs["public_key"] == FAKE_CA_PUBLIC


def test_an_existing_secret_made_by_the_chart_is_accepted() -> None:
    # The chart's secrets.yaml stores the public half as `ca_key.pub`.
    r = render(
        {"ssh": {"existingSecret": "class-ca"}},
        existing_secret={"ca_key": FAKE_CA_PRIVATE, "ca_key.pub": FAKE_CA_PUBLIC},
    )
    assert r.outputs["public_key"] == FAKE_CA_PUBLIC


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ca_key": "not a key", "ca_key_pub": FAKE_CA_PUBLIC}, r"'ssh.existingSecret'.*'ca_key'.*not.*private key"),
        (
            {
                "ca_key": FAKE_CA_PRIVATE,
                "ca_key_pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCzQlyG2Us+el5qs4O0ifwlYIyvk49DaRbP7kq4smnw other",
            },
            r"'ssh.existingSecret'.*ca_key_pub.*not the public half of 'ca_key'",
        ),
    ],
)
def test_an_existing_secret_whose_halves_are_unusable_is_one_clear_error(data: dict[str, str], message: str) -> None:
    with pytest.raises(pulumi.RunError, match=message):
        render({"ssh": {"existingSecret": "class-ca"}}, existing_secret=data)


# ------------------------------------------------------------------ pod shape


def test_one_replica_headless_service_and_probes() -> None:
    r = render()
    sts = r.statefulset
    assert sts["spec"]["replicas"] == 1.0  # mocks hand numbers back as floats
    assert sts["spec"]["serviceName"] == "login-headless"
    headless = r.one(SVC, "headless").inputs["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == sts["spec"]["selector"]["matchLabels"]
    login = r.container("login")
    assert login["readinessProbe"]["exec"]["command"] == ["test", "-f", "/ready"]
    assert login["livenessProbe"]["tcpSocket"]["port"] == 22
    assert login["startupProbe"]["tcpSocket"]["port"] == 22
    assert r.pod["automountServiceAccountToken"] is False


def test_every_container_has_requests_and_limits() -> None:
    r = render({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "3Gi"}}})
    assert "initContainers" not in r.pod
    for name in ("login",):
        res = r.container(name)["resources"]
        assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}, name
    assert r.container("login")["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}


def test_privileged_mode_runs_systemd_with_sys_admin() -> None:
    login = render({"privileged": True}).container("login")
    assert "command" not in login  # the image's /sbin/init
    ctx = login["securityContext"]
    assert ctx["privileged"] is True and "SYS_ADMIN" in ctx["capabilities"]["add"]


def test_unprivileged_mode_runs_sshd_directly_with_few_capabilities() -> None:
    r = render({"privileged": False})
    login = r.container("login")
    assert login["command"] == ["/usr/local/sbin/classroom-entrypoint"]
    assert mounts(login)["/usr/local/sbin/classroom-entrypoint"]["subPath"] == "classroom-entrypoint"
    assert "exec /usr/sbin/sshd -D" in r.config_map("entrypoint")["data"]["classroom-entrypoint"]
    ctx = login["securityContext"]
    assert ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert set(ctx["capabilities"]["add"]) == set(UNPRIVILEGED_CAPABILITIES)
    assert not {"SYS_ADMIN", "NET_RAW", "MKNOD", "SYS_PTRACE"} & set(ctx["capabilities"]["add"])
    assert {"SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "CHOWN", "NET_BIND_SERVICE"} <= set(
        ctx["capabilities"]["add"]
    )
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert "entrypoint" not in volumes(render({"privileged": True}))


def test_scripts_and_config_files_are_mounted_from_config_maps() -> None:
    r = render()
    login = mounts(r.container("login"))
    for path, cm, key in [
        ("/etc/rc.env", "rc-env", "rc.env"),
        ("/etc/rc.local", "rc-local", "rc.local"),
        ("/etc/rc.user", "rc-user", "rc.user"),
        ("/etc/ssh/sshd_config", "sshd-config", "sshd_config"),
    ]:
        assert login[path]["subPath"] == key and login[path]["readOnly"] is True
        assert volumes(r)[login[path]["name"]]["configMap"]["name"] == cm
        assert key in r.config_map(cm)["data"]
    assert volumes(r)["rc-local"]["configMap"]["defaultMode"] == 0o755
    repo_script = (Path(server_module.SCRIPTS) / "rc.user").read_text()
    assert r.config_map("rc-user")["data"]["rc.user"] == repo_script


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCzQlyG2Us+el5qs4O0ifwlYIyvk49DaRbP7kq4smnw"


def test_rc_env_carries_the_chart_variables_and_rc_env_text() -> None:
    r = render(
        {
            "user": "alice",
            "userID": 12345,
            "hostName": "opus",
            "userSSHKey": f"{KEY} alice@home",
            "userSSHImport": "gh:alice",
            "customizeRepo": "https://example.com/setup.git",
            "customizeRepoCommand": "make install",
            "customizeCommand": "echo 'hi there'",
            "rcEnv": "COURSE=cis90\n",
        }
    )
    env = r.config_map("rc-env")["data"]["rc.env"]
    # The chart's names, exported as the chart writes them (DEFAULT_UID: this program's older name).
    assert "export DEFAULT_USER=alice\n" in env and "export DEFAULT_USER_ID=12345\n" in env
    assert "export DEFAULT_UID=12345\n" in env and "export SET_HOSTNAME=opus\n" in env
    assert f"export DEFAULT_KEY='{KEY} alice@home'\n" in env
    assert "export DEFAULT_KEY_IMPORT=gh:alice\n" in env
    assert "export CUSTOMIZE_REPO=https://example.com/setup.git\n" in env
    assert "export CUSTOMIZE_REPO_COMMAND='make install'\n" in env
    assert "export CUSTOMIZE_COMMAND='echo '\"'\"'hi there'\"'\"''\n" in env
    assert env.endswith("COURSE=cis90\n")


def test_secret_rc_env_goes_into_a_secret_not_a_config_map() -> None:
    r = render({"rcEnv": "API_TOKEN=hunter2\n"}, secret_keys=frozenset({"rcEnv"}))
    assert all(cm.name != "rc-env" for cm in r.of_type(CM))
    assert "API_TOKEN=hunter2" in r.one(SECRET, "rc-env").inputs["stringData"]["rc.env"]
    assert volumes(r)["rc-env"]["secret"]["secretName"] == "rc-env"


def test_rc_local_and_rc_user_can_be_replaced() -> None:
    r = render({"rcLocal": "#!/bin/bash\necho custom\ntouch /ready\n", "rcUser": "#!/bin/sh\necho mine\n"})
    assert "echo custom" in r.config_map("rc-local")["data"]["rc.local"]
    assert r.config_map("rc-user")["data"]["rc.user"] == "#!/bin/sh\necho mine\n"


def test_extra_mounts_and_ports_reach_the_pod() -> None:
    r = render(CIS90)
    login = r.container("login")
    assert mounts(login)["/home/cis90"]["name"] == "extra-cis90"
    assert mounts(login)["/srv/depot"]["name"] == "extra-depot"
    assert mounts(login)["/home"]["name"] == "home"
    assert r.one(PVC, "extra-depot").inputs["spec"]["resources"]["requests"]["storage"] == "5Gi"
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in login["ports"]}
    assert ports == {("ssh", 22, "TCP"), ("http", 80, "TCP"), ("dns", 53, "UDP")}


def test_scheduling_options_and_pull_secrets() -> None:
    r = render(
        {
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "class", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
            "image": {"pullSecrets": ["regcred"], "repository": "ghcr.io/me/login", "tag": "noble-1"},
            "podAnnotations": {"example.com/team": "cis"},
        }
    )
    pod = r.pod
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "class", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert r.container("login")["image"] == "ghcr.io/me/login:noble-1"
    annotations = r.statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "cis" and CHECKSUM_ANNOTATION in annotations


def test_roster_config_map_hook_is_a_plain_optional_input() -> None:
    r = render()
    assert "/etc/classroom/roster" not in mounts(r.container("login"))
    assert "sh /etc/classroom/roster/apply-roster.sh" in r.config_map("rc-local")["data"]["rc.local"]
    cfg = r.config
    pod_spec = server_module.build_pod_spec(
        server_module.LoginServerArgs(
            namespace=cfg.namespace,
            stack=cfg.stack,
            user=MAIN.default_user(cfg),
            boot=MAIN.boot_files(cfg),
            storage=MAIN.home_storage(cfg),
            pod=MAIN.login_pod(cfg),
            ca_public_key="k",
            ca_private_key=FAKE_CA_PRIVATE,
            roster_config_map="roster",
        ),
    )
    vols = {v.name: v for v in pod_spec.volumes}  # type: ignore[union-attr]
    assert vols["roster"].config_map.name == "roster"  # type: ignore[union-attr]
    login = next(c for c in pod_spec.containers if c.name == "login")  # type: ignore[union-attr]
    roster_mount = [m for m in login.volume_mounts if m.name == "roster"]  # type: ignore[union-attr]
    assert roster_mount[0].mount_path == "/etc/classroom/roster" and roster_mount[0].read_only


# ------------------------------------------------------------------ checksum


def checksum(raw: dict[str, Any] | None = None) -> str:
    r = render(raw)
    return str(r.statefulset["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION])


def test_checksum_is_stable_and_follows_every_file() -> None:
    base = checksum()
    assert base == checksum() and re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"rcEnv": "X=1\n"}) != base
    assert checksum({"rcUser": "#!/bin/sh\ntrue\n"}) != base
    assert checksum({"user": "alice"}) != base
    # New host names re-sign the host certificates, which sshd reads only at start.
    assert checksum({"ssh": {"hostPrincipals": ["login.example.edu"]}}) != base


def test_checksum_changes_when_a_script_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = checksum()
    for script in Path(server_module.SCRIPTS).iterdir():
        if script.is_file():
            (tmp_path / script.name).write_bytes(script.read_bytes())
    monkeypatch.setattr(server_module, "SCRIPTS", tmp_path)
    assert checksum() == base
    for name in ("rc.local", "sshd_config", "rc.user"):
        original = (tmp_path / name).read_text()
        (tmp_path / name).write_text(original + "\n# changed\n")
        assert checksum() != base, name
        (tmp_path / name).write_text(original)


def test_checksum_follows_the_ca_public_key() -> None:
    files = {"a": "1"}
    assert server_module.config_checksum(files, "ssh-ed25519 A") != server_module.config_checksum(
        files, "ssh-ed25519 B"
    )


# ------------------------------------------------------------------ services


def test_one_service_carries_ssh_and_extra_ports() -> None:
    r = render(
        {**CIS90, "service": {"loadBalancerIP": "172.20.2.100", "annotations": {"metallb.io/x": "y"}, "port": 2222}}
    )
    svc = r.one(SVC, "ssh").inputs
    spec = svc["spec"]
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerIP"] == "172.20.2.100"
    assert svc["metadata"]["annotations"]["metallb.io/x"] == "y"
    ports = {(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in spec["ports"]}
    assert ports == {("ssh", 2222, "ssh", "TCP"), ("http", 80, "http", "TCP"), ("dns", 53, "dns", "UDP")}
    assert spec["selector"] == r.statefulset["spec"]["selector"]["matchLabels"]
    assert spec["externalTrafficPolicy"] == "Local"
    assert r.outputs["host"] == LB_ADDRESS
    # Policy-pack contract: every Service names the configured ports and
    # publishes no other.
    for service in r.of_type(SVC):
        assert service.inputs["metadata"]["annotations"]["classroom/allowed-ports"] == "53,80,2222"
        assert {p["port"] for p in service.inputs["spec"]["ports"]} <= {53, 80, 2222}


def test_policy_pack_labels_and_annotations() -> None:
    r = render({"privileged": True})
    # The host-key Secret says what it is (not the CA role the policy pack refuses to see mounted).
    assert r.one(SECRET, "ssh-host-keys").inputs["metadata"]["labels"]["classroom/role"] == "ssh-host-keys"
    annotations = r.statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["classroom/privileged"] == "true"
    unpriv = render({"privileged": False}).statefulset["spec"]["template"]["metadata"]["annotations"]
    assert unpriv["classroom/privileged"] == "false"


def test_every_service_port_targets_a_container_port_of_the_same_name_and_protocol() -> None:
    r = render({**CIS90, "service": {"port": 2222}})
    container = {p["name"]: (p["containerPort"], p["protocol"]) for p in r.container("login")["ports"]}
    assert container == {"ssh": (22, "TCP"), "http": (80, "TCP"), "dns": (53, "UDP")}
    for service in r.of_type(SVC):
        for port in service.inputs["spec"]["ports"]:
            assert port["targetPort"] in container, (service.name, port)
            assert container[port["targetPort"]][1] == port.get("protocol", "TCP"), (service.name, port)


def test_cluster_ip_service_reports_its_dns_name() -> None:
    r = render({"service": {"type": "ClusterIP"}})
    assert r.one(SVC, "ssh").inputs["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in r.one(SVC, "ssh").inputs["spec"]
    assert r.outputs["host"] == "ssh.classroom-dev.svc.cluster.local"


def test_node_port_is_passed_through() -> None:
    spec = render({"service": {"type": "NodePort", "nodePort": 30022}}).one(SVC, "ssh").inputs["spec"]
    assert spec["type"] == "NodePort" and spec["ports"][0]["nodePort"] == 30022


def test_fake_private_key_constant_is_not_the_public_one() -> None:
    # guards the fixtures themselves: a test that mixed them up would pass vacuously
    assert FAKE_CA_PRIVATE != FAKE_CA_PUBLIC


def test_network_policy_admits_only_the_published_ports() -> None:
    r = render(CIS90)
    policy = r.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "ingress").inputs["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"] == r.statefulset["spec"]["selector"]["matchLabels"]
    ports = {(p["port"], p["protocol"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {(22, "TCP"), (80, "TCP"), (53, "UDP")}


def test_pod_seccomp_follows_the_mode() -> None:
    assert render({"privileged": False}).pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert render({"privileged": True}).pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"


# ------------------------------------------------------------------ roster and labs wiring

ROSTER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
TERM = {"start": "2026-08-24", "end": "2026-12-18", "timezone": "UTC", "grace": "7d"}


def test_a_roster_is_rendered_and_mounted_into_the_login_server() -> None:
    r = render({"roster": [{"username": "alice", "keys": [ROSTER_KEY]}], "term": TERM}, stack="cis90-fall2026")
    roster_cm = r.one(CM, "roster-configmap")
    assert roster_cm.inputs["metadata"]["name"] == "roster"
    assert "apply-roster.sh" in roster_cm.inputs["data"]
    login = mounts(r.container("login"))
    assert login["/etc/classroom/roster"]["readOnly"] is True
    assert volumes(r)[login["/etc/classroom/roster"]["name"]]["configMap"]["name"] == "roster"
    sts = r.one("kubernetes:apps/v1:StatefulSet", "statefulset")
    assert roster_cm.urn in sts.dependencies
    # The roster follows changes in-pod: its content is not in the pod checksum.
    other = render({"roster": [{"username": "bob", "keys": [ROSTER_KEY]}], "term": TERM}, stack="cis90-fall2026")
    annotations = r.statefulset["spec"]["template"]["metadata"]["annotations"]
    other_annotations = other.statefulset["spec"]["template"]["metadata"]["annotations"]
    assert other.one(CM, "roster-configmap").inputs["data"] != roster_cm.inputs["data"]
    assert annotations[CHECKSUM_ANNOTATION] == other_annotations[CHECKSUM_ANNOTATION]


def test_no_roster_means_no_roster_mount() -> None:
    r = render()
    assert all(cm.name != "roster-configmap" for cm in r.of_type(CM))
    assert "/etc/classroom/roster" not in mounts(r.container("login"))


def test_urns_of_data_holding_resources_never_change() -> None:
    # A new URN is a new resource to the engine: create the new claim, delete
    # (here: refuse to delete) the old one. Renaming a component, a resource
    # or moving a claim to another parent needs an alias - this test is the
    # reminder.
    r = render({"extraMounts": [{"name": "cis90", "path": "/home/cis90", "size": "1Gi"}]})
    urns = {x.urn.split("::", 2)[2] for x in r.resources if x.protect}
    assert urns == {
        "pulumi:pulumi:Stack$kubernetes:core/v1:Namespace::namespace",
        "classroom:index:SshCertificateAuthority$tls:index/privateKey:PrivateKey::ssh-ca-key",
        "classroom:index:LoginServer$kubernetes:core/v1:PersistentVolumeClaim::home",
        "classroom:index:LoginServer$kubernetes:core/v1:PersistentVolumeClaim::extra-cis90",
        "classroom:index:LoginServer$pulumi-python:dynamic:Resource::claim-guard",
    }


def test_claims_wait_for_the_claim_guard_that_records_their_shape() -> None:
    r = render({"extraMounts": [{"name": "cis90", "path": "/home/cis90", "size": "1Gi"}]})
    guard = next(x for x in r.resources if x.name == "claim-guard")
    assert guard.protect
    assert guard.inputs["namespace"] and guard.inputs["claims"]["extra-cis90"]["size"] == "1Gi"
    assert set(guard.inputs["claims"]) == {"home", "extra-cis90"}
    claims = [x for x in r.resources if x.type == "kubernetes:core/v1:PersistentVolumeClaim"]
    assert claims and all(guard.urn in x.dependencies for x in claims)


def test_lab_hosts_are_built_when_the_stack_has_labs() -> None:
    raw = {
        "roster": [{"username": "alice", "keys": [ROSTER_KEY], "labs": True}],
        "term": TERM,
        "labs": {
            "domain": "lab.example.edu",
            "hosts": [{"name": "lab1", "address": "10.0.0.5", "capacity": 10}],
            "ssh": {"privateKey": FAKE_CA_PRIVATE},
            "sessionKey": "k" * 48,
            "adminKey": "k" * 48,
        },
    }
    r = render(raw, stack="cis90-fall2026")
    components = [x for x in r.resources if x.type == "classroom:index:LabHost"]
    assert [c.name for c in components] == ["lab-lab1"]
    assert any(x.type == "command:remote:Command" and x.name.endswith("-cluster-alice") for x in r.resources)
    # No labs section, no lab hosts.
    assert not [x for x in render().resources if x.type == "classroom:index:LabHost"]
