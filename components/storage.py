"""Persistent storage that survives `pulumi destroy`: namespace, Retain class, PVCs.

Why a managed StorageClass (and not patching the bound PV):
  Kubernetes has two trap doors under Pulumi's `protect`/`retain_on_delete`.
  The second is the PV reclaim policy: most dynamic provisioners create PVs
  with `Delete`, so the data goes the moment the claim is finally deleted.
  Two ways to close it were considered:

  * Patch each bound PV (`PersistentVolumePatch`, reclaim Retain). That needs
    the PV name from the claim's `spec.volumeName`, which only exists after the
    claim is bound - with `WaitForFirstConsumer` classes that is after the pod
    is scheduled, so the patch cannot be planned in a preview and the data is
    unprotected until a later update lands.
  * Let the program own a StorageClass with `reclaimPolicy: Retain` (copying a
    configured provisioner). Every PV the class provisions is Retain from the
    moment it exists; the preview shows it; nothing depends on timing.

  The program does the second. Claims whose class is "" (chart default) use
  the managed class `<namespace>-retain`. A claim that names its own class
  (homeStorageClassName / extraMounts[].storageClassName) is checked: the
  program reads that class and stops (before any PVC is created) unless its
  reclaimPolicy is Retain.

What can change on an existing claim:
  Only `spec.resources.requests.storage` (growing it is in-place expansion; the
  managed class sets allowVolumeExpansion). Every other spec field is immutable
  in Kubernetes; the program pins them (accessModes, volumeMode) and tells the
  engine to ignore changes to the class name, so no config change can plan a
  replacement. Shrinking is rejected by the API server and leaves the claim as
  it is. As a last guard the claims are `protect=True`: any plan that would
  delete or replace one fails instead.

Adopting retained claims after a full teardown (state gone, claims kept):
  pulumi-kubernetes >= 4.29 refuses to create an object that already exists.
  Run the first `pulumi up` of the new stack with
  `PULUMI_K8S_UPSERT_EXISTING_OBJECTS=true` so the provider applies the
  program's spec onto the retained namespace and claims instead of failing;
  later runs need no flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

from components.vocabulary import quantity_value

# Spec fields Kubernetes will not change on an existing claim. A diff on any
# of them would make the engine plan a replacement; ignoring them keeps the
# claim (the class in the stack file is then only used for new claims).
IMMUTABLE_PVC_FIELDS = (
    "spec.storageClassName",
    "spec.accessModes",
    "spec.volumeMode",
    "spec.volumeName",
    "spec.selector",
    "spec.dataSource",
    "spec.dataSourceRef",
)


def keep_forever(opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    """Options for anything that holds student data (or contains it)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=True, retain_on_delete=True))


def create_namespace(
    name: str, labels: Mapping[str, str], opts: pulumi.ResourceOptions | None = None
) -> k8s.core.v1.Namespace:
    """A namespace the stack creates: deleting it would delete every PVC inside."""
    return k8s.core.v1.Namespace(
        "namespace",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=dict(labels)),
        opts=keep_forever(opts),
    )


def retain_storage_class(
    name: str,
    provisioner: str,
    parameters: Mapping[str, str],
    labels: Mapping[str, str],
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.storage.v1.StorageClass:
    """The Retain class that every class-less claim of this stack uses."""
    return k8s.storage.v1.StorageClass(
        "retain-class",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=dict(labels)),
        provisioner=provisioner,
        parameters=dict(parameters) or None,
        reclaim_policy="Retain",
        allow_volume_expansion=True,
        # Bind where the pod lands, so zonal/local volumes follow the node.
        volume_binding_mode="WaitForFirstConsumer",
        # Provisioner and parameters are immutable: a change replaces the
        # class. Existing PVs keep their Retain policy whatever happens here.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True)),
    )


def require_retain_class(
    resource_name: str, class_name: str, config_key: str, opts: pulumi.ResourceOptions | None = None
) -> pulumi.Output[str]:
    """The name of an admin-provided class, failing the run unless it is Retain."""
    existing = k8s.storage.v1.StorageClass.get(resource_name, class_name, opts=opts)

    def check(policy: str | None) -> str:
        if (policy or "Delete") != "Retain":
            raise pulumi.RunError(
                f"config key '{config_key}': got {class_name!r}, whose reclaimPolicy is "
                f"{policy or 'Delete'}; expected a StorageClass with reclaimPolicy Retain, or '' to "
                "use the Retain class this stack manages (a Delete class loses student data "
                "when the claim is deleted)"
            )
        return class_name

    return existing.reclaim_policy.apply(check)


def persistent_claim(
    resource_name: str,
    *,
    claim_name: str,
    namespace: pulumi.Input[str],
    size: str,
    storage_class_name: pulumi.Input[str],
    labels: Mapping[str, str],
    depends_on: Sequence[pulumi.Resource] = (),
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.core.v1.PersistentVolumeClaim:
    """A claim the program declares itself (never a volumeClaimTemplate)."""
    return k8s.core.v1.PersistentVolumeClaim(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=claim_name,
            namespace=namespace,
            labels=dict(labels),
            # The provider would otherwise wait for Bound; a WaitForFirstConsumer
            # claim only binds once the StatefulSet's pod exists.
            annotations={"pulumi.com/skipAwait": "true"},
        ),
        spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteOnce"],
            volume_mode="Filesystem",
            storage_class_name=storage_class_name,
            resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": size}),
        ),
        opts=keep_forever(
            pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(depends_on=list(depends_on), ignore_changes=list(IMMUTABLE_PVC_FIELDS)),
            )
        ),
    )


# ---------------------------------------------------------------- claim guard
#
# `protect` makes the engine refuse a plan that deletes or replaces a claim,
# but it says only "resource is protected", and a class change hidden by
# ignoreChanges is silently not applied at all. The guard is a record, in
# state, of what shapes the claims (namespace, names, classes, sizes, the
# managed class's provisioner and parameters); its diff runs in every
# preview before any claim is touched and refuses a change that the claims
# cannot take in place, naming the config key, the old and new value and the
# way out. The claims depend on it, so with --skip-preview nothing that holds
# data is applied either.

RELEASE_HINT = "to really move or drop data, release the homes first (README 'Releasing the homes from the stack')"


class ClaimChangeRefused(Exception):
    """A config change that would replace or delete a claim, or is silently not applied to it."""


def refused_claim_changes(olds: Mapping[str, object], news: Mapping[str, object]) -> list[str]:
    """One sentence per refused change between the recorded shape and the new one."""
    problems: list[str] = []
    old_ns, new_ns = olds.get("namespace"), news.get("namespace")
    if old_ns and old_ns != new_ns:
        problems.append(
            f"config key 'namespace': {old_ns!r} -> {new_ns!r} would delete every claim in {old_ns!r} "
            f"and create empty ones; keep {old_ns!r}"
        )
    old_claims = dict(olds.get("claims") or {})  # type: ignore[call-overload]
    new_claims = dict(news.get("claims") or {})  # type: ignore[call-overload]
    for claim, old in sorted(old_claims.items()):
        new = new_claims.get(claim)
        if new is None:
            problems.append(
                f"config key 'extraMounts': the claim {claim!r} is gone from the config (a mount removed "
                "or renamed); that would delete it; put the mount back under its old name"
            )
            continue
        if old["storageClassName"] != new["storageClassName"]:
            managed = "(the managed class)"
            before, after = old["storageClassName"] or managed, new["storageClassName"] or managed
            problems.append(
                f"config key '{new['classKey']}': {before!r} -> {after!r}: the class of an existing "
                "claim cannot change (it would need a new, empty claim); keep the old class"
            )
        if quantity_value(str(new["size"])) < quantity_value(str(old["size"])):
            problems.append(
                f"config key '{new['key']}': {old['size']} -> {new['size']}: a claim cannot shrink; "
                f"keep {old['size']} or more"
            )
    old_class, new_class = olds.get("managedClass"), news.get("managedClass")
    if old_class and new_class and old_class != new_class:
        problems.append(
            f"config keys 'storageProvisioner'/'storageParameters': {old_class} -> {new_class}: the "
            "Retain class's provisioner and parameters are immutable and its claims' volumes were made "
            "by the old ones; keep them"
        )
    return problems


class ClaimGuardProvider(ResourceProvider):
    def check(self, _olds: dict[str, object], news: dict[str, object]) -> CheckResult:
        # Check, not diff, reports the refusal: the engine prints check failures
        # as plain messages, while a failing diff reaches the user as a traceback.
        problems = refused_claim_changes(_olds, news) if _olds else []
        failures = [CheckFailure("claims", f"refused, nothing applied: {p}; {RELEASE_HINT}") for p in problems]
        return CheckResult(news, failures)

    def create(self, props: dict[str, object]) -> CreateResult:
        return CreateResult(id_="claim-guard", outs=dict(props))

    def diff(self, _id: str, _olds: dict[str, object], _news: dict[str, object]) -> DiffResult:
        problems = refused_claim_changes(_olds, _news)
        if problems:
            raise ClaimChangeRefused("refused, nothing applied: " + "; ".join(problems) + f"; {RELEASE_HINT}")
        changed = {k: _olds.get(k) for k in _news} != dict(_news)
        return DiffResult(changes=changed, replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, object], _news: dict[str, object]) -> UpdateResult:
        return UpdateResult(outs=dict(_news))


class ClaimGuard(pulumi.dynamic.Resource):
    """The recorded shape of a stack's claims; see refused_claim_changes."""

    def __init__(
        self,
        name: str,
        *,
        namespace: str,
        claims: Mapping[str, Mapping[str, str]],
        managed_class: Mapping[str, object] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "namespace": namespace,
            "claims": {k: dict(v) for k, v in claims.items()},
            "managedClass": dict(managed_class) if managed_class else None,
        }
        # Protected with the claims: it must outlive an end-of-term destroy as they do.
        super().__init__(ClaimGuardProvider(), name, props, keep_forever(opts))
