"""Roster, term window and revocations: pure parsing and validation.

Everything here is a plain function of the stack config (and the roster CSV
it names), so it can be property-tested without the Pulumi engine and reused
by `classroom roster`. Nothing here talks to Kubernetes or signs anything.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from components.errors import ConfigError

# Stack-config keys (under the `classroom:` namespace) this module parses.
ACCESS_KEYS = ("roster", "term", "revocations", "staffKeepOwnKeys", "adoptedUids")

ROLES = ("student", "ta", "instructor")
STAFF_ROLES = frozenset({"ta", "instructor"})

# Derived UIDs stay below 65536 so they fit the UID range a user-namespaced or
# rootless container maps, and above the distro's dynamic range (1000-19999 is
# left for the image's own users and explicit UIDs an instructor pins).
UID_DERIVED_MIN = 20000
UID_DERIVED_MAX = 59999
UID_MIN = 1000
UID_MAX = 65533  # 65534 is nobody, 65535 is (uid_t)-1 on 16-bit tools

USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
GITHUB_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}\Z")
LAUNCHPAD_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,63}\Z")
SERIAL_MASK = (1 << 53) - 1
FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}\Z")

# Accounts an image already has (or sshd/PAM treat specially): a roster entry
# with one of these names would take over a system account.
RESERVED_USERNAMES = frozenset(
    (
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "sshd",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "messagebus",
        "syslog",
        "_apt",
        "ubuntu",
        "admin",
        "sudo",
        "staff",
        "users",
        "classroom",
    )
)

USERNAME_ACCEPTED = (
    "a Unix username: lowercase letter or '_' first, then up to 31 of a-z 0-9 _ -, "
    "not a system name (root, ubuntu, nobody, ...)"
)
KEY_ACCEPTED = (
    "an OpenSSH public key line 'ssh-ed25519|ecdsa-sha2-nistp256/384/521|ssh-rsa BASE64 [comment]' "
    "(RSA at least 2048 bits, no options prefix)"
)

# CSV header aliases seen in registrar/LMS exports, after normalisation
# (lowercase, '_'/'-'/'.' -> space, collapsed spaces).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "username": (
        "username",
        "user name",
        "user",
        "login",
        "login id",
        "userid",
        "user id",
        "netid",
        "net id",
        "sis login id",
        "account",
    ),
    "name": ("name", "full name", "fullname", "student name", "display name", "student"),
    "email": ("email", "e mail", "mail", "email address", "e mail address"),
    "github": ("github", "github handle", "github username", "github user", "gh"),
    "launchpad": ("launchpad", "launchpad id", "launchpad handle", "lp"),
    "keys": ("public key", "key", "keys", "ssh key", "ssh public key", "pubkey", "public keys", "ssh keys"),
    "uid": ("uid", "unix uid"),
    "role": ("role", "type"),
    "labs": ("labs", "lab", "k3d"),
}


@dataclass(frozen=True)
class Person:
    """One roster entry, validated. `uid` is explicit or derived (see derive_uids)."""

    username: str
    uid: int
    name: str = ""
    email: str = ""
    keys: tuple[str, ...] = ()
    import_ids: tuple[str, ...] = ()  # "gh:handle" / "lp:handle" for ssh-import-id
    role: str = "student"
    labs: bool = False
    uid_explicit: bool = False

    @property
    def staff(self) -> bool:
        return self.role in STAFF_ROLES


@dataclass(frozen=True)
class Term:
    """The window in which the class has access. All datetimes are aware, UTC."""

    start: datetime
    end: datetime
    timezone: str = "UTC"
    grace: timedelta = timedelta(0)
    name: str = ""

    @property
    def access_end(self) -> datetime:
        """When every certificate, authorized key and account stops working."""
        return self.end + self.grace


@dataclass(frozen=True)
class AccessConfig:
    """Everything the access model needs, validated."""

    people: tuple[Person, ...] = field(default_factory=tuple)
    term: Term | None = None
    revoked_serials: tuple[int, ...] = ()
    revoked_keys: tuple[str, ...] = ()
    staff_keep_own_keys: bool = True
    # username -> UID from the previous term's ledger (classroom:adoptedUids): they own kept homes.
    adopted_uids: Mapping[str, int] = field(default_factory=dict)

    def person(self, username: str) -> Person | None:
        return next((p for p in self.people if p.username == username), None)


# --------------------------------------------------------------------------- keys


def normalize_public_key(text: str) -> str:
    """Return 'type base64 [comment]' for a valid, signable public key, else raise ValueError."""
    line = " ".join(str(text).split())
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ValueError("not 'type base64 [comment]'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"unparsable public key ({exc})") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for sk-*/dss keys
        raise ValueError(f"unsupported public key type {parts[0]!r} ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"RSA key of {key.key_size} bits is too short")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"unsupported public key type {parts[0]!r}")
    return " ".join(parts)


def key_fingerprint(public_key: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key line."""
    import base64

    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _split_keys(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        # A CSV cell may hold several keys, one per line or separated by ';'.
        return [k for k in re.split(r"[\n;]+", value) if k.strip()]
    if isinstance(value, (list, tuple)):
        return [str(k) for k in value if str(k).strip()]
    raise ValueError("a public key string or a list of them")


# --------------------------------------------------------------------------- UIDs


def _uid_hash(username: str) -> int:
    span = UID_DERIVED_MAX - UID_DERIVED_MIN + 1
    digest = hashlib.sha256(b"classroom-uid:" + username.encode()).digest()
    return UID_DERIVED_MIN + int.from_bytes(digest[:8], "big") % span


def derive_uids(
    usernames: Iterable[str], taken: Iterable[int] = (), previous: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Assign each username a UID in [UID_DERIVED_MIN, UID_DERIVED_MAX].

    Order-independent: names are placed in sorted order, each at its hash slot
    or the next free one (linear probing), so the result depends only on the
    *set* of names. `taken` are explicit UIDs to avoid.

    A pure function of the set cannot also be stable under growth (a newcomer
    whose slot collides with an existing name might sort first), so `previous`
    (the assignments recorded in Pulumi state, see roster.UidLedger) is
    honoured first: names already assigned keep their UID, newcomers probe
    around them. With `previous` the result is stable under growth too.
    """
    names = sorted(set(usernames))
    used = set(taken)
    result: dict[str, int] = {}
    span = UID_DERIVED_MAX - UID_DERIVED_MIN + 1
    for name, uid in sorted((previous or {}).items()):
        if name in names and uid not in used:
            result[name] = uid
            used.add(uid)
    free = span - sum(1 for uid in used if UID_DERIVED_MIN <= uid <= UID_DERIVED_MAX)
    if len(names) - len(result) > free:
        raise ConfigError("roster", len(names), f"at most {span} people with derived UIDs")
    for name in names:
        if name in result:
            continue
        uid = _uid_hash(name)
        while uid in used:
            uid = UID_DERIVED_MIN + (uid - UID_DERIVED_MIN + 1) % span
        result[name] = uid
        used.add(uid)
    return result


# --------------------------------------------------------------------------- serials


def cert_serial(stack: str, username: str, public_key: str, taken: Iterable[int] = ()) -> int:
    """Deterministic, non-zero 53-bit certificate serial for (stack, user, key).

    53 bits, not 63: numbers cross the Pulumi engine as IEEE doubles, and a
    larger serial would come back rounded in state and stack outputs.

    The key is part of the input so that a student who replaces a revoked key
    gets a certificate with a new serial that the KRL does not already revoke.
    """
    blob = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    used = set(taken)
    counter = 0
    while True:
        digest = hashlib.sha256(f"classroom-serial:{stack}:{username}:{blob}:{counter}".encode()).digest()
        serial = int.from_bytes(digest[:8], "big") & SERIAL_MASK
        if serial and serial not in used:
            return serial
        counter += 1


def cert_serials(stack: str, people: Sequence[Person]) -> dict[tuple[str, str], int]:
    """Serial of every (username, key) pair, unique across the roster (sorted, so order-free)."""
    out: dict[tuple[str, str], int] = {}
    for person in sorted(people, key=lambda p: p.username):
        for key in person.keys:
            out[(person.username, key)] = cert_serial(stack, person.username, key, out.values())
    return out


# --------------------------------------------------------------------------- people


def _as_bool(key: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on", "x"):
        return True
    if text in ("", "0", "false", "no", "n", "off"):
        return False
    raise ConfigError(key, value, "true/false (or yes/no, 1/0)", where=where)


def _person(entry: Mapping[str, Any], where: str, key: str) -> dict[str, Any]:
    """Validate one entry; returns fields for Person with 'uid' possibly None."""
    username = entry.get("username")
    if (
        not isinstance(username, str)
        or not USERNAME_RE.fullmatch(username.strip())
        or username.strip() in RESERVED_USERNAMES
    ):
        raise ConfigError(f"{key}.username", username, USERNAME_ACCEPTED, where=where)
    username = username.strip()

    uid_raw = entry.get("uid")
    uid: int | None = None
    if uid_raw not in (None, ""):
        try:
            if isinstance(uid_raw, bool):
                raise ValueError
            if isinstance(uid_raw, float):
                if not uid_raw.is_integer():
                    raise ValueError
                uid_raw = int(uid_raw)  # Pulumi config numbers can arrive as floats
            uid = int(str(uid_raw).strip())
        except ValueError:
            raise ConfigError(f"{key}.uid", uid_raw, f"an integer {UID_MIN}-{UID_MAX}", where=where) from None
        if not UID_MIN <= uid <= UID_MAX:
            raise ConfigError(
                f"{key}.uid",
                uid_raw,
                f"an integer {UID_MIN}-{UID_MAX} (below {UID_MIN} are system accounts)",
                where=where,
            )

    role = str(entry.get("role") or "student").strip().lower()
    if role not in ROLES:
        raise ConfigError(f"{key}.role", entry.get("role"), " | ".join(ROLES), where=where)

    try:
        raw_keys = _split_keys(entry.get("keys")) + _split_keys(entry.get("key"))
    except ValueError as exc:
        raise ConfigError(f"{key}.keys", entry.get("keys"), str(exc), where=where) from None
    keys: list[str] = []
    for raw in raw_keys:
        try:
            norm = normalize_public_key(raw)
        except ValueError as exc:
            raise ConfigError(f"{key}.keys", raw[:60], f"{KEY_ACCEPTED}: {exc}", where=where) from None
        if norm not in keys:
            keys.append(norm)

    import_ids: list[str] = []
    for field_name, regex, prefix in (("github", GITHUB_RE, "gh"), ("launchpad", LAUNCHPAD_RE, "lp")):
        handle = entry.get(field_name)
        if handle in (None, ""):
            continue
        handle = str(handle).strip().lstrip("@")
        if not regex.fullmatch(handle):
            raise ConfigError(
                f"{key}.{field_name}",
                entry.get(field_name),
                f"a {field_name} handle (letters, digits, '-')",
                where=where,
            )
        import_ids.append(f"{prefix}:{handle}")

    name = str(entry.get("name") or "").strip()
    if any(c in name for c in ":\n\r\0"):
        raise ConfigError(f"{key}.name", name, "a full name without ':' or line breaks", where=where)
    # GECOS uses commas as sub-field separators; "Smith, Jane" from a registrar export must not split.
    name = " ".join(name.replace(",", " ").split())
    email = str(entry.get("email") or "").strip()
    if email and (not re.fullmatch(r"^[^@\s:]+@[^@\s:]+\Z", email)):
        raise ConfigError(f"{key}.email", email, "an e-mail address (or empty)", where=where)

    unknown = set(entry) - {"username", "uid", "name", "email", "keys", "key", "github", "launchpad", "role", "labs"}
    if unknown and not entry.get("__csv__"):
        raise ConfigError(
            f"{key}.{sorted(unknown)[0]}",
            entry[sorted(unknown)[0]],
            "one of username, uid, name, email, keys, github, launchpad, role, labs",
            where=where,
        )
    return {
        "username": username,
        "uid": uid,
        "name": name,
        "email": email,
        "keys": tuple(keys),
        "import_ids": tuple(import_ids),
        "role": role,
        "labs": _as_bool(f"{key}.labs", entry.get("labs"), where),
    }


def _normalize_header(text: str) -> str:
    return " ".join(re.sub(r"[_\-.]", " ", text.strip().lower()).split())


def parse_roster_csv(
    text: str,
    *,
    source: str = "roster.csv",
    defaults: Mapping[str, Any] | None = None,
    staff: Mapping[str, str] | None = None,
) -> list[tuple[dict[str, Any], str]]:
    """Rows of a registrar/LMS export as (entry, where) pairs; unknown columns are ignored."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError("roster.csv", source, "a CSV file with a header row (username, ...)")
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise ConfigError("roster.csv", source, f"well-formed CSV ({exc})", where=f"{source} line 1") from None
    columns: dict[int, str] = {}
    for index, title in enumerate(header):
        norm = _normalize_header(title)
        for field_name, aliases in CSV_COLUMNS.items():
            if norm in aliases and field_name not in columns.values():
                columns[index] = field_name
    if "username" not in columns.values():
        raise ConfigError(
            "roster.csv",
            header,
            "a header row with a username column (username, login, netid, ...)",
            where=f"{source} line 1",
        )
    rows: list[tuple[dict[str, Any], str]] = []
    while True:
        first_line = reader.line_num + 1  # a quoted cell may span lines: name the row's first one
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ConfigError(
                "roster.csv", source, f"well-formed CSV ({exc})", where=f"{source} line {first_line}"
            ) from None
        where = f"{source} line {first_line}"
        if not any(cell.strip() for cell in row):
            continue
        entry: dict[str, Any] = dict(defaults or {})
        entry["__csv__"] = True
        for index, field_name in columns.items():
            if index < len(row) and row[index].strip():
                entry[field_name] = row[index]
        named = (staff or {}).get(str(entry.get("username") or "").strip())
        if named:
            entry["role"] = named  # the stack file says so (roster.staff)
        else:
            _refuse_csv_staff(entry, defaults, where)
        rows.append((entry, where))
    missing = sorted(set(staff or {}) - {str(e.get("username") or "").strip() for e, _ in rows})
    if missing:
        raise ConfigError(
            f"roster.staff.{missing[0]}",
            (staff or {})[missing[0]],
            f"a username of a row in {source} (there is no such row)",
        )
    return rows


def _refuse_csv_staff(entry: Mapping[str, Any], defaults: Mapping[str, Any] | None, where: str) -> None:
    """A registrar export cannot make anyone staff (passwordless sudo): only the stack file can.

    A `role`/`Type` column may say "student"; a staff role in it is refused
    unless the stack file's `roster.defaults.role` already gives that role to
    every row (then the file, reviewed in a pull request, says so).
    """
    role = str(entry.get("role") or "").strip().lower()
    allowed = str((defaults or {}).get("role") or "student").strip().lower()
    if role in STAFF_ROLES and role != allowed:
        raise ConfigError(
            "roster.csv role",
            entry.get("role"),
            "student: a CSV column cannot make staff (passwordless sudo); name TAs and "
            "instructors in the stack file (roster.staff: {USER: ta}), not through the export",
            where=where,
        )


def _roster_entries(raw: Any, base_dir: Path) -> list[tuple[dict[str, Any], str, str]]:
    """(entry, where, key) for every person, from an inline list or {csv: path}."""
    if raw is None:
        return []
    if isinstance(raw, list):
        out = []
        for index, item in enumerate(raw):
            key = f"roster[{index}]"
            if isinstance(item, str):
                item = {"username": item}
            if not isinstance(item, Mapping):
                raise ConfigError(key, item, "a mapping {username, keys, role, ...} or a username")
            out.append((dict(item), "", key))
        return out
    if isinstance(raw, Mapping) and "csv" in raw:
        extra = set(raw) - {"csv", "defaults", "staff"}
        if extra:
            raise ConfigError(f"roster.{sorted(extra)[0]}", raw[sorted(extra)[0]], "only 'csv', 'defaults' and 'staff'")
        path = Path(str(raw["csv"]))
        if not path.is_absolute():
            # Relative to the project directory, or to stacks/ where the stack files live.
            candidates = [base_dir / path, base_dir / "stacks" / path]
            path = next((c for c in candidates if c.exists()), candidates[0])
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(
                "roster.csv", str(raw["csv"]), f"a readable CSV file (relative to {base_dir}): {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError("roster.csv", str(raw["csv"]), "a UTF-8 encoded CSV file") from None
        defaults = raw.get("defaults") or {}
        if not isinstance(defaults, Mapping) or set(defaults) - {"role", "labs"}:
            raise ConfigError("roster.defaults", defaults, "a mapping with 'role' and/or 'labs'")
        staff = raw.get("staff") or {}
        if not isinstance(staff, Mapping) or any(str(r).lower() not in STAFF_ROLES for r in staff.values()):
            raise ConfigError("roster.staff", staff, "a mapping username: ta | instructor")
        staff = {str(k): str(v).lower() for k, v in staff.items()}
        return [(e, w, "roster") for e, w in parse_roster_csv(text, source=path.name, defaults=defaults, staff=staff)]
    raise ConfigError("roster", raw, "a list of people or {csv: path/to/export.csv}")


def build_people(
    entries: Sequence[tuple[dict[str, Any], str, str]], previous_uids: Mapping[str, int] | None = None
) -> tuple[Person, ...]:
    """Validate entries, check duplicates, assign UIDs. Sorted by username."""
    validated: list[tuple[dict[str, Any], str, str]] = []
    seen_names: dict[str, str] = {}
    seen_uids: dict[int, str] = {}
    for entry, where, key in entries:
        fields = _person(entry, where, key)
        name = fields["username"]
        if name in seen_names:
            raise ConfigError(
                f"{key}.username",
                name,
                f"a username not already used ({seen_names[name] or 'earlier entry'})",
                where=where,
            )
        seen_names[name] = where or key
        if fields["uid"] is not None:
            if fields["uid"] in seen_uids:
                raise ConfigError(
                    f"{key}.uid", fields["uid"], f"a UID not already used (by {seen_uids[fields['uid']]})", where=where
                )
            seen_uids[fields["uid"]] = name
        validated.append((fields, where, key))
    derived_names = [f["username"] for f, _, _ in validated if f["uid"] is None]
    if previous_uids:
        # Assignments that own homes (the previous term's ledger): the same rules as the ledger
        # itself, so what the preview shows is what the ledger will record, and a contradicting
        # explicit UID is refused here already.
        explicit_uids = {f["username"]: f["uid"] for f, _, _ in validated if f["uid"] is not None}
        derived = allocate_uids(derived_names, explicit_uids, previous_uids)
    else:
        derived = derive_uids(derived_names, taken=seen_uids)
    people = []
    for fields, _, _ in validated:
        explicit = fields["uid"] is not None
        uid = fields["uid"] if explicit else derived[fields["username"]]
        people.append(Person(**{**fields, "uid": uid, "uid_explicit": explicit}))
    return tuple(sorted(people, key=lambda p: p.username))


# --------------------------------------------------------------------------- term


def parse_grace(value: Any) -> timedelta:
    """term.grace in the one duration grammar (components.vocabulary): '7d', '48h', '2w', '0'."""
    from components.schema import TermModel, validate_section

    if value is None:
        return timedelta(0)
    model = validate_section(TermModel, {"start": "2026-01-01", "end": "2026-01-02", "grace": value}, "term")
    return model.grace


def parse_term(raw: Any) -> Term:
    """The term window from the schema's TermModel (components/schema.py declares its rules)."""
    from components.schema import TermModel, validate_section

    model = validate_section(TermModel, raw, "term")
    start, end = model.window()
    return Term(start=start, end=end, timezone=model.timezone, grace=model.grace, name=model.name)


# --------------------------------------------------------------------------- revocations


def parse_revocations(raw: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Revoked serials (sorted, unique) and keys (unique) from the schema's RevocationsModel."""
    from components.schema import RevocationsModel, validate_section

    if raw is None:
        return (), ()
    model = validate_section(RevocationsModel, raw, "revocations")
    return tuple(sorted(set(model.serials))), tuple(dict.fromkeys(model.keys))


# --------------------------------------------------------------------------- entry point


def parse_access(
    raw: Mapping[str, Any], *, base_dir: Path, previous_uids: Mapping[str, int] | None = None
) -> AccessConfig:
    """Validate the ACCESS_KEYS subset of a stack's config."""
    from components.schema import AccessModel, validate_section

    # Types and key names of every section first (with "did you mean"); the
    # person rules below are shared with CSV rows.
    model = validate_section(AccessModel, {k: raw[k] for k in ACCESS_KEYS if k in raw}, "")
    adopted = dict(model.adoptedUids)
    people = build_people(_roster_entries(raw.get("roster"), base_dir), {**adopted, **(previous_uids or {})})
    term = parse_term(raw["term"]) if raw.get("term") is not None else None
    if people and term is None:
        raise ConfigError(
            "term",
            None,
            "a term window {start, end, timezone, grace} whenever a roster is given (access ends with the term)",
        )
    serials, keys = parse_revocations(raw.get("revocations"))
    return AccessConfig(
        people=people,
        term=term,
        revoked_serials=serials,
        revoked_keys=keys,
        staff_keep_own_keys=model.staffKeepOwnKeys,
        adopted_uids=adopted,
    )


# --------------------------------------------------------------------------- rendering


def class_and_term_names(stack: str, term: Term | None) -> tuple[str, str]:
    """('cis90', 'fall2026') from stack 'cis90-fall2026'; term.name wins when set."""
    head, sep, tail = stack.rpartition("-")
    class_name = head if sep and head else stack
    term_name = (
        (term.name if term and term.name else "")
        or (tail if sep and head else "")
        or (term.start.date().isoformat() if term else "term")
    )
    return class_name, term_name


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def roster_document(access: AccessConfig, *, stack: str, uids: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The roster as the in-pod reconciler reads it (roster.json), without secrets or e-mail addresses.

    `uids` (from the UID ledger in Pulumi state) overrides the derived UIDs so
    that growth never moves anyone; explicit UIDs always win.
    """
    class_name, term_name = class_and_term_names(stack, access.term)
    serials = cert_serials(stack, access.people)
    people = []
    for person in access.people:
        uid = person.uid if person.uid_explicit or not uids else int(uids.get(person.username, person.uid))
        people.append(
            {
                "username": person.username,
                "uid": uid,
                "name": person.name,
                "role": person.role,
                "labs": person.labs,
                "keys": list(person.keys),
                "importIds": list(person.import_ids),
                "certificates": [
                    {
                        "serial": serials[(person.username, key)],
                        "fingerprint": key_fingerprint(key),
                        "keyId": f"{class_name}/{term_name}/{person.username}",
                    }
                    for key in person.keys
                ],
            }
        )
    term = access.term
    return {
        "version": 1,
        "stack": stack,
        "class": class_name,
        "term": None
        if term is None
        else {
            "name": term_name,
            "start": utc_stamp(term.start),
            "end": utc_stamp(term.end),
            "accessEnd": utc_stamp(term.access_end),
            "timezone": term.timezone,
            "grace": f"{int(term.grace.total_seconds())}s",
        },
        "staffKeepOwnKeys": access.staff_keep_own_keys,
        "people": people,
        "revocations": {"serials": list(access.revoked_serials), "keys": list(access.revoked_keys)},
    }


def allocate_uids(
    derived_names: Iterable[str], explicit: Mapping[str, int], ledger: Mapping[str, int]
) -> dict[str, int]:
    """The next UID ledger: everyone ever assigned keeps their UID (their home is still on disk).

    People who left stay in the ledger so that nobody new inherits their UID
    and they get it back if they return.
    """
    names = set(derived_names)
    holders = {int(uid): name for name, uid in ledger.items()}
    for name, uid in sorted(explicit.items()):
        # An explicit UID must not take one the ledger holds for someone else: their kept home is
        # owned by it, so the newcomer would own it; and one's own UID must not move either.
        holder = holders.get(int(uid))
        if holder is not None and holder != name:
            raise ConfigError(
                "roster.uid",
                uid,
                f"a UID not recorded for someone else (the UID ledger holds {uid} for {holder}, whose home it owns)",
                where=f"entry {name}",
            )
        if name in ledger and int(ledger[name]) != int(uid):
            raise ConfigError(
                "roster.uid",
                uid,
                f"{ledger[name]}, the UID the ledger holds for {name} (their home is owned by it; UIDs never move)",
                where=f"entry {name}",
            )
    taken = set(explicit.values()) | {uid for name, uid in ledger.items() if name not in names}
    assigned = derive_uids(names, taken=taken, previous={n: u for n, u in ledger.items() if n in names})
    return {**dict(ledger), **assigned, **dict(explicit)}


def check_reserved(access: AccessConfig, *, names: Iterable[str] = (), uids: Iterable[int] = ()) -> None:
    """Refuse roster entries that would collide with accounts the server makes itself (the stack's
    default `user`/`userID`): the reconciler would refuse them at run time, so say so up front."""
    taken_names, taken_uids = set(names), set(uids)
    for person in access.people:
        if person.username in taken_names:
            raise ConfigError(
                "roster.username", person.username, "a name other than the server's own account (classroom:user)"
            )
        if person.uid in taken_uids:
            raise ConfigError(
                "roster.uid",
                person.uid,
                "a UID other than the server's own account (classroom:userID)",
                where=f"entry {person.username}",
            )
