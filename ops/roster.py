"""`classroom roster`: the instructor's certificates, status and revocation (ops/cli.py parses the arguments).

    classroom roster issue  --stack cis90-fall2026 --out certs/
    classroom roster status --stack cis90-fall2026
    classroom roster revoke --stack cis90-fall2026 jsmith
    classroom roster revoke --stack cis90-fall2026 --serial 123456789

`issue` and `status` read the stack's outputs (ops/engine.py, the Automation API's
`Stack.outputs()`, secrets shown: certificates signed by `pulumi up`, the known_hosts
line, the ssh endpoint). Given `--ca-key FILE` they work without the engine:
the roster comes from the stack file (or `--roster-json`, the roster.json of
the ConfigMap) and certificates are signed locally with the same serials and
window `pulumi up` uses. `revoke` edits `classroom:revocations` in
stacks/Pulumi.<stack>.yaml in place (comments kept); the next `pulumi up`
installs the new KRL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from components.rosterdata import (
    ACCESS_KEYS,
    FINGERPRINT_RE,
    normalize_public_key,
    parse_access,
    roster_document,
)
from components.sshcert import (
    ca_public_key_line,
    certificate_fields,
    known_hosts_line,
    sign_user_certificate,
)
from ops import engine, stackfile
from ops.errors import OperatorError

NAMESPACE = "classroom"
REPO = Path(__file__).resolve().parents[1]


class CliError(OperatorError):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- inputs


def project_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    cwd = Path.cwd()
    return cwd if (cwd / "Pulumi.yaml").exists() else REPO


def stack_file(project: Path, stack: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", stack):
        raise CliError(f"--stack {stack!r}: expected a stack name like cis90-fall2026")
    path = project / "stacks" / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (project / "stacks").glob("Pulumi.*.yaml"))
        raise CliError(f"--stack {stack!r}: no stack file {path} (stacks there: {', '.join(known) or 'none'})")
    return path


def access_raw(path: Path) -> dict[str, Any]:
    """The ACCESS_KEYS of a stack file, as components/config.py hands them to parse_access."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML ({exc})") from None
    config = data.get("config") or {}
    raw: dict[str, Any] = {}
    for key in ACCESS_KEYS:
        value = config.get(f"{NAMESPACE}:{key}")
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise CliError(f"{path}: {NAMESPACE}:{key} is a secret; use the pulumi-backed path (omit --ca-key)")
        if value is not None:
            raw[key] = value
    return raw


def document_from_config(project: Path, stack: str) -> dict[str, Any]:
    access = parse_access(access_raw(stack_file(project, stack)), base_dir=project)
    return roster_document(access, stack=stack)


def pulumi_outputs(stack: str, project: Path) -> dict[str, Any]:
    try:
        outputs = engine.outputs(stack, project)
    except engine.EngineUnavailable:
        raise CliError("pulumi is not on PATH: install it, or pass --ca-key FILE to work from the stack file") from None
    except engine.EngineFailed as error:
        raise CliError(f"pulumi stack output --stack {stack} failed: {error}") from None
    if "roster" not in outputs:
        raise CliError(f"stack {stack} has no 'roster' output yet: run `pulumi up` first")
    return outputs


def load_json(path: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"--roster-json {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"--roster-json {path}: not JSON ({exc})") from None
    if not isinstance(data.get("people"), list):
        raise CliError(f"--roster-json {path}: expected the roster.json of the roster ConfigMap (a 'people' list)")
    return data


def read_ca_key(path: str) -> str:
    try:
        text = Path(path).read_text()
        ca_public_key_line(text)
    except OSError as exc:
        raise CliError(f"--ca-key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"--ca-key {path}: {exc}") from None
    return text


def _epoch(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def local_certificates(doc: dict[str, Any], ca_key: str) -> dict[str, list[str]]:
    """Sign what `pulumi up` would sign (same serial, key id, principal, window)."""
    term = doc.get("term")
    if not term:
        raise CliError("the roster has no term: certificates need term.start and term.end")
    out: dict[str, list[str]] = {}
    for person in doc["people"]:
        for key, cert in zip(person.get("keys") or [], person.get("certificates") or [], strict=False):
            out.setdefault(person["username"], []).append(
                sign_user_certificate(
                    ca_key,
                    key,
                    principal=person["username"],
                    key_id=cert["keyId"],
                    serial=int(cert["serial"]),
                    valid_after=_epoch(term["start"]),
                    valid_before=_epoch(term["accessEnd"]),
                )
            )
    return out


# --------------------------------------------------------------------------- commands


def ssh_config_text(alias: str, host: str, port: int, class_name: str) -> str:
    return (
        f"# Add to ~/.ssh/config. Save your certificate as ~/.ssh/{class_name}-cert.pub next to the\n"
        f"# private key you gave your instructor, and known_hosts as ~/.ssh/{class_name}_known_hosts.\n"
        f"Host {alias}\n"
        f"    HostName {host}\n"
        f"    Port {port}\n"
        f"    User YOUR_USERNAME\n"
        f"    IdentityFile ~/.ssh/id_ed25519\n"
        f"    CertificateFile ~/.ssh/{class_name}-cert.pub\n"
        f"    UserKnownHostsFile ~/.ssh/{class_name}_known_hosts\n"
        f"    StrictHostKeyChecking yes\n"
    )


def cmd_issue(args: SimpleNamespace) -> int:
    project = project_dir(args.project)
    if args.ca_key:
        doc = load_json(args.roster_json) if args.roster_json else document_from_config(project, args.stack)
        ca_key = read_ca_key(args.ca_key)
        certificates = local_certificates(doc, ca_key)
        host, port = args.host or "", args.port or 22
        hosts = [host if port == 22 else f"[{host}]:{port}"] if host else ["*"]
        kh_line = known_hosts_line(ca_public_key_line(ca_key), hosts)
    else:
        stack_file(project, args.stack)
        outputs = pulumi_outputs(args.stack, project)
        doc = outputs["roster"]
        certificates = outputs.get("studentCertificates") or {}
        kh_line = outputs.get("knownHostsLine") or ""
        host = args.host or str(outputs.get("sshHost") or "")
        port = int(args.port or outputs.get("sshPort") or 22)
    if not host:
        host = "LOGIN-SERVER-ADDRESS"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for user, certs in sorted(certificates.items()):
        for index, cert in enumerate(certs):
            name = f"{user}-cert.pub" if index == 0 else f"{user}-{index + 1}-cert.pub"
            (out / name).write_text(cert.strip() + "\n")
            written += 1
    class_name = str(doc.get("class") or args.stack)
    (out / "known_hosts").write_text(kh_line.strip() + "\n")
    (out / "ssh_config").write_text(ssh_config_text(class_name, host, port, class_name))
    without = [p["username"] for p in doc["people"] if not p.get("certificates")]
    print(f"wrote {written} certificate(s), known_hosts and ssh_config to {out}")
    if without:
        print(f"no public key on the roster (no certificate) for: {', '.join(without)}")
    return 0


def cmd_status(args: SimpleNamespace) -> int:
    project = project_dir(args.project)
    certificates: dict[str, list[str]] = {}
    if args.roster_json:
        doc = load_json(args.roster_json)
    elif args.from_config:
        doc = document_from_config(project, args.stack)
    else:
        stack_file(project, args.stack)
        outputs = pulumi_outputs(args.stack, project)
        doc, certificates = outputs["roster"], outputs.get("studentCertificates") or {}
    term = doc.get("term") or {}
    revoked = {int(s) for s in (doc.get("revocations") or {}).get("serials") or []}
    now = datetime.now(UTC)
    rows = []
    for person in doc["people"]:
        certs = []
        for index, cert in enumerate(person.get("certificates") or []):
            until = term.get("accessEnd", "?")
            if person["username"] in certificates and index < len(certificates[person["username"]]):
                fields = certificate_fields(certificates[person["username"]][index])
                until = datetime.fromtimestamp(fields["valid_before"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            state = "REVOKED" if int(cert["serial"]) in revoked else f"until {until}"
            certs.append(f"serial {cert['serial']} {state}")
        imports = " ".join(person.get("importIds") or [])
        rows.append(
            {
                "username": person["username"],
                "uid": person["uid"],
                "role": person["role"],
                "labs": bool(person.get("labs")),
                "certificates": certs,
                "imports": imports,
                "access_until": term.get("accessEnd"),
            }
        )
    if args.json:
        print(json.dumps({"term": term, "people": rows}, indent=1))
        return 0
    if term:
        ended = term.get("accessEnd") and _epoch(term["accessEnd"]) < now.timestamp()
        print(
            f"class {doc.get('class')} term {term.get('name')}: {term.get('start')} .. {term.get('end')} "
            f"({term.get('timezone')}); access until {term.get('accessEnd')}{' (ENDED)' if ended else ''}"
        )
    print(f"{'username':<16} {'uid':>6} {'role':<10} {'labs':<4}  access")
    for row in rows:
        access = "; ".join(row["certificates"]) or ("keys via " + row["imports"] if row["imports"] else "no key")
        print(f"{row['username']:<16} {row['uid']:>6} {row['role']:<10} {'yes' if row['labs'] else '-':<4}  {access}")
    print(f"{len(rows)} people; {len(revoked)} revoked serial(s)")
    return 0


def replace_revocations(text: str, serials: Sequence[int], keys: Sequence[str]) -> str:
    """The stack file's text with `classroom:revocations` set: a round-trip edit (ops/stackfile.py),
    so every comment and every other key stays as it was."""
    try:
        doc = stackfile.load(text)
    except stackfile.YAMLError as exc:
        raise CliError(f"the stack file is not valid YAML ({exc}); fix it before revoking") from None
    if doc is None:
        doc = {}
    config = doc.setdefault("config", {}) if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise CliError("the stack file has no `config:` mapping; add one, or edit revocations by hand")
    body: dict[str, Any] = {}
    if serials:
        body["serials"] = list(serials)
    if keys:
        body["keys"] = list(keys)
    if body:
        stackfile.set_in_place(config, f"{NAMESPACE}:revocations", body)
    else:
        config.pop(f"{NAMESPACE}:revocations", None)
    return stackfile.dump(doc)


def cmd_revoke(args: SimpleNamespace) -> int:
    project = project_dir(args.project)
    path = stack_file(project, args.stack)
    raw = access_raw(path)
    access = parse_access(raw, base_dir=project)
    serials = list(access.revoked_serials)
    keys = list(access.revoked_keys)
    added: list[str] = []
    if args.user:
        # Revoking a person closes every way in, not only the certificates: each roster key is
        # revoked as a key too (the KRL refuses it in any form), and reconcile-roster treats a
        # person whose every roster key is revoked as revoked as a whole: the account is locked,
        # imported keys are refused as well, and open sessions end.
        doc = roster_document(access, stack=args.stack)
        person = next((p for p in doc["people"] if p["username"] == args.user), None)
        if person is None:
            raise CliError(f"{args.user!r} is not on the roster of {args.stack}")
        if not person["certificates"]:
            raise CliError(
                f"{args.user} has no roster key to revoke (imported keys only); "
                "remove them from the roster to lock the account and refuse every key"
            )
        for cert in person["certificates"]:
            if int(cert["serial"]) not in serials:
                serials.append(int(cert["serial"]))
                added.append(f"serial {cert['serial']} ({args.user}, key {cert['fingerprint']})")
            if cert["fingerprint"] not in keys:
                keys.append(cert["fingerprint"])
                added.append(f"key {cert['fingerprint']} ({args.user}: account locked, imported keys refused)")
    for serial in args.serial or []:
        if not 0 < serial < 1 << 64:
            raise CliError(f"--serial {serial}: expected a certificate serial 1 .. 2^64-1")
        if serial not in serials:
            serials.append(serial)
            added.append(f"serial {serial}")
    for key in args.key or []:
        text = Path(key).read_text().strip() if Path(key).is_file() else key.strip()
        if not FINGERPRINT_RE.fullmatch(text):
            try:
                text = normalize_public_key(text)
            except ValueError as exc:
                raise CliError(
                    f"--key {key[:40]!r}: expected a public key (file or line) or SHA256:... ({exc})"
                ) from None
        if text not in keys:
            keys.append(text)
            added.append(f"key {text[:40]}...")
    if not added:
        print("nothing new to revoke; the stack file is unchanged")
        return 0
    original = path.read_text()
    updated = replace_revocations(original, sorted(serials), keys)
    # Refuse to write anything that changes more than the revocations.
    before, after = yaml.safe_load(original) or {}, yaml.safe_load(updated) or {}
    want = {k: v for k, v in (before.get("config") or {}).items() if k != f"{NAMESPACE}:revocations"}
    got = {k: v for k, v in (after.get("config") or {}).items() if k != f"{NAMESPACE}:revocations"}
    parsed = parse_access(
        {"revocations": (after.get("config") or {}).get(f"{NAMESPACE}:revocations")}, base_dir=project
    )
    if (
        want != got
        or {k: v for k, v in before.items() if k != "config"} != {k: v for k, v in after.items() if k != "config"}
        or list(parsed.revoked_serials) != sorted(serials)
        or list(parsed.revoked_keys) != keys
    ):
        raise CliError(
            f"could not edit {path} safely; add to {NAMESPACE}:revocations by hand: serials {sorted(serials)}"
        )
    path.write_text(updated)
    for item in added:
        print(f"revoked {item}")
    print(f"updated {path}; run `pulumi up --stack {args.stack}` to install the new revocation list")
    return 0
