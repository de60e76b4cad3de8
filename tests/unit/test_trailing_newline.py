"""A value with a trailing newline is refused, not smuggled through `$`.

Python's `$` also matches just before a final newline, so `^[a-z]+$` accepts
"alice\\n" — which would then write an extra line into rc.env, a sudoers file
or a Traefik rule. The validators anchor with `\\Z`; these cases pin that.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from labd.render import valid_cluster_label

from components.errors import ConfigError
from components.rosterdata import FINGERPRINT_RE, GITHUB_RE, LAUNCHPAD_RE
from components.schema import _ADDRESS, _LAB_DNS_NAME, _LAB_HOST_NAME
from components.vocabulary import _QUANTITY, USERNAME_RE

ROOT = Path(__file__).resolve().parents[2]


PATTERNS = {
    "labs host name": (re.compile(_LAB_HOST_NAME), "lab1"),
    "labs domain": (_LAB_DNS_NAME, "lab.example.org"),
    "labs address": (re.compile(_ADDRESS), "10.0.0.5"),
    "labs user": (USERNAME_RE, "root"),
    "labs quantity": (_QUANTITY, "50Gi"),
    "github handle": (GITHUB_RE, "octocat"),
    "launchpad handle": (LAUNCHPAD_RE, "someone"),
    "key fingerprint": (FINGERPRINT_RE, "SHA256:" + "A" * 43),
}


@pytest.mark.parametrize("name", list(PATTERNS))
def test_pattern_accepts_the_value_and_refuses_it_with_a_trailing_newline(name: str) -> None:
    pattern, good = PATTERNS[name]
    assert pattern.match(good)
    assert not pattern.match(good + "\n")


def test_labd_cluster_names_refuse_a_trailing_newline() -> None:
    assert valid_cluster_label("lab-alice")
    assert not valid_cluster_label("lab-alice\n")


@pytest.mark.parametrize(("key", "value"), [("github", "octocat\n"), ("launchpad", "someone\n")])
def test_roster_handles_are_stripped_so_no_newline_reaches_an_import_id(key: str, value: Any) -> None:
    from components.rosterdata import parse_access

    raw = {
        "roster": [{"username": "alice\n", key: value}],
        "term": {"start": "2026-08-24", "end": "2026-12-18"},
    }
    person = parse_access(raw, base_dir=ROOT).people[0]
    assert person.username == "alice"
    assert person.import_ids == (f"{'gh' if key == 'github' else 'lp'}:{value.strip()}",)


def test_roster_handle_with_an_inner_newline_is_refused() -> None:
    from components.rosterdata import parse_access

    raw = {
        "roster": [{"username": "alice", "github": "octo\ncat"}],
        "term": {"start": "2026-08-24", "end": "2026-12-18"},
    }
    with pytest.raises(ConfigError) as err:
        parse_access(raw, base_dir=ROOT)
    assert "github" in str(err.value)


@pytest.mark.parametrize(
    ("key", "good"),
    [
        ("user", "alice"),
        ("hostName", "opus"),
        ("homeSize", "2Gi"),
        ("namespace", "cis90"),
    ],
)
def test_stack_values_with_a_trailing_newline_are_refused_with_the_key(key: str, good: str) -> None:
    from components.config import parse_config

    parse_config({key: good}, stack="dev", base_dir=ROOT)
    with pytest.raises(ConfigError) as err:
        parse_config({key: good + "\n"}, stack="dev", base_dir=ROOT)
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("key", "field", "good"),
    [
        ("userSSHImport", "user_ssh_import", "gh:octocat"),
        ("customizeRepo", "customize_repo", "https://example.org/s.git"),
    ],
)
def test_stripped_stack_values_keep_no_newline(key: str, field: str, good: str) -> None:
    from components.config import parse_config

    cfg = parse_config({key: good + "\n"}, stack="dev", base_dir=ROOT)
    assert "\n" not in repr(getattr(cfg, field))
    assert good in repr(getattr(cfg, field))


def test_roster_entry_cannot_take_the_servers_own_account() -> None:
    from components.config import parse_config

    raw = {
        "user": "mmatera",
        "roster": [{"username": "mmatera"}],
        "term": {"start": "2026-08-24", "end": "2026-12-18"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, stack="dev", base_dir=ROOT)
    assert "roster.username" in str(err.value) and "classroom:user" in str(err.value)
