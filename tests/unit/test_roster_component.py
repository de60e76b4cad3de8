"""The Roster component under Pulumi mocks: ConfigMap content, certificates, secrecy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.roster import UidLedgerProvider  # noqa: E402
from components.rosterdata import parse_access  # noqa: E402
from components.sshcert import certificate_fields  # noqa: E402
from tests.unit.conftest import dynamic_provider_for  # noqa: E402

pytestmark = pytest.mark.unit

CA_KEY = ed25519.Ed25519PrivateKey.generate()
CA_PEM = CA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption()).decode()
STUDENT_KEY = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " alice@laptop"
TERM = {"start": "2026-08-24", "end": "2026-12-18", "timezone": "UTC", "grace": "7d"}


class Mocks(pulumi.runtime.Mocks):
    """Runs the dynamic providers' create for real; every other resource echoes its inputs."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            outputs = dict(dynamic_provider_for(args.name).create(dict(args.inputs)).outs)
        self.resources[args.name] = outputs
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@pytest.fixture
def mocks() -> Mocks:
    m = Mocks()
    pulumi.runtime.set_mocks(m, project="classroom", stack="cis90-fall2026", preview=False)
    return m


def wait(output: pulumi.Output[Any]) -> Any:
    holder: dict[str, Any] = {}
    output.apply(lambda v: holder.setdefault("v", v))
    return holder


@pulumi.runtime.test
def test_roster_configmap_and_certificates(mocks: Mocks) -> pulumi.Output[Any]:
    from components.roster import Roster, RosterArgs

    access = parse_access({
        "roster": [{"username": "alice", "keys": [STUDENT_KEY]}, {"username": "prof", "uid": 5000,
                                                                  "role": "instructor"}],
        "term": TERM, "revocations": {"serials": [7]},
    }, base_dir=ROOT)
    roster = Roster("roster", RosterArgs(access=access, namespace="classroom-cis90",
                                         ca_private_key=pulumi.Output.secret(CA_PEM), stack="cis90-fall2026"))

    def check(values: list[Any]) -> None:
        name, certs, secret = values
        assert name == "roster"
        configmap = mocks.resources["roster-configmap"]
        assert configmap["metadata"]["namespace"] == "classroom-cis90"
        data = configmap["data"]
        assert set(data) == {"roster.json", "reconcile-roster", "apply-roster.sh"}
        doc = json.loads(data["roster.json"])
        people = {p["username"]: p for p in doc["people"]}
        assert people["prof"]["uid"] == 5000 and people["prof"]["role"] == "instructor"
        assert doc["revocations"]["serials"] == [7]
        assert doc["term"]["accessEnd"] == "2026-12-26T00:00:00Z"
        assert "PRIVATE KEY" not in json.dumps(mocks.resources["roster-configmap"])
        assert set(certs) == {"alice"}
        fields = certificate_fields(certs["alice"][0])
        assert fields["principals"] == ["alice"]
        assert fields["key_id"] == "cis90/fall2026/alice"
        assert fields["serial"] == people["alice"]["certificates"][0]["serial"]
        # Aug 24 00:00 .. Dec 19 00:00 (the whole last day), plus 7 days of grace.
        assert fields["valid_before"] - fields["valid_after"] == (117 + 7) * 86400
        assert secret is True
        assert "reconcile-roster" in data["apply-roster.sh"]

    return pulumi.Output.all(roster.config_map_name, roster.certificates,
                             pulumi.Output.from_input(roster.certificates).is_secret()).apply(check)


def test_uid_ledger_provider_keeps_assignments() -> None:
    provider = UidLedgerProvider()
    created = provider.create({"derived": ["alice", "bob"], "explicit": {"prof": 5000.0}}).outs
    news = {"derived": ["bob", "carol", "alice"], "explicit": {"prof": 5000}}
    assert provider.diff("id", created, news).changes is True
    assert provider.diff("id", created, {"derived": ["bob", "alice"], "explicit": {"prof": 5000}}).changes is False
    updated = provider.update("id", created, news).outs["uids"]
    assert updated["alice"] == created["uids"]["alice"] and updated["bob"] == created["uids"]["bob"]
    assert updated["prof"] == 5000 and "carol" in updated
