"""Pod-scheduling values (tolerations, affinity) checked against Kubernetes' own schema.

The definitions are the ones kubernetes-validate bundles for Kubernetes 1.34
(the `-local-strict` variant: unknown fields refused), cut down to what
`Toleration` and `Affinity` reach and checked in as
components/k8s-scheduling.schema.json, so the program needs no test-only
package at run time. tests/unit/test_schema_reference.py fails when the
checked-in copy drifts from the bundle.

The OpenAPI definitions use a handful of JSON Schema words only (`type`,
`properties`, `required`, `items`, `additionalProperties`, `format`, `$ref`);
`first_error` walks exactly those.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

KUBERNETES_VERSION = "1.34.0"
SCHEMA_FILE = Path(__file__).with_name("k8s-scheduling.schema.json")
ROOTS = ("io.k8s.api.core.v1.Toleration", "io.k8s.api.core.v1.Affinity")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def extract(definitions: Mapping[str, Any], roots: tuple[str, ...] = ROOTS) -> dict[str, Any]:
    """The closure of `roots` in a `$defs` table, with references made local."""
    picked: dict[str, Any] = {}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "$ref":
                    name = value.rsplit("/", 1)[-1]
                    visit(name)
                    out[key] = f"#/$defs/{name}"
                else:
                    out[key] = rewrite(value)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    def visit(name: str) -> None:
        if name not in picked:
            picked[name] = {}
            picked[name] = rewrite(definitions[name])

    for root in roots:
        visit(root)
    return {"kubernetesVersion": KUBERNETES_VERSION, "$defs": dict(sorted(picked.items()))}


@cache
def _definitions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return data["$defs"]


def _type_ok(value: Any, types: Any) -> bool:
    names = types if isinstance(types, list) else [types]
    for name in names:
        allowed = _JSON_TYPES.get(name, ())
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if isinstance(value, allowed):
            return True
    return False


def _describe(types: Any) -> str:
    names = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
    words = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
    }
    return " or ".join(words.get(n, n) for n in names)


def first_error(definition: str, value: Any, path: str) -> tuple[str, Any, str] | None:
    """(key path, value, what is accepted) of the first violation, or None."""
    return _check(_definitions()[definition], value, path, definition.rsplit(".", 1)[-1])


def _check(schema: Mapping[str, Any], value: Any, path: str, what: str) -> tuple[str, Any, str] | None:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _check(_definitions()[name], value, path, name.rsplit(".", 1)[-1])
    if "type" in schema and not _type_ok(value, schema["type"]):
        return path, value, f"{_describe(schema['type'])} (Kubernetes {KUBERNETES_VERSION} {what})"
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for required in schema.get("required", []):
            if required not in value:
                return f"{path}.{required}", None, f"a value (required in a Kubernetes {what})"
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in properties:
                found = _check(properties[key], item, where, what)
            elif extra is False:
                known = ", ".join(properties)
                match = difflib.get_close_matches(str(key), list(properties), n=1, cutoff=0.6)
                hint = f"; did you mean '{match[0]}'?" if match else ""
                return where, item, f"one of the fields of a Kubernetes {what}: {known}{hint}"
            elif isinstance(extra, Mapping):
                found = _check(extra, item, where, what)
            else:
                found = None
            if found:
                return found
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            found = _check(schema["items"], item, f"{path}[{index}]", what)
            if found:
                return found
    return None
