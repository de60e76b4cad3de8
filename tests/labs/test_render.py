"""labd's own YAML emitter and naming rules, checked against a real YAML parser."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from labd.render import cluster_name, to_yaml, valid_cluster_label

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=30))
keys = st.text(min_size=1, max_size=12)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, documents, max_size=5))
def test_emitted_yaml_parses_back_to_the_same_data(document: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(document)) == (document or {})


@pytest.mark.parametrize("word", ["on", "yes", "no", "null", "true", "y", "012", "1e3", "- x", "a: b", "#c"])
def test_words_yaml_would_misread_stay_strings(word: str) -> None:
    assert yaml.safe_load(to_yaml({word: word, "list": [word]})) == {word: word, "list": [word]}


@given(st.from_regex(r"[a-z_][a-z0-9_.-]{0,31}", fullmatch=True))
def test_every_unix_name_maps_to_a_valid_distinct_cluster_name(user: str) -> None:
    name = cluster_name("lab-", user)
    assert valid_cluster_label(name)
    if re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", user) and len("lab-" + user) <= 32:
        assert name == "lab-" + user


def test_names_that_sanitise_alike_stay_distinct() -> None:
    names = {cluster_name("lab-", u) for u in ("a_b", "a.b", "a-b", "A_b".lower() + "_")}
    assert len(names) == 4
