"""An instructor pastes a registrar export: its columns must not create staff or move UIDs,
and the UID ledger that ties every kept home to its owner must survive a destroy.

These run the program's own parsing and the UID ledger's provider (the code `pulumi up`
runs); the chroot tests in test_homes.py show what the reconciler does with a moved UID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.errors import ConfigError
from components.roster import UidLedgerProvider
from components.rosterdata import allocate_uids, parse_access
from tests.harness import render

TERM = {"start": "2026-08-24", "end": "2026-12-18"}


def csv_roster(tmp_path: Path, text: str, **extra: Any) -> Any:
    (tmp_path / "export.csv").write_text(text)
    return parse_access({"roster": {"csv": "export.csv", **extra}, "term": TERM}, base_dir=tmp_path)


@pytest.mark.parametrize("column", ["role", "Type", "ROLE"])
@pytest.mark.parametrize("value", ["instructor", "TA", " Instructor "])
def test_a_csv_role_column_cannot_make_staff(tmp_path: Path, column: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        csv_roster(tmp_path, f"username,{column}\nalice,student\nmallory,{value}\n")
    assert "export.csv line 3" in str(raised.value) and "cannot make staff" in str(raised.value)


def test_a_csv_role_column_cannot_make_staff_over_student_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot make staff"):
        csv_roster(tmp_path, "username,type\nmallory,instructor\n", defaults={"role": "student"})


def test_staff_come_only_from_the_stack_file(tmp_path: Path) -> None:
    # The stack file (reviewed in a pull request) says every row of this export is a TA.
    access = csv_roster(tmp_path, "username,role\nted,ta\numa,\n", defaults={"role": "ta"})
    assert [(p.username, p.role) for p in access.people] == [("ted", "ta"), ("uma", "ta")]
    access = csv_roster(tmp_path, "username,role\nalice,student\nbob,\n")
    assert not any(p.staff for p in access.people)


def test_the_stack_file_names_staff_of_an_export_one_by_one(tmp_path: Path) -> None:
    # roster.staff: only the named rows become staff, whatever the export's column says of them
    access = csv_roster(tmp_path, "username,role\nted,ta\nalice,student\nbob,\n", staff={"ted": "ta"})
    assert [(p.username, p.role) for p in access.people] == [("alice", "student"), ("bob", "student"), ("ted", "ta")]
    # a column still cannot add anyone the stack file does not name
    with pytest.raises(ConfigError, match="cannot make staff"):
        csv_roster(tmp_path, "username,role\nted,ta\nmallory,instructor\n", staff={"ted": "ta"})
    # a name the export lacks, or a role that is not staff, is a named error, not a silent no-op
    with pytest.raises(ConfigError, match=r"roster\.staff\.tedd.*no such row"):
        csv_roster(tmp_path, "username\nted\n", staff={"tedd": "ta"})
    with pytest.raises(ConfigError, match=r"roster\.staff"):
        csv_roster(tmp_path, "username\nted\n", staff={"ted": "root"})


def test_explicit_csv_uid_cannot_take_a_ledger_uid_of_someone_else(tmp_path: Path) -> None:
    ledger = allocate_uids(["alice"], {}, {})
    alice_uid = ledger["alice"]
    access = csv_roster(tmp_path, f"username,uid\nalice,\nmallory,{alice_uid}\n")
    explicit = {p.username: p.uid for p in access.people if p.uid_explicit}
    with pytest.raises(ConfigError, match=f"holds {alice_uid} for alice"):
        allocate_uids(["alice"], explicit, ledger)
    # Nor the UID of someone who left (their kept home is still owned by it).
    with pytest.raises(ConfigError, match=f"holds {alice_uid} for alice"):
        allocate_uids([], explicit, ledger)
    # Through the provider `pulumi up` runs: the update is refused, the ledger unchanged.
    provider = UidLedgerProvider()
    olds = {"derived": ["alice"], "explicit": {}, "uids": ledger}
    with pytest.raises(ConfigError):
        provider.update("uid-ledger", olds, {"derived": ["alice"], "explicit": explicit, "uids": None})
    assert olds["uids"] == ledger


def test_an_explicit_uid_cannot_move_someone_the_ledger_has(tmp_path: Path) -> None:
    ledger = allocate_uids(["alice"], {}, {})
    with pytest.raises(ConfigError, match="UIDs never move"):
        allocate_uids([], {"alice": ledger["alice"] + 1}, ledger)
    assert allocate_uids([], {"alice": ledger["alice"]}, ledger)["alice"] == ledger["alice"]


def test_uid_ledger_survives_destroy_exclude_protected() -> None:
    rendered = render({"roster": [{"username": "alice"}, {"username": "carol", "role": "ta"}], "term": TERM})
    ledgers = [r for r in rendered.resources if r.name.endswith("-uids")]
    assert ledgers, [r.name for r in rendered.resources]
    for ledger in ledgers:
        assert ledger.protect and ledger.retain_on_delete, ledger.name


def test_preview_lists_every_staff_member(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.setattr(pulumi.log, "info", lambda message, *a, **k: said.append(message))
    render(
        {
            "roster": [
                {"username": "alice"},
                {"username": "carol", "role": "ta"},
                {"username": "prof", "role": "instructor"},
            ],
            "term": TERM,
        }
    )
    staff_lines = [line for line in said if "passwordless sudo" in line]
    assert staff_lines and "carol (ta)" in staff_lines[0] and "prof (instructor)" in staff_lines[0]
    assert "alice" not in staff_lines[0]
