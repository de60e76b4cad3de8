"""LabHost's type token changed (classroom:labs:LabHost -> classroom:index:LabHost): the REAL engine keeps every URN.

A stack deployed before the change has the old token in every URN of the
lab host and its children (the remote install, each student's cluster
command). The test makes such a state honestly: it deploys, then rewrites the
token in the exported state back to the old one and imports it, which is
byte for byte what the older release left behind. The preview must then plan
no create, delete or replace (the alias is followed), and the next `up` must
leave the clusters alone and record the new token.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.labs import FORMER_LAB_HOST_TYPE, LAB_HOST_TYPE
from tests.labhost.conftest import Ca, Netns, Sshd, real_k3d, start_sshd
from tests.labhost.test_labhost import Engine, clusters_of, engine_env, k3d_containers, labs_raw
from tests.labs.docker_env import Dockerd


def test_stacks_deployed_under_the_old_lab_host_token_keep_their_clusters(
    netns: Netns, pki: tuple[Ca, Ca, Path], sshd_factory: list[Sshd], tmp_path: Path, lab_engine: Dockerd
) -> None:
    env = engine_env()
    assert env is not None, "no pulumi CLI with the command 1.2.1 plugin: run tools/toolchain.sh engine"
    ca, _other, engine = pki
    sshd_factory.append(start_sshd(netns, tmp_path / "sshd", "10.231.0.2", ca, "lab1.example.test", engine))
    raw = labs_raw(engine, tmp_path / "host-root", real_k3d(tmp_path / "k3d", lab_engine), 18789)
    program = Engine(netns, tmp_path, env)
    program.write({"labs": raw, "people": [{"username": u} for u in ("alice", "bob")], "caPublicKey": ca.public})
    program.up()
    made = k3d_containers(lab_engine)  # the real clusters, made by labd through the real k3d
    assert clusters_of(made) == {"lab-alice": False, "lab-bob": False}

    before = tokens_in_state(program)
    deployed = before.get(LAB_HOST_TYPE, 0)
    assert deployed >= 4 and before == {LAB_HOST_TYPE: deployed}, before  # LabHost, its install, 2 clusters
    exported = program.pulumi("stack", "export").stdout
    older = tmp_path / "older-state.json"
    older.write_text(exported.replace(LAB_HOST_TYPE, FORMER_LAB_HOST_TYPE))
    program.pulumi("stack", "import", "--file", str(older))
    assert tokens_in_state(program) == {FORMER_LAB_HOST_TYPE: deployed}

    # Without the alias this plans a create of every resource and a delete of every old one
    # (each cluster deleted, then made again, empty).
    assert program.changes() == {}
    program.up()
    assert k3d_containers(lab_engine) == made  # no cluster deleted, made, started or stopped
    assert tokens_in_state(program) == {LAB_HOST_TYPE: deployed}


def tokens_in_state(program: Engine) -> dict[str, int]:
    """How many URNs in the stack's exported state carry each of LabHost's two type tokens."""
    urns = [r["urn"] for r in json.loads(program.pulumi("stack", "export").stdout)["deployment"]["resources"]]
    counts = {token: sum(token in urn for urn in urns) for token in (LAB_HOST_TYPE, FORMER_LAB_HOST_TYPE)}
    return {token: n for token, n in counts.items() if n}
