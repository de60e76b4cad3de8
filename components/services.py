"""PortServices: how students reach the login server.

One Service carries SSH and every extra port. Why one and not one per port:
a class gets a single address (one LoadBalancer IP, one DNS name) for
`ssh`, the web server students run, and so on, which is what the cloud-server
chart's users expect; Kubernetes has supported mixed TCP/UDP on a
LoadBalancer since 1.26.

A NetworkPolicy admits ingress to the pod only on those ports.

`externalTrafficPolicy: Local` (LoadBalancer/NodePort) keeps the students'
source addresses visible to sshd's logs; with one replica there is no
balancing to lose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import contract
from components.config import Port, ServiceConfig

SSH_SERVICE_NAME = "ssh"


@dataclass
class PortServicesArgs:
    namespace: pulumi.Input[str]
    service: ServiceConfig
    extra_ports: Sequence[Port]
    selector: Mapping[str, str]
    labels: Mapping[str, str] = field(default_factory=dict)


# Label/annotation contract with the policy pack (policy/classroom_policies.py):
# every Service states the ports the stack configured, so the pack can check
# that nothing else is published.
ALLOWED_PORTS_ANNOTATION = contract.ALLOWED_PORTS_ANNOTATION


def allowed_ports(ssh_port: int, extra_ports: Sequence[Port]) -> str:
    """The policy pack's contract annotation: every port number a Service of the stack may publish."""
    return ",".join(str(p) for p in sorted({ssh_port, *(p.port for p in extra_ports)}))


# One route from `extraPorts` to Kubernetes: the container's ports and the Services' ports are made
# here, side by side. A Service port targets the container port by NAME, so both come from the
# same Port; sshd always listens on 22 inside the pod, whatever `service.port` publishes.
SSH_PORT_NAME = "ssh"
SSH_CONTAINER_PORT = 22


def container_ports(extra_ports: Sequence[Port]) -> list[k8s.core.v1.ContainerPortArgs]:
    """The login container's ports: sshd's, then each extra port under its own name."""
    return [
        k8s.core.v1.ContainerPortArgs(name=SSH_PORT_NAME, container_port=SSH_CONTAINER_PORT, protocol="TCP"),
        *(k8s.core.v1.ContainerPortArgs(name=p.name, container_port=p.port, protocol=p.protocol) for p in extra_ports),
    ]


def service_ports(service: ServiceConfig, extra_ports: Sequence[Port]) -> list[k8s.core.v1.ServicePortArgs]:
    ports = [
        k8s.core.v1.ServicePortArgs(
            name=SSH_PORT_NAME,
            port=service.port,
            target_port=SSH_PORT_NAME,
            protocol="TCP",
            node_port=service.node_port,
        )
    ]
    ports += [
        k8s.core.v1.ServicePortArgs(name=p.name, port=p.port, target_port=p.name, protocol=p.protocol)
        for p in extra_ports
    ]
    return ports


def ingress_only_on(
    resource_name: str,
    *,
    name: str,
    namespace: pulumi.Input[str],
    selector: Mapping[str, str],
    ports: Sequence[tuple[int, str]],
    labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    """A NetworkPolicy admitting ingress to the selected pods on exactly `ports` ((number, protocol)); egress open."""
    return k8s.networking.v1.NetworkPolicy(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=dict(labels)),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(selector)),
            policy_types=["Ingress"],
            ingress=[
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol=proto) for port, proto in ports]
                )
            ],
        ),
        opts=opts,
    )


class PortServices(pulumi.ComponentResource):
    """The Service that exposes SSH and the extra ports of the login server."""

    service: k8s.core.v1.Service
    network_policy: k8s.networking.v1.NetworkPolicy
    host: pulumi.Output[str]
    port: int

    def __init__(self, name: str, args: PortServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("classroom:index:PortServices", name, None, opts)
        cfg = args.service
        external = cfg.type in ("LoadBalancer", "NodePort")
        self.service = k8s.core.v1.Service(
            "ssh",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SSH_SERVICE_NAME,
                namespace=args.namespace,
                labels=dict(args.labels),
                annotations={
                    **cfg.annotations,
                    ALLOWED_PORTS_ANNOTATION: allowed_ports(cfg.port, args.extra_ports),
                },
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=cfg.type,
                selector=dict(args.selector),
                ports=service_ports(cfg, args.extra_ports),
                load_balancer_ip=cfg.load_balancer_ip or None,
                external_traffic_policy="Local" if external else None,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.port = cfg.port

        # Only the published ports reach the pod: a student's stray listener
        # (a dev server on :8000, a forgotten netcat) stays private to the
        # pod even inside the cluster. Egress is left open: git, apt and
        # ssh-import-id need the internet.
        self.network_policy = ingress_only_on(
            "ingress",
            name="login-ingress",
            namespace=args.namespace,
            selector=args.selector,
            ports=[(SSH_CONTAINER_PORT, "TCP"), *((p.port, p.protocol) for p in args.extra_ports)],
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self),
        )

        def address(status: k8s.core.v1.outputs.ServiceStatus | None) -> str:
            ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
            for entry in ingress:
                if entry.ip or entry.hostname:
                    return str(entry.ip or entry.hostname)
            return ""

        if cfg.type == "LoadBalancer":
            self.host = self.service.status.apply(address)
        else:
            self.host = pulumi.Output.concat(SSH_SERVICE_NAME, ".", args.namespace, ".svc.cluster.local")
        self.register_outputs({"host": self.host, "port": self.port})
