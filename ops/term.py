"""Term operations: close a term, start the next one, see every stack's term at a glance.

Usage::

    classroom term end    --stack S [--summary FILE] [--json] [--skip-destroy] [--yes]
    classroom term new    --from OLD --to NEW --start YYYY-MM-DD --end YYYY-MM-DD \
                          [--roster FILE.csv] [--adopt-homes]
    classroom term status [--json]

Every command takes `--stacks-dir DIR` (default `stacks`); the project directory
(where `pulumi` runs and where roster CSV paths are resolved) is its parent.

`end` runs `pulumi destroy --exclude-protected` (the server and lab clusters go,
the protected and retained homes stay) and then writes what was kept and where:
every claim in the stack's namespace with its size, class, bound volume, the
volume's reclaim policy and the disk behind it. `new` writes the next term's
stack file from the last one and validates it with the program's own config
parser, so a broken stack is caught before anyone runs `up`; with
`--adopt-homes` it keeps the namespace and carries the old stack's UID ledger
(read with `pulumi stack export`) as `classroom:adoptedUids`, so each kept
home stays with the UID that owns it. `status` shows
class, term, dates, students, server address, lab hosts and whether the term
has started or ended.

Exit status: 0 done, 1 a tool (pulumi, kubectl) failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from components.config import NAMESPACE, parse_config
from components.errors import ConfigError
from components.rosterdata import (
    ACCESS_KEYS,
    STAFF_ROLES,
    AccessConfig,
    Term,
    class_and_term_names,
    parse_access,
    parse_roster_csv,
)
from ops import engine, stackfile
from ops.errors import OperatorError

STACK_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# Per-stack secret material: a new stack gets its own key, so these never carry over.
PER_STACK_TOP_KEYS = ("encryptionsalt", "encryptedkey")
UPSERT_VARIABLE = "PULUMI_K8S_UPSERT_EXISTING_OBJECTS"
# The kept objects' fields belong to the old stack's field manager (and carry its
# classroom/stack label): the adopting run must take them over, not conflict.
PATCH_FORCE_VARIABLE = "PULUMI_K8S_ENABLE_PATCH_FORCE"
ADOPT_ENV = f"{UPSERT_VARIABLE}=true {PATCH_FORCE_VARIABLE}=true"


class TermError(OperatorError):
    """Bad input (exit 2) or a failed tool (exit 1); the message names the argument or the tool."""


# ------------------------------------------------------------------ stack files


def stack_path(stacks_dir: Path, stack: str, argument: str = "--stack") -> Path:
    if not STACK_NAME_RE.fullmatch(stack):
        raise TermError(f"argument {argument}: {stack!r} is not a stack name; expected letters, digits, '_', '.', '-'")
    return stacks_dir / f"Pulumi.{stack}.yaml"


def known_stacks(stacks_dir: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def existing_stack(stacks_dir: Path, stack: str, argument: str = "--stack") -> Path:
    path = stack_path(stacks_dir, stack, argument)
    if not path.is_file():
        known = ", ".join(known_stacks(stacks_dir)) or "none"
        raise TermError(f"argument {argument}: no stack file {path} (stacks there: {known})")
    return path


def load_stack(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TermError(f"{path}: not valid YAML ({exc})") from None
    except OSError as exc:
        raise TermError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise TermError(f"{path}: expected a mapping with a 'config:' mapping")
    data.setdefault("config", {})
    if data["config"] is None:
        data["config"] = {}
    return data


def classroom_raw(data: Mapping[str, Any]) -> dict[str, Any]:
    """The `classroom:` keys without their prefix, as parse_config takes them."""
    prefix = NAMESPACE + ":"
    return {k[len(prefix) :]: v for k, v in (data.get("config") or {}).items() if k.startswith(prefix)}


def is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def stack_namespace(data: Mapping[str, Any], stack: str) -> str:
    """`classroom:namespace`, or the program's default `classroom-<stack>`."""
    value = classroom_raw(data).get("namespace")
    if value is None:
        return f"classroom-{stack}".lower()
    if not isinstance(value, str):
        raise TermError(f"classroom:namespace: got {value!r}; expected a plain namespace name")
    return value


# ------------------------------------------------------------------ tools


def kubectl_json(kubeconfig: str | None, *args: str) -> Any:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise TermError("kubectl is not on PATH: it is needed to list the kept claims and volumes", status=1)
    argv = [kubectl, *(["--kubeconfig", kubeconfig] if kubeconfig else []), "--request-timeout=60s"]
    argv += ["get", *args, "-o", "json"]
    what = f"kubectl get {' '.join(args)}"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        raise TermError(f"{what}: cannot run kubectl ({exc.strerror})", status=1) from None
    if proc.returncode != 0:
        # kubectl repeats a connection error many times; its last line says it best.
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "KUBECONFIG unset"
        raise TermError(f"{what} failed: {last[-400:]} ({where}: is that the class's cluster?)", status=1)
    text = proc.stdout
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise TermError(f"kubectl get {' '.join(args)} did not print JSON", status=1) from None


# ------------------------------------------------------------------ end: kept data


def volume_source(pv: Mapping[str, Any]) -> dict[str, Any]:
    """Where a PersistentVolume's bytes live, for the kinds of storage a class uses."""
    spec = pv.get("spec") or {}
    if "hostPath" in spec:
        return {"kind": "hostPath", "path": spec["hostPath"].get("path", "")}
    if "local" in spec:
        nodes = [
            value
            for term in (((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or [])
            for expr in term.get("matchExpressions") or []
            for value in expr.get("values") or []
        ]
        return {"kind": "local", "path": spec["local"].get("path", ""), "nodes": nodes}
    if "csi" in spec:
        csi = spec["csi"]
        return {"kind": "csi", "driver": csi.get("driver", ""), "volumeHandle": csi.get("volumeHandle", "")}
    if "nfs" in spec:
        return {"kind": "nfs", "server": spec["nfs"].get("server", ""), "path": spec["nfs"].get("path", "")}
    known = sorted(k for k in spec if isinstance(spec[k], dict) and k not in ("claimRef", "capacity", "nodeAffinity"))
    return {"kind": known[0] if known else "unknown", "detail": spec.get(known[0]) if known else None}


def source_text(source: Mapping[str, Any]) -> str:
    kind = source.get("kind")
    if kind == "hostPath":
        return f"hostPath {source['path']}"
    if kind == "local":
        nodes = ", ".join(source.get("nodes") or []) or "?"
        return f"local {source['path']} on {nodes}"
    if kind == "csi":
        return f"CSI {source['driver']} volumeHandle {source['volumeHandle']}"
    if kind == "nfs":
        return f"NFS {source['server']}:{source['path']}"
    return f"{kind} {json.dumps(source.get('detail'), sort_keys=True)}"


def summarize(
    namespace: str, claims: Sequence[Mapping[str, Any]], volumes: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Pure part of kept_data_summary: claims and volumes (API objects) -> the summary."""
    by_name = {pv["metadata"]["name"]: pv for pv in volumes}
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    bound_names: set[str] = set()
    for pvc in sorted(claims, key=lambda c: c["metadata"]["name"]):
        meta, spec, status = pvc["metadata"], pvc.get("spec") or {}, pvc.get("status") or {}
        volume_name = spec.get("volumeName") or ""
        row: dict[str, Any] = {
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "size": ((spec.get("resources") or {}).get("requests") or {}).get("storage", ""),
            "capacity": (status.get("capacity") or {}).get("storage", ""),
            "storageClass": spec.get("storageClassName") or "",
            "phase": status.get("phase", ""),
            "volume": None,
        }
        pv = by_name.get(volume_name)
        if pv is not None:
            bound_names.add(volume_name)
            policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy", "")
            row["volume"] = {
                "name": volume_name,
                "reclaimPolicy": policy,
                "phase": (pv.get("status") or {}).get("phase", ""),
                "source": volume_source(pv),
            }
            if policy != "Retain":
                warnings.append(
                    f"claim {meta['name']}: volume {volume_name} has reclaimPolicy {policy or '?'}; "
                    "deleting the claim would delete the data (patch it to Retain)"
                )
        else:
            warnings.append(f"claim {meta['name']}: not bound to a volume (phase {row['phase'] or '?'})")
        rows.append(row)
    # Volumes that once belonged to this namespace but whose claim is gone (a released home).
    released = []
    for pv in sorted(volumes, key=lambda v: v["metadata"]["name"]):
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref.get("namespace") == namespace and pv["metadata"]["name"] not in bound_names:
            released.append(
                {
                    "name": pv["metadata"]["name"],
                    "formerClaim": ref.get("name", ""),
                    "reclaimPolicy": pv["spec"].get("persistentVolumeReclaimPolicy", ""),
                    "phase": (pv.get("status") or {}).get("phase", ""),
                    "source": volume_source(pv),
                }
            )
    if not rows and not released:
        warnings.append(f"namespace {namespace}: no claims and no volumes that belonged to it")
    return {"namespace": namespace, "claims": rows, "releasedVolumes": released, "warnings": warnings}


def kept_data_summary(kubeconfig: str | None, namespace: str) -> dict[str, Any]:
    """What data the cluster keeps for `namespace`: claims, their volumes, reclaim policies, disks.

    `kubeconfig` None or "" uses KUBECONFIG from the environment (kubectl's own default).
    """
    claims = kubectl_json(kubeconfig, "persistentvolumeclaims", "--namespace", namespace).get("items", [])
    volumes = kubectl_json(kubeconfig, "persistentvolumes").get("items", [])
    summary = summarize(namespace, claims, volumes)
    summary["generatedAt"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return summary


def summary_markdown(stack: str, summary: Mapping[str, Any], destroyed: bool) -> str:
    lines = [f"# End of term: {stack}", ""]
    lines.append(
        f"Generated {summary.get('generatedAt', '')}. "
        + (
            "`pulumi destroy --exclude-protected` removed the server and lab clusters; "
            "the protected claims below stay, in the cluster and in the stack's state."
            if destroyed
            else "No destroy was run (--skip-destroy): this lists what the cluster holds now."
        )
    )
    lines += ["", f"Namespace: `{summary['namespace']}`", ""]
    if summary["claims"]:
        lines += [
            "| Claim | Size | Storage class | Volume | Reclaim policy | Where the data is |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["claims"]:
            vol = row["volume"] or {}
            where = source_text(vol["source"]) if vol else "not bound"
            lines.append(
                f"| {row['name']} | {row['capacity'] or row['size']} | {row['storageClass'] or '(default)'} "
                f"| {vol.get('name', '-')} | {vol.get('reclaimPolicy', '-')} | {where} |"
            )
        lines.append("")
    else:
        lines += ["No claims in this namespace.", ""]
    if summary["releasedVolumes"]:
        lines += ["Volumes released by this namespace (their claim is gone, the data is not):", ""]
        lines += ["| Volume | Former claim | Reclaim policy | Phase | Where the data is |", "|---|---|---|---|---|"]
        for pv in summary["releasedVolumes"]:
            lines.append(
                f"| {pv['name']} | {pv['formerClaim']} | {pv['reclaimPolicy']} | {pv['phase']} "
                f"| {source_text(pv['source'])} |"
            )
        lines.append("")
    if summary["warnings"]:
        lines += ["Warnings:", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    lines += [
        "Next term with these homes: `classroom term new --from "
        f"{stack} --to NEW --start YYYY-MM-DD --end YYYY-MM-DD --adopt-homes`.",
        f"Deleting the homes for good: `kubectl delete namespace {summary['namespace']}`, then "
        "`kubectl delete pv` each volume above and remove its disk or directory (README, End of term).",
        "",
    ]
    return "\n".join(lines)


def destroy_all_but_protected(stack: str, project: Path) -> None:
    """`pulumi destroy --exclude-protected` through the Automation API, its output shown as it comes."""
    print(f"destroying {stack} except what is protected (pulumi destroy --exclude-protected)", flush=True)
    try:
        engine.destroy_unprotected(stack, project, on_output=lambda line: print(line, flush=True))
    except engine.EngineUnavailable:
        raise TermError(
            "pulumi is not on PATH: install it to destroy the stack, or pass --skip-destroy to write only the summary",
            status=1,
        ) from None
    except engine.EngineFailed as error:
        raise TermError(f"pulumi destroy --stack {stack} failed: {error}", status=1) from None


def confirm_destroy(stack: str, namespace: str, *, yes: bool) -> None:
    """Like `pulumi destroy`, nothing goes without a yes: `--yes`, or the stack's name typed at a terminal."""
    if yes:
        return
    what = (
        f"term end destroys every unprotected resource of stack {stack} (the login server, its Service, lab hosts); "
        f"the namespace {namespace}, the homes, the CA and the UID ledger are protected and stay"
    )
    if not sys.stdin.isatty():
        raise TermError(f"{what}. Nothing was done: pass --yes to confirm, or --skip-destroy to only write the summary")
    print(f"{what}.", flush=True)
    try:
        typed = input(f"Type the stack name ({stack}) to go on: ")
    except EOFError:
        typed = ""
    if typed.strip() != stack:
        raise TermError(f"not confirmed (expected {stack!r}): nothing was destroyed")


def cmd_end(args: SimpleNamespace) -> int:
    stacks_dir = Path(args.stacks_dir)
    path = existing_stack(stacks_dir, args.stack)
    namespace = stack_namespace(load_stack(path), args.stack)
    summary_file = Path(args.summary) if args.summary else Path("out") / f"end-of-term-{args.stack}.md"
    if summary_file.is_dir():
        raise TermError(f"argument --summary: {summary_file} is a directory; expected a file path (FILE.md)")
    if not args.skip_destroy:
        confirm_destroy(args.stack, namespace, yes=args.yes)
        destroy_all_but_protected(args.stack, stacks_dir.resolve().parent)
    summary = kept_data_summary(os.environ.get("KUBECONFIG"), namespace)
    summary["stack"] = args.stack
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    summary_file.write_text(summary_markdown(args.stack, summary, destroyed=not args.skip_destroy), encoding="utf-8")
    written = [str(summary_file)]
    if args.json:
        json_file = summary_file.with_suffix(".json")
        json_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        written.append(str(json_file))
    print(f"kept in namespace {namespace}: {len(summary['claims'])} claim(s); summary: {', '.join(written)}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ new


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day; ValueError says why not (the CLI prefixes the option's name)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{text!r} is not a date; expected YYYY-MM-DD (e.g. 2027-01-25)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date; expected YYYY-MM-DD") from None


def secret_paths(value: Any, path: str) -> list[str]:
    """Config paths (`labs.sessionKey`) of every `{secure: ...}` value."""
    if is_secure(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in secret_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in secret_paths(v, f"{path}[{i}]")]
    return []


def drop_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_secrets(v) for k, v in value.items() if not is_secure(v)}
    if isinstance(value, list):
        return [drop_secrets(v) for v in value if not is_secure(v)]
    return value


CREATED_BY = "# Created by `classroom term new"
# The header older stack files carry (the command before `classroom term`).
CREATED_BY_BEFORE = "# Created by `python -m ops.term new"


def without_created_by(text: str) -> str:
    """The file without an earlier `classroom term new` header line (a stack made from a made stack)."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[1:]) if lines and lines[0].startswith((CREATED_BY, CREATED_BY_BEFORE)) else text


def mentions(value: Any, needle: str, path: str) -> list[str]:
    """Config paths whose text mentions `needle` (the old term's name in rcEnv, say)."""
    if isinstance(value, str):
        return [path] if needle and needle.lower() in value.lower() else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in mentions(v, needle, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in mentions(v, needle, f"{path}[{i}]")]
    return []


def roster_value(old: Any, roster: str | None, project: Path, notes: list[str]) -> Any:
    """The new term's `classroom:roster`: the CSV given, else the old staff only (students change each term)."""
    if roster is not None:
        given = Path(roster)
        if not given.is_file():
            raise TermError(f"argument --roster: {roster!r} is not a readable file; expected a roster CSV export")
        resolved = given.resolve()
        try:
            written = str(resolved.relative_to(project.resolve()))
        except ValueError:
            written = str(resolved)
        value: dict[str, Any] = {"csv": written}
        if isinstance(old, dict):
            # The stack file, not the export, names the staff: they carry over with the defaults.
            for key in ("defaults", "staff"):
                if isinstance(old.get(key), dict):
                    value[key] = old[key]
            staff = value.pop("staff", None) or {}
            if staff:
                try:
                    rows = parse_roster_csv(given.read_text(encoding="utf-8"), source=given.name)
                except ConfigError as error:
                    raise TermError(f"argument --roster: {error}") from None
                listed = {str(entry.get("username", "")).strip() for entry, _where in rows}
                kept = {user: role for user, role in staff.items() if user in listed}
                if kept:
                    value["staff"] = kept
                    notes.append(
                        f"roster: kept the staff the old stack names ({', '.join(sorted(kept))}); "
                        "edit classroom:roster.staff if they changed"
                    )
                gone = sorted(set(staff) - set(kept))
                if gone:
                    notes.append(
                        f"roster: dropped staff not in {given.name}: {', '.join(gone)} (staff must be rows "
                        "of the export; add them to it, or to classroom:roster.staff once they are)"
                    )
        return value
    if isinstance(old, list):
        staff = [p for p in old if isinstance(p, dict) and p.get("role") in STAFF_ROLES]
        notes.append(
            f"roster: no --roster given; kept the {len(staff)} staff entr{'y' if len(staff) == 1 else 'ies'} "
            "(ta, instructor) of the old roster and dropped its students; add this term's students with "
            "classroom:roster (or re-run with --roster FILE.csv)"
        )
        return staff or None
    if old is not None:
        notes.append(
            "roster: no --roster given; the old roster (a CSV export) was not carried over: "
            "set classroom:roster to {csv: THIS-TERM.csv} before `pulumi up`"
        )
    return None


def new_term(old_term: Any, start: date, end: date, notes: list[str]) -> dict[str, Any]:
    term: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat()}
    if isinstance(old_term, dict):
        for key in ("timezone", "grace"):
            if old_term.get(key) is not None:
                term[key] = old_term[key]
        if old_term.get("name"):
            notes.append(
                f"term.name {old_term['name']!r} was not carried over: the new term's name comes from the stack name"
            )
    return term


# The Roster component's UID ledger (components/roster.py): `roster` + `-uids`, a dynamic resource.
LEDGER_TYPE = "pulumi-python:dynamic:Resource"
LEDGER_NAME = "roster-uids"
RELEASED_HINT = (
    "run `classroom term new --adopt-homes` before the old stack's homes are released (`pulumi state unprotect` + "
    "`pulumi destroy`: the ledger goes with them), or, if they already were, set each kept home's owner by hand: "
    "`pulumi config set --path 'classroom:adoptedUids.USER' UID` (the UID is `ls -ln` of the home)"
)


def old_uid_ledger(stack: str, project: Path) -> dict[str, int] | None:
    """username -> UID from the old stack's UID ledger in Pulumi state; None if the state has no ledger.

    The ledger, not the `roster` output: it also holds the people who left (their kept homes are
    owned by their UIDs too, and no newcomer may get one), and it is protected, so it is still in
    the state after `classroom term end` (`destroy --exclude-protected`). Any failure to read it is an
    error (exit 1): a stack that adopts homes without their UIDs would lock the returning people out.
    """
    print(f"reading {stack}'s UID ledger from its state (pulumi stack export)", flush=True)
    try:
        resources = engine.resources(stack, project)
    except engine.EngineUnavailable:
        raise TermError(
            f"--adopt-homes: pulumi is not on PATH, so the UIDs that own {stack}'s kept homes cannot be read from "
            "its state; nothing written (install pulumi, or use the machine that deploys the stack)",
            status=1,
        ) from None
    except engine.EngineFailed as error:
        raise TermError(
            f"--adopt-homes: pulumi stack export --stack {stack} failed: {error}; the UIDs "
            "that own its kept homes cannot be read, nothing written (log in to the stack's backend, check the "
            "stack name)",
            status=1,
        ) from None
    ledgers = [
        r
        for r in resources
        if isinstance(r, dict) and r.get("type") == LEDGER_TYPE and str(r.get("urn", "")).endswith("::" + LEDGER_NAME)
    ]
    if not ledgers:
        return None
    uids = (ledgers[0].get("outputs") or {}).get("uids")
    if not isinstance(uids, dict) or not all(
        isinstance(u, int | float) and not isinstance(u, bool) and float(u).is_integer() for u in uids.values()
    ):
        raise TermError(
            f"--adopt-homes: {stack}'s UID ledger in its state has no username -> UID map "
            f"(outputs.uids is {uids!r}); nothing written",
            status=1,
        )
    return {str(name): int(uid) for name, uid in sorted(uids.items())}


def validation_error_is_secret(error: ConfigError, dropped: Sequence[str]) -> bool:
    return any(error.key == p or error.key.startswith(p + ".") or p.startswith(error.key + ".") for p in dropped)


def cmd_new(args: SimpleNamespace) -> int:
    if args.end <= args.start:
        raise TermError(f"argument --end: {args.end.isoformat()} is not after --start {args.start.isoformat()}")
    stacks_dir = Path(args.stacks_dir)
    project = stacks_dir.resolve().parent
    old_path = existing_stack(stacks_dir, args.from_stack, "--from")
    new_path = stack_path(stacks_dir, args.to_stack, "--to")
    if args.to_stack == args.from_stack:
        raise TermError(f"argument --to: {args.to_stack!r} is the old stack; expected a new stack name")
    if new_path.exists():
        raise TermError(f"argument --to: {new_path} already exists; refusing to overwrite it (choose another name)")
    old_text = old_path.read_text(encoding="utf-8")
    old = load_stack(old_path)
    notes: list[str] = []

    # The new file is the old one edited in place (round-trip), so its comments, key order and
    # quoting carry over; every change below is a key set, replaced or removed.
    new = stackfile.load(old_text)
    dropped_top = [k for k in PER_STACK_TOP_KEYS if k in old]
    for key in dropped_top:
        del new[key]
    if dropped_top:
        notes.append(f"dropped {', '.join(dropped_top)}: the new stack gets its own secrets key on `pulumi stack init`")
    prefix = NAMESPACE + ":"
    config = new["config"]
    secrets: list[str] = []
    for key, value in list(config.items()):
        short = key[len(prefix) :] if key.startswith(prefix) else key
        if key == prefix + "revocations":
            notes.append("dropped classroom:revocations: a new term signs new certificates")
            del config[key]
            continue
        found = secret_paths(value, short)
        secrets += found
        if is_secure(value):
            del config[key]
        elif found:
            config[key] = drop_secrets(value)
    if secrets:
        notes.append(
            "dropped secret values (encrypted with the old stack's key, which the new stack cannot read): "
            + ", ".join(secrets)
            + "; set each with `pulumi config set --secret [--path] classroom:KEY VALUE --stack "
            + args.to_stack
            + "`"
        )
    stackfile.set_in_place(config, prefix + "term", new_term(config.get(prefix + "term"), args.start, args.end, notes))
    roster = roster_value(config.get(prefix + "roster"), args.roster, project, notes)
    if roster is None:
        config.pop(prefix + "roster", None)
    else:
        stackfile.set_in_place(config, prefix + "roster", roster)
    old_namespace = stack_namespace(old, args.from_stack)
    # Only an adopting stack has homes whose owners it must keep; its own list comes from the state.
    config.pop(prefix + "adoptedUids", None)
    if args.adopt_homes:
        # The claims are named inside the namespace; keeping it keeps their names, so the
        # new stack's first `up` finds and adopts them instead of creating empty homes.
        config[prefix + "namespace"] = old_namespace
        # And each kept home is owned by a UID from the old stack's ledger: the new ledger starts
        # from them, or the reconciler refuses the returning people their homes (it checks st_uid).
        ledger = old_uid_ledger(args.from_stack, project)
        if ledger is None:
            if old["config"].get(prefix + "roster") is not None:
                raise TermError(
                    f"--adopt-homes: {args.from_stack}'s state holds no UID ledger ({LEDGER_NAME}), so the UIDs "
                    f"that own its kept homes are unknown; nothing written. Was it ever deployed? " + RELEASED_HINT,
                    status=1,
                )
            notes.append(f"{args.from_stack} had no roster and its state no UID ledger: no UIDs to carry over")
        elif ledger:
            stackfile.set_in_place(config, prefix + "adoptedUids", ledger)
            notes.append(
                f"carried {len(ledger)} UID(s) from {args.from_stack}'s UID ledger into classroom:adoptedUids: "
                "returning people keep their UID and so their home; nobody new gets one of them"
            )
    else:
        config.pop(prefix + "namespace", None)
        if f"classroom-{args.to_stack}".lower() == old_namespace:
            raise TermError(f"argument --to: the new stack's namespace would be the old one ({old_namespace})")
    body = stackfile.dump(new)
    written = yaml.safe_load(body)
    old_term_name = class_and_term_names(args.from_stack, None)[1]
    if old_term_name != "term":
        stale = [
            p
            for key, value in written["config"].items()
            if key not in (prefix + "term", prefix + "roster", prefix + "namespace", prefix + "adoptedUids")
            for p in mentions(value, old_term_name, key)
        ]
        if stale:
            notes.append(f"still mention the old term {old_term_name!r}, check them: {', '.join(stale)}")

    raw = classroom_raw(written)
    try:
        parsed = parse_config(raw, stack=args.to_stack, base_dir=project)
    except ConfigError as error:
        if not validation_error_is_secret(error, secrets):
            raise TermError(f"the new stack would not be valid, nothing written: {error}") from None
        notes.append(f"not fully validated until the dropped secrets are set: {error}")
        parsed = None

    header = f"{CREATED_BY} --from {args.from_stack}` on {date.today().isoformat()}."
    new_path.write_text(header + "\n" + without_created_by(body), encoding="utf-8")

    namespace = parsed.namespace if parsed else raw.get("namespace", f"classroom-{args.to_stack}")
    students = sum(1 for p in parsed.access.people if p.role not in STAFF_ROLES) if parsed else 0
    print(f"wrote {new_path}: term {args.start} .. {args.end}, namespace {namespace}, {students} student(s)")
    for note in notes:
        print(f"note: {note}")
    print("note: the old file's comments were kept; check those next to the keys that changed (term, roster)")
    print("next:")
    if args.adopt_homes:
        print(f"  classroom term end --stack {args.from_stack}      # if not done: the server goes, homes stay")
        print(f"  pulumi state unprotect --all --yes --stack {args.from_stack}  # release the homes from the old stack")
        print(f"  pulumi destroy --yes --stack {args.from_stack}  # retainOnDelete: they stay in the cluster")
        print(f"  pulumi stack init {args.to_stack}")
        print(f"  {ADOPT_ENV} pulumi up --stack {args.to_stack}   # first up only: adopts {namespace}")
    else:
        print(f"  pulumi stack init {args.to_stack}")
        print(f"  pulumi up --stack {args.to_stack}")
    return 0


# ------------------------------------------------------------------ status


def term_state(term: Term | None, today: date) -> str:
    if term is None:
        return "no term"
    tz = ZoneInfo(term.timezone)
    first = term.start.astimezone(tz).date()
    # end is the instant after the last day; the last day of access is the day before it.
    last = (term.end - timedelta(microseconds=1)).astimezone(tz).date()
    access_last = (term.access_end - timedelta(microseconds=1)).astimezone(tz).date()
    if today < first:
        return "not started"
    if today <= last:
        return "in term"
    if today <= access_last:
        return "ended (grace)"
    return "ended"


def server_address(stack: str, project: Path) -> str:
    try:
        outputs = engine.outputs(stack, project)
    except engine.EngineUnavailable:
        return "unknown (no pulumi CLI)"
    except engine.EngineFailed:
        return "unknown (not deployed)"
    host = outputs.get("sshHost")
    return str(host) if host else "unknown (no sshHost output)"


def stack_status(stacks_dir: Path, stack: str, today: date, *, address: bool = True) -> dict[str, Any]:
    project = stacks_dir.resolve().parent
    row: dict[str, Any] = {"stack": stack}
    try:
        data = load_stack(stacks_dir / f"Pulumi.{stack}.yaml")
        raw = classroom_raw(data)
        secret = [k for k in ACCESS_KEYS if is_secure(raw.get(k))]
        access = (
            AccessConfig() if secret else parse_access({k: raw[k] for k in ACCESS_KEYS if k in raw}, base_dir=project)
        )
    except (TermError, ConfigError) as error:
        row.update(error=str(error), state="invalid")
        return row
    term = access.term
    class_name, term_name = class_and_term_names(stack, term)
    tz = ZoneInfo(term.timezone) if term else UTC
    labs: dict[str, Any] = raw["labs"] if isinstance(raw.get("labs"), dict) else {}
    namespace = raw["namespace"] if isinstance(raw.get("namespace"), str) else f"classroom-{stack}".lower()
    row.update(
        {
            "class": class_name,
            "term": term_name,
            "start": term.start.astimezone(tz).date().isoformat() if term else None,
            "end": (term.end - timedelta(microseconds=1)).astimezone(tz).date().isoformat() if term else None,
            "accessEnds": term.access_end.isoformat().replace("+00:00", "Z") if term else None,
            "students": None if secret else sum(1 for p in access.people if p.role not in STAFF_ROLES),
            "staff": None if secret else sum(1 for p in access.people if p.role in STAFF_ROLES),
            "namespace": namespace,
            "server": server_address(stack, project) if address else "unknown (not asked)",
            "labHosts": [h.get("name", "?") for h in (labs.get("hosts") or []) if isinstance(h, dict)],
            "state": term_state(term, today),
        }
    )
    if secret:
        row["note"] = f"{', '.join(secret)} secret: counts need the engine"
    return row


def status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = ["stack", "class", "term", "start", "end", "students", "server", "lab hosts", "state"]
    table = [headers]
    for row in rows:
        if "error" in row:
            table.append([row["stack"], "-", "-", "-", "-", "-", "-", "-", f"invalid: {row['error']}"])
            continue
        table.append(
            [
                row["stack"],
                row["class"],
                row["term"],
                row["start"] or "-",
                row["end"] or "-",
                "?" if row["students"] is None else str(row["students"]),
                row["server"],
                ", ".join(row["labHosts"]) or "-",
                row["state"],
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(headers) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]
    return "\n".join(line.rstrip() for line in lines)


def cmd_status(args: SimpleNamespace) -> int:
    stacks_dir = Path(args.stacks_dir)
    if not stacks_dir.is_dir():
        raise TermError(f"argument --stacks-dir: {stacks_dir} is not a directory; expected the stacks/ directory")
    day = args.today or date.today()
    rows = [stack_status(stacks_dir, s, day) for s in known_stacks(stacks_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(status_table(rows))
    else:
        print(f"no stack files (Pulumi.*.yaml) in {stacks_dir}")
    return 0
