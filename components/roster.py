"""Roster: the class's people, their UIDs, term window and certificates.

Renders the validated roster into a ConfigMap that the login server mounts at
/etc/classroom/roster; `apply-roster.sh` in it is the hook rc.local runs at
boot, which applies the roster once and then keeps it applied with
`reconcile-roster --loop` (a ConfigMap change reaches the pod without a
restart). Signs one user certificate per (person, key), all held by one
`CertificateSet` resource, so an unchanged roster re-signs nothing.

UIDs come from a `UidLedger` kept in Pulumi state: derived UIDs are a pure
function of the set of names, but no pure function can also be stable when
the roster grows (a newcomer may collide with someone already placed), so the
ledger records every assignment and newcomers probe around it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from components.errors import ConfigError
from components.rosterdata import (
    AccessConfig,
    allocate_uids,
    cert_serials,
    class_and_term_names,
    key_fingerprint,
    roster_document,
)
from components.sshcert import USER_EXTENSIONS, CertificateRequest, CertificateSet

SCRIPTS = Path(__file__).parent / "scripts"
CONFIG_MAP_NAME = "roster"
ROSTER_MOUNT = "/etc/classroom/roster"

# rc.local runs this (with sh: ConfigMap files are not executable) when it exists.
APPLY_ROSTER_SH = f"""#!/bin/sh
# Installed by the classroom Roster component; run by rc.local at boot.
# Applies the roster once (so accounts and the KRL exist before students
# connect), then keeps it applied whenever the ConfigMap changes.
set -u
dir={ROSTER_MOUNT}
pidfile=/run/classroom-roster.pid
python3 "$dir/reconcile-roster" --roster "$dir/roster.json" \\
    || echo "apply-roster: the first pass reported errors (see above)" >&2
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    exit 0  # the loop is already running
fi
nohup python3 "$dir/reconcile-roster" --roster "$dir/roster.json" --loop "${{CLASSROOM_ROSTER_INTERVAL:-30}}" \\
    >>/var/log/classroom-roster.log 2>&1 &
echo $! > "$pidfile"
"""


class UidLedgerProvider(ResourceProvider):
    """Keeps every UID ever assigned in this stack; see rosterdata.allocate_uids."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        # A stack that adopts kept homes starts from the previous term's ledger (`adopted`).
        uids = allocate_uids(props["derived"], _int_map(props["explicit"]), _int_map(props.get("adopted") or {}))
        return CreateResult(id_="uid-ledger", outs={**props, "uids": uids})

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        changed = (
            sorted(_olds.get("derived") or []) != sorted(_news.get("derived") or [])
            or _int_map(_olds.get("explicit") or {}) != _int_map(_news.get("explicit") or {})
            or _int_map(_olds.get("adopted") or {}) != _int_map(_news.get("adopted") or {})
        )
        return DiffResult(changes=changed, replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        ledger = with_adopted(_int_map(_olds.get("uids") or {}), _int_map(_news.get("adopted") or {}))
        uids = allocate_uids(_news["derived"], _int_map(_news["explicit"]), ledger)
        return UpdateResult(outs={**_news, "uids": uids})


def with_adopted(ledger: Mapping[str, int], adopted: Mapping[str, int]) -> dict[str, int]:
    """The ledger plus adopted assignments it lacks; one that contradicts it is refused, never applied."""
    merged = dict(ledger)
    holders = {uid: name for name, uid in ledger.items()}
    for name, uid in sorted(adopted.items()):
        if name in merged and merged[name] != uid:
            raise ConfigError(
                "adoptedUids",
                uid,
                f"{merged[name]}, the UID this stack's ledger holds for {name} "
                "(their home is owned by it; UIDs never move)",
                where=name,
            )
        if holders.get(uid, name) != name:
            raise ConfigError(
                "adoptedUids",
                uid,
                f"a UID this stack's ledger does not hold for someone else (it holds {uid} for {holders[uid]})",
                where=name,
            )
        merged[name] = uid
        holders[uid] = name
    return merged


def _int_map(value: Mapping[str, Any]) -> dict[str, int]:
    # Numbers cross the engine boundary as floats.
    return {str(k): int(v) for k, v in value.items()}


class UidLedger(pulumi.dynamic.Resource):
    uids: pulumi.Output[dict[str, int]]

    def __init__(
        self,
        name: str,
        derived: list[str],
        explicit: dict[str, int],
        opts: pulumi.ResourceOptions | None = None,
        adopted: Mapping[str, int] | None = None,
    ) -> None:
        props: dict[str, Any] = {"derived": sorted(derived), "explicit": explicit, "uids": None}
        if adopted:  # absent otherwise: a stack that adopts nothing keeps its ledger's inputs as they were
            props["adopted"] = dict(adopted)
        super().__init__(UidLedgerProvider(), name, props, opts)


@dataclass
class RosterArgs:
    access: AccessConfig
    namespace: pulumi.Input[str]
    ca_private_key: pulumi.Input[str]  # secret, OpenSSH PEM (SshCertificateAuthority.private_key_openssh)
    stack: str  # stack name: part of every serial and key id
    labels: dict[str, str] = field(default_factory=dict)
    config_map_name: str = CONFIG_MAP_NAME


class Roster(pulumi.ComponentResource):
    """Accounts, UIDs, term window, revocations and user certificates of one class."""

    config_map: k8s.core.v1.ConfigMap
    config_map_name: pulumi.Output[str]
    revision: pulumi.Output[str]
    uids: pulumi.Output[dict[str, int]]
    certificates: pulumi.Output[dict[str, list[str]]]
    summary: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: RosterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("classroom:index:Roster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        access = args.access

        # Every kept home is owned by a UID recorded here: losing the ledger (`pulumi destroy
        # --exclude-protected`, a stack re-init) would re-derive UIDs and two students whose
        # derived UIDs collided would swap homes. So it outlives destroy like the homes do.
        ledger = UidLedger(
            f"{name}-uids",
            derived=[p.username for p in access.people if not p.uid_explicit],
            explicit={p.username: p.uid for p in access.people if p.uid_explicit},
            adopted=access.adopted_uids,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True, retain_on_delete=True)),
        )
        staff = [f"{p.username} ({p.role})" for p in access.people if p.staff]
        # Shown by every `pulumi preview`/`up`: who gets passwordless sudo, so a pull request that
        # changes it says so where reviewers look.
        pulumi.log.info(
            f"staff with passwordless sudo on the login server ({len(staff)}): "
            + (", ".join(staff) if staff else "none"),
            resource=self,
        )
        self.uids = ledger.uids

        document = ledger.uids.apply(lambda uids: roster_document(access, stack=args.stack, uids=uids))
        roster_json = document.apply(lambda doc: json.dumps(doc, indent=1, sort_keys=True) + "\n")
        self.revision = roster_json.apply(lambda text: hashlib.sha256(text.encode()).hexdigest()[:16])
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-configmap",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.config_map_name,
                namespace=args.namespace,
                labels={**args.labels, "app.kubernetes.io/component": "roster"},
            ),
            data={
                "roster.json": roster_json,
                "reconcile-roster": (SCRIPTS / "reconcile-roster").read_text(),
                "apply-roster.sh": APPLY_ROSTER_SH,
            },
            opts=child,
        )
        self.config_map_name = self.config_map.metadata.apply(lambda m: str(m.name))

        requests: dict[str, CertificateRequest] = {}
        term = access.term
        if term is not None:
            class_name, term_name = class_and_term_names(args.stack, term)
            serials = cert_serials(args.stack, access.people)
            for person in access.people:
                for key in person.keys:
                    requests[certificate_id(person.username, key)] = CertificateRequest(
                        public_key=key,
                        principal=person.username,
                        key_id=f"{class_name}/{term_name}/{person.username}",
                        serial=serials[(person.username, key)],
                        valid_after=int(term.start.timestamp()),
                        valid_before=int(term.access_end.timestamp()),
                        extensions=USER_EXTENSIONS,
                    )
        if requests:
            signed = CertificateSet(f"{name}-certificates", args.ca_private_key, requests, opts=child)
            order = {p.username: [certificate_id(p.username, key) for key in p.keys] for p in access.people if p.keys}
            self.certificates = pulumi.Output.secret(
                signed.certificates.apply(lambda certs: {user: [certs[i] for i in ids] for user, ids in order.items()})
            )
        else:
            self.certificates = pulumi.Output.secret(pulumi.Output.from_input({}))
        # What `classroom roster` needs to show status and write files: no keys, no e-mail.
        self.summary = document.apply(_summary)
        self.register_outputs(
            {
                "config_map_name": self.config_map_name,
                "uids": self.uids,
                "revision": self.revision,
                "certificates": self.certificates,
                "summary": self.summary,
            }
        )


def certificate_id(username: str, public_key: str) -> str:
    """Stable id of one (person, key) certificate: reordering keys re-signs nothing."""
    return f"{username}/{key_fingerprint(public_key)}"


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "stack": doc["stack"],
        "class": doc["class"],
        "term": doc["term"],
        "revocations": doc["revocations"],
        "people": [
            {
                "username": p["username"],
                "uid": p["uid"],
                "role": p["role"],
                "labs": p["labs"],
                "certificates": p["certificates"],
                "importIds": p["importIds"],
            }
            for p in doc["people"]
        ],
    }
