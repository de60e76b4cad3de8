"""reconcile-roster on real accounts (useradd/chage/gpasswd/pkill from Debian) in a throwaway chroot."""

from __future__ import annotations

import calendar
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.rosterdata import parse_access, roster_document
from tests.ssh.rootfs import chroot

NOW = int(time.time())
TERM = {
    "start": time.strftime("%Y-%m-%d", time.gmtime(NOW - 5 * 86400)),
    "end": time.strftime("%Y-%m-%d", time.gmtime(NOW + 60 * 86400)),
    "grace": "7d",
}


def key(seed: int) -> str:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} k{seed}"


def write_roster(root: Path, people: list[Any], **extra: Any) -> dict[str, Any]:
    access = parse_access({"roster": people, "term": TERM, **extra}, base_dir=root)
    doc = roster_document(access, stack="cis90-test")
    target = root / "etc/classroom/roster"
    target.mkdir(parents=True, exist_ok=True)
    (target / "roster.json").write_text(json.dumps(doc))
    return doc


def reconcile(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return chroot(root, "python3", "/usr/local/sbin/reconcile-roster", "--offline", *args, check=False)


def table(root: Path, name: str) -> dict[str, list[str]]:
    rows = {}
    for line in (root / "etc" / name).read_text().splitlines():
        fields = line.split(":")
        rows[fields[0]] = fields
    return rows


def members(root: Path, group: str) -> set[str]:
    return set(filter(None, table(root, "group")[group][3].split(",")))


PEOPLE = [
    {"username": "alice", "keys": [key(1)], "name": "Alice Liddell"},
    {"username": "bob", "labs": True},
    # An explicit, unusual UID: locking kills every process of that UID the chroot's /proc shows,
    # which is the host's, so it must not be one another test on this machine might be using.
    {"username": "carol", "role": "ta", "keys": [key(3)], "uid": 65123},
    {"username": "prof", "role": "instructor", "uid": 5000},
]


def test_creates_accounts_groups_keys_and_expiry(chroot_root: Path) -> None:
    doc = write_roster(chroot_root, PEOPLE)
    result = reconcile(chroot_root)
    assert result.returncode == 0, result.stderr
    uids = {p["username"]: p["uid"] for p in doc["people"]}
    passwd = table(chroot_root, "passwd")
    for user, uid in uids.items():
        assert passwd[user][2] == str(uid) and passwd[user][3] == str(uid)
        home = chroot_root / "home" / user
        assert home.stat().st_uid == uid and stat.S_IMODE(home.stat().st_mode) == 0o700
        assert f"created account {user} (uid {uid}" in result.stdout
    assert passwd["alice"][4] == "Alice Liddell"
    assert members(chroot_root, "classroom") == set(uids)
    assert members(chroot_root, "classroom-staff") == {"carol", "prof"}
    assert members(chroot_root, "classroom-ownkeys") == {"carol", "prof"}
    assert members(chroot_root, "classroom-labs") == {"bob"}
    keys = chroot_root / "etc/ssh/authorized_keys/alice"
    assert keys.stat().st_uid == 0 and stat.S_IMODE(keys.stat().st_mode) == 0o644
    stamp = doc["term"]["accessEnd"].replace("-", "").replace(":", "").replace("T", "")
    assert f'expiry-time="{stamp}" {key(1)}' in keys.read_text()
    # pam_unix refuses from the expire day on: it is the day after access ends (UTC).
    expire_day = int(table(chroot_root, "shadow")["alice"][7])
    end = calendar.timegm(time.strptime(doc["term"]["accessEnd"], "%Y-%m-%dT%H:%M:%SZ"))
    assert (expire_day - 1) * 86400 < end <= expire_day * 86400
    assert "%classroom-staff ALL=(ALL:ALL) NOPASSWD: ALL" in (chroot_root / "etc/sudoers.d/classroom").read_text()
    assert chroot(chroot_root, "visudo", "-c", check=False).returncode == 0
    assert (chroot_root / "etc/ssh/classroom-revoked.krl").exists()
    # The account files the reconciler writes in bulk pass shadow-utils' own consistency checks.
    grpck = chroot(chroot_root, "grpck", "-r", check=False)
    assert grpck.returncode == 0, grpck.stdout + grpck.stderr
    pwck = chroot(chroot_root, "pwck", "-r", check=False)
    assert not [line for line in pwck.stdout.splitlines() if any(u in line for u in uids)], pwck.stdout
    assert chroot(chroot_root, "id", "-Gn", "carol").stdout.split() == [
        "carol",
        "classroom",
        "classroom-staff",
        "classroom-ownkeys",
    ]
    # usermod/chage operate on what was written.
    assert chroot(chroot_root, "chage", "-l", "alice").returncode == 0


def test_second_pass_and_reordered_roster_change_nothing(chroot_root: Path) -> None:
    first = write_roster(chroot_root, PEOPLE)
    assert reconcile(chroot_root).returncode == 0
    again = reconcile(chroot_root)
    assert again.returncode == 0 and "reconcile-roster: 0 change(s)" in again.stdout
    assert again.stdout.count("\n") == 1
    # The registrar sends the list in another order, with a newcomer: nobody's UID moves.
    reordered = write_roster(chroot_root, [{"username": "zoe"}, *reversed(PEOPLE)])
    assert {p["username"]: p["uid"] for p in reordered["people"] if p["username"] != "zoe"} == {
        p["username"]: p["uid"] for p in first["people"]
    }
    result = reconcile(chroot_root)
    assert result.returncode == 0
    assert "created account zoe" in result.stdout
    assert "uid" not in result.stdout.replace("created account zoe (uid", "")


def test_updates_name_role_labs_and_keys(chroot_root: Path) -> None:
    write_roster(chroot_root, PEOPLE)
    assert reconcile(chroot_root).returncode == 0
    changed = [
        {"username": "alice", "keys": [key(9)], "name": "Alice L.", "role": "ta"},
        {"username": "bob"},
        {"username": "carol", "keys": [key(3)], "uid": 65123},
        {"username": "prof", "role": "instructor", "uid": 5000},
    ]
    write_roster(chroot_root, changed)
    result = reconcile(chroot_root)
    assert result.returncode == 0, result.stderr
    assert table(chroot_root, "passwd")["alice"][4] == "Alice L."
    assert members(chroot_root, "classroom-staff") == {"alice", "prof"}
    assert members(chroot_root, "classroom-labs") == set()
    text = (chroot_root / "etc/ssh/authorized_keys/alice").read_text()
    assert key(9) in text and key(1) not in text
    assert "removed carol from classroom-staff" in result.stdout


def test_removed_person_is_locked_sessions_killed_home_kept(chroot_root: Path) -> None:
    doc = write_roster(chroot_root, PEOPLE)
    assert reconcile(chroot_root).returncode == 0
    carol_uid = next(p["uid"] for p in doc["people"] if p["username"] == "carol")
    work = chroot_root / "home/carol/thesis.txt"
    work.write_text("chapter 1")
    os.chown(work, carol_uid, carol_uid)
    session = subprocess.Popen(["sleep", "300"], user=carol_uid, group=carol_uid)  # an open session
    try:
        write_roster(chroot_root, [p for p in PEOPLE if p["username"] != "carol"])
        result = reconcile(chroot_root)
        assert result.returncode == 0, result.stderr
        assert "locked carol (removed from the roster; home kept)" in result.stdout
        assert session.wait(timeout=30) == -9
        assert "killed the sessions of carol" in result.stdout
    finally:
        if session.poll() is None:
            session.kill()
    shadow = table(chroot_root, "shadow")["carol"]
    assert shadow[1].startswith("!") and shadow[7] == "1"
    assert not (chroot_root / "etc/ssh/authorized_keys/carol").exists()
    assert "carol" not in members(chroot_root, "classroom-staff")
    assert work.read_text() == "chapter 1" and table(chroot_root, "passwd")["carol"][2] == str(carol_uid)
    assert "0 change(s)" in reconcile(chroot_root).stdout  # locking is idempotent too
    # Back on the roster: same UID, the work is still there, access restored until term end.
    write_roster(chroot_root, PEOPLE)
    result = reconcile(chroot_root)
    assert "unlocked carol (expires" in result.stdout
    assert table(chroot_root, "shadow")["carol"][7] != "1"
    assert work.read_text() == "chapter 1"


def test_existing_home_from_the_volume_is_kept(chroot_root: Path) -> None:
    doc = write_roster(chroot_root, [{"username": "frank", "uid": 23456}])
    home = chroot_root / "home/frank"
    home.mkdir()
    (home / "notes").write_text("from last term")
    os.chown(home, 23456, 23456)
    result = reconcile(chroot_root)
    assert result.returncode == 0, result.stderr
    assert "created account frank (uid 23456, student, home kept)" in result.stdout
    assert (home / "notes").read_text() == "from last term"
    assert doc["people"][0]["uid"] == 23456


def test_refuses_uid_change_and_foreign_accounts(chroot_root: Path) -> None:
    doc = write_roster(chroot_root, PEOPLE)
    assert reconcile(chroot_root).returncode == 0
    alice = next(p for p in doc["people"] if p["username"] == "alice")
    old_uid = alice["uid"]
    alice["uid"] = old_uid + 1
    doc["people"].append({"username": "games", "uid": 23000, "role": "student", "keys": [], "importIds": []})
    (chroot_root / "etc/classroom/roster/roster.json").write_text(json.dumps(doc))
    result = reconcile(chroot_root)
    assert result.returncode == 1
    assert "refusing to change a UID" in result.stderr
    assert "account games exists but was not created by classroom" in result.stderr
    assert table(chroot_root, "passwd")["alice"][2] == str(old_uid)
    assert table(chroot_root, "passwd")["games"][2] == "5"


def test_imports_are_skipped_offline_with_a_warning(chroot_root: Path) -> None:
    write_roster(chroot_root, [{"username": "gina", "github": "gina-gh"}])
    result = reconcile(chroot_root)
    assert result.returncode == 0
    assert "offline: not importing gh:gina-gh for gina" in result.stderr
    # Online but without ssh-import-id (or without network): a warning, not a failure.
    online = chroot(chroot_root, "python3", "/usr/local/sbin/reconcile-roster", check=False)
    assert online.returncode == 0
    assert "cannot import gh:gina-gh" in online.stderr or "ssh-import-id gh:gina-gh failed" in online.stderr


def test_krl_revokes_serials_and_keys(chroot_root: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    (chroot_root / "etc/ssh/classroom").mkdir(parents=True)
    (chroot_root / "etc/ssh/classroom/ca.pub").write_text((tmp_path / "ca.pub").read_text())
    write_roster(chroot_root, PEOPLE, revocations={"serials": [77], "keys": [key(5)]})
    assert reconcile(chroot_root).returncode == 0
    user = tmp_path / "user"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user)], check=True)
    krl = chroot_root / "etc/ssh/classroom-revoked.krl"
    for serial, revoked in ((77, True), (78, False)):
        subprocess.run(
            ["ssh-keygen", "-q", "-s", str(ca), "-I", "x", "-n", "alice", "-z", str(serial), str(user) + ".pub"],
            check=True,
        )
        query = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(user) + "-cert.pub"], capture_output=True)
        assert (query.returncode != 0) is revoked
    (tmp_path / "k5.pub").write_text(key(5) + "\n")
    assert (
        subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(tmp_path / "k5.pub")], capture_output=True).returncode
        != 0
    )
    assert "0 change(s)" in reconcile(chroot_root).stdout  # unchanged spec: KRL not rebuilt


def test_dry_run_changes_nothing(chroot_root: Path) -> None:
    write_roster(chroot_root, PEOPLE)
    before = (chroot_root / "etc/passwd").read_text()
    result = reconcile(chroot_root, "--dry-run")
    assert result.returncode == 0
    assert "(dry run) created account alice" in result.stdout
    assert (chroot_root / "etc/passwd").read_text() == before


def test_empty_or_missing_roster_still_writes_the_krl(chroot_root: Path) -> None:
    result = reconcile(chroot_root)
    assert result.returncode == 0, result.stderr
    assert "treating the roster as empty" in result.stdout
    assert (chroot_root / "etc/ssh/classroom-revoked.krl").exists()


def test_apply_roster_hook_starts_one_loop_that_follows_configmap_changes(chroot_root: Path) -> None:
    from components.roster import APPLY_ROSTER_SH, SCRIPTS

    mount = chroot_root / "etc/classroom/roster"
    write_roster(chroot_root, PEOPLE)
    (mount / "apply-roster.sh").write_text(APPLY_ROSTER_SH)
    (mount / "reconcile-roster").write_text((SCRIPTS / "reconcile-roster").read_text())
    hook = [
        "env",
        "CLASSROOM_ROSTER_INTERVAL=0.2",
        "CLASSROOM_OFFLINE=1",
        "sh",
        "/etc/classroom/roster/apply-roster.sh",
    ]
    first = chroot(chroot_root, *hook)
    assert "created account alice" in first.stdout
    pid = int((chroot_root / "run/classroom-roster.pid").read_text())
    try:
        assert Path(f"/proc/{pid}/root").resolve() == chroot_root.resolve()
        chroot(chroot_root, *hook)  # rc.local again (e.g. a re-run by hand): still one loop
        assert int((chroot_root / "run/classroom-roster.pid").read_text()) == pid
        # The ConfigMap changes (kubelet swaps the file): the loop applies it without a restart.
        write_roster(chroot_root, [*PEOPLE, {"username": "zed"}])
        deadline = time.monotonic() + 30
        while "zed" not in table(chroot_root, "passwd") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "zed" in table(chroot_root, "passwd")
    finally:
        os.kill(pid, 9)


def test_root_option_chroots_first(chroot_root: Path) -> None:
    # The host's python3 runs the script; --root makes every path and tool the chroot's.
    write_roster(chroot_root, PEOPLE)
    script = Path(__file__).resolve().parents[2] / "components/scripts/reconcile-roster"
    result = subprocess.run(
        ["python3", str(script), "--root", str(chroot_root), "--offline"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "alice" in table(chroot_root, "passwd")
    assert "alice" not in Path("/etc/passwd").read_text().split(":")
