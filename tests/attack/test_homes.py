"""A home is never handed to an account whose UID does not own it: a roster (a CSV uid, a lost
UID ledger) that moves UIDs around must not give one student another's files."""

from __future__ import annotations

import os

from tests.attack.conftest import Server


def forget_accounts(server: Server, *users: str) -> None:
    """A pod restart: /etc/passwd comes from the image again, the homes from the volume."""
    for name in ("passwd", "shadow", "group", "gshadow"):
        path = server.root / "etc" / name
        lines = path.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            fields = line.split(":")
            if fields[0] in users:
                continue
            if name in ("group", "gshadow") and len(fields) > 3:
                members = [m for m in fields[3].strip().split(",") if m and m not in users]
                fields[3] = ",".join(members) + "\n"
                line = ":".join(fields)
            kept.append(line)
        path.write_text("".join(kept))


def owners(server: Server, *users: str) -> dict[str, int]:
    return {user: os.stat(server.home(user)).st_uid for user in users}


def test_swapped_uids_after_ledger_loss_do_not_swap_homes(server: Server) -> None:
    before = owners(server, "alice", "bob")
    secret = server.plant("alice", "secret.txt", "alice's work\n", mode=0o600)
    forget_accounts(server, "alice", "bob")
    swapped = [dict(p) for p in server.people]
    for person in swapped:
        if person["username"] == "alice":
            person["uid"] = before["bob"]
        if person["username"] == "bob":
            person["uid"] = before["alice"]
    server.write_roster(people=swapped)

    result = server.reconcile()
    assert result.returncode != 0
    assert "alice" in result.stderr and "bob" in result.stderr
    passwd = (server.root / "etc/passwd").read_text()
    assert "\nalice:" not in passwd and "\nbob:" not in passwd  # neither gets the other's home
    assert owners(server, "alice", "bob") == before and secret.read_text() == "alice's work\n"


def test_new_account_with_a_uid_that_owns_another_home_is_refused(server: Server) -> None:
    alice_uid = server.uid("alice")
    forget_accounts(server, "alice")
    newcomer = {"username": "mallory", "keys": [server.keys["mallory"][1]], "uid": alice_uid}
    server.write_roster(people=[p for p in server.people if p["username"] != "alice"] + [newcomer])

    result = server.reconcile()
    assert result.returncode != 0 and "mallory" in result.stderr
    assert "\nmallory:" not in (server.root / "etc/passwd").read_text()
    assert server.login("mallory").returncode == 255
    assert os.stat(server.home("alice")).st_uid == alice_uid
