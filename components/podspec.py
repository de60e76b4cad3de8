"""Small builders for the pod pieces the login server and the in-cluster lab host share.

One builder per object, each taking only what it uses (claims are in
storage.py, host-key volumes in hostkeys.py). Kept in one place so that a
change to how the program confines a container or mounts a claim reaches
every pod the stack runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s


def confined_root(*, read_only_root: bool, add: Sequence[str] = ()) -> k8s.core.v1.SecurityContextArgs:
    """Root inside the container, but no privilege, no escalation and only the capabilities named."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_user=0,
        run_as_non_root=False,
        privileged=False,
        allow_privilege_escalation=False,
        read_only_root_filesystem=read_only_root,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"], add=list(add) or None),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def privileged(add: Sequence[str] = ()) -> k8s.core.v1.SecurityContextArgs:
    """A privileged container (the pod must also carry the policy pack's privileged annotation)."""
    return k8s.core.v1.SecurityContextArgs(
        privileged=True, capabilities=k8s.core.v1.CapabilitiesArgs(add=list(add)) if add else None
    )


def resources(requests: Mapping[str, str], limits: Mapping[str, str]) -> k8s.core.v1.ResourceRequirementsArgs:
    return k8s.core.v1.ResourceRequirementsArgs(requests=dict(requests), limits=dict(limits))


def claim_volume(volume_name: str, claim_name: pulumi.Input[str]) -> k8s.core.v1.VolumeArgs:
    """A pod volume of a claim the program declares itself (storage.persistent_claim)."""
    return k8s.core.v1.VolumeArgs(
        name=volume_name,
        persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(claim_name=claim_name),
    )


def config_map_volume(
    volume_name: str,
    config_map: pulumi.Input[str],
    *,
    mode: int | None = None,
    keys: Sequence[str] = (),
) -> k8s.core.v1.VolumeArgs:
    """A ConfigMap as a volume: every key, or only `keys` (each at its own name)."""
    return k8s.core.v1.VolumeArgs(
        name=volume_name,
        config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
            name=config_map,
            default_mode=mode,
            items=[k8s.core.v1.KeyToPathArgs(key=k, path=k) for k in keys] or None,
        ),
    )
