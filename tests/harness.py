"""The mock harness: run the classroom program under Pulumi mocks and record what it registers.

`render(raw_config)` parses the config exactly as `load_config` would, builds
the program with `__main__.build`, waits for every registration and returns a
`Rendered` with each resource's inputs AND the resource options the engine
would have received (protect, retainOnDelete, ignoreChanges, dependencies),
captured from the RegisterResource requests by a recording mock monitor.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from components.config import ClassroomConfig, parse_config

ROOT = Path(__file__).resolve().parents[1]

# A real key pair, so the roster's certificate signing runs for real under mocks.
_CA_KEY = ed25519.Ed25519PrivateKey.generate()
FAKE_CA_PUBLIC = (
    _CA_KEY.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
)
FAKE_CA_PRIVATE = _CA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
).decode()
LB_ADDRESS = "203.0.113.10"


def _load_main() -> Any:
    spec = importlib.util.spec_from_file_location("classroom_main", ROOT / "__main__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)  # run_name is not "__main__": nothing runs
    return module


MAIN = _load_main()


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    parent: str = ""
    urn: str = ""
    read: bool = False

    @property
    def kind(self) -> str:
        return str(self.inputs.get("kind", ""))


def dynamic_provider_for(resource_name: str) -> Any:
    """The provider behind one of the program's dynamic resources, by its resource name."""
    from components.hostkeys import HostKeySetProvider
    from components.roster import UidLedgerProvider
    from components.sshcert import CertificateSetProvider
    from components.storage import ClaimGuardProvider

    if resource_name.endswith("-uids"):
        return UidLedgerProvider()
    if resource_name == "claim-guard":
        return ClaimGuardProvider()
    if resource_name.endswith("host-keys"):
        return HostKeySetProvider()
    return CertificateSetProvider()


class ClusterMocks(pulumi.runtime.Mocks):
    """Answers like a cluster would: echo inputs, add what the provider computes."""

    def __init__(self, class_reclaim: Mapping[str, str], existing_secret: Mapping[str, str]) -> None:
        self.class_reclaim = class_reclaim
        self.existing_secret = existing_secret

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            # The program's dynamic providers are pure Python: run their create.
            state = dict(dynamic_provider_for(args.name).create(dict(args.inputs)).outs)
        elif args.typ == "command:local:Command":
            # A lab host's verify step prints the host certificate it accepted.
            state["stdout"] = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t\n"
        elif args.typ == "tls:index/privateKey:PrivateKey":
            state.update(public_key_openssh=FAKE_CA_PUBLIC + "\n", private_key_openssh=FAKE_CA_PRIVATE)
        elif args.typ == "kubernetes:storage.k8s.io/v1:StorageClass" and args.resource_id:
            state = {"metadata": {"name": args.resource_id}, "provisioner": "example.com/csi"}
            policy = self.class_reclaim.get(args.resource_id)
            if policy:
                state["reclaimPolicy"] = policy
        elif args.typ == "kubernetes:core/v1:Secret" and args.resource_id:
            state = {
                "metadata": {"name": args.resource_id.split("/")[-1]},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in self.existing_secret.items()},
            }
        elif args.typ == "kubernetes:core/v1:Service" and (args.inputs.get("spec") or {}).get("type") == "LoadBalancer":
            state["status"] = {"loadBalancer": {"ingress": [{"ip": LB_ADDRESS}]}}
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that also keeps the resource options of every request."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    inputs=_plain(rpc.deserialize_properties(request.object, keep_unknowns=True)),
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    ignore_changes=list(request.ignoreChanges),
                    dependencies=list(request.dependencies),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    parent=request.parent,
                    urn=response.urn,
                )
            )
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)
        self.registered.append(
            Registered(type=request.type, name=request.name, inputs={"id": request.id}, read=True, urn=response.urn)
        )
        return response


def _plain(value: Any) -> Any:
    """Strip Pulumi's secret wrapper so tests see (and can assert on) the value."""
    if isinstance(value, dict):
        if rpc._special_sig_key in value and value[rpc._special_sig_key] == rpc._special_secret_sig:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class Rendered:
    config: ClassroomConfig
    resources: list[Registered]
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ and not r.read]

    def one(self, typ: str, name: str) -> Registered:
        found = [r for r in self.of_type(typ) if r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {[r.name for r in self.of_type(typ)]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """Every Kubernetes object the program declares, as it would be applied."""
        return [r.inputs for r in self.resources if r.type.startswith("kubernetes:") and not r.read]

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("kubernetes:apps/v1:StatefulSet", "statefulset").inputs

    @property
    def pod(self) -> dict[str, Any]:
        return self.statefulset["spec"]["template"]["spec"]

    def container(self, name: str) -> dict[str, Any]:
        pod = self.pod
        found = [c for c in pod.get("containers", []) + pod.get("initContainers", []) if c["name"] == name]
        assert len(found) == 1
        return found[0]

    def config_map(self, name: str) -> dict[str, Any]:
        return self.one("kubernetes:core/v1:ConfigMap", name).inputs


def render(
    raw: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    secret_keys: frozenset[str] = frozenset(),
    class_reclaim: Mapping[str, str] | None = None,
    existing_secret: Mapping[str, str] | None = None,
) -> Rendered:
    cfg = parse_config(raw or {}, stack=stack, base_dir=ROOT, secret_keys=secret_keys)
    mocks = ClusterMocks(
        class_reclaim or {}, existing_secret or {"ca_key": FAKE_CA_PRIVATE, "ca_key_pub": FAKE_CA_PUBLIC}
    )
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="classroom", stack=stack, preview=False, monitor=monitor)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        room = MAIN.build(cfg)
        collected = {
            "checksum": room.server.checksum,
            "host": room.ports.host,
            "known_hosts_line": room.ca.known_hosts_line,
            "public_key": room.ca.public_key,
        }
        return pulumi.Output.all(**collected).apply(outputs.update)

    run()
    return Rendered(config=cfg, resources=monitor.registered, outputs=outputs)


def stack_raw(stack: str) -> dict[str, Any]:
    """The `classroom:` keys of a checked-in stack file, without the prefix."""
    data = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text()).get("config") or {}
    return {k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("classroom:")}


def integral(value: Any) -> Any:
    """Mocks hand numbers back as floats (22.0); the API server expects integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def manifests_for(raw: Mapping[str, Any], stack: str) -> list[dict[str, Any]]:
    """Every Kubernetes object the program declares for a config, as the API server would receive it."""
    return [integral(m) for m in render(raw, stack=stack).manifests]
