"""The Roster component under Pulumi mocks: ConfigMap content, certificates, secrecy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.roster import UidLedgerProvider
from components.rosterdata import parse_access
from components.sshcert import certificate_fields
from tests.harness import dynamic_provider_for

ROOT = Path(__file__).resolve().parents[2]

CA_KEY = ed25519.Ed25519PrivateKey.generate()
CA_PEM = CA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
).decode()
STUDENT_KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
    + " alice@laptop"
)
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


def cis90_roster(access: Any, stack: str) -> Any:
    """The Roster component of class cis90's namespace, signed with the test CA (under the mocks)."""
    from components.roster import Roster, RosterArgs

    return Roster(
        "roster",
        RosterArgs(
            access=access, namespace="classroom-cis90", ca_private_key=pulumi.Output.secret(CA_PEM), stack=stack
        ),
    )


def wait(output: pulumi.Output[Any]) -> Any:
    holder: dict[str, Any] = {}
    output.apply(lambda v: holder.setdefault("v", v))
    return holder


@pulumi.runtime.test
def test_roster_configmap_and_certificates(mocks: Mocks) -> pulumi.Output[Any]:
    access = parse_access(
        {
            "roster": [
                {"username": "alice", "keys": [STUDENT_KEY]},
                {"username": "prof", "uid": 5000, "role": "instructor"},
            ],
            "term": TERM,
            "revocations": {"serials": [7]},
        },
        base_dir=ROOT,
    )
    roster = cis90_roster(access, "cis90-fall2026")

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

    return pulumi.Output.all(
        roster.config_map_name, roster.certificates, pulumi.Output.from_input(roster.certificates).is_secret()
    ).apply(check)


def test_uid_ledger_provider_keeps_assignments() -> None:
    provider = UidLedgerProvider()
    created = provider.create({"derived": ["alice", "bob"], "explicit": {"prof": 5000.0}}).outs
    news = {"derived": ["bob", "carol", "alice"], "explicit": {"prof": 5000}}
    assert provider.diff("id", created, news).changes is True
    assert provider.diff("id", created, {"derived": ["bob", "alice"], "explicit": {"prof": 5000}}).changes is False
    updated = provider.update("id", created, news).outs["uids"]
    assert updated["alice"] == created["uids"]["alice"] and updated["bob"] == created["uids"]["bob"]
    assert updated["prof"] == 5000 and "carol" in updated


def test_uid_ledger_starts_from_adopted_uids_and_never_contradicts_them() -> None:
    from components.errors import ConfigError
    from components.rosterdata import _uid_hash

    provider = UidLedgerProvider()
    # The previous term's ledger: alice off her hash slot, dave (who left) on the newcomer's.
    adopted = {"alice": _uid_hash("alice") + 1, "dave": _uid_hash("zoe")}
    created = provider.create({"derived": ["alice", "zoe"], "explicit": {}, "adopted": adopted}).outs["uids"]
    assert created["alice"] == adopted["alice"] and created["dave"] == adopted["dave"]
    assert created["zoe"] not in adopted.values()
    # A stack made before the key: no `adopted` in its state, none in its inputs, no change.
    plain = provider.create({"derived": ["alice"], "explicit": {}}).outs
    assert provider.diff("id", plain, {"derived": ["alice"], "explicit": {}}).changes is False
    # The key added later: merged into the ledger it has, where it agrees.
    grown = {"derived": ["alice"], "explicit": {}, "adopted": {"dave": 30123}}
    assert provider.diff("id", plain, grown).changes is True
    assert provider.update("id", plain, grown).outs["uids"] == {**plain["uids"], "dave": 30123}
    # Where it contradicts the stack's own ledger, the update fails and nothing moves.
    with pytest.raises(ConfigError, match="UIDs never move"):
        provider.update("id", plain, {**grown, "adopted": {"alice": plain["uids"]["alice"] + 7}})
    with pytest.raises(ConfigError, match="holds"):
        provider.update("id", plain, {**grown, "adopted": {"dave": plain["uids"]["alice"]}})


@pytest.mark.parametrize(
    "value, message",
    [
        ({"alice": 30000, "bob": 30000}, "already given to alice"),
        ({"alice": 999}, "1000 to 65533"),
        ({"Alice!": 30000}, "adoptedUids"),
        ({"alice": True}, "1000 to 65533"),
        (["alice"], "mapping of usernames to UIDs"),
    ],
)
def test_adopted_uids_are_checked(value: Any, message: str) -> None:
    from components.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_access({"roster": ["alice"], "term": TERM, "adoptedUids": value}, base_dir=ROOT)


def test_adopted_uids_as_pulumi_config_set_path_stores_them_are_accepted() -> None:
    access = parse_access(
        {"roster": ["alice"], "term": TERM, "adoptedUids": {"alice": "41234", "left": 41235}}, base_dir=ROOT
    )
    assert dict(access.adopted_uids) == {"alice": 41234, "left": 41235}
    assert access.people[0].uid == 41234


@pulumi.runtime.test
def test_roster_hands_adopted_uids_to_its_ledger(mocks: Mocks) -> pulumi.Output[Any]:
    access = parse_access(
        {"roster": ["alice", "bob"], "term": TERM, "adoptedUids": {"alice": 41234, "carol": 41235}}, base_dir=ROOT
    )
    roster = cis90_roster(access, "cis90-spring2027")

    def check(values: list[Any]) -> None:
        uids = values[0]
        assert mocks.resources["roster-uids"]["adopted"] == {"alice": 41234, "carol": 41235}
        assert uids["alice"] == 41234 and uids["carol"] == 41235 and uids["bob"] not in (41234, 41235)
        people = {
            p["username"]: p for p in json.loads(mocks.resources["roster-configmap"]["data"]["roster.json"])["people"]
        }
        assert people["alice"]["uid"] == 41234 and "carol" not in people

    return pulumi.Output.all(roster.uids, roster.config_map_name).apply(check)
