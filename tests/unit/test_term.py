"""`classroom term` (ops/term.py): the next term's stack file, the view across stacks, and `end`'s argument checks.

Everything here runs on a temporary copy of stacks/ (`--stacks-dir`), so the
repository's stack files are never touched. The engine steps of `end`
(`pulumi destroy`) and the kept-data listing against a real API server are in
tests/e2e/test_term_apiserver.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from components.config import parse_config
from ops import cli, engine, term

REPO = Path(__file__).resolve().parents[2]
OLD = "cis90-fall2026"
NEW = "cis90-spring2027"

ROSTER_CSV = """Username,Full Name,Email,Role
alice,Alice A,alice@example.edu,student
bob,Bob B,bob@example.edu,student
carol,Carol C,carol@example.edu,student
tina,Tina T,tina@example.edu,student
"""


@pytest.fixture()
def stacks(tmp_path: Path) -> Path:
    """A project directory with a copy of stacks/; returns the stacks directory."""
    target = tmp_path / "project" / "stacks"
    shutil.copytree(REPO / "stacks", target)
    return target


def run(capsys: pytest.CaptureFixture[str], *argv: str, today: date | None = None) -> tuple[int, str, str]:
    code = cli.main(["term", *argv], today=today)
    out, err = capsys.readouterr()
    return code, out, err


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["config"]


def raw_of(config: dict[str, Any]) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("classroom:")}


def new_args(stacks: Path, *extra: str, start: str = "2027-01-25", end: str = "2027-05-28") -> list[str]:
    return ["new", "--stacks-dir", str(stacks), "--from", OLD, "--to", NEW, "--start", start, "--end", end, *extra]


def without_pulumi_on_path(monkeypatch: pytest.MonkeyPatch, *keep: Path) -> None:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not shutil.which("pulumi", path=d)]
    monkeypatch.setenv("PATH", os.pathsep.join([*map(str, keep), *dirs]))


def ledger_state(uids: dict[str, int], stack: str = OLD) -> dict[str, Any]:
    """What `pulumi stack export` prints for a stack whose homes were kept (trimmed to what matters)."""
    base = f"urn:pulumi:{stack}::classroom::"
    return {
        "version": 3,
        "deployment": {
            "resources": [
                {"urn": f"{base}pulumi:pulumi:Stack::classroom-{stack}", "type": "pulumi:pulumi:Stack"},
                {"urn": f"{base}classroom:index:Roster::roster", "type": "classroom:index:Roster"},
                {
                    "urn": f"{base}classroom:index:Roster$pulumi-python:dynamic:Resource::roster-uids",
                    "type": "pulumi-python:dynamic:Resource",
                    "protect": True,
                    "outputs": {
                        "derived": sorted(uids),
                        "explicit": {},
                        "uids": {k: float(v) for k, v in uids.items()},
                    },
                },
            ]
        },
    }


class FakeEngine:
    """The Automation API as ops/engine.py uses it (LocalWorkspace, Stack.select, the stack's calls), logging them.

    Only the API is faked here; tests/e2e/test_term_apiserver.py::test_end_and_adopt_with_the_engine
    runs `classroom term end` and `classroom term new --adopt-homes` against the real engine.
    """

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.state: dict[str, Any] = ledger_state({})
        self.fail = ""  # stderr of a failing CLI: the stack cannot be selected
        self.destroy_fails = ""
        self.selected_before: str | None = None

    def answer(self, uids: dict[str, int] | None = None, *, fail: str = "") -> None:
        self.state = ledger_state(uids) if uids is not None else {"version": 3, "deployment": {"resources": []}}
        self.fail = fail

    def calls(self) -> list[tuple[Any, ...]]:
        return self.log

    def error(self, stderr: str) -> auto.CommandError:
        return auto.CommandError(auto.CommandResult(stdout="", stderr=stderr, code=255))

    def workspace(self, work_dir: str) -> Any:
        fake = self

        class Command:
            def run(self, args: list[str], cwd: str, env: dict[str, str]) -> None:
                fake.log.append(("run", *args))

        class Workspace:
            pulumi_command = Command()

            def __init__(self, work_dir: str) -> None:
                fake.log.append(("workspace", Path(work_dir).name))

            def stack(self) -> Any:
                return None if fake.selected_before is None else SimpleNamespace(name=fake.selected_before)

            def select_stack(self, name: str) -> None:
                fake.log.append(("select", name))

        return Workspace(work_dir)

    def select(self, name: str, workspace: Any) -> Any:
        fake = self
        if self.fail:
            raise self.error(self.fail)
        self.log.append(("select", name))

        class Stack:
            def export_stack(self) -> Any:
                fake.log.append(("export_stack",))
                return SimpleNamespace(deployment=fake.state["deployment"])

            def outputs(self) -> dict[str, Any]:
                fake.log.append(("outputs",))
                return {"sshHost": SimpleNamespace(value="203.0.113.7", secret=False)}

            def destroy(self, **options: Any) -> None:
                fake.log.append(("destroy", options.get("exclude_protected")))
                if fake.destroy_fails:
                    raise fake.error(fake.destroy_fails)
                options["on_output"]("Resources: 7 deleted")

        return Stack()


@pytest.fixture()
def fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The Automation API faked, and a `pulumi` on PATH that fails the test if anything runs it directly."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text("#!/bin/sh\necho 'pulumi run outside the Automation API' >&2\nexit 99\n")
    script.chmod(0o755)
    without_pulumi_on_path(monkeypatch, bin_dir)
    fake = FakeEngine()
    monkeypatch.setattr(engine.auto, "LocalWorkspace", fake.workspace)
    monkeypatch.setattr(engine.auto.Stack, "select", staticmethod(fake.select))
    return fake


# ------------------------------------------------------------------ new


def test_new_refuses_an_export_that_would_make_staff(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = stacks.parent / "rosters" / "spring.csv"
    csv.parent.mkdir()
    csv.write_text(ROSTER_CSV.replace("tina,Tina T,tina@example.edu,student", "tina,Tina T,tina@example.edu,ta"))
    code, _out, err = run(capsys, *new_args(stacks, "--roster", str(csv)))
    assert code != 0 and "cannot make staff" in err and "line 5" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_new_writes_dates_roster_and_a_fresh_namespace(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = stacks.parent / "rosters" / "spring.csv"
    csv.parent.mkdir()
    csv.write_text(ROSTER_CSV)
    code, out, err = run(capsys, *new_args(stacks, "--roster", str(csv)))
    assert code == 0, err
    config = load(stacks / f"Pulumi.{NEW}.yaml")
    assert config["classroom:term"]["start"] == "2027-01-25"
    assert config["classroom:term"]["end"] == "2027-05-28"
    # Written relative to the project, where the engine runs.
    # The staff the old stack file names carry over when the new export lists them (it cannot make staff).
    assert config["classroom:roster"] == {"csv": "rosters/spring.csv"}
    assert "dropped staff not in spring.csv: jlopez" in out
    assert "classroom:namespace" not in config
    old = load(stacks / f"Pulumi.{OLD}.yaml")
    replaced = ("classroom:term", "classroom:roster")
    assert {k: v for k, v in config.items() if k not in replaced} == {k: v for k, v in old.items() if k not in replaced}
    if "classroom:term" in old:
        assert config["classroom:term"]["timezone"] == old["classroom:term"]["timezone"]
    assert "4 student(s)" in out
    assert "namespace classroom-cis90-spring2027" in out
    # The old file's comments carry over, those inside the replaced roster and term included.
    old_text = (stacks / f"Pulumi.{OLD}.yaml").read_text()
    new_text = (stacks / f"Pulumi.{NEW}.yaml").read_text()
    comments = [line.strip() for line in old_text.splitlines() if line.strip().startswith("#")]
    assert comments and all(c in new_text for c in comments), [c for c in comments if c not in new_text]
    assert new_text.startswith(f"# Created by `classroom term new --from {OLD}`")
    assert "comments were kept" in out
    assert "PULUMI_K8S_UPSERT_EXISTING_OBJECTS" not in out
    cfg = parse_config(raw_of(config), stack=NEW, base_dir=stacks.parent)
    assert cfg.namespace == "classroom-cis90-spring2027"
    assert sorted(p.username for p in cfg.access.people) == ["alice", "bob", "carol", "tina"]
    assert cfg.access.term is not None and cfg.access.term.start.date() == date(2027, 1, 25)


def test_new_keeps_the_staff_the_old_stack_names_when_the_export_lists_them(
    stacks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = stacks.parent / "rosters" / "spring.csv"
    csv.parent.mkdir()
    csv.write_text(ROSTER_CSV + "jlopez,J Lopez,jl@example.edu,student\n")
    code, out, err = run(capsys, *new_args(stacks, "--roster", str(csv)))
    assert code == 0, err
    config = load(stacks / f"Pulumi.{NEW}.yaml")
    assert config["classroom:roster"] == {"csv": "rosters/spring.csv", "staff": {"jlopez": "ta"}}
    assert "kept the staff the old stack names (jlopez)" in out
    cfg = parse_config(raw_of(config), stack=NEW, base_dir=stacks.parent)
    assert {p.username: p.role for p in cfg.access.people}["jlopez"] == "ta"


def test_new_with_adopt_homes_keeps_the_old_namespace(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    code, out, err = run(capsys, *new_args(stacks, "--adopt-homes"))
    assert code == 0, err
    config = load(stacks / f"Pulumi.{NEW}.yaml")
    assert config["classroom:namespace"] == f"classroom-{OLD}"
    cfg = parse_config(raw_of(config), stack=NEW, base_dir=stacks.parent)
    assert cfg.namespace == f"classroom-{OLD}"
    # The claims are named inside the namespace: same namespace, same claim names.
    assert f"PULUMI_K8S_UPSERT_EXISTING_OBJECTS=true PULUMI_K8S_ENABLE_PATCH_FORCE=true pulumi up --stack {NEW}" in out
    assert f"pulumi state unprotect --all --yes --stack {OLD}" in out


def test_new_keeps_timezone_and_grace_and_drops_salt_revocations_and_old_students(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    old_path = stacks / f"Pulumi.{OLD}.yaml"
    data = yaml.safe_load(old_path.read_text())
    data["encryptionsalt"] = "v1:abc:def"
    data["config"]["classroom:namespace"] = "cis90"
    data["config"]["classroom:term"] = {
        "start": "2026-08-24",
        "end": "2026-12-18",
        "timezone": "America/Los_Angeles",
        "grace": "7d",
        "name": "fall2026",
    }
    data["config"]["classroom:roster"] = [
        {"username": "kchan", "role": "instructor"},
        {"username": "oldstudent"},
        {"username": "oldta", "role": "ta"},
    ]
    data["config"]["classroom:revocations"] = {"serials": [12345]}
    data["config"]["classroom:rcLocal"] = {"secure": "v1:xyz"}
    old_path.write_text(yaml.safe_dump(data))
    code, out, err = run(capsys, *new_args(stacks, "--adopt-homes"))
    assert code == 0, err
    written = yaml.safe_load((stacks / f"Pulumi.{NEW}.yaml").read_text())
    assert "encryptionsalt" not in written
    config = written["config"]
    assert config["classroom:term"] == {
        "start": "2027-01-25",
        "end": "2027-05-28",
        "timezone": "America/Los_Angeles",
        "grace": "7d",
    }
    assert [p["username"] for p in config["classroom:roster"]] == ["kchan", "oldta"]
    assert "classroom:revocations" not in config
    assert "classroom:rcLocal" not in config  # encrypted with the old stack's key
    assert config["classroom:namespace"] == "cis90"
    assert "rcLocal" in out and "pulumi config set --secret" in out
    assert "dropped its students" in out


SPRING_CSV = """Username,Full Name,Email,Role
jlopez,Jordan Lopez,jlopez@example.edu,student
achen,Avery Chen,achen@example.edu,student
newbie,New B,newbie@example.edu,student
"""


def spring_roster(stacks: Path, text: str = SPRING_CSV) -> Path:
    csv = stacks.parent / "rosters" / "spring.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text(text)
    return csv


def test_adopt_homes_carries_the_old_ledgers_uids_so_returning_people_keep_their_homes(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    from components.roster import UidLedgerProvider
    from components.rosterdata import _uid_hash

    # jlopez was moved off his hash slot in the fall (a collision), and bokafor, who left, holds the
    # slot the newcomer would hash to: neither follows from the names alone, only the ledger knows.
    ledger = {"jlopez": _uid_hash("jlopez") + 1, "achen": _uid_hash("achen"), "bokafor": _uid_hash("newbie")}
    fake_pulumi.answer(ledger)
    code, out, err = run(capsys, *new_args(stacks, "--adopt-homes", "--roster", str(spring_roster(stacks))))
    assert code == 0, err
    # One stack selected, its state exported, and no stack left selected that was not before.
    assert fake_pulumi.calls() == [
        ("workspace", "project"),
        ("select", OLD),
        ("export_stack",),
        ("run", "stack", "unselect"),
    ]
    config = load(stacks / f"Pulumi.{NEW}.yaml")
    assert config["classroom:adoptedUids"] == ledger  # the whole ledger, the people who left included
    assert "carried 3 UID(s)" in out
    cfg = parse_config(raw_of(config), stack=NEW, base_dir=stacks.parent)
    uids = {p.username: p.uid for p in cfg.access.people}
    assert uids["jlopez"] == ledger["jlopez"] and uids["achen"] == ledger["achen"]
    assert uids["newbie"] not in ledger.values()  # bokafor's kept home is not handed to the newcomer
    assert dict(cfg.access.adopted_uids) == ledger
    # The new stack's ledger, created on its first `up`, starts from them (what the Roster passes it).
    created = (
        UidLedgerProvider()
        .create(
            {
                "derived": sorted(p.username for p in cfg.access.people if not p.uid_explicit),
                "explicit": {},
                "adopted": dict(cfg.access.adopted_uids),
                "uids": None,
            }
        )
        .outs["uids"]
    )
    assert {u: created[u] for u in ("jlopez", "achen", "newbie")} == {u: uids[u] for u in ("jlopez", "achen", "newbie")}
    assert created["bokafor"] == ledger["bokafor"]


def test_adopt_homes_without_pulumi_says_so_and_writes_nothing(
    stacks: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    without_pulumi_on_path(monkeypatch)
    code, _out, err = run(capsys, *new_args(stacks, "--adopt-homes"))
    assert code == 1 and "pulumi is not on PATH" in err and "UIDs" in err and "nothing written" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_adopt_homes_with_an_unreachable_state_says_so_and_writes_nothing(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    fake_pulumi.answer(fail="error: no stack named 'cis90-fall2026' found")
    code, _out, err = run(capsys, *new_args(stacks, "--adopt-homes"))
    assert code == 1 and "pulumi stack export --stack cis90-fall2026 failed: error: no stack named" in err
    assert "no stack named" in err and "nothing written" in err and "Traceback" not in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_adopt_homes_from_a_state_without_a_ledger_refuses(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    # A released (or never deployed) old stack: its ledger is gone, so its homes' owners are unknown.
    fake_pulumi.answer(None)
    code, _out, err = run(capsys, *new_args(stacks, "--adopt-homes"))
    assert code == 1 and "holds no UID ledger" in err and "classroom:adoptedUids" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_adopt_homes_refuses_a_new_explicit_uid_that_owns_a_kept_home(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    fake_pulumi.answer({"bokafor": 31000, "jlopez": 31001})
    csv = spring_roster(stacks, "Username,Full Name,Email,Role,uid\nnewbie,New B,newbie@example.edu,student,31000\n")
    code, _out, err = run(capsys, *new_args(stacks, "--adopt-homes", "--roster", str(csv)))
    assert code == 2 and "31000" in err and "bokafor" in err and "nothing written" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_a_new_namespace_carries_no_uids_and_asks_pulumi_nothing(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: Any
) -> None:
    old_path = stacks / f"Pulumi.{OLD}.yaml"
    data = yaml.safe_load(old_path.read_text())
    data["config"]["classroom:adoptedUids"] = {"someone": 30000}  # from a term before
    old_path.write_text(yaml.safe_dump(data))
    code, _out, err = run(capsys, *new_args(stacks))
    assert code == 0, err
    assert "classroom:adoptedUids" not in load(stacks / f"Pulumi.{NEW}.yaml")  # fresh homes, no owners to keep
    assert fake_pulumi.calls() == []


def test_a_commented_stack_file_keeps_its_comments_through_revoke_and_term_new(
    stacks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both edits are round-trip (ops/stackfile.py, ruamel.yaml): an instructor's notes are never lost."""
    path = stacks / f"Pulumi.{OLD}.yaml"
    notes = "  classroom:homeSize: 50Gi  # grown in week 6\n  # the depot holds the labs\n"
    path.write_text(path.read_text().replace("  classroom:homeSize: 50Gi\n", notes, 1))
    comments = ["#" + line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    assert "# grown in week 6" in comments and len(comments) > 5

    assert cli.main(["roster", "--project", str(stacks.parent), "revoke", "--stack", OLD, "--serial", "4242"]) == 0
    revoked = path.read_text()
    assert yaml.safe_load(revoked)["config"]["classroom:revocations"] == {"serials": [4242]}
    assert [c for c in comments if c not in revoked] == []

    # With this term's roster, so the roster mapping is edited in place (its comments stay with it).
    code, _out, err = run(capsys, *new_args(stacks, "--roster", str(spring_roster(stacks))))
    assert code == 0, err
    new_text = (stacks / f"Pulumi.{NEW}.yaml").read_text()
    assert "classroom:revocations" not in new_text  # a new term signs new certificates
    assert [c for c in comments if c not in new_text] == []


def test_new_refuses_to_overwrite_an_existing_stack(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = stacks / f"Pulumi.{NEW}.yaml"
    target.write_text("config: {}\n")
    code, _, err = run(capsys, *new_args(stacks))
    assert code == 2
    assert "--to" in err and "refusing to overwrite" in err
    assert target.read_text() == "config: {}\n"


@pytest.mark.parametrize(
    ("start", "end", "argument", "reason"),
    [
        ("2027-05-28", "2027-01-25", "--end", "not after --start"),
        ("2027-01-25", "2027-01-25", "--end", "not after --start"),
        ("next monday", "2027-05-28", "--start", "not a date"),
        ("2027-01-25", "2027-02-30", "--end", "not a calendar date"),
        ("25/01/2027", "2027-05-28", "--start", "YYYY-MM-DD"),
    ],
)
def test_new_bad_dates_exit_2_naming_the_argument(
    stacks: Path, capsys: pytest.CaptureFixture[str], start: str, end: str, argument: str, reason: str
) -> None:
    code, out, err = run(capsys, *new_args(stacks, start=start, end=end))
    assert code == 2
    # click names a malformed option ("Invalid value for '--start'"), the command one that contradicts another.
    assert (f"Invalid value for '{argument}'" in err or f"argument {argument}:" in err) and reason in err
    assert "Traceback" not in err + out
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


def test_new_bad_roster_and_unknown_stacks_exit_2(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *new_args(stacks, "--roster", str(stacks / "missing.csv")))
    assert code == 2 and "--roster" in err
    bad = stacks.parent / "bad.csv"
    bad.write_text("Username,Email\nalice,a@x\nalice,b@x\n")
    code, _, err = run(capsys, *new_args(stacks, "--roster", str(bad)))
    # The program's own parser rejects the duplicate, before anything is written.
    assert code == 2 and "nothing written" in err and "alice" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()
    code, _, err = run(
        capsys, "new", "--stacks-dir", str(stacks), "--from", "nope", "--to", NEW,
        "--start", "2027-01-25", "--end", "2027-05-28",
    )  # fmt: skip
    assert code == 2 and "--from" in err and OLD in err  # lists the stacks that exist
    code, _, err = run(
        capsys, "new", "--stacks-dir", str(stacks), "--from", OLD, "--to", "bad/name",
        "--start", "2027-01-25", "--end", "2027-05-28",
    )  # fmt: skip
    assert code == 2 and "--to" in err


def test_new_stack_with_an_invalid_old_value_is_caught_now(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_path = stacks / f"Pulumi.{OLD}.yaml"
    data = yaml.safe_load(old_path.read_text())
    data["config"]["classroom:homeSize"] = "lots"
    old_path.write_text(yaml.safe_dump(data))
    code, _, err = run(capsys, *new_args(stacks))
    assert code == 2 and "homeSize" in err and "'lots'" in err
    assert not (stacks / f"Pulumi.{NEW}.yaml").exists()


# ------------------------------------------------------------------ status


def write_stack(stacks: Path, name: str, config: dict[str, Any]) -> None:
    (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))


@pytest.fixture()
def two_stacks(tmp_path: Path) -> Path:
    stacks = tmp_path / "project" / "stacks"
    stacks.mkdir(parents=True)
    (stacks / "cis91.csv").write_text(ROSTER_CSV)
    write_stack(
        stacks,
        "cis90-fall2026",
        {
            "classroom:term": {"start": "2026-08-24", "end": "2026-12-18", "timezone": "America/Los_Angeles",
                               "grace": "7d"},
            "classroom:roster": [{"username": "ann"}, {"username": "ben"}, {"username": "prof", "role": "instructor"}],
        },
    )  # fmt: skip
    write_stack(
        stacks,
        "cis91-spring2027",
        {
            "classroom:term": {"start": "2027-01-25", "end": "2027-05-28"},
            "classroom:roster": {"csv": "cis91.csv"},
            "classroom:labs": {"hosts": [{"name": "lab1", "address": "10.0.0.1"}, {"name": "lab2"}]},
        },
    )
    return stacks


@pytest.mark.parametrize(
    ("today", "fall", "spring"),
    [
        (date(2026, 8, 23), "not started", "not started"),
        (date(2026, 8, 24), "in term", "not started"),
        (date(2026, 12, 18), "in term", "not started"),
        (date(2026, 12, 20), "ended (grace)", "not started"),
        (date(2026, 12, 26), "ended", "not started"),
        (date(2027, 5, 28), "ended", "in term"),
        (date(2027, 5, 29), "ended", "ended"),
    ],
)
def test_status_states_follow_the_dates(
    two_stacks: Path, capsys: pytest.CaptureFixture[str], today: date, fall: str, spring: str
) -> None:
    code, out, err = run(capsys, "status", "--stacks-dir", str(two_stacks), "--json", today=today)
    assert code == 0, err
    rows = {r["stack"]: r for r in json.loads(out)}
    assert rows["cis90-fall2026"]["state"] == fall
    assert rows["cis91-spring2027"]["state"] == spring


def test_status_counts_students_and_lists_hosts(two_stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--stacks-dir", str(two_stacks), "--json", today=date(2026, 9, 1))
    assert code == 0, err
    rows = {r["stack"]: r for r in json.loads(out)}
    fall, spring = rows["cis90-fall2026"], rows["cis91-spring2027"]
    assert (fall["class"], fall["term"], fall["start"], fall["end"]) == (
        "cis90",
        "fall2026",
        "2026-08-24",
        "2026-12-18",
    )
    assert (fall["students"], fall["staff"]) == (2, 1)
    assert (spring["students"], spring["staff"]) == (4, 0)  # counted from the CSV
    assert spring["labHosts"] == ["lab1", "lab2"]
    assert fall["labHosts"] == []
    if shutil.which("pulumi") is None:
        assert fall["server"] == "unknown (no pulumi CLI)"
    code, table, _ = run(capsys, "status", "--stacks-dir", str(two_stacks), today=date(2026, 9, 1))
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["stack", "class", "term"]
    spring_line = next(line for line in lines if line.startswith("cis91-spring2027"))
    assert "lab1, lab2" in spring_line and spring_line.rstrip().endswith("not started")


def test_status_reports_an_invalid_stack_without_failing(two_stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(two_stacks, "broken", {"classroom:term": {"start": "someday", "end": "2027-01-01"}})
    code, out, err = run(capsys, "status", "--stacks-dir", str(two_stacks), "--json", today=date(2026, 9, 1))
    assert code == 0, err
    rows = {r["stack"]: r for r in json.loads(out)}
    assert rows["broken"]["state"] == "invalid" and "term.start" in rows["broken"]["error"]
    assert rows["cis90-fall2026"]["state"] == "in term"


def test_status_bad_stacks_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--stacks-dir", str(tmp_path / "nope"))
    assert code == 2 and "--stacks-dir" in err


# ------------------------------------------------------------------ end


def test_end_argument_errors(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "end", "--stacks-dir", str(stacks), "--skip-destroy")
    assert code == 2 and "--stack" in err
    code, _, err = run(capsys, "end", "--stacks-dir", str(stacks), "--stack", "nope", "--skip-destroy")
    assert code == 2 and "--stack" in err and "nope" in err and OLD in err
    code, _, err = run(capsys, "end", "--stacks-dir", str(stacks), "--stack", "../etc", "--skip-destroy")
    assert code == 2 and "not a stack name" in err
    code, _, err = run(
        capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--skip-destroy", "--summary", str(stacks)
    )
    assert code == 2 and "--summary" in err and "directory" in err
    code, _, err = run(capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--skip-destroy", "--bogus")
    assert code == 2 and "--bogus" in err
    assert "Traceback" not in err


def test_end_without_pulumi_says_so_and_destroys_nothing(
    stacks: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the toolchain puts pulumi on PATH; hide it, as on a machine without the engine
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not shutil.which("pulumi", path=d)]
    monkeypatch.setenv("PATH", os.pathsep.join(dirs))
    assert shutil.which("pulumi") is None
    summary = tmp_path / "summary.md"
    code, _, err = run(capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--yes", "--summary", str(summary))
    assert code == 1 and "pulumi is not on PATH" in err and "--skip-destroy" in err
    assert not summary.exists()


def test_end_destroys_all_but_the_protected_through_the_api_and_keeps_the_selected_stack(
    stacks: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pulumi: FakeEngine,
) -> None:
    fake_pulumi.selected_before = "dev"  # the instructor's own `pulumi` commands act on dev
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    code, out, err = run(
        capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--yes", "--summary", str(tmp_path / "s.md")
    )
    # destroy ran (exclude_protected) and streamed its output; then listing the kept claims failed on the kubeconfig
    # (or on a missing kubectl), exit 1 either way, and dev is selected again.
    assert fake_pulumi.calls() == [("workspace", "project"), ("select", OLD), ("destroy", True), ("select", "dev")]
    assert "Resources: 7 deleted" in out
    assert code == 1 and ("missing-kubeconfig" in err or "kubectl is not on PATH" in err), err


def test_end_destroys_nothing_without_a_yes(
    stacks: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_pulumi: FakeEngine
) -> None:
    # pytest's stdin is not a terminal: as in a script or CI, no --yes means no destroy and no summary
    summary = tmp_path / "s.md"
    code, _out, err = run(capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--summary", str(summary))
    assert code == 2 and "pass --yes to confirm" in err and "--skip-destroy" in err and "homes" in err
    assert fake_pulumi.calls() == [] and not summary.exists()


@pytest.mark.parametrize(("typed", "destroyed"), [("cis90-fall2026\n", True), ("yes\n", False), ("", False)])
def test_end_at_a_terminal_asks_for_the_stack_name(
    stacks: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pulumi: FakeEngine,
    typed: str,
    destroyed: bool,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert OLD == "cis90-fall2026"
    monkeypatch.setattr(sys, "stdin", Terminal(typed))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    code, out, err = run(
        capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--summary", str(tmp_path / "s.md")
    )
    assert f"Type the stack name ({OLD})" in out
    assert (("destroy", True) in fake_pulumi.calls()) is destroyed
    if not destroyed:
        assert code == 2 and "nothing was destroyed" in err and fake_pulumi.calls() == []


def test_a_failed_destroy_exits_1_with_what_pulumi_said(
    stacks: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_pulumi: FakeEngine
) -> None:
    fake_pulumi.destroy_fails = "error: the stack is currently locked by 1 lock(s)"
    summary = tmp_path / "s.md"
    code, _out, err = run(
        capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--yes", "--summary", str(summary)
    )
    assert code == 1 and f"pulumi destroy --stack {OLD} failed: error: the stack is currently locked" in err
    assert "Traceback" not in err and not summary.exists()
    assert fake_pulumi.calls()[-1] == ("run", "stack", "unselect")  # nothing was selected before


def test_status_reads_the_server_address_from_the_outputs(
    stacks: Path, capsys: pytest.CaptureFixture[str], fake_pulumi: FakeEngine
) -> None:
    code, out, err = run(capsys, "status", "--stacks-dir", str(stacks), "--json")
    assert code == 0, err
    assert {row["stack"]: row["server"] for row in json.loads(out)}[OLD] == "203.0.113.7"
    fake_pulumi.answer(fail="error: no stack named 'cis90-fall2026' found")
    code, out, _err = run(capsys, "status", "--stacks-dir", str(stacks), "--json")
    assert {row["stack"]: row["server"] for row in json.loads(out)}[OLD] == "unknown (not deployed)"


def test_end_with_an_unreachable_cluster_exits_1_naming_the_kubeconfig(
    stacks: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    summary = tmp_path / "summary.md"
    code, _, err = run(
        capsys, "end", "--stacks-dir", str(stacks), "--stack", OLD, "--skip-destroy", "--summary", str(summary)
    )
    assert code == 1 and "missing-kubeconfig" in err and "Traceback" not in err
    assert not summary.exists()


# ------------------------------------------------------------------ kept-data summary (pure part)


def claim(name: str, volume: str, size: str = "50Gi") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"resources": {"requests": {"storage": size}}, "storageClassName": "ns-retain", "volumeName": volume},
        "status": {"phase": "Bound", "capacity": {"storage": size}},
    }


def volume(
    name: str, policy: str, source: dict[str, Any], claim_name: str = "", phase: str = "Bound"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"persistentVolumeReclaimPolicy": policy, **source}
    if claim_name:
        spec["claimRef"] = {"namespace": "ns", "name": claim_name}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": phase}}


def test_summary_names_each_kind_of_storage_and_warns_on_delete() -> None:
    claims = [claim("home", "pv-a"), claim("extra-nfs", "pv-b", "5Gi"), claim("extra-csi", "pv-c"), claim("lost", "")]
    volumes = [
        volume("pv-a", "Retain", {"hostPath": {"path": "/srv/vol/pv-a"}}, "home"),
        volume("pv-b", "Retain", {"nfs": {"server": "nas1", "path": "/export/x"}}, "extra-nfs"),
        volume("pv-c", "Delete", {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-123"}}, "extra-csi"),
        volume("pv-old", "Retain", {"hostPath": {"path": "/srv/vol/pv-old"}}, "home-2025", phase="Released"),
        volume("pv-other", "Retain", {"hostPath": {"path": "/x"}}),
    ]
    summary = term.summarize("ns", claims, volumes)
    rows = {r["name"]: r for r in summary["claims"]}
    assert rows["home"]["volume"]["source"] == {"kind": "hostPath", "path": "/srv/vol/pv-a"}
    assert rows["home"]["volume"]["reclaimPolicy"] == "Retain"
    assert rows["extra-nfs"]["volume"]["source"] == {"kind": "nfs", "server": "nas1", "path": "/export/x"}
    assert rows["extra-nfs"]["size"] == "5Gi" and rows["extra-nfs"]["storageClass"] == "ns-retain"
    assert rows["extra-csi"]["volume"]["source"]["volumeHandle"] == "vol-123"
    assert rows["lost"]["volume"] is None
    assert [v["name"] for v in summary["releasedVolumes"]] == ["pv-old"]
    assert any("extra-csi" in w and "Delete" in w for w in summary["warnings"])
    assert any("lost" in w and "not bound" in w for w in summary["warnings"])
    text = term.summary_markdown("s", summary, destroyed=True)
    assert "hostPath /srv/vol/pv-a" in text and "NFS nas1:/export/x" in text and "volumeHandle vol-123" in text
    assert "pv-old" in text


def test_every_stack_file_round_trips_byte_for_byte() -> None:
    # What makes an edit touch only the keys it changes: loading and dumping changes nothing.
    from ops import stackfile

    files = sorted((REPO / "stacks").glob("Pulumi.*.yaml"))
    assert files
    for path in files:
        text = path.read_text()
        assert stackfile.dump(stackfile.load(text)) == text, path.name
