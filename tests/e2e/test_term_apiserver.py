"""End of term and the next term, on the real local API server.

Without an engine (the Pulumi CLI cannot be built on this machine), the
program's rendered objects are applied server-side the way
tests/e2e/test_apiserver.py does; "destroy --exclude-protected" is played by
deleting exactly the objects it removes (everything but the namespace, the
claims and the Retain StorageClass), then `classroom term`'s kept-data summary is
checked against the cluster and a byte written into the home volume, and the
next term's stack file (`classroom term new --adopt-homes`) is applied on top: same
claim, same volume, same file.

With a `pulumi` CLI on PATH, test_end_and_adopt_with_the_engine runs the same
story through the engine (`classroom term end` really calls `pulumi destroy`);
without one it is skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.rosterdata import _uid_hash
from ops import cli, term
from tests.e2e.project import PulumiProject, kget, kubectl
from tests.e2e.test_apiserver import REPO, stack_config, wait_for
from tests.harness import manifests_for

OLD = "cis90-fall2026"
NEW = "cis90-spring2027"
# Its own namespace, so this module never disturbs test_apiserver's objects.
NAMESPACE = "term-e2e"
LOCAL_PROVISIONER = "classroom.local/hostpath"
# What `pulumi destroy --exclude-protected` leaves: protected, or a dependency of a protected resource.
KEPT_KINDS = {"Namespace", "PersistentVolumeClaim", "StorageClass"}


def apply_stack(kc: str, raw: dict[str, Any], stack: str, workdir: Path) -> list[dict[str, Any]]:
    """test_apiserver.apply for a named stack (the next term has a different stack name)."""
    docs = manifests_for(raw, stack)
    order = {"Namespace": 0, "StorageClass": 0, "Secret": 1, "ConfigMap": 1, "PersistentVolumeClaim": 1}
    docs.sort(key=lambda d: order.get(d["kind"], 2))
    path = workdir / f"{stack}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kubectl(kc, "apply", "--server-side", "--field-manager=classroom-e2e", "-f", str(path))
    return docs


def claims_bound(kc: str, ns: str) -> bool:
    items = kget(kc, "pvc", "-n", ns)["items"]
    return bool(items) and all(c["status"].get("phase") == "Bound" for c in items)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project directory whose stacks/ holds the class stack, pointed at the local provisioner."""
    stacks = tmp_path / "project" / "stacks"
    stacks.mkdir(parents=True)
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{OLD}.yaml").read_text())
    data["config"]["classroom:storageProvisioner"] = LOCAL_PROVISIONER
    data["config"]["classroom:namespace"] = NAMESPACE
    (stacks / f"Pulumi.{OLD}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return stacks


def test_kept_homes_are_listed_and_adopted_by_the_next_term(
    local_cluster: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kc = str(local_cluster.kubeconfig)
    raw_old = term.classroom_raw(term.load_stack(project / f"Pulumi.{OLD}.yaml"))
    assert raw_old == {**stack_config(OLD), "namespace": NAMESPACE}
    docs = apply_stack(kc, raw_old, OLD, tmp_path)
    wait_for("the claims to bind", lambda: claims_bound(kc, NAMESPACE))

    home = kget(kc, "pvc", "home", "-n", NAMESPACE)
    pv = kget(kc, "pv", home["spec"]["volumeName"])
    home_dir = Path(pv["spec"]["hostPath"]["path"])
    marker = home_dir / "alice" / "thesis.txt"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("chapter 1\n")

    # End of term: what `destroy --exclude-protected` removes.
    removed = [d for d in docs if d["kind"] not in KEPT_KINDS]
    assert {d["kind"] for d in removed} >= {"StatefulSet", "Service"}
    gone = tmp_path / "removed.yaml"
    gone.write_text(yaml.safe_dump_all(removed, sort_keys=False))
    kubectl(kc, "delete", "--wait=true", "--ignore-not-found", "-f", str(gone))
    assert kget(kc, "statefulset", "-n", NAMESPACE)["items"] == []
    assert kget(kc, "service", "-n", NAMESPACE)["items"] == []

    summary = term.kept_data_summary(kc, NAMESPACE)
    claims = {c["name"]: c for c in summary["claims"]}
    declared = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == declared
    assert claims["home"]["uid"] == home["metadata"]["uid"]
    assert claims["home"]["storageClass"] == f"{NAMESPACE}-retain"
    assert claims["home"]["volume"]["name"] == pv["metadata"]["name"]
    assert claims["home"]["volume"]["reclaimPolicy"] == "Retain"
    assert claims["home"]["volume"]["source"] == {"kind": "hostPath", "path": str(home_dir)}
    assert all(c["volume"]["reclaimPolicy"] == "Retain" for c in claims.values())
    assert summary["warnings"] == []
    assert marker.read_text() == "chapter 1\n"

    # The command writes the same, as Markdown and JSON, with KUBECONFIG from the environment.
    monkeypatch.setenv("KUBECONFIG", kc)
    out_md = tmp_path / "out" / f"end-of-term-{OLD}.md"
    code = cli.main(
        [
            "term",
            "end",
            "--stacks-dir",
            str(project),
            "--stack",
            OLD,
            "--skip-destroy",
            "--json",
            "--summary",
            str(out_md),
        ]
    )
    assert code == 0
    assert f"hostPath {home_dir}" in out_md.read_text()
    assert json.loads(out_md.with_suffix(".json").read_text())["namespace"] == NAMESPACE

    # The next term, adopting the homes: same namespace, so the same claim names. This test has
    # no engine state to read the UID ledger from (test_end_and_adopt_with_the_engine reads it
    # for real): the applied roster's UIDs stand in for it.
    applied = json.loads(
        next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "roster")["data"]["roster.json"]
    )
    ledger = {p["username"]: p["uid"] for p in applied["people"]}
    monkeypatch.setattr(term, "old_uid_ledger", lambda stack, project: ledger)
    code = cli.main(
        ["term", "new", "--stacks-dir", str(project), "--from", OLD, "--to", NEW,
         "--start", "2027-01-25", "--end", "2027-05-28", "--adopt-homes"]
    )  # fmt: skip
    assert code == 0
    raw_new = term.classroom_raw(term.load_stack(project / f"Pulumi.{NEW}.yaml"))
    assert raw_new["namespace"] == NAMESPACE
    assert raw_new["adoptedUids"] == ledger
    apply_stack(kc, raw_new, NEW, tmp_path)
    wait_for("the next term's StatefulSet", lambda: bool(kget(kc, "statefulset", "-n", NAMESPACE)["items"]))
    again = kget(kc, "pvc", "home", "-n", NAMESPACE)
    assert again["metadata"]["uid"] == home["metadata"]["uid"]
    assert again["spec"]["volumeName"] == pv["metadata"]["name"]
    assert marker.read_text() == "chapter 1\n"
    sts = kget(kc, "statefulset", "-n", NAMESPACE)["items"][0]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["home"]["persistentVolumeClaim"]["claimName"] == "home"


# ------------------------------------------------------------------ with the engine, when there is one

ENGINE_OLD = "termops-fall2026"
ENGINE_NEW = "termops-spring2027"


def ops_term(proj: PulumiProject, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "classroom"), "term", *args, "--stacks-dir", str(proj.workdir / "stacks")],
        cwd=REPO, env=proj.env, text=True, capture_output=True, timeout=1800,
    )  # fmt: skip


def test_end_and_adopt_with_the_engine(
    tmp_path: Path, local_cluster: Any, toolchain_env: dict[str, str], pulumi_bin: str
) -> None:
    """`classroom term end` runs the real destroy; the next stack adopts the homes with the upsert variable."""
    assert shutil.which("pulumi", path=toolchain_env.get("PATH"))  # pulumi_bin skipped otherwise
    proj = PulumiProject.create(tmp_path, ENGINE_OLD, toolchain_env, str(local_cluster.kubeconfig))
    class_config = yaml.safe_load((REPO / "stacks" / f"Pulumi.{OLD}.yaml").read_text())["config"]
    for key, value in class_config.items():
        proj.set_config(key.split(":", 1)[1], value)
    proj.set_config("storageProvisioner", LOCAL_PROVISIONER)
    proj.up()
    kc, ns = proj.env["KUBECONFIG"], f"classroom-{ENGINE_OLD}"
    old_uids = {p["username"]: p["uid"] for p in proj.outputs()["roster"]["people"]}
    home = kget(kc, "pvc", "home", "-n", ns)
    home_dir = Path(kget(kc, "pv", home["spec"]["volumeName"])["spec"]["hostPath"]["path"])
    (home_dir / "kept.txt").write_text("kept\n")

    summary = tmp_path / "end.md"
    proc = ops_term(proj, "end", "--stack", ENGINE_OLD, "--yes", "--summary", str(summary), "--json")
    assert proc.returncode == 0, proc.stderr
    kept = json.loads(summary.with_suffix(".json").read_text())
    row = next(c for c in kept["claims"] if c["name"] == "home")
    assert row["volume"]["reclaimPolicy"] == "Retain"
    assert row["volume"]["source"] == {"kind": "hostPath", "path": str(home_dir)}
    assert kget(kc, "statefulset", "-n", ns)["items"] == []
    assert (home_dir / "kept.txt").read_text() == "kept\n"

    # The next term's export: jlopez left (his home stays, owned by his UID) and a newcomer whose name
    # hashes to exactly that UID arrives; everyone else returns and must keep their UID and home.
    leaver = "jlopez"
    newcomer = next(f"n{i}" for i in range(10**6) if _uid_hash(f"n{i}") == old_uids[leaver])
    old_csv = (proj.workdir / "stacks" / f"{OLD}-roster.csv").read_text().splitlines()
    spring = tmp_path / "spring.csv"
    spring.write_text(
        "\n".join(
            [
                old_csv[0],
                *(r for r in old_csv[1:] if not r.startswith(leaver + ",")),
                f"{newcomer},New Comer,{newcomer}@students.example.edu,,,student,90-01",
            ]
        )
        + "\n"
    )
    proc = ops_term(
        proj, "new", "--from", ENGINE_OLD, "--to", ENGINE_NEW, "--start", "2027-01-25", "--end", "2027-05-28",
        "--adopt-homes", "--roster", str(spring),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # Read from the real engine's state after `end` (destroy --exclude-protected): the protected ledger.
    assert f"reading {ENGINE_OLD}'s UID ledger from its state" in proc.stdout
    new_file = yaml.safe_load((proj.workdir / "stacks" / f"Pulumi.{ENGINE_NEW}.yaml").read_text())
    assert new_file["config"]["classroom:adoptedUids"] == old_uids
    assert term.ADOPT_ENV in proc.stdout
    # Release the homes from the old stack (retainOnDelete keeps them in the cluster), as `new` prints.
    proj.run("state", "unprotect", "--all", "--yes")
    proj.run("destroy", "--yes")
    assert kget(kc, "pvc", "home", "-n", ns)["metadata"]["uid"] == home["metadata"]["uid"]
    nxt = PulumiProject(workdir=proj.workdir, stack=ENGINE_NEW, env=proj.env)
    nxt.run("stack", "select", "--create", ENGINE_NEW)
    nxt.up(env={term.UPSERT_VARIABLE: "true", term.PATCH_FORCE_VARIABLE: "true"})
    assert nxt.outputs()["namespace"] == ns
    assert kget(kc, "pvc", "home", "-n", ns)["metadata"]["uid"] == home["metadata"]["uid"]
    assert (home_dir / "kept.txt").read_text() == "kept\n"
    new_uids = {p["username"]: p["uid"] for p in nxt.outputs()["roster"]["people"]}
    assert {u: new_uids[u] for u in old_uids if u != leaver} == {u: old_uids[u] for u in old_uids if u != leaver}
    assert leaver not in new_uids and new_uids[newcomer] != old_uids[leaver]  # the kept home is not handed over
    nxt.run("preview", "--expect-no-changes")
