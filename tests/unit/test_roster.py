"""Roster, term and revocation parsing (components/rosterdata.py), including property tests."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.errors import ConfigError
from components.rosterdata import (
    UID_DERIVED_MAX,
    UID_DERIVED_MIN,
    AccessConfig,
    allocate_uids,
    cert_serial,
    cert_serials,
    class_and_term_names,
    derive_uids,
    parse_access,
    parse_roster_csv,
    roster_document,
)

ROOT = Path(__file__).resolve().parents[2]

TERM = {"start": "2026-08-24", "end": "2026-12-18", "timezone": "America/Los_Angeles", "grace": "7d"}


def pubkey(seed: int = 0) -> str:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed % 256]) * 32).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + f" k{seed}"


KEY = pubkey(1)


def parse(raw: dict[str, Any], base_dir: Path = ROOT) -> AccessConfig:
    return parse_access(raw, base_dir=base_dir)


# ----------------------------------------------------------------- inline roster


def test_inline_roster_with_roles_keys_and_handles() -> None:
    access = parse(
        {
            "roster": [
                {"username": "alice", "keys": [KEY], "github": "alice-gh", "labs": True},
                "bob",
                {"username": "carol", "uid": 30000, "role": "TA", "launchpad": "carol"},
            ],
            "term": TERM,
            "staffKeepOwnKeys": False,
        }
    )
    people = {p.username: p for p in access.people}
    assert set(people) == {"alice", "bob", "carol"}
    assert people["alice"].keys == (KEY,)
    assert people["alice"].import_ids == ("gh:alice-gh",)
    assert people["alice"].labs and not people["alice"].staff
    assert people["carol"].uid == 30000 and people["carol"].uid_explicit and people["carol"].staff
    assert people["carol"].import_ids == ("lp:carol",)
    assert UID_DERIVED_MIN <= people["bob"].uid <= UID_DERIVED_MAX
    assert access.staff_keep_own_keys is False


def test_term_window_is_local_days_plus_grace() -> None:
    term = parse({"roster": ["bob"], "term": TERM}).term
    assert term is not None
    # 2026-08-24 00:00 in Los Angeles (PDT, UTC-7) and the end of 2026-12-18 (PST, UTC-8).
    assert term.start == datetime(2026, 8, 24, 7, 0, tzinfo=UTC)
    assert term.end == datetime(2026, 12, 19, 8, 0, tzinfo=UTC)
    assert term.access_end == datetime(2026, 12, 26, 8, 0, tzinfo=UTC)


def test_no_roster_no_term_is_fine() -> None:
    access = parse({})
    assert access.people == () and access.term is None and access.staff_keep_own_keys


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"roster": [{"username": "Bob!"}], "term": TERM}, "roster[0].username", "Unix username"),
        ({"roster": ["root"], "term": TERM}, "roster[0].username", "system name"),
        ({"roster": ["bob", "bob"], "term": TERM}, "roster[1].username", "not already used"),
        ({"roster": [{"username": "a", "uid": 999}], "term": TERM}, "roster[0].uid", "system accounts"),
        (
            {"roster": [{"username": "a", "uid": 5000}, {"username": "b", "uid": 5000}], "term": TERM},
            "roster[1].uid",
            "not already used",
        ),
        (
            {"roster": [{"username": "a", "keys": ["ssh-ed25519 AAAAnope"]}], "term": TERM},
            "roster[0].keys",
            "OpenSSH public key",
        ),
        ({"roster": [{"username": "a", "role": "admin"}], "term": TERM}, "roster[0].role", "student | ta"),
        (
            {"roster": [{"username": "a", "colour": "red"}], "term": TERM},
            "roster[0].colour",
            "one of the known keys: username",
        ),
        ({"roster": ["bob"]}, "term", "whenever a roster is given"),
        ({"term": {**TERM, "end": "2026-01-01"}}, "term.end", "after term.start"),
        ({"term": {**TERM, "timezone": "Mars/Olympus"}}, "term.timezone", "IANA"),
        ({"term": {**TERM, "grace": "a week"}}, "term.grace", "7d"),
        ({"term": {**TERM, "start": "next monday"}}, "term.start", "YYYY-MM-DD"),
        ({"revocations": {"serials": ["x"]}}, "revocations.serials[0]", "serial numbers"),
        ({"revocations": {"serials": [1.5]}}, "revocations.serials[0]", "whole numbers"),
        ({"revocations": {"keys": ["nope"]}}, "revocations.keys[0]", "fingerprint"),
        ({"staffKeepOwnKeys": "perhaps"}, "staffKeepOwnKeys", "true or false"),
        ({"roster": {"csv": "missing.csv"}, "term": TERM}, "roster.csv", "readable CSV"),
    ],
)
def test_bad_values_name_key_and_accepted(raw: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_short_rsa_key_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    line = small.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(ConfigError, match="too short"):
        parse({"roster": [{"username": "a", "keys": [line]}], "term": TERM})


def test_revocations_accept_keys_fingerprints_and_hex() -> None:
    access = parse({"revocations": {"serials": [5, "0x10", 5], "keys": [KEY, "SHA256:" + "A" * 43]}})
    assert access.revoked_serials == (5, 16)
    assert access.revoked_keys[0] == KEY and access.revoked_keys[1].startswith("SHA256:")


# ----------------------------------------------------------------- CSV


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8-sig")
    return path


def test_registrar_export_with_aliases_and_extra_columns(tmp_path: Path) -> None:
    write_csv(
        tmp_path,
        (
            "Student Name,Login ID,E-mail Address,GitHub Username,SSH Public Key,Section\n"
            f'"Smith, Jane",jsmith,jane@example.edu,jane-s,{KEY},01\n'
            "\n"
            "Lee Kim,klee,klee@example.edu,,,02\n"
        ),
    )
    access = parse({"roster": {"csv": "roster.csv", "defaults": {"labs": True}}, "term": TERM}, tmp_path)
    people = {p.username: p for p in access.people}
    assert people["jsmith"].name == "Smith Jane"  # GECOS must not get a comma
    assert people["jsmith"].keys == (KEY,) and people["jsmith"].import_ids == ("gh:jane-s",)
    assert people["klee"].keys == () and people["klee"].labs


def test_csv_semicolon_dialect(tmp_path: Path) -> None:
    write_csv(tmp_path, "username;uid;role\nprof;5000;student\n")
    access = parse({"roster": {"csv": "roster.csv"}, "term": TERM}, tmp_path)
    assert access.people[0].uid == 5000 and access.people[0].role == "student"


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("username\nok\nBad Name\n", 3, "Unix username"),
        ("username,uid\na,2000\nb,2000\n", 3, "UID not already used"),
        ("username\na\n\na\n", 4, "not already used"),
        ("username,uid\na,12\n", 2, "system accounts"),
        ("username,key\na,ssh-rsa AAAAB3garbage\n", 2, "public key"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    write_csv(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        parse({"roster": {"csv": "roster.csv"}, "term": TERM}, tmp_path)
    assert f"roster.csv line {line}" in str(info.value)
    assert fragment in str(info.value)


def test_csv_without_username_column(tmp_path: Path) -> None:
    write_csv(tmp_path, "name,email\nA,a@b.c\n")
    with pytest.raises(ConfigError, match="username column"):
        parse({"roster": {"csv": "roster.csv"}, "term": TERM}, tmp_path)


def test_csv_found_under_stacks_dir(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "cis90.csv").write_text("username\nzed\n")
    assert parse({"roster": {"csv": "cis90.csv"}, "term": TERM}, tmp_path).people[0].username == "zed"


# ----------------------------------------------------------------- UIDs and serials

names = st.text(alphabet=string.ascii_lowercase + string.digits + "_-", min_size=0, max_size=8).map(lambda s: "u" + s)


@given(st.lists(names, unique=True, max_size=40), st.randoms(use_true_random=False))
def test_uids_do_not_depend_on_order(usernames: list[str], rnd: Any) -> None:
    shuffled = list(usernames)
    rnd.shuffle(shuffled)
    first, second = derive_uids(usernames), derive_uids(shuffled)
    assert first == second
    assert len(set(first.values())) == len(first)
    assert all(UID_DERIVED_MIN <= uid <= UID_DERIVED_MAX for uid in first.values())


def test_collisions_are_resolved_by_sorted_name() -> None:
    # Find two names hashing to the same slot: the sorted-first keeps it, the other probes on.
    from components.rosterdata import _uid_hash

    seen: dict[int, str] = {}
    pair = None
    for i in range(200000):
        name = f"s{i}"
        slot = _uid_hash(name)
        if slot in seen:
            pair = (seen[slot], name)
            break
        seen[slot] = name
    assert pair is not None
    low, high = sorted(pair)
    uids = derive_uids([high, low])
    assert uids[low] == _uid_hash(low) and uids[high] != uids[low]
    assert derive_uids([low, high]) == uids


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(names, unique=True, max_size=30),
    st.lists(names, unique=True, max_size=30),
    st.randoms(use_true_random=False),
)
def test_ledger_keeps_uids_when_roster_grows_or_reorders(start: list[str], more: list[str], rnd: Any) -> None:
    ledger = allocate_uids(start, {}, {})
    grown = list(dict.fromkeys(start + more))
    rnd.shuffle(grown)
    after = allocate_uids(grown, {}, ledger)
    assert all(after[name] == ledger[name] for name in start)
    assert len({after[n] for n in grown}) == len(grown)


def test_ledger_collision_newcomer_moves_not_incumbent() -> None:
    from components.rosterdata import _uid_hash

    seen: dict[int, str] = {}
    for i in range(200000):
        name = f"s{i}"
        if _uid_hash(name) in seen:
            incumbent, newcomer = sorted((seen[_uid_hash(name)], name), reverse=True)
            break
        seen[_uid_hash(name)] = name
    # The incumbent sorts AFTER the newcomer: a pure function would move the incumbent.
    ledger = allocate_uids([incumbent], {}, {})
    after = allocate_uids([incumbent, newcomer], {}, ledger)
    assert after[incumbent] == ledger[incumbent]
    assert after[newcomer] != after[incumbent]
    assert derive_uids([incumbent, newcomer])[incumbent] != ledger[incumbent]  # why the ledger exists


def test_ledger_reserves_uid_of_someone_who_left() -> None:
    ledger = allocate_uids(["alice", "bob"], {}, {})
    after = allocate_uids(["bob"], {}, ledger)
    assert after["alice"] == ledger["alice"]  # still reserved: her home is on disk
    back = allocate_uids(["alice", "bob"], {}, after)
    assert back["alice"] == ledger["alice"]


def test_roster_document_uses_ledger_uids() -> None:
    access = parse({"roster": ["alice", {"username": "prof", "uid": 5000, "role": "instructor"}], "term": TERM})
    doc = roster_document(access, stack="cis90-fall2026", uids={"alice": 41234})
    people = {p["username"]: p for p in doc["people"]}
    assert people["alice"]["uid"] == 41234 and people["prof"]["uid"] == 5000
    assert doc["class"] == "cis90" and doc["term"]["name"] == "fall2026"
    assert doc["term"]["accessEnd"] == "2026-12-26T08:00:00Z"
    assert "email" not in people["alice"]


def test_serials_deterministic_unique_and_key_dependent() -> None:
    people = parse({"roster": [{"username": f"s{i}", "keys": [pubkey(i)]} for i in range(50)], "term": TERM}).people
    serials = cert_serials("cis90-fall2026", people)
    assert serials == cert_serials("cis90-fall2026", tuple(reversed(people)))
    assert len(set(serials.values())) == 50 and all(0 < s < 1 << 53 for s in serials.values())
    assert cert_serial("cis90-fall2026", "s1", pubkey(1)) != cert_serial("cis90-fall2026", "s1", pubkey(2))
    assert cert_serial("cis90-fall2026", "s1", pubkey(1)) != cert_serial("cis90-spring2027", "s1", pubkey(1))


def test_class_and_term_names() -> None:
    term = parse({"term": TERM}).term
    assert class_and_term_names("cis90-fall2026", term) == ("cis90", "fall2026")
    assert class_and_term_names("dev", term) == ("dev", "2026-08-24")
    named = parse({"term": {**TERM, "name": "F26"}}).term
    assert class_and_term_names("cis90-fall2026", named) == ("cis90", "F26")


# ----------------------------------------------------------------- properties: never another exception

cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", "alice", "Bob", "root", "1000", "70000", "ta", "student", "yes", KEY, "ssh-rsa AAAA", "x,y", '"q"']
    ),
)
entry_value = st.one_of(
    cell, st.integers(-5, 100000), st.floats(allow_nan=True), st.booleans(), st.none(), st.lists(cell, max_size=3)
)
entry = st.one_of(
    cell,
    st.integers(),
    st.dictionaries(
        st.sampled_from(
            ["username", "uid", "keys", "key", "role", "labs", "github", "launchpad", "name", "email", "other"]
        ),
        entry_value,
        max_size=6,
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    roster=st.lists(entry, max_size=8),
    term=st.one_of(
        st.none(),
        st.just(TERM),
        st.dictionaries(st.sampled_from(["start", "end", "grace", "timezone", "x"]), entry_value, max_size=4),
    ),
    revocations=st.one_of(st.none(), st.dictionaries(st.sampled_from(["serials", "keys"]), entry_value)),
)
def test_inline_rosters_parse_or_raise_config_error(roster: list[Any], term: Any, revocations: Any) -> None:
    raw = {"roster": roster, "term": term, "revocations": revocations}
    try:
        access = parse(raw)
    except ConfigError:
        return
    assert len({p.uid for p in access.people}) == len(access.people)
    assert all(p.uid >= 1000 for p in access.people)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(
        st.sampled_from(["username", "Login", "Full Name", "email", "GitHub", "key", "uid", "role", "labs", "junk"]),
        min_size=1,
        max_size=6,
    ),
    rows=st.lists(st.lists(cell, max_size=7), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_csv_rows_parse_or_raise_config_error(
    tmp_path: Path, header: list[str], rows: list[list[str]], delimiter: str
) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    (tmp_path / "r.csv").write_text(buffer.getvalue(), encoding="utf-8")
    try:
        access = parse({"roster": {"csv": "r.csv"}, "term": TERM}, tmp_path)
    except ConfigError as exc:
        assert str(exc)
        return
    assert len({p.username for p in access.people}) == len(access.people)


def test_parse_roster_csv_reports_physical_line_numbers() -> None:
    rows = parse_roster_csv('username,name\na,"multi\nline"\nb,x\n', source="r.csv")
    assert [where for _, where in rows] == ["r.csv line 2", "r.csv line 4"]


def test_term_datetime_and_grace_units() -> None:
    term = parse({"term": {"start": "2026-01-05T09:00:00-05:00", "end": "2026-05-01", "grace": "36h"}}).term
    assert term is not None
    assert term.start == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    assert term.grace == timedelta(hours=36)


def test_check_reserved_names_the_default_user_clash() -> None:
    from components.rosterdata import check_reserved

    access = parse({"roster": ["alice", {"username": "bob", "uid": 10000}], "term": TERM})
    check_reserved(access, names=["mmatera"], uids=[10001])
    with pytest.raises(ConfigError, match=r"'roster.uid' \(entry bob\)"):
        check_reserved(access, names=["mmatera"], uids=[10000])
    with pytest.raises(ConfigError, match=r"'roster.username'"):
        check_reserved(access, names=["alice"])
