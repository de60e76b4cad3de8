"""The claim guard refuses, at preview, every config change a claim cannot take in place."""

from __future__ import annotations

from typing import Any

import pytest

from components.storage import ClaimChangeRefused, ClaimGuardProvider, refused_claim_changes

SHAPE: dict[str, Any] = {
    "namespace": "classroom-cis90",
    "claims": {
        "home": {"size": "50Gi", "storageClassName": "", "key": "homeSize", "classKey": "homeStorageClassName"},
        "extra-depot": {
            "size": "5Gi",
            "storageClassName": "",
            "key": "extraMounts[0].size",
            "classKey": "extraMounts[0].storageClassName",
        },
    },
    "managedClass": {"provisioner": "rancher.io/local-path", "parameters": {}},
}


def changed(**top: Any) -> dict[str, Any]:
    return {**SHAPE, **top}


def claim(name: str, **fields: Any) -> dict[str, Any]:
    claims = {k: dict(v) for k, v in SHAPE["claims"].items()}
    claims[name].update(fields)
    return changed(claims=claims)


def test_growth_and_no_change_are_allowed() -> None:
    assert refused_claim_changes(SHAPE, SHAPE) == []
    grown = claim("home", size="60Gi")
    assert refused_claim_changes(SHAPE, grown) == []
    provider = ClaimGuardProvider()
    assert provider.diff("id", SHAPE, SHAPE).changes is False
    assert provider.diff("id", SHAPE, grown).changes is True


@pytest.mark.parametrize(
    ("new", "fragments"),
    [
        (changed(namespace="classroom-cis91"), ["'namespace'", "'classroom-cis90' -> 'classroom-cis91'"]),
        (claim("home", size="40Gi"), ["'homeSize'", "50Gi -> 40Gi", "cannot shrink"]),
        (
            claim("extra-depot", storageClassName="nfs-retain"),
            ["'extraMounts[0].storageClassName'", "'(the managed class)' -> 'nfs-retain'"],
        ),
        (changed(claims={"home": SHAPE["claims"]["home"]}), ["'extraMounts'", "'extra-depot' is gone"]),
        (
            changed(managedClass={"provisioner": "example.com/csi", "parameters": {}}),
            ["'storageProvisioner'", "example.com/csi"],
        ),
        (
            changed(managedClass={"provisioner": "rancher.io/local-path", "parameters": {"type": "ssd"}}),
            ["'storageParameters'", "ssd"],
        ),
    ],
)
def test_each_change_a_claim_cannot_take_is_refused_naming_the_key(new: dict[str, Any], fragments: list[str]) -> None:
    problems = refused_claim_changes(SHAPE, new)
    assert len(problems) == 1
    for fragment in fragments:
        assert fragment in problems[0]
    failures = ClaimGuardProvider().check(SHAPE, new).failures
    assert len(failures) == 1 and failures[0].reason.startswith("refused, nothing applied: " + problems[0])
    assert "Releasing the homes" in failures[0].reason
    with pytest.raises(ClaimChangeRefused, match="refused, nothing applied"):
        ClaimGuardProvider().diff("id", SHAPE, new)


def test_a_first_check_has_nothing_to_compare() -> None:
    assert ClaimGuardProvider().check({}, SHAPE).failures == []


def test_quantities_compare_by_value_not_text() -> None:
    assert refused_claim_changes(claim("home", size="1Gi"), claim("home", size="1024Mi")) == []
    assert refused_claim_changes(claim("home", size="1Gi"), claim("home", size="1000Mi")) != []
