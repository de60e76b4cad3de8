"""Build the pull-request comment for one stack from `pulumi preview --diff --json` output.

Usage (what `.github/workflows/preview.yml` runs)::

    python -m ops.comment --stack cis90-fall2026 --preview preview.json \
        [--events events.jsonl] [--stderr preview.stderr] [--preview-exit-code 0] \
        [--run-url URL] [--output comment.md] [--github-output "$GITHUB_OUTPUT"] [--no-diff]

With `--no-diff` the comment leaves the diff to the Pulumi GitHub action's own pull-request comment
(`comment-on-pr`) and keeps only what that one does not say: student data at risk, first and loud,
the mandatory policy violations, and whether the check fails.

Input schema (the engine's own, `display.PreviewDigest` in pulumi/sdk/pkg/display/json.go,
filled by `ShowPreviewDigest` in pulumi/pkg/backend/display/json.go)::

    {
      "config":        {"<key>": "<value>"},            # secrets blinded
      "steps": [{                                        # one per shown step
          "op":  "same|create|update|delete|replace|create-replacement|delete-replaced|read|...",
          "urn": "urn:pulumi:<stack>::<project>::<parent$>type::<name>",
          "provider": "...",
          "oldState": ResourceV3 | absent,               # {urn, custom, id, type, inputs, outputs,
          "newState": ResourceV3 | absent,               #  parent, protect, retainOnDelete, ...}
          "diffReasons":    ["spec", ...],               # top-level keys that differ
          "replaceReasons": ["spec", ...],               # keys forcing replacement
          "detailedDiff": {"spec.storageClassName":      # property path ->
                           {"kind": "update-replace",    #  add|add-replace|delete|delete-replace|
                            "inputDiff": false}}         #  update|update-replace
      }],
      "diagnostics":   [{"urn": "...", "message": "...", "severity": "info|info#err|warning|error"}],
      "duration":      <nanoseconds>,
      "changeSummary": {"create": 1, "update": 2, "same": 7, ...},
      "maybeCorrupt":  false
    }

Policy violations are NOT in that digest (ShowPreviewDigest skips PolicyViolationEvent), so they
come from the engine event log (`--event-log FILE`, one apitype.EngineEvent per line, a violation is
`{"policyEvent": {"resourceUrn", "message", "policyName", "policyPackName", "enforcementLevel"}}`).

The comment starts with the hidden marker `<!-- classroom-preview:<stack> -->` so the workflow
finds and edits the same comment on every push, and shows any replace or delete of student data
(PersistentVolumeClaim, PersistentVolume, Namespace) first.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GitHub refuses comment bodies over 65536 characters. We measure UTF-8 bytes, which is never less
# than the number of characters or UTF-16 units, and keep a margin for the workflow's own footer.
GITHUB_COMMENT_LIMIT = 65536
DEFAULT_BUDGET = GITHUB_COMMENT_LIMIT - 1536

MARKER_PREFIX = "classroom-preview:"

# Resource types whose replacement or deletion destroys student data. A Namespace counts because
# deleting it deletes every PVC inside it whatever `protect`/`retain_on_delete` say.
DATA_TYPES: dict[str, str] = {
    "kubernetes:core/v1:PersistentVolumeClaim": "PersistentVolumeClaim",
    "kubernetes:core/v1:PersistentVolume": "PersistentVolume",
    "kubernetes:core/v1:Namespace": "Namespace",
}

# Steps that remove the old object from the cluster (a replacement deletes the old one).
DESTRUCTIVE_OPS = frozenset(
    {"replace", "create-replacement", "delete-replaced", "delete", "discard-replaced", "import-replacement"}
)
REPLACE_OPS = frozenset({"replace", "create-replacement", "delete-replaced", "import-replacement"})

# Stack names as Pulumi accepts them (optionally org/project/stack); anything else could break out
# of the HTML comment marker.
STACK_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")

OP_SYMBOL = {
    "create": "+",
    "update": "~",
    "delete": "-",
    "replace": "+-",
    "create-replacement": "++",
    "delete-replaced": "--",
    "discard-replaced": "--",
    "read": ">",
    "read-replacement": ">>",
    "refresh": "~",
    "import": "=",
    "import-replacement": "=>",
    "remove-pending-replace": "-",
}

KIND_SYMBOL = {
    "add": "+",
    "add-replace": "+",
    "delete": "-",
    "delete-replace": "-",
    "update": "~",
    "update-replace": "~",
}

MAX_VALUE_CHARS = 300
MAX_LOUD_ITEMS = 60


class CommentInputError(Exception):
    """A bad argument or input file; the message names it, the value and what is accepted."""


@dataclass(frozen=True)
class PropertyChange:
    path: str
    kind: str
    old: Any
    new: Any

    @property
    def forces_replacement(self) -> bool:
        return self.kind.endswith("-replace")


@dataclass(frozen=True)
class Step:
    op: str
    urn: str
    type: str
    name: str
    replace_reasons: tuple[str, ...]
    diff_reasons: tuple[str, ...]
    changes: tuple[PropertyChange, ...]
    protect: bool | None
    retain_on_delete: bool | None

    @property
    def data_kind(self) -> str | None:
        return DATA_TYPES.get(self.type)


@dataclass(frozen=True)
class PolicyViolation:
    policy: str
    pack: str
    level: str
    urn: str
    message: str


@dataclass
class Preview:
    steps: list[Step]
    change_summary: dict[str, int]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Risk:
    step: Step
    reason: str


# ---------------------------------------------------------------------------------------------
# parsing


def split_urn(urn: str) -> tuple[str, str]:
    """Return (type, name) of a URN `urn:pulumi:stack::project::parent$type::name`."""
    parts = urn.split("::", 3)
    if len(parts) != 4 or not parts[0].startswith("urn:pulumi:"):
        return ("", urn)
    qualified_type = parts[2]
    return (qualified_type.rsplit("$", 1)[-1], parts[3])


_PATH_TOKEN = re.compile(r'\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.?([^.\[\]]+)')


def parse_property_path(path: str) -> list[str | int]:
    """Split an engine property path (`spec.ports[0].port`, `metadata.labels["a.b/c"]`)."""
    segments: list[str | int] = []
    for index, quoted, plain in _PATH_TOKEN.findall(path):
        if index:
            segments.append(int(index))
        elif quoted:
            segments.append(json.loads(f'"{quoted}"'))
        elif plain:
            segments.append(plain)
    return segments


_MISSING = object()


def lookup(value: Any, path: str) -> Any:
    current = value
    for segment in parse_property_path(path):
        if isinstance(segment, int) and isinstance(current, list) and 0 <= segment < len(current):
            current = current[segment]
            continue
        if isinstance(segment, str) and isinstance(current, dict) and segment in current:
            current = current[segment]
            continue
        return _MISSING
    return current


def _state_props(state: Any, key: str) -> dict[str, Any]:
    props = state.get(key) if isinstance(state, dict) else None
    return props if isinstance(props, dict) else {}


def _parse_step(raw: Any, position: int) -> Step:
    if not isinstance(raw, dict):
        raise CommentInputError(f"preview steps[{position}]: expected an object with 'op' and 'urn', got {raw!r:.80}")
    op = raw.get("op")
    urn = raw.get("urn")
    if not isinstance(op, str) or not isinstance(urn, str):
        raise CommentInputError(
            f"preview steps[{position}]: 'op' and 'urn' must be strings, got op={op!r:.40} urn={urn!r:.80}"
        )
    old_state = raw.get("oldState")
    new_state = raw.get("newState")
    urn_type, name = split_urn(urn)
    state_type = None
    for state in (new_state, old_state):
        if isinstance(state, dict) and isinstance(state.get("type"), str):
            state_type = state["type"]
            break
    old_inputs = _state_props(old_state, "inputs")
    old_outputs = _state_props(old_state, "outputs")
    new_inputs = _state_props(new_state, "inputs")

    changes: list[PropertyChange] = []
    detailed = raw.get("detailedDiff")
    if isinstance(detailed, dict):
        for path in sorted(detailed):
            entry = detailed[path]
            kind = entry.get("kind", "update") if isinstance(entry, dict) else "update"
            input_diff = bool(entry.get("inputDiff")) if isinstance(entry, dict) else False
            old = lookup(old_inputs if input_diff else (old_outputs or old_inputs), path)
            if old is _MISSING and not input_diff:
                old = lookup(old_inputs, path)
            changes.append(PropertyChange(path, str(kind), old, lookup(new_inputs, path)))

    def reasons(key: str) -> tuple[str, ...]:
        value = raw.get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    def flag(key: str) -> bool | None:
        if not isinstance(new_state, dict):
            return None
        return bool(new_state.get(key, False))

    return Step(
        op=op,
        urn=urn,
        type=state_type or urn_type,
        name=name,
        replace_reasons=reasons("replaceReasons"),
        diff_reasons=reasons("diffReasons"),
        changes=tuple(changes),
        protect=flag("protect"),
        retain_on_delete=flag("retainOnDelete"),
    )


def parse_preview(data: Any) -> Preview:
    if not isinstance(data, dict):
        raise CommentInputError(
            f"preview: expected the JSON object printed by `pulumi preview --json`, got {type(data).__name__}"
        )
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list):
        raise CommentInputError(f"preview 'steps': expected a list, got {type(raw_steps).__name__}")
    steps = [_parse_step(raw, i) for i, raw in enumerate(raw_steps)]
    summary_raw = data.get("changeSummary")
    summary: dict[str, int] = {}
    if isinstance(summary_raw, dict):
        summary = {str(k): int(v) for k, v in summary_raw.items() if isinstance(v, (int, float))}
    else:
        # An old CLI or a failed preview may omit the summary; count the steps we have instead.
        for step in steps:
            summary[step.op] = summary.get(step.op, 0) + 1
    diagnostics = [d for d in data.get("diagnostics") or [] if isinstance(d, dict)]
    return Preview(steps=steps, change_summary=summary, diagnostics=diagnostics)


def parse_events(lines: Iterable[str]) -> list[PolicyViolation]:
    """Policy violations from an engine event log (`pulumi preview --event-log FILE`)."""
    violations: list[PolicyViolation] = []
    seen: set[tuple[str, str, str]] = set()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            # A log cut short by a killed engine ends in half a line; keep what was complete.
            continue
        policy_event = event.get("policyEvent") if isinstance(event, dict) else None
        if not isinstance(policy_event, dict):
            continue
        violation = PolicyViolation(
            policy=str(policy_event.get("policyName", "")),
            pack=str(policy_event.get("policyPackName", "")),
            level=str(policy_event.get("enforcementLevel", "")),
            urn=str(policy_event.get("resourceUrn", "")),
            message=str(policy_event.get("message", "")).strip(),
        )
        key = (violation.policy, violation.urn, violation.message)
        if key not in seen:
            seen.add(key)
            violations.append(violation)
    return violations


# ---------------------------------------------------------------------------------------------
# analysis


# The engine refuses to replace or delete a protected resource with this error (step generator /
# DeleteStep); depending on the CLI version the step itself may then be missing from the digest.
PROTECTED_REFUSAL_RE = re.compile(r'unable to (replace|delete) resource "(urn:pulumi:[^"]+)"')


def _step_for_urn(urn: str, op: str) -> Step:
    urn_type, name = split_urn(urn)
    return Step(op, urn, urn_type, name, (), (), (), True, None)


def data_risks(preview: Preview) -> list[Risk]:
    """Every step that would destroy or endanger student data, one entry per resource."""
    risks: list[Risk] = []
    seen: set[str] = set()
    for diag in preview.diagnostics:
        for verb, urn in PROTECTED_REFUSAL_RE.findall(str(diag.get("message", ""))):
            step = _step_for_urn(urn, "replace" if verb == "replace" else "delete")
            if step.data_kind is None or urn in seen:
                continue
            planned = next((s for s in preview.steps if s.urn == urn), None)
            forced = ", ".join(c.path for c in planned.changes if c.forces_replacement) if planned else ""
            because = f" (`{forced}` cannot change in place)" if forced else ""
            risks.append(
                Risk(
                    planned or step,
                    f"would be **{verb}d**{because}; the engine refused because it is protected, "
                    "so this change cannot be deployed as it stands",
                )
            )
            seen.add(urn)
    for step in preview.steps:
        kind = step.data_kind
        if kind is None or step.urn in seen:
            continue
        if step.op in REPLACE_OPS:
            # The detailed paths name the exact field; replaceReasons only the top-level key.
            forced = ", ".join(c.path for c in step.changes if c.forces_replacement) or ", ".join(step.replace_reasons)
            because = f" because `{forced}` cannot change in place" if forced else ""
            risks.append(Risk(step, f"would be **replaced**{because}: the old {kind} is deleted"))
            seen.add(step.urn)
        elif step.op in DESTRUCTIVE_OPS:
            risks.append(Risk(step, "would be **deleted**"))
            seen.add(step.urn)
        elif step.op in ("create", "update", "same") and kind != "PersistentVolume":
            # The policy pack cannot see retainOnDelete (the analyzer protocol does not carry it),
            # so the preview's new state is where a missing retain flag is caught.
            missing = [
                name
                for name, value in (("protect", step.protect), ("retainOnDelete", step.retain_on_delete))
                if value is False
            ]
            if missing:
                risks.append(Risk(step, f"is declared without `{'` and `'.join(missing)}`"))
                seen.add(step.urn)
    return risks


# ---------------------------------------------------------------------------------------------
# rendering


def _short(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if not isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


def render_diff(preview: Preview) -> str:
    """A `pulumi preview --diff`-like text of every step that changes something."""
    lines: list[str] = []
    for step in preview.steps:
        if step.op == "same":
            continue
        symbol = OP_SYMBOL.get(step.op, "?")
        lines.append(f"{symbol} {step.type} {step.name} ({step.op})")
        if step.changes:
            for change in step.changes:
                mark = KIND_SYMBOL.get(change.kind, "~")
                suffix = "  [forces replacement]" if change.forces_replacement else ""
                if change.kind.startswith("add"):
                    detail = _short(change.new)
                elif change.kind.startswith("delete"):
                    detail = _short(change.old)
                else:
                    detail = f"{_short(change.old)} => {_short(change.new)}"
                lines.append(f"    {mark} {change.path}: {detail}{suffix}")
        elif step.diff_reasons:
            lines.append(f"    ~ changed: {', '.join(step.diff_reasons)}")
    return "\n".join(lines)


def _fence_for(text: str) -> str:
    # A fence longer than any backtick run inside keeps the diff from closing the block early.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_lines(text: str, budget: int) -> tuple[str, int]:
    """Cut `text` at a line boundary to at most `budget` UTF-8 bytes; return (text, lines dropped)."""
    if _utf8_len(text) <= budget:
        return text, 0
    kept: list[str] = []
    used = 0
    lines = text.split("\n")
    for line in lines:
        cost = _utf8_len(line) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    if not kept and lines:
        # One enormous line: cut inside it, on a character boundary.
        head = lines[0].encode("utf-8")[: max(budget - 3, 0)].decode("utf-8", errors="ignore")
        return head + "…", len(lines)
    return "\n".join(kept), len(lines) - len(kept)


def _md_escape(text: str) -> str:
    # Inline code in tables/bullets: backticks would end it, pipes are harmless in bullets.
    return text.replace("`", "'")


def _summary_line(preview: Preview) -> str:
    counts = preview.change_summary
    parts = [
        f"{counts.get('create', 0)} to create",
        f"{counts.get('update', 0)} to update",
        f"{counts.get('replace', 0)} to replace",
        f"{counts.get('delete', 0)} to delete",
    ]
    same = counts.get("same", 0)
    if same:
        parts.append(f"{same} unchanged")
    return ", ".join(parts)


def build_comment(
    stack: str,
    preview: Preview | None,
    violations: Sequence[PolicyViolation] = (),
    *,
    diff_text: str | None = None,
    stderr_text: str | None = None,
    preview_exit_code: int = 0,
    run_url: str | None = None,
    budget: int = DEFAULT_BUDGET,
    include_diff: bool = True,
) -> str:
    if not STACK_NAME_RE.fullmatch(stack):
        raise CommentInputError(
            f"--stack: {stack!r} is not a stack name; accepted: letters, digits, '_', '.', '-' "
            "(optionally org/project/stack)"
        )
    out: list[str] = [f"<!-- {MARKER_PREFIX}{stack} -->"]
    risks = data_risks(preview) if preview else []
    failed = preview_exit_code != 0 or preview is None
    mandatory = [v for v in violations if v.level in ("mandatory", "remediate")]

    status = "🛑" if risks else ("❌" if failed or mandatory else "✅")
    out.append(f"### {status} `pulumi preview` for stack `{stack}`")
    out.append("")
    if preview is not None:
        out.append(f"**Plan:** {_summary_line(preview)}.")
    if failed:
        out.append(f"**The preview failed** (exit code {preview_exit_code}); nothing can be deployed until it passes.")
    out.append("")

    if risks:
        out.append("## 🛑 ⚠️ Student data at risk")
        out.append("")
        out.append(
            "This change would destroy or unprotect storage that holds student home directories. "
            "Replacing or deleting a PersistentVolumeClaim deletes its volume when the reclaim policy "
            "is `Delete`, and deleting a Namespace deletes every PVC inside it regardless of "
            "`protect`/`retain_on_delete`. **Do not merge** unless the data has been backed up and "
            'the removal is deliberate (README: "Data safety" and "End of term").'
        )
        out.append("")
        for risk in risks[:MAX_LOUD_ITEMS]:
            kind = risk.step.data_kind or risk.step.type
            out.append(f"- **{kind} `{_md_escape(risk.step.name)}`** {risk.reason} — `{_md_escape(risk.step.urn)}`")
        if len(risks) > MAX_LOUD_ITEMS:
            out.append(f"- … and {len(risks) - MAX_LOUD_ITEMS} more (see the diff below)")
        out.append("")

    if violations:
        heading = "⛔ Policy violations" if mandatory else "⚠️ Policy warnings"
        out.append(f"#### {heading}")
        out.append("")
        for v in violations[:MAX_LOUD_ITEMS]:
            _, res_name = split_urn(v.urn) if v.urn else ("", "stack")
            message = " ".join(v.message.split())
            if len(message) > 600:
                message = message[:599] + "…"
            out.append(f"- **{_md_escape(v.policy)}** ({v.level}) on `{_md_escape(res_name)}`: {message}")
        if len(violations) > MAX_LOUD_ITEMS:
            out.append(f"- … and {len(violations) - MAX_LOUD_ITEMS} more")
        out.append("")

    errors = [d for d in (preview.diagnostics if preview else []) if d.get("severity") == "error"]
    if errors:
        out.append("#### Errors")
        out.append("")
        for diag in errors[:20]:
            message = " ".join(str(diag.get("message", "")).split())
            out.append(f"- {message[:600]}")
        out.append("")

    footer = f"\n<sub>Workflow run: {run_url}</sub>" if run_url else ""
    head = "\n".join(out)

    sections: list[tuple[str, str]] = []
    if not include_diff:
        head += "\nThe diff is in the Pulumi action's comment for this stack; this one checks student data.\n"
        diff_text = None
    elif diff_text is None and preview is not None:
        diff_text = render_diff(preview)
    if diff_text:
        count = sum(1 for s in preview.steps if s.op != "same") if preview else 0
        sections.append((f"Diff ({count} resources change)" if preview else "Diff", diff_text))
    if stderr_text and stderr_text.strip():
        sections.append(("Engine output (stderr)", stderr_text.strip()))

    body = head
    for title, text in sections:
        # Leave room for this section's wrapper, the later sections' wrappers and the footer.
        wrapper_cost = 200 + _utf8_len(title)
        remaining = budget - _utf8_len(body) - _utf8_len(footer) - wrapper_cost * (len(sections))
        shown, dropped = truncate_lines(text, max(remaining, 0))
        fence = _fence_for(shown)
        note = ""
        if dropped:
            note = (
                f"\n\n… {dropped} more lines not shown (GitHub limits a comment to {GITHUB_COMMENT_LIMIT} "
                f"characters); run `pulumi preview --diff --stack {stack}` or read the workflow log."
            )
        body += f"\n<details><summary>{title}</summary>\n\n{fence}diff\n{shown}\n{fence}{note}\n</details>\n"
    body += footer
    return body


# ---------------------------------------------------------------------------------------------
# command line


def _read_text(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CommentInputError(f"{option}: file {path!r} does not exist; pass an existing file") from None
    except IsADirectoryError:
        raise CommentInputError(f"{option}: {path!r} is a directory; pass a file") from None
    except OSError as exc:
        raise CommentInputError(f"{option}: cannot read {path!r}: {exc.strerror}") from None


def load_preview(path: str) -> Preview | None:
    """Parse the preview file; None when it is empty (the engine failed before printing JSON)."""
    text = _read_text(path, "--preview")
    if not text.strip():
        return None
    # The CLI prints the digest as one JSON document; warnings from plugins may precede it on stdout.
    start = text.find("{")
    try:
        data = json.loads(text[start:] if start > 0 else text)
    except json.JSONDecodeError as exc:
        raise CommentInputError(
            f"--preview: {path!r} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
            "expected the output of `pulumi preview --json`"
        ) from None
    return parse_preview(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.comment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name, e.g. cis90-fall2026")
    parser.add_argument("--preview", required=True, help="stdout of `pulumi preview --diff --json`")
    parser.add_argument("--events", help="engine event log (`--event-log FILE`), for policy violations")
    parser.add_argument("--diff-text", help="use this text as the diff instead of rendering the JSON")
    parser.add_argument("--stderr", help="stderr of the preview, shown folded when non-empty")
    parser.add_argument("--preview-exit-code", default="0", help="exit code of `pulumi preview`")
    parser.add_argument("--run-url", help="link to the workflow run")
    parser.add_argument("--output", help="write the comment here instead of stdout")
    parser.add_argument("--github-output", help="append at-risk=, violations=, failed= lines to this file")
    parser.add_argument("--max-bytes", default=str(DEFAULT_BUDGET), help="comment size budget in UTF-8 bytes")
    parser.add_argument(
        "--no-diff", action="store_true", help="leave the diff to the Pulumi action's own comment (comment-on-pr)"
    )
    args = parser.parse_args(argv)

    try:
        try:
            exit_code = int(args.preview_exit_code)
        except ValueError:
            raise CommentInputError(
                f"--preview-exit-code: {args.preview_exit_code!r} is not an integer; pass the exit status of pulumi"
            ) from None
        try:
            budget = int(args.max_bytes)
        except ValueError:
            budget = -1
        if not 1024 <= budget <= DEFAULT_BUDGET:
            raise CommentInputError(f"--max-bytes: {args.max_bytes!r} is not accepted; use 1024..{DEFAULT_BUDGET}")
        preview = load_preview(args.preview)
        violations = parse_events(_read_text(args.events, "--events").splitlines()) if args.events else []
        diff_text = _read_text(args.diff_text, "--diff-text") if args.diff_text else None
        stderr_text = _read_text(args.stderr, "--stderr") if args.stderr else None
        if preview is None and exit_code == 0:
            raise CommentInputError(
                f"--preview: {args.preview!r} is empty but --preview-exit-code is 0; "
                "expected the JSON printed by `pulumi preview --json`"
            )
        body = build_comment(
            args.stack,
            preview,
            violations,
            diff_text=diff_text,
            stderr_text=stderr_text,
            preview_exit_code=exit_code,
            run_url=args.run_url,
            budget=budget,
            include_diff=not args.no_diff,
        )
    except CommentInputError as exc:
        print(f"ops.comment: {exc}", file=sys.stderr)
        return 2

    if args.output:
        Path(args.output).write_text(body, encoding="utf-8")
    else:
        sys.stdout.write(body)
    if args.github_output:
        risks = data_risks(preview) if preview else []
        mandatory = sum(1 for v in violations if v.level in ("mandatory", "remediate"))
        with open(args.github_output, "a", encoding="utf-8") as fh:
            fh.write(f"at-risk={'true' if risks else 'false'}\n")
            fh.write(f"violations={mandatory}\n")
            fh.write(f"failed={'true' if exit_code != 0 or preview is None else 'false'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
