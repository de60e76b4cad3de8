"""`classroom roster` (ops/roster.py) on a scratch project: issue, status, revoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.rosterdata import parse_access, roster_document
from components.sshcert import certificate_fields
from ops.cli import main
from ops.roster import replace_revocations

ROOT = Path(__file__).resolve().parents[2]

STACK = "cis90-fall2026"


def pub(seed: int) -> str:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


STACK_FILE = f"""# CIS 90, Fall 2026 -- reviewed in pull requests
config:
  classroom:hostName: opus  # the login server's name
  classroom:term:
    start: 2026-08-24
    end: 2026-12-18
    timezone: America/Los_Angeles
    grace: 7d
  classroom:roster:
    - username: alice
      keys: ["{pub(1)}"]
    - username: bob
      github: bob-gh
    - username: carol
      role: ta
      keys: ["{pub(3)}"]
  # access ends with the term
  classroom:staffKeepOwnKeys: true
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: classroom\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / f"Pulumi.{STACK}.yaml").write_text(STACK_FILE)
    ca = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ca").write_bytes(
        ca.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    return tmp_path


def run(project: Path, *argv: str) -> int:
    return main(["roster", "--project", str(project), *argv])


def issue(project: Path, out: Path, *argv: str) -> int:
    """`classroom roster issue` for STACK into OUT, signed with the project's test CA key."""
    return run(project, "issue", "--stack", STACK, "--out", str(out), "--ca-key", str(project / "ca"), *argv)


def test_issue_from_the_stack_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = project / "out"
    assert issue(project, out, "--host", "opus.example.edu", "--port", "2222") == 0
    assert sorted(p.name for p in out.iterdir()) == ["alice-cert.pub", "carol-cert.pub", "known_hosts", "ssh_config"]
    fields = certificate_fields((out / "alice-cert.pub").read_text())
    assert fields["principals"] == ["alice"] and fields["key_id"] == "cis90/fall2026/alice"
    doc = roster_document(
        parse_access(yaml.safe_load(STACK_FILE.replace("classroom:", ""))["config"], base_dir=project), stack=STACK
    )
    alice = next(p for p in doc["people"] if p["username"] == "alice")
    assert fields["serial"] == alice["certificates"][0]["serial"]  # the serial `pulumi up` signs with
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(out / "alice-cert.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert "user certificate" in listing
    assert (out / "known_hosts").read_text().startswith("@cert-authority [opus.example.edu]:2222 ssh-ed25519 ")
    config = (out / "ssh_config").read_text()
    assert "HostName opus.example.edu" in config and "Port 2222" in config
    assert "bob" in capsys.readouterr().out  # named: no key, so no certificate


def test_issue_from_roster_json(project: Path, tmp_path: Path) -> None:
    doc = roster_document(
        parse_access(
            {"roster": [{"username": "zed", "keys": [pub(9)]}], "term": {"start": "2026-01-05", "end": "2026-05-01"}},
            base_dir=project,
        ),
        stack="x-spring2026",
    )
    (tmp_path / "roster.json").write_text(json.dumps(doc))
    assert issue(project, tmp_path / "o", "--roster-json", str(tmp_path / "roster.json")) == 0
    assert certificate_fields((tmp_path / "o" / "zed-cert.pub").read_text())["key_id"] == "x/spring2026/zed"
    assert (tmp_path / "o" / "known_hosts").read_text().startswith("@cert-authority * ")


def test_status_from_config(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "status", "--stack", STACK, "--from-config") == 0
    text = capsys.readouterr().out
    assert "access until 2026-12-26T08:00:00Z" in text
    assert "keys via gh:bob-gh" in text
    assert run(project, "status", "--stack", STACK, "--from-config", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {p["username"] for p in data["people"]} == {"alice", "bob", "carol"}


def test_revoke_user_edits_only_revocations(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project / "stacks" / f"Pulumi.{STACK}.yaml"
    assert run(project, "revoke", "--stack", STACK, "alice") == 0
    text = path.read_text()
    assert "# CIS 90, Fall 2026 -- reviewed in pull requests" in text and "# the login server's name" in text
    config = yaml.safe_load(text)["config"]
    before = yaml.safe_load(STACK_FILE)["config"]
    assert {k: v for k, v in config.items() if k != "classroom:revocations"} == before
    doc = roster_document(
        parse_access({k.split(":", 1)[1]: v for k, v in before.items()}, base_dir=project), stack=STACK
    )
    cert = next(p for p in doc["people"] if p["username"] == "alice")["certificates"][0]
    serial = cert["serial"]
    # The person, not only the certificate: the key itself is revoked too (reconcile-roster then
    # locks someone whose every roster key is revoked, imported keys included).
    assert config["classroom:revocations"] == {"serials": [serial], "keys": [cert["fingerprint"]]}
    assert "pulumi up --stack" in capsys.readouterr().out
    # Idempotent, and --serial / --key add to the same block.
    assert run(project, "revoke", "--stack", STACK, "alice") == 0
    assert path.read_text() == text
    assert run(project, "revoke", "--stack", STACK, "--serial", "12", "--key", pub(7)) == 0
    config = yaml.safe_load(path.read_text())["config"]
    assert config["classroom:revocations"] == {"serials": sorted([serial, 12]), "keys": [cert["fingerprint"], pub(7)]}
    assert run(project, "status", "--stack", STACK, "--from-config") == 0
    assert "REVOKED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["revoke", "--stack", STACK, "mallory"], "'mallory' is not on the roster"),
        (["revoke", "--stack", STACK, "bob"], "no roster key to revoke"),
        (["revoke", "--stack", STACK, "--serial", "0"], "--serial 0"),
        (["revoke", "--stack", STACK, "--key", "ssh-ed25519 AAAAnope"], "--key"),
        (["status", "--stack", "no-such"], "no stack file"),
        (["issue", "--stack", STACK, "--out", "o", "--ca-key", "/nonexistent"], "--ca-key /nonexistent"),
    ],
)
def test_errors_are_one_clear_line(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(project, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_stack_config_is_reported_not_raised(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project / "stacks" / f"Pulumi.{STACK}.yaml"
    path.write_text(STACK_FILE.replace("username: bob", "username: Bob!"))
    assert run(project, "status", "--stack", STACK, "--from-config") == 2
    assert "roster[1].username" in capsys.readouterr().err


def test_revocations_block_added_when_missing_and_replaced_when_flow_style() -> None:
    text = "config:\n  classroom:hostName: x\n\n# trailer comment\n"
    added = replace_revocations(text, [5], [])
    assert yaml.safe_load(added)["config"] == {"classroom:hostName": "x", "classroom:revocations": {"serials": [5]}}
    assert "\n# trailer comment\n" in added  # kept (a round-trip edit moves it before the new key)
    flow = "config:\n  classroom:revocations: {serials: [1]}\n  classroom:hostName: x\n"
    swapped = replace_revocations(flow, [1, 2], [])
    assert yaml.safe_load(swapped)["config"] == {
        "classroom:revocations": {"serials": [1, 2]},
        "classroom:hostName": "x",
    }


def test_revoking_keeps_every_comment_and_other_line() -> None:
    text = (
        "# header\nconfig:\n  classroom:hostName: x  # the name\n  # revoked by hand in week 3\n"
        "  classroom:revocations:\n    serials:\n      - 3  # lost laptop\n  classroom:user: human\n"
    )
    updated = replace_revocations(text, [3, 9], [])
    for line in (
        "# header",
        "classroom:hostName: x  # the name",
        "# revoked by hand in week 3",
        "- 3  # lost laptop",
        "classroom:user: human",
    ):
        assert line in updated, (line, updated)
    assert yaml.safe_load(updated)["config"]["classroom:revocations"] == {"serials": [3, 9]}
    # A flow-style config mapping is edited too (the line editor refused it).
    flow = yaml.safe_load(replace_revocations("config: {classroom:hostName: x}\n", [4], []))
    assert flow == {"config": {"classroom:hostName": "x", "classroom:revocations": {"serials": [4]}}}


def test_console_script_runs_without_traceback(project: Path) -> None:
    classroom = Path(sys.executable).parent / "classroom"  # pyproject.toml [project.scripts]
    result = subprocess.run(
        [str(classroom), "roster", "--project", str(project), "status", "--stack", "nope", "--from-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "no stack file" in result.stderr
