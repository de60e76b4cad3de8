"""The policy pack as the engine talks to it: the real pack process (`python policy`, started the
way the Python language host starts a pack directory) serving pulumi-policy's real gRPC Analyzer,
called with the protocol's own request messages.

This is the boundary the Pulumi engine uses; where no engine can be built (see README), it is the
closest real check of: the pack starting from the project's .venv, its policy metadata (names,
mandatory enforcement, config schemas), property and option decoding (Struct numbers as floats,
unknown sentinels), policy config, and the readable messages in the diagnostics.
"""

from __future__ import annotations

import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policy"
PYTHON = ROOT / ".venv" / "bin" / "python"
STACK = "urn:pulumi:cis90-fall2026::classroom::"

POLICIES = {
    "student-data-protected",
    "privileged-only-when-configured",
    "ssh-ca-key-not-mounted",
    "containers-have-requests-and-limits",
    "services-expose-configured-ports-only",
}


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    proc = subprocess.Popen(
        [str(PYTHON), "-u", str(PACK)], cwd=PACK, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready:
            pytest.fail("the policy pack printed no port within 60 s")
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the policy pack did not start: stdout {line!r}, stderr {err[-2000:]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def urn(resource_type: str, name: str) -> str:
    return f"{STACK}{resource_type}::{name}"


def analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub, resource_type: str, name: str, props: dict[str, Any], protect: bool = False
) -> list[Any]:
    request = analyzer_pb2.AnalyzeRequest(
        type=resource_type,
        properties=struct(props),
        urn=urn(resource_type, name),
        name=name,
        options=analyzer_pb2.AnalyzerResourceOptions(protect=protect),
    )
    return list(stub.Analyze(request, timeout=30).diagnostics)


def test_pack_describes_five_mandatory_policies(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "classroom-policies"
    assert {p.name for p in info.policies} == POLICIES
    for policy in info.policies:
        assert policy.enforcementLevel == analyzer_pb2.MANDATORY, policy.name
    schemas = {p.name: json_format.MessageToDict(p.configSchema.properties) for p in info.policies}
    assert schemas["services-expose-configured-ports-only"]["allowedPorts"]["type"] == "array"
    assert schemas["privileged-only-when-configured"]["privileged"] == {"type": "boolean"}


def test_unprotected_claim_is_reported_and_protected_one_is_not(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "home", "namespace": "cis90"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    found = analyze(analyzer, "kubernetes:core/v1:PersistentVolumeClaim", "home", pvc)
    assert [d.policyName for d in found] == ["student-data-protected"]
    assert found[0].enforcementLevel == analyzer_pb2.MANDATORY
    assert "PersistentVolumeClaim 'cis90/home' holds student home directories but is not protected" in found[0].message
    assert analyze(analyzer, "kubernetes:core/v1:PersistentVolumeClaim", "home", pvc, protect=True) == []


def login_statefulset(login: dict[str, Any], annotations: Any = None) -> dict[str, Any]:
    res = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "login"}},
        "spec": {
            "containers": [{"image": "x", "resources": res, **login}],
            "volumes": [{"name": "ca", "secret": {"secretName": "ssh-ca"}}],
        },
    }
    if annotations is not None:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "login", "namespace": "cis90"},
        "spec": {"serviceName": "login", "selector": {"matchLabels": {"app": "login"}}, "template": template},
    }


def test_privileged_login_container_through_the_protocol(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    sts = "kubernetes:apps/v1:StatefulSet"
    privileged = {"name": "login", "securityContext": {"privileged": True}}
    found = analyze(analyzer, sts, "login", login_statefulset(privileged))
    assert [d.policyName for d in found] == ["privileged-only-when-configured"]
    assert "runs container 'login' privileged" in found[0].message
    marked = login_statefulset(privileged, {"classroom/privileged": "true"})
    assert analyze(analyzer, sts, "login", marked) == []
    # An unknown annotation map (first preview) is not a violation: `pulumi up` decides.
    assert analyze(analyzer, sts, "login", login_statefulset(privileged, UNKNOWN_STRING_VALUE)) == []


def test_missing_limits_through_the_protocol(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    props = login_statefulset({"name": "login", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}})
    found = analyze(analyzer, "kubernetes:apps/v1:StatefulSet", "login", props)
    assert [d.policyName for d in found] == ["containers-have-requests-and-limits"]
    assert "container 'login' has no resources.limits.cpu, resources.limits.memory" in found[0].message


def service(ports: list[int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ssh", "namespace": "cis90", "annotations": {"classroom/allowed-ports": "22,80"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": f"p{p}", "port": p} for p in ports]},
    }


def test_service_ports_through_the_protocol_and_policy_config(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    svc = "kubernetes:core/v1:Service"
    # Struct numbers arrive as floats (22.0); the rule must still compare ports.
    assert analyze(analyzer, svc, "ssh", service([22, 80])) == []
    found = analyze(analyzer, svc, "ssh", service([22, 80, 8080]))
    assert [d.policyName for d in found] == ["services-expose-configured-ports-only"]
    assert "exposes port 8080 (p8080)" in found[0].message and "allowed: 22, 80" in found[0].message

    config = {
        "services-expose-configured-ports-only": analyzer_pb2.PolicyConfig(properties=struct({"allowedPorts": [22]}))
    }
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=config), timeout=30)
    try:
        found = analyze(analyzer, svc, "ssh", service([22, 80]))
        assert len(found) == 1 and "exposes port 80 (p80)" in found[0].message and "policy config" in found[0].message
    finally:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={}), timeout=30)


def test_ca_key_in_login_container_through_stack_analysis(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    secret_urn = urn("kubernetes:core/v1:Secret", "ssh-ca")
    sts_urn = urn("kubernetes:apps/v1:StatefulSet", "login")
    secret = analyzer_pb2.AnalyzerResource(
        type="kubernetes:core/v1:Secret",
        urn=secret_urn,
        name="ssh-ca",
        properties=struct(
            {"metadata": {"name": "ssh-ca", "namespace": "cis90", "labels": {"classroom/role": "ssh-ca"}}}
        ),
        options=analyzer_pb2.AnalyzerResourceOptions(),
    )

    def stack(login: dict[str, Any]) -> list[Any]:
        workload = analyzer_pb2.AnalyzerResource(
            type="kubernetes:apps/v1:StatefulSet",
            urn=sts_urn,
            name="login",
            properties=struct(login_statefulset(login)),
            options=analyzer_pb2.AnalyzerResourceOptions(),
            dependencies=[secret_urn],
        )
        request = analyzer_pb2.AnalyzeStackRequest(resources=[secret, workload])
        return list(analyzer.AnalyzeStack(request, timeout=30).diagnostics)

    assert stack({"name": "login"}) == []
    found = stack({"name": "login", "volumeMounts": [{"name": "ca", "mountPath": "/etc/ssh/ca"}]})
    assert [d.policyName for d in found] == ["ssh-ca-key-not-mounted"]
    assert found[0].urn == sts_urn
    assert "container 'login' gets the SSH CA private key Secret" in found[0].message


def test_pack_process_stays_up_between_calls(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    # A crash inside a rule would take the server down with it; one more round trip proves not.
    info = analyzer.GetPluginInfo(empty_pb2.Empty(), timeout=30)
    assert info.version
