"""The configuration reference, generated from the schema (components/schema.py).

    python -m components.reference          # rewrite README.md's tables and stacks/stack.schema.json
    python -m components.reference --check  # exit 1 if either is out of date

The README's tables sit between `<!-- BEGIN GENERATED: NAME -->` and
`<!-- END GENERATED: NAME -->` markers; everything else in the README is
prose and is left alone. tests/unit/test_schema_reference.py fails when the
checked-in files differ from what this module renders.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from components import schema
from components.vocabulary import DURATION_PATTERN

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
JSON_SCHEMA = ROOT / "stacks" / "stack.schema.json"
NAMESPACE = "classroom"

ACCESS_KEYS = tuple(schema.AccessModel.model_fields)
LAB_KEYS = ("labs",)

# Which tables each generated block holds: (heading, key prefix, model, keys or None for all).
BLOCKS: dict[str, list[tuple[str, str, type[BaseModel], tuple[str, ...] | None]]] = {
    "stack": [
        (
            "",
            "",
            schema.StackModel,
            tuple(k for k in schema.StackModel.model_fields if k not in ACCESS_KEYS + LAB_KEYS),
        ),
        ("`extraMounts[]`", "", schema.MountModel, None),
        ("`extraPorts[]`", "", schema.PortModel, None),
        ("`image`", "image.", schema.ImageModel, None),
        ("`resources`", "", schema.ResourcesModel, None),
        ("`service`", "service.", schema.ServiceModel, None),
        ("`ssh`", "ssh.", schema.SshModel, None),
    ],
    "access": [
        ("", "", schema.AccessModel, None),
        ("A person (`roster[]`)", "", schema.PersonModel, None),
        ("A CSV roster (`roster: {csv, defaults}`)", "roster.", schema.RosterCsvModel, None),
        ("`term`", "term.", schema.TermModel, None),
        ("`revocations`", "revocations.", schema.RevocationsModel, None),
    ],
    "labs": [
        ("", "labs.", schema.LabsModel, None),
        ("`labs.hosts[]`", "", schema.LabHostModel, None),
        ("`labs.ssh`", "labs.ssh.", schema.LabSshModel, None),
        ("`labs.hooks.init` / `labs.hooks.cleanup`", "", schema.HookModel, None),
    ],
}


# ------------------------------------------------------------------ README tables


def _extra(info: Any) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _default_text(info: Any) -> str:
    extra = _extra(info)
    if "x-default" in extra:
        return str(extra["x-default"])
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
    else:
        value = info.default
    return _literal(value)


def _literal(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"`{seconds // size}{unit}`"
        return f"`{seconds}s`"
    if isinstance(value, str):
        return '`""`' if value == "" else ("built in" if "\n" in value else f"`{value}`")
    if isinstance(value, tuple | list):
        return "`[]`" if not value else "`" + json.dumps(list(value)) + "`"
    if isinstance(value, dict):
        return "`{}`" if not value else "`" + json.dumps(value) + "`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(prefix: str, model: type[BaseModel], keys: tuple[str, ...] | None = None) -> str:
    rows = ["| Key | Default | Example | Accepted | Meaning |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if keys is not None and name not in keys:
            continue
        extra = _extra(info)
        aliases = [chart for chart, ours in model.chart_aliases.items() if ours == name]  # type: ignore[attr-defined]
        key = f"`{prefix}{name}`" + "".join(f" (chart: `{a}`)" for a in aliases)
        meaning = info.description or ""
        if extra.get("x-secret"):
            meaning += " Secret: set it with `pulumi config set --secret`."
        example = _literal(extra["examples"][0]) if extra.get("examples") else ""
        rows.append(
            f"| {key} | {_cell(_default_text(info))} | {_cell(example)} | "
            f"{_cell(str(extra.get('x-accepted', '')))} | {_cell(meaning)} |"
        )
    return "\n".join(rows)


def block(name: str) -> str:
    parts = []
    for heading, prefix, model, keys in BLOCKS[name]:
        if heading:
            parts.append(f"**{heading}**")
        parts.append(table(prefix, model, keys))
    return "\n\n".join(parts)


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN GENERATED: {name} (python -m components.reference; edit components/schema.py) -->",
        f"<!-- END GENERATED: {name} -->",
    )


def render_readme(text: str) -> str:
    """`text` with every generated block replaced by what the schema renders now."""
    for name in BLOCKS:
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md lacks the generated block markers for {name!r}")
        match = pattern.search(text)
        assert match is not None
        text = text[: match.start()] + f"{begin}\n{block(name)}\n{end}" + text[match.end() :]
    return text


# ------------------------------------------------------------------ JSON Schema of a stack file

_SECURE = {
    "type": "object",
    "description": "An encrypted value (pulumi config set --secret).",
    "properties": {"secure": {"type": "string"}},
    "required": ["secure"],
    "additionalProperties": False,
}
_DURATION = {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}]}


def _fix(node: Any) -> Any:
    """Make pydantic's schema say what the stack file really takes."""
    if isinstance(node, list):
        return [_fix(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _fix(v) for k, v in node.items()}
    if out.get("format") == "duration":  # pydantic's timedelta: ISO 8601; ours: '7d'
        out.pop("format")
        out.pop("type", None)
        out.pop("pattern", None)
        out.pop("default", None)
        out.update(_DURATION)
    if "x-default" in out:
        out.pop("default", None)
    if out.pop("x-secret", False):
        inner = {k: v for k, v in out.items() if k not in ("description", "title")}
        out = {k: v for k, v in out.items() if k in ("description", "title", "x-accepted")}
        out["anyOf"] = [inner, _SECURE]
    out.pop("title", None)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(value)


def json_schema() -> dict[str, Any]:
    """JSON Schema of stacks/Pulumi.<stack>.yaml (for the YAML language server and other editors)."""
    model_schema = schema.StackModel.model_json_schema(mode="validation")
    model_schema = json.loads(json.dumps(model_schema, default=_json_default))
    defs = _fix(model_schema.pop("$defs", {}))
    properties = _fix(model_schema["properties"])
    config_properties = {
        # Any top-level value may also be set as a whole secret.
        f"{NAMESPACE}:{key}": {
            "description": value.get("description", ""),
            "anyOf": [{k: v for k, v in value.items() if k != "description"}, _SECURE],
        }
        for key, value in properties.items()
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/classroom/stacks/stack.schema.json",
        "title": "classroom stack file (stacks/Pulumi.<class>-<term>.yaml)",
        "description": "Generated from components/schema.py by `python -m components.reference`; do not edit.",
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": config_properties,
                # Other namespaces (kubernetes:context, pulumi:...) are not ours to check.
                "patternProperties": {f"^(?!{NAMESPACE}:)": {}},
                "additionalProperties": False,
            },
            "encryptionsalt": {"type": "string"},
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
        },
        "$defs": defs,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md or the JSON Schema is stale")
    args = parser.parse_args(argv)
    readme = README.read_text()
    wanted = {README: render_readme(readme), JSON_SCHEMA: json_schema_text()}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python -m components.reference", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
