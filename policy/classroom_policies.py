"""The classroom policy pack's rules, as plain functions so unit tests can call them directly.

`__main__.py` wraps them in `ResourceValidationPolicy`/`StackValidationPolicy` objects and serves
the pack; every rule here is mandatory there.

Contract with the program (labels and annotations it sets):

- a Secret holding the SSH CA private key carries the label   `classroom/role: ssh-ca`, or has a
  `ca_key` entry (the cloud-server chart's spelling); the program itself creates none: it signs
  host and user certificates at deploy time, so no pod needs the key
- a pod template (or its workload) that may run privileged carries the annotation
  `classroom/privileged: "true"` (only when the stack says `privileged: true`)
- every Service carries `classroom/allowed-ports: "22,8080"`, the ports the stack configured

Policy config (`pulumi preview --policy-pack policy --policy-pack-config cfg.json`) overrides the
annotations when a deployment wants the check independent of the program:
`{"privileged-only-when-configured": {"privileged": false},
  "services-expose-configured-ports-only": {"allowedPorts": [22]},
  "ssh-ca-key-not-mounted": {"initContainers": []},
  "containers-have-requests-and-limits": {"resources": ["cpu", "memory"]}}`

Known gap: the analyzer protocol (pulumirpc.AnalyzerResourceOptions) carries `protect` but not
`retainOnDelete`, so no policy can check retain-on-delete; `ops.comment` checks it in the preview's
new state instead (`retainOnDelete` is in the JSON digest) and fails the pull-request check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import UnknownValueError

# The names below are this pack's copy of components/contract.py (the pack runs outside the
# program's package); tests/unit/test_contract.py fails when the two disagree.
CA_ROLE_LABEL = "classroom/role"
CA_ROLE_VALUE = "ssh-ca"
PRIVILEGED_ANNOTATION = "classroom/privileged"
ALLOWED_PORTS_ANNOTATION = "classroom/allowed-ports"
CA_KEY_ENTRY = "ca_key"
# No container may mount the CA key by default; a deployment that signs in an init container
# anyway can name it in the policy config (and accepts that a node's root can then read the key).
DEFAULT_CA_INIT_CONTAINERS: tuple[str, ...] = ()
DEFAULT_REQUIRED_RESOURCES = ("cpu", "memory")

PVC = "kubernetes:core/v1:PersistentVolumeClaim"
NAMESPACE = "kubernetes:core/v1:Namespace"
SECRET = "kubernetes:core/v1:Secret"
SERVICE = "kubernetes:core/v1:Service"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"

# Where each workload kind keeps its pod template; the pod spec is `<template>.spec` and the pod's
# annotations `<template>.metadata.annotations` (a bare Pod is its own template).
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": (),
    "kubernetes:core/v1:ReplicationController": ("spec", "template"),
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
}
WORKLOAD_TYPES = sorted(POD_TEMPLATE_PATHS)

Report = Callable[[str, str | None], None]


class _Unknown:
    """A value the engine cannot know during preview (e.g. a name another resource outputs)."""

    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN: Any = _Unknown()


# ---------------------------------------------------------------------------------------------
# tolerant access: during preview some properties are unknown, and pulumi-policy's proxies raise
# UnknownValueError on access. One unknown field must not switch off the whole rule.


def get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, _Unknown):
        return UNKNOWN
    if not isinstance(obj, Mapping):
        return default
    try:
        return obj[key]
    except KeyError:
        return default
    except UnknownValueError:
        return UNKNOWN


def dig(obj: Any, *path: str) -> Any:
    for key in path:
        obj = get(obj, key)
        if obj is None or isinstance(obj, _Unknown):
            return obj
    return obj


def elements(seq: Any) -> Iterator[Any]:
    """Items of a list (a proxy list raises on unknown items; those come back as UNKNOWN)."""
    if isinstance(seq, (str, bytes, _Unknown)) or not isinstance(seq, Sequence):
        return
    for index in range(len(seq)):
        try:
            yield seq[index]
        except UnknownValueError:
            yield UNKNOWN


def keys(obj: Any) -> list[str]:
    if not isinstance(obj, Mapping):
        return []
    return [str(k) for k in obj]


def resource_label(resource_type: str, props: Any, fallback: str) -> str:
    kind = resource_type.rsplit(":", 1)[-1]
    name = dig(props, "metadata", "name")
    namespace = dig(props, "metadata", "namespace")
    if not isinstance(name, str):
        name = fallback
    if isinstance(namespace, str):
        return f"{kind} '{namespace}/{name}'"
    return f"{kind} '{name}'"


def pod_template(resource_type: str, props: Any) -> Any:
    path = POD_TEMPLATE_PATHS.get(resource_type)
    if path is None:
        return None
    return dig(props, *path) if path else props


def containers_of(pod_spec: Any) -> Iterator[tuple[str, Any, bool]]:
    """(name, container, is_init) for every init and main container of a pod spec."""
    for field, is_init in (("initContainers", True), ("containers", False)):
        for index, container in enumerate(elements(get(pod_spec, field))):
            name = get(container, "name")
            yield (name if isinstance(name, str) else f"{field}[{index}]", container, is_init)


def _config_list(config: Mapping[str, Any], key: str, default: Sequence[Any]) -> list[Any]:
    value = config.get(key) if config else None
    if value is None:
        return list(default)
    return list(value)


# ---------------------------------------------------------------------------------------------
# student-data-protected


def validate_student_data_protected(args: Any, report: Report) -> None:
    """PVCs and Namespaces must be protected; StatefulSets must not own volumeClaimTemplates."""
    what = resource_label(args.resource_type, args.props, args.name)
    if args.resource_type in (PVC, NAMESPACE):
        if not bool(getattr(args.opts, "protect", False)):
            why = (
                "holds student home directories"
                if args.resource_type == PVC
                else "contains the class's PersistentVolumeClaims (deleting it deletes them all)"
            )
            report(
                f"{what} {why} but is not protected. Declare it with "
                "ResourceOptions(protect=True, retain_on_delete=True) so that `pulumi destroy` or a "
                "replacement can never delete student data; removing protection is a deliberate, "
                "documented step.",
                None,
            )
    elif args.resource_type == STATEFUL_SET:
        templates = dig(args.props, "spec", "volumeClaimTemplates")
        if isinstance(templates, _Unknown) or list(elements(templates)):
            report(
                f"{what} declares spec.volumeClaimTemplates. Those PVCs are created by Kubernetes, not "
                "Pulumi, so they cannot be protected or retained, and the field cannot change after "
                "creation. Declare each PVC as its own protected resource and reference it by name.",
                None,
            )


# ---------------------------------------------------------------------------------------------
# privileged-only-when-configured


def _privileged_allowed(args: Any, template: Any) -> tuple[bool | None, str]:
    """(allowed, why); allowed is None when the annotations are unknown during preview."""
    config = args.get_config() or {}
    if "privileged" in config and config["privileged"] is not None:
        allowed = config["privileged"] is True
        return allowed, f"policy config privileged={str(allowed).lower()}"
    for where, found in (
        ("pod template", dig(template, "metadata", "annotations")),
        ("workload", dig(args.props, "metadata", "annotations")),
    ):
        value = get(found, PRIVILEGED_ANNOTATION)
        if isinstance(value, _Unknown):
            # e.g. annotations computed from another resource's outputs on a first preview; the
            # engine runs the pack again during `pulumi up` with the values known.
            return None, "annotations unknown during preview"
        if isinstance(value, str):
            return value.strip().lower() == "true", f'{where} annotation {PRIVILEGED_ANNOTATION}: "{value}"'
    return False, f"no {PRIVILEGED_ANNOTATION} annotation"


def validate_privileged_only_when_configured(args: Any, report: Report) -> None:
    template = pod_template(args.resource_type, args.props)
    if template is None:
        return
    spec = get(template, "spec")
    privileged: list[str] = []
    for name, container, is_init in containers_of(spec):
        flag = dig(container, "securityContext", "privileged")
        if flag is True or isinstance(flag, _Unknown):
            privileged.append(f"{'init container' if is_init else 'container'} '{name}'")
    if not privileged:
        return
    allowed, because = _privileged_allowed(args, template)
    if allowed is not False:
        return
    what = resource_label(args.resource_type, args.props, args.name)
    report(
        f"{what} runs {', '.join(privileged)} privileged, but the stack does not ask for it ({because}). "
        "A privileged container gives a student who escapes it root on the node; it is allowed only "
        f"when the stack sets `privileged: true` and the program marks the pod template with "
        f'the annotation {PRIVILEGED_ANNOTATION}: "true".',
        None,
    )


# ---------------------------------------------------------------------------------------------
# containers-have-requests-and-limits


def validate_requests_and_limits(args: Any, report: Report) -> None:
    template = pod_template(args.resource_type, args.props)
    if template is None:
        return
    required = [str(r) for r in _config_list(args.get_config() or {}, "resources", DEFAULT_REQUIRED_RESOURCES)]
    what = resource_label(args.resource_type, args.props, args.name)
    for name, container, is_init in containers_of(get(template, "spec")):
        resources = get(container, "resources")
        if isinstance(resources, _Unknown):
            continue
        missing: list[str] = []
        for section in ("requests", "limits"):
            values = get(resources, section)
            if isinstance(values, _Unknown):
                continue
            for resource in required:
                if get(values, resource) in (None, ""):
                    missing.append(f"resources.{section}.{resource}")
        if missing:
            kind = "init container" if is_init else "container"
            report(
                f"{what}: {kind} '{name}' has no {', '.join(missing)}. Every container and init "
                "container needs requests and limits so that one class's login server cannot starve "
                "the node it shares with other classes.",
                None,
            )


# ---------------------------------------------------------------------------------------------
# services-expose-configured-ports-only


def _parse_ports(text: str) -> set[int] | None:
    ports: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit():
            return None
        ports.add(int(part))
    return ports


def validate_service_ports(args: Any, report: Report) -> None:
    if args.resource_type != SERVICE:
        return
    what = resource_label(args.resource_type, args.props, args.name)
    config = args.get_config() or {}
    allowed: set[int] | None
    source: str
    if config.get("allowedPorts") is not None:
        allowed = {int(p) for p in config["allowedPorts"]}
        source = "policy config allowedPorts"
    else:
        annotation = get(dig(args.props, "metadata", "annotations"), ALLOWED_PORTS_ANNOTATION)
        if isinstance(annotation, _Unknown):
            return
        if not isinstance(annotation, str):
            report(
                f"{what} has no {ALLOWED_PORTS_ANNOTATION} annotation, so its ports cannot be checked "
                f'against the stack\'s configuration. Set it to the configured ports, e.g. "22,8080".',
                None,
            )
            return
        allowed = _parse_ports(annotation)
        if allowed is None:
            report(
                f'{what} has {ALLOWED_PORTS_ANNOTATION}: "{annotation}", which is not accepted; expected '
                'a comma-separated list of port numbers such as "22,8080".',
                None,
            )
            return
        source = f'annotation {ALLOWED_PORTS_ANNOTATION}: "{annotation}"'
    extra: list[str] = []
    for entry in elements(dig(args.props, "spec", "ports")):
        port = get(entry, "port")
        if isinstance(port, (int, float)) and int(port) not in allowed:
            label = get(entry, "name")
            extra.append(f"{int(port)}" + (f" ({label})" if isinstance(label, str) else ""))
    if extra:
        report(
            f"{what} exposes port {', '.join(extra)}, which the stack did not configure "
            f"(allowed: {', '.join(str(p) for p in sorted(allowed)) or 'none'}; from {source}). "
            "Add the port to the stack's extra ports or remove it from the Service.",
            None,
        )


# ---------------------------------------------------------------------------------------------
# ssh-ca-key-not-mounted (a stack policy: it needs the Secrets and the workloads)


def _ca_secrets(resources: Sequence[Any]) -> tuple[set[tuple[str | None, str]], set[str]]:
    """(namespace, name) of every CA Secret (by label, or by a `ca_key` entry), and their URNs."""
    names: set[tuple[str | None, str]] = set()
    urns: set[str] = set()
    for resource in resources:
        if resource.resource_type != SECRET:
            continue
        labelled = get(dig(resource.props, "metadata", "labels"), CA_ROLE_LABEL) == CA_ROLE_VALUE
        entries = [get(resource.props, field) for field in ("data", "stringData")]
        has_key = any(isinstance(e, Mapping) and CA_KEY_ENTRY in e for e in entries)
        if not (labelled or has_key):
            continue
        urns.add(resource.urn)
        name = dig(resource.props, "metadata", "name")
        namespace = dig(resource.props, "metadata", "namespace")
        if isinstance(name, str):
            names.add((namespace if isinstance(namespace, str) else None, name))
    return names, urns


def _is_ca_name(name: Any, namespace: str | None, ca_names: set[tuple[str | None, str]]) -> bool:
    if not isinstance(name, str):
        return False
    # A Secret without an explicit namespace lands in the provider's default; match on name then.
    return any(n == name and (ns is None or namespace is None or ns == namespace) for ns, n in ca_names)


def validate_ca_key_not_mounted(args: Any, report: Report) -> None:
    config = args.get_config() or {}
    allowed_init = {str(n) for n in _config_list(config, "initContainers", DEFAULT_CA_INIT_CONTAINERS)}
    ca_names, ca_urns = _ca_secrets(args.resources)
    if not ca_urns:
        return
    for resource in args.resources:
        template = pod_template(resource.resource_type, resource.props)
        if template is None:
            continue
        namespace = dig(resource.props, "metadata", "namespace")
        namespace = namespace if isinstance(namespace, str) else None
        depends_on_ca = any(getattr(dep, "urn", None) in ca_urns for dep in resource.dependencies or [])
        spec = get(template, "spec")
        what = resource_label(resource.resource_type, resource.props, resource.name)

        ca_volumes: set[str] = set()
        unsure_volumes: set[str] = set()
        for volume in elements(get(spec, "volumes")):
            volume_name = get(volume, "name")
            if not isinstance(volume_name, str):
                continue
            references: list[Any] = [dig(volume, "secret", "secretName")]
            references += [dig(src, "secret", "name") for src in elements(dig(volume, "projected", "sources"))]
            if any(_is_ca_name(ref, namespace, ca_names) for ref in references):
                ca_volumes.add(volume_name)
            elif depends_on_ca and any(isinstance(ref, _Unknown) for ref in references):
                # During the first preview the Secret's generated name is not known yet; a volume that
                # may be the CA key is treated as the CA key.
                unsure_volumes.add(volume_name)

        for name, container, is_init in containers_of(spec):
            if is_init and name in allowed_init:
                continue
            leaks: list[str] = []
            for mount in elements(get(container, "volumeMounts")):
                mount_name = get(mount, "name")
                if mount_name in ca_volumes:
                    leaks.append(f"mounts volume '{mount_name}' at {get(mount, 'mountPath')}")
                elif mount_name in unsure_volumes:
                    leaks.append(
                        f"mounts volume '{mount_name}', whose Secret name is unknown during preview and may "
                        "be the CA key (give the CA Secret a fixed metadata.name and reference it by that literal name "
                        "to make this checkable on a first preview)"
                    )
            for env in elements(get(container, "env")):
                ref = dig(env, "valueFrom", "secretKeyRef", "name")
                if _is_ca_name(ref, namespace, ca_names):
                    leaks.append(f"reads it into environment variable {get(env, 'name')}")
            for source in elements(get(container, "envFrom")):
                if _is_ca_name(dig(source, "secretRef", "name"), namespace, ca_names):
                    leaks.append("imports it with envFrom")
            if leaks:
                kind = "init container" if is_init else "container"
                report(
                    f"{what}: {kind} '{name}' gets the SSH CA private key Secret "
                    f"(label {CA_ROLE_LABEL}={CA_ROLE_VALUE} or a '{CA_KEY_ENTRY}' entry): {'; '.join(leaks)}. "
                    "No pod may hold the CA key: sign host certificates at deploy time and mount only them "
                    "(root on a node reads every Secret its pods mount)"
                    + (
                        f"; allowed init containers: {', '.join(sorted(repr(n) for n in allowed_init))}"
                        if allowed_init
                        else ""
                    )
                    + ".",
                    resource.urn,
                )
