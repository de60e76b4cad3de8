"""Fixtures of the e2e tier: the real toolchain and a real local control plane.

``local_cluster`` (session scope) starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok once for the whole session
and stops them afterwards, also when a test fails or the run is interrupted.
``toolchain_env`` is the environment ``tools/toolchain.sh env`` prescribes
(PATH with the pinned pulumi / plugins / kubectl, PULUMI_* settings); merge it
into the environment of any ``pulumi`` subprocess.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import localcluster
import pytest

from tests.e2e.project import toolchain_env as read_toolchain_env
from tests.prereq import missing

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: real Pulumi engine / real local Kubernetes control plane")


@pytest.fixture(scope="session")
def toolchain_env() -> dict[str, str]:
    """Variables `eval "$(tools/toolchain.sh env)"` would set, as a dict."""
    after = read_toolchain_env()
    return {k: v for k, v in after.items() if os.environ.get(k) != v and k not in ("_", "SHLVL", "PWD")}


@pytest.fixture(scope="session")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory, toolchain_env: dict[str, str]
) -> Iterator[localcluster.LocalCluster]:
    """A running cluster: `.kubeconfig` (admin), `.dir`, `.api()` (small REST client)."""
    try:
        localcluster.find_binaries()
    except localcluster.ClusterError as e:
        missing(str(e))
    cluster = localcluster.LocalCluster(tmp_path_factory.mktemp("localcluster"))
    try:
        with cluster:
            yield cluster
    except localcluster.ClusterError as e:
        pytest.fail(f"local cluster did not start: {e}")


@pytest.fixture()
def kube_env(local_cluster: localcluster.LocalCluster, toolchain_env: dict[str, str]) -> dict[str, str]:
    """A full environment for subprocesses (kubectl, pulumi) aimed at the local cluster."""
    return {**os.environ, **toolchain_env, "KUBECONFIG": str(local_cluster.kubeconfig)}


@pytest.fixture(scope="session")
def pulumi_bin(toolchain_env: dict[str, str]) -> str:
    """Path of the `pulumi` CLI the toolchain env puts first on PATH (a failure in CI when missing)."""
    path = shutil.which("pulumi", path=toolchain_env.get("PATH", os.environ.get("PATH")))
    if not path:
        missing("no pulumi CLI: run tools/toolchain.sh engine, or install Pulumi so `pulumi` is on PATH")
    return path
