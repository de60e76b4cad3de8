"""The main job as the README gives it: `make up` on a fresh clone, then `make destroy`.

A clone of the repository (its committed tree: what a newcomer gets) runs
`make up` with no KUBECONFIG: tools/up.sh starts the clone's own local control
plane, deploys the dev stack through the real engine with the embedded file
backend, and prints the ssh command and the @cert-authority line. `make
destroy` then removes everything but the protected homes, and `make
cluster-stop` stops that control plane. The clone shares this checkout's
virtualenv and the toolchain cache (what a second `make` on one machine
would find), nothing else.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.project import kget

REPO = Path(__file__).resolve().parents[2]


def make(clone: Path, *target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["make", "-C", str(clone), *target], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (
        f"make {' '.join(target)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, pulumi_bin: str) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("fresh") / "classroom"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(where)], check=True)
    (where / ".venv").symlink_to(REPO / ".venv")
    (where / ".venv-checkov").symlink_to(REPO / ".venv-checkov")
    yield where
    subprocess.run(["make", "-C", str(where), "cluster-stop"], capture_output=True, timeout=300, check=False)


def test_make_up_deploys_the_dev_stack_and_make_destroy_keeps_the_home(clone: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBE_CONTEXT", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE")
    }
    # the clone sits elsewhere; the vendored sources stay where this checkout finds them
    env["CLASSROOM_VENDOR"] = str((REPO.parent / "shared" / "vendor").resolve())
    up = make(clone, "up", env=env)
    said = up.stdout + up.stderr
    assert "connect with:   ssh -p 22 instructor@127.240." in said, said[-3000:]
    assert "known_hosts:    @cert-authority " in said
    kubeconfig = str(clone / ".state" / "cluster" / "kubeconfig")
    sts = kget(kubeconfig, "statefulset", "-n", "classroom-dev")["items"]
    assert sts and sts[0]["status"].get("readyReplicas") == 1
    home = kget(kubeconfig, "pvc", "home", "-n", "classroom-dev")
    assert home["status"]["phase"] == "Bound"
    assert (clone / ".state" / "backend").is_dir()

    again = make(clone, "up", env=env)
    assert "unchanged" in again.stdout and "+ " not in again.stdout.split("Resources:")[-1]

    make(clone, "destroy", env=env)
    assert kget(kubeconfig, "statefulset", "-n", "classroom-dev")["items"] == []
    kept = kget(kubeconfig, "pvc", "home", "-n", "classroom-dev")
    assert kept["metadata"]["uid"] == home["metadata"]["uid"] and kept["status"]["phase"] == "Bound"
