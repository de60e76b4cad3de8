"""The k3d double itself: it must refuse what real k3d refuses, or labd's tests prove little."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from labd.render import ClusterValues, render_k3d_config, to_yaml

from tests.labs.support import DOUBLE


def k3d(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOUBLE), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"K3D_DOUBLE_DIR": str(tmp_path / "double"), "PATH": "/usr/bin:/bin"},
    )


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_labd_rendered_config_is_accepted(tmp_path: Path) -> None:
    template = {
        "servers": 1,
        "agents": 2,
        "image": "rancher/k3s:v1.31.5-k3s1",
        "volumes": [{"volume": "/srv/$user:/data", "nodeFilters": ["server:0"]}],
        "options": {"k3s": {"extraArgs": [{"arg": "--tls-san=$host", "nodeFilters": ["server:*"]}]}},
    }
    values = ClusterValues("alice", "lab-alice", 20000, 20001, 20002, "cis90", "fall2026", "lab.example.edu")
    path = write(tmp_path, "c.yaml", to_yaml(render_k3d_config(template, values)))
    done = k3d(tmp_path, "cluster", "create", "--config", path)
    assert done.returncode == 0, done.stderr
    listed = json.loads(k3d(tmp_path, "cluster", "list", "-o", "json").stdout)
    assert listed[0]["name"] == "lab-alice" and listed[0]["agentsCount"] == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("apiVersion: k3d.io/v1alpha4\nkind: Simple\n", "apiVersion"),
        ("apiVersion: k3d.io/v1alpha5\nkind: Simple\nserver: 1\n", "Additional property server"),
        ("apiVersion: k3d.io/v1alpha5\nkind: Simple\nservers: '1'\n", "Expected: number"),
        ("apiVersion: k3d.io/v1alpha5\nkind: Simple\nservers: 0\n", "greater than or equal to 1"),
        ("apiVersion: k3d.io/v1alpha5\nkind: Simple\nports: [{port: '80:80', nodeFilters: [lb]}]\n", "node filter"),
        ("apiVersion: k3d.io/v1alpha5\nkind: Simple\nkubeAPI: {hostPort: 6443}\n", "Expected: string"),
        ("kind: Simple\n", "apiVersion is required"),
    ],
)
def test_invalid_config_is_refused(tmp_path: Path, config: str, message: str) -> None:
    done = k3d(tmp_path, "cluster", "create", "x", "--config", write(tmp_path, "c.yaml", config))
    assert done.returncode == 1 and message in done.stderr
    assert not (tmp_path / "double" / "clusters.json").exists() or "x" not in json.loads(
        (tmp_path / "double" / "clusters.json").read_text()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster", "create", "a", "--agent", "1"], "unknown flag: --agent"),
        (["cluster", "frobnicate"], 'unknown command "frobnicate"'),
        (["cluster", "stop", "nope"], "No nodes found"),
        (["cluster", "create", "Bad_Name"], "invalid cluster name"),
        (["cluster", "list", "-o", "table"], "Unknown output format"),
        (["kubeconfig", "get"], "No cluster(s) specified"),
        (["cluster", "create", "--config", "/tmp/c.json"], "must be .yaml"),
    ],
)
def test_invalid_usage_is_refused_and_logged(tmp_path: Path, args: list[str], message: str) -> None:
    done = k3d(tmp_path, *args)
    assert done.returncode == 1 and message in done.stderr
    calls = [json.loads(line) for line in (tmp_path / "double" / "calls.jsonl").read_text().splitlines()]
    assert calls[-1]["argv"] == args and calls[-1]["rc"] == 1 and "K3D_DOUBLE_DIR" in calls[-1]["env"]


def test_duplicate_create_and_port_clash_fail(tmp_path: Path) -> None:
    config = "apiVersion: k3d.io/v1alpha5\nkind: Simple\nkubeAPI: {hostPort: '6550'}\n"
    path = write(tmp_path, "c.yaml", config)
    assert k3d(tmp_path, "cluster", "create", "one", "--config", path).returncode == 0
    again = k3d(tmp_path, "cluster", "create", "one", "--config", path)
    assert again.returncode == 1 and "already exists" in again.stderr
    clash = k3d(tmp_path, "cluster", "create", "two", "--config", path)
    assert clash.returncode == 1 and "already allocated" in clash.stderr


def test_stop_start_list_cycle(tmp_path: Path) -> None:
    assert k3d(tmp_path, "cluster", "create", "c1").returncode == 0
    assert k3d(tmp_path, "cluster", "stop", "c1").returncode == 0
    listed = json.loads(k3d(tmp_path, "cluster", "list", "-o", "json").stdout)
    assert listed[0]["serversRunning"] == 0
    failed = k3d(tmp_path, "kubeconfig", "get", "c1")
    assert failed.returncode == 1 and "not running" in failed.stderr
    assert k3d(tmp_path, "--verbose", "cluster", "start", "c1").returncode == 0
    listed = json.loads(k3d(tmp_path, "cluster", "list", "-o", "json").stdout)
    assert listed[0]["serversRunning"] == 1
    assert "server: https://0.0.0.0:" in k3d(tmp_path, "kubeconfig", "get", "c1").stdout
    assert k3d(tmp_path, "cluster", "delete", "c1").returncode == 0
    assert json.loads(k3d(tmp_path, "cluster", "list", "-o", "json").stdout) == []
