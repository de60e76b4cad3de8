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
