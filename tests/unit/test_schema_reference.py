"""The generated reference stays what the schema says.

README.md's configuration tables and stacks/stack.schema.json are rendered
from components/schema.py by `python -m components.reference`; these tests
fail when a key is changed in the schema and the checked-in files are not
regenerated, and check that the JSON Schema really describes the stack files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components import k8sschema, reference

ROOT = Path(__file__).resolve().parents[2]


def test_readme_tables_are_generated_from_the_schema() -> None:
    text = (ROOT / "README.md").read_text()
    assert reference.render_readme(text) == text, "README.md is stale: run python -m components.reference"


def test_json_schema_file_is_generated_from_the_schema() -> None:
    assert (ROOT / "stacks" / "stack.schema.json").read_text() == reference.json_schema_text(), (
        "stacks/stack.schema.json is stale: run python -m components.reference"
    )


def test_the_check_mode_agrees() -> None:
    assert reference.main(["--check"]) == 0


def _validator() -> jsonschema.Draft202012Validator:
    data = json.loads((ROOT / "stacks" / "stack.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def _as_json(value: Any) -> Any:
    # YAML reads unquoted dates as dates; the language server sees them as strings.
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("path", sorted((ROOT / "stacks").glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_checked_in_stack_file_satisfies_the_json_schema(path: Path) -> None:
    document = _as_json(yaml.safe_load(path.read_text()))
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize("path", sorted((ROOT / "stacks").glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_checked_in_stack_file_names_the_schema_for_editors(path: Path) -> None:
    assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=stack.schema.json"


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"classroom:homeSzie": "1Gi"}, ["config"]),
        ({"classroom:userID": "ten"}, ["config", "classroom:userID"]),
        ({"classroom:term": {"start": "2026-01-05", "end": "2026-05-01", "grace": 7}}, ["config", "classroom:term"]),
        (
            {"classroom:extraPorts": [{"name": "web", "port": 80, "proto": "TCP", "colour": 1}]},
            ["config", "classroom:extraPorts"],
        ),
        ({"classroom:service": {"type": "External"}}, ["config", "classroom:service"]),
    ],
)
def test_the_json_schema_flags_what_an_editor_should(config: dict[str, Any], where: list[str]) -> None:
    errors = list(_validator().iter_errors({"config": config}))
    assert errors and list(errors[0].path) == where


def test_secrets_and_other_namespaces_are_allowed() -> None:
    doc = {
        "config": {
            "classroom:rcEnv": {"secure": "v1:abc"},
            "kubernetes:context": "kind",
            "classroom:labs": {
                "domain": "lab.example.edu",
                "hosts": [{"name": "l", "address": "h", "capacity": 1}],
                "ssh": {"privateKey": {"secure": "v1:x"}},
                "sessionKey": {"secure": "v1:y"},
                "adminKey": {"secure": "v1:z"},
            },
        },
        "encryptionsalt": "v1:salt",
    }
    assert list(_validator().iter_errors(doc)) == []


def test_the_kubernetes_definitions_are_the_bundled_ones() -> None:
    import kubernetes_validate

    bundle = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / f"v{k8sschema.KUBERNETES_VERSION}-local-strict"
        / "_definitions.json"
    )
    expected = k8sschema.extract(json.loads(bundle.read_text())["$defs"])
    assert json.loads(k8sschema.SCHEMA_FILE.read_text()) == expected
