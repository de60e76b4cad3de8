"""Unit tests of the classroom policy pack: each rule called with the same argument objects the
pulumi-policy analyzer builds (props wrapped in its unknown-checking proxy), no engine needed."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import classroom_policies as rules
import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

ROOT = Path(__file__).resolve().parents[2]


STACK_URN = "urn:pulumi:cis90-fall2026::classroom::"


def options(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def resource_args(
    resource_type: str,
    props: Mapping[str, Any],
    *,
    name: str = "res",
    protect: bool = False,
    config: Mapping[str, Any] | None = None,
) -> ResourceValidationArgs:
    urn = f"{STACK_URN}{resource_type}::{name}"
    return ResourceValidationArgs(
        resource_type, unknown_checking_proxy(copy.deepcopy(dict(props))), urn, name, options(protect), None, config
    )


class Violations(list[str]):
    def __call__(self, message: str, urn: str | None = None) -> None:
        self.append(message)


def run(validate: Any, args: Any) -> Violations:
    found = Violations()
    validate(args, found)
    return found


def container(name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "image": "ghcr.io/example/login:1.0",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }
    body.update(extra)
    return body


def statefulset(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": containers}
    if init is not None:
        pod_spec["initContainers"] = init
    if volumes is not None:
        pod_spec["volumes"] = volumes
    template: dict[str, Any] = {"metadata": {"labels": {"app": "login"}}, "spec": pod_spec}
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "cis90-login", "namespace": "cis90"},
        "spec": {"serviceName": "cis90-login", "selector": {"matchLabels": {"app": "login"}}, "template": template},
    }


PVC_PROPS = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "cis90-home", "namespace": "cis90"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
}


# --- student-data-protected -----------------------------------------------------------------


def test_unprotected_pvc_is_refused_with_its_name() -> None:
    found = run(rules.validate_student_data_protected, resource_args(rules.PVC, PVC_PROPS, name="home"))
    assert len(found) == 1
    assert "PersistentVolumeClaim 'cis90/cis90-home'" in found[0]
    assert "protect=True" in found[0] and "retain_on_delete=True" in found[0]


def test_protected_pvc_passes() -> None:
    assert run(rules.validate_student_data_protected, resource_args(rules.PVC, PVC_PROPS, protect=True)) == []


def test_unprotected_namespace_is_refused() -> None:
    props = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cis90"}}
    found = run(rules.validate_student_data_protected, resource_args(rules.NAMESPACE, props))
    assert len(found) == 1 and "Namespace 'cis90'" in found[0] and "deletes them all" in found[0]
    assert run(rules.validate_student_data_protected, resource_args(rules.NAMESPACE, props, protect=True)) == []


def test_statefulset_volume_claim_templates_are_refused() -> None:
    props = statefulset([container("login")])
    props["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "home"}, "spec": PVC_PROPS["spec"]}]
    found = run(rules.validate_student_data_protected, resource_args(rules.STATEFUL_SET, props))
    assert len(found) == 1 and "volumeClaimTemplates" in found[0]
    assert run(rules.validate_student_data_protected, resource_args(rules.STATEFUL_SET, statefulset([]))) == []


def test_other_resources_are_not_judged_by_protection() -> None:
    props = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "motd"}, "data": {}}
    assert run(rules.validate_student_data_protected, resource_args("kubernetes:core/v1:ConfigMap", props)) == []


# --- privileged-only-when-configured ----------------------------------------------------------


PRIV = {"securityContext": {"privileged": True}}


def test_privileged_container_without_annotation_is_refused() -> None:
    props = statefulset([container("login", **PRIV)])
    found = run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props))
    assert len(found) == 1
    assert "container 'login'" in found[0] and rules.PRIVILEGED_ANNOTATION in found[0]


def test_privileged_container_with_annotation_passes() -> None:
    props = statefulset([container("login", **PRIV)], annotations={rules.PRIVILEGED_ANNOTATION: "true"})
    assert run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props)) == []


def test_annotation_false_does_not_allow_privileged() -> None:
    props = statefulset([container("login", **PRIV)], annotations={rules.PRIVILEGED_ANNOTATION: "false"})
    found = run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props))
    assert len(found) == 1 and '"false"' in found[0]


def test_policy_config_overrides_annotation() -> None:
    props = statefulset([container("login", **PRIV)], annotations={rules.PRIVILEGED_ANNOTATION: "true"})
    args = resource_args(rules.STATEFUL_SET, props, config={"privileged": False})
    found = run(rules.validate_privileged_only_when_configured, args)
    assert len(found) == 1 and "privileged=false" in found[0]
    plain = statefulset([container("login", **PRIV)])
    assert (
        run(
            rules.validate_privileged_only_when_configured,
            resource_args(rules.STATEFUL_SET, plain, config={"privileged": True}),
        )
        == []
    )


def test_privileged_init_container_counts_and_unprivileged_pod_passes() -> None:
    props = statefulset([container("login")], init=[container("hostkeys", **PRIV)])
    found = run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props))
    assert len(found) == 1 and "init container 'hostkeys'" in found[0]
    clean = statefulset([container("login", securityContext={"privileged": False})])
    assert run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, clean)) == []


def test_privileged_bare_pod_and_cronjob_are_checked() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [container("c", **PRIV)]},
    }
    assert len(run(rules.validate_privileged_only_when_configured, resource_args("kubernetes:core/v1:Pod", pod))) == 1
    cron = {
        "metadata": {"name": "nightly"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container("c", **PRIV)]}}}}},
    }
    found = run(rules.validate_privileged_only_when_configured, resource_args("kubernetes:batch/v1:CronJob", cron))
    assert len(found) == 1 and "CronJob 'nightly'" in found[0]


# --- containers-have-requests-and-limits ------------------------------------------------------


def test_container_without_limits_is_refused_naming_what_is_missing() -> None:
    bare = {"name": "login", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}}
    found = run(rules.validate_requests_and_limits, resource_args(rules.STATEFUL_SET, statefulset([bare])))
    assert len(found) == 1
    assert "container 'login'" in found[0]
    assert "resources.limits.cpu" in found[0] and "resources.limits.memory" in found[0]
    assert "resources.requests" not in found[0]


def test_init_container_without_resources_is_refused() -> None:
    init = {"name": "hostkeys", "image": "x"}
    props = statefulset([container("login")], init=[init])
    found = run(rules.validate_requests_and_limits, resource_args(rules.STATEFUL_SET, props))
    assert len(found) == 1 and "init container 'hostkeys'" in found[0] and "resources.requests.cpu" in found[0]


def test_complete_resources_pass_and_config_narrows_the_requirement() -> None:
    props = statefulset([container("login")], init=[container("hostkeys")])
    assert run(rules.validate_requests_and_limits, resource_args(rules.STATEFUL_SET, props)) == []
    memory_only = {
        "name": "login",
        "image": "x",
        "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}},
    }
    args = resource_args(rules.STATEFUL_SET, statefulset([memory_only]), config={"resources": ["memory"]})
    assert run(rules.validate_requests_and_limits, args) == []


# --- services-expose-configured-ports-only ----------------------------------------------------


def service(ports: list[int], annotation: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "cis90-ssh", "namespace": "cis90"}
    if annotation is not None:
        metadata["annotations"] = {rules.ALLOWED_PORTS_ANNOTATION: annotation}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"type": "LoadBalancer", "ports": [{"name": f"p{p}", "port": p, "targetPort": p} for p in ports]},
    }


def test_service_with_unconfigured_port_is_refused() -> None:
    found = run(rules.validate_service_ports, resource_args(rules.SERVICE, service([22, 8080], "22")))
    assert len(found) == 1
    assert "8080 (p8080)" in found[0] and "allowed: 22" in found[0]


def test_service_with_configured_ports_passes() -> None:
    assert run(rules.validate_service_ports, resource_args(rules.SERVICE, service([22, 8080], "22, 8080"))) == []


def test_service_without_annotation_or_config_is_refused() -> None:
    found = run(rules.validate_service_ports, resource_args(rules.SERVICE, service([22], None)))
    assert len(found) == 1 and "no classroom/allowed-ports annotation" in found[0]


def test_malformed_annotation_names_value_and_format() -> None:
    found = run(rules.validate_service_ports, resource_args(rules.SERVICE, service([22], "ssh")))
    assert len(found) == 1 and '"ssh"' in found[0] and "comma-separated" in found[0]


def test_policy_config_ports_override_annotation() -> None:
    args = resource_args(rules.SERVICE, service([22, 8080], "22,8080"), config={"allowedPorts": [22.0]})
    found = run(rules.validate_service_ports, args)
    assert len(found) == 1 and "8080" in found[0] and "policy config" in found[0]


# --- ssh-ca-key-not-mounted --------------------------------------------------------


def policy_resource(resource_type: str, name: str, props: Mapping[str, Any], deps: list[Any] | None = None) -> Any:
    return PolicyResource(
        resource_type,
        unknown_checking_proxy(copy.deepcopy(dict(props))),
        f"{STACK_URN}{resource_type}::{name}",
        name,
        options(),
        None,
        None,
        deps or [],
        {},
    )


CA_SECRET: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "cis90-ssh-ca", "namespace": "cis90", "labels": {"classroom/role": "ssh-ca"}},
    "stringData": {"ca": "[secret]"},
}
CA_VOLUME = {"name": "ca", "secret": {"secretName": "cis90-ssh-ca"}}
HOSTKEYS = container("hostkeys", volumeMounts=[{"name": "ca", "mountPath": "/run/ca"}])


def stack_args(*resources: Any, config: Mapping[str, Any] | None = None) -> StackValidationArgs:
    return StackValidationArgs(list(resources), config)


def test_ca_mounted_in_an_init_container_is_refused_unless_the_config_names_it() -> None:
    # The program signs host keys at deploy time: by default no container, init or not, may hold the key.
    sts = statefulset([container("login")], init=[HOSTKEYS], volumes=[CA_VOLUME])
    args = stack_args(policy_resource(rules.SECRET, "ca", CA_SECRET), policy_resource(rules.STATEFUL_SET, "sts", sts))
    found = run(rules.validate_ca_key_not_mounted, args)
    assert len(found) == 1 and "init container 'hostkeys'" in found[0] and "deploy time" in found[0]
    configured = stack_args(*args.resources, config={"initContainers": ["hostkeys"]})
    assert run(rules.validate_ca_key_not_mounted, configured) == []


def test_a_secret_with_a_ca_key_entry_is_the_ca_even_without_the_label() -> None:
    # The cloud-server chart's Secret (keys ca_key / ca_key.pub) carries no classroom label.
    chart: dict[str, Any] = copy.deepcopy(CA_SECRET)
    chart["metadata"]["labels"] = {}
    chart["stringData"] = {"ca_key": "[secret]", "ca_key.pub": "ssh-ed25519 AAAA"}
    login = container("login", volumeMounts=[{"name": "ca", "mountPath": "/etc/ssh/ca"}])
    sts = statefulset([login], volumes=[CA_VOLUME])
    args = stack_args(policy_resource(rules.SECRET, "ca", chart), policy_resource(rules.STATEFUL_SET, "sts", sts))
    found = run(rules.validate_ca_key_not_mounted, args)
    assert len(found) == 1 and "container 'login'" in found[0] and "'ca_key' entry" in found[0]


def test_ca_mounted_in_main_container_is_refused() -> None:
    login = container("login", volumeMounts=[{"name": "ca", "mountPath": "/etc/ssh/ca"}])
    sts = statefulset([login], init=[HOSTKEYS], volumes=[CA_VOLUME])
    args = stack_args(policy_resource(rules.SECRET, "ca", CA_SECRET), policy_resource(rules.STATEFUL_SET, "sts", sts))
    found = [f for f in run(rules.validate_ca_key_not_mounted, args) if "container 'login'" in f]
    assert len(found) == 1
    assert "/etc/ssh/ca" in found[0] and "deploy time" in found[0]


def test_ca_in_env_or_projected_volume_of_main_container_is_refused() -> None:
    login = container(
        "login",
        env=[{"name": "CA_KEY", "valueFrom": {"secretKeyRef": {"name": "cis90-ssh-ca", "key": "ca"}}}],
        envFrom=[{"secretRef": {"name": "cis90-ssh-ca"}}],
        volumeMounts=[{"name": "bundle", "mountPath": "/bundle"}],
    )
    projected = {"name": "bundle", "projected": {"sources": [{"secret": {"name": "cis90-ssh-ca"}}]}}
    sts = statefulset([login], volumes=[projected])
    args = stack_args(policy_resource(rules.SECRET, "ca", CA_SECRET), policy_resource(rules.STATEFUL_SET, "sts", sts))
    found = run(rules.validate_ca_key_not_mounted, args)
    assert len(found) == 1
    assert "CA_KEY" in found[0] and "envFrom" in found[0] and "/bundle" in found[0]


def test_other_init_container_may_not_mount_ca() -> None:
    sidecar = container("copier", volumeMounts=[{"name": "ca", "mountPath": "/ca"}])
    sts = statefulset([container("login")], init=[HOSTKEYS, sidecar], volumes=[CA_VOLUME])
    args = stack_args(policy_resource(rules.SECRET, "ca", CA_SECRET), policy_resource(rules.STATEFUL_SET, "sts", sts))
    only_hostkeys = stack_args(*args.resources, config={"initContainers": ["hostkeys"]})
    found = run(rules.validate_ca_key_not_mounted, only_hostkeys)
    assert len(found) == 1 and "init container 'copier'" in found[0]
    configured = stack_args(*args.resources, config={"initContainers": ["hostkeys", "copier"]})
    assert run(rules.validate_ca_key_not_mounted, configured) == []


def test_unlabelled_secret_is_not_the_ca() -> None:
    plain: dict[str, Any] = copy.deepcopy(CA_SECRET)
    plain["metadata"]["labels"] = {}
    login = container("login", volumeMounts=[{"name": "ca", "mountPath": "/etc/ssh/ca"}])
    sts = statefulset([login], volumes=[CA_VOLUME])
    args = stack_args(policy_resource(rules.SECRET, "ca", plain), policy_resource(rules.STATEFUL_SET, "sts", sts))
    assert run(rules.validate_ca_key_not_mounted, args) == []


def test_unknown_secret_name_is_treated_as_the_ca_when_the_workload_depends_on_it() -> None:
    ca = policy_resource(rules.SECRET, "ca", CA_SECRET)
    unknown_volume = {"name": "ca", "secret": {"secretName": UNKNOWN_STRING_VALUE}}
    login = container("login", volumeMounts=[{"name": "ca", "mountPath": "/etc/ssh/ca"}])
    sts = policy_resource(
        rules.STATEFUL_SET, "sts", statefulset([login], init=[HOSTKEYS], volumes=[unknown_volume]), [ca]
    )
    allow_init = {"initContainers": ["hostkeys"]}
    found = run(rules.validate_ca_key_not_mounted, stack_args(ca, sts, config=allow_init))
    assert len(found) == 1 and "unknown during preview" in found[0]
    # An init container the config allows may mount it, and a workload that does not depend on the CA may too.
    ok = statefulset([container("login")], init=[HOSTKEYS], volumes=[unknown_volume])
    assert (
        run(
            rules.validate_ca_key_not_mounted,
            stack_args(ca, policy_resource(rules.STATEFUL_SET, "s", ok, [ca]), config=allow_init),
        )
        == []
    )
    independent = policy_resource(rules.STATEFUL_SET, "s2", statefulset([login], volumes=[unknown_volume]))
    assert run(rules.validate_ca_key_not_mounted, stack_args(ca, independent)) == []


@pytest.mark.parametrize(
    "validate,resource_type",
    [
        (rules.validate_privileged_only_when_configured, rules.STATEFUL_SET),
        (rules.validate_requests_and_limits, rules.STATEFUL_SET),
        (rules.validate_service_ports, rules.SERVICE),
    ],
)
def test_unknown_values_do_not_crash_rules(validate: Any, resource_type: str) -> None:
    # During a first preview whole sub-objects can be unknown; the rule must still run (no
    # UnknownValueError escaping, which would turn the policy into a mere advisory note).
    props = {"metadata": {"name": "x", "annotations": UNKNOWN_STRING_VALUE}, "spec": UNKNOWN_STRING_VALUE}
    assert run(validate, resource_args(resource_type, props)) == []


def test_pack_entry_point_declares_every_rule_mandatory() -> None:
    # __main__.py serves the pack (it blocks), so read it rather than import it.
    source = (ROOT / "policy" / "__main__.py").read_text()
    for name in (
        "student-data-protected",
        "privileged-only-when-configured",
        "containers-have-requests-and-limits",
        "services-expose-configured-ports-only",
        "ssh-ca-key-not-mounted",
    ):
        assert f'name="{name}"' in source
    assert source.count("EnforcementLevel.MANDATORY") == 6


def test_privileged_with_annotations_unknown_during_preview_is_decided_at_update() -> None:
    # Annotations computed from another resource's outputs are unknown on a first preview; the
    # engine runs the pack again during `pulumi up`, with values known, so the rule waits.
    props = statefulset([container("login", **PRIV)])
    props["spec"]["template"]["metadata"]["annotations"] = UNKNOWN_STRING_VALUE
    assert run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props)) == []
    props["spec"]["template"]["metadata"]["annotations"] = {rules.PRIVILEGED_ANNOTATION: UNKNOWN_STRING_VALUE}
    assert run(rules.validate_privileged_only_when_configured, resource_args(rules.STATEFUL_SET, props)) == []
