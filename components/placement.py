"""Which lab host runs which student's k3d cluster.

A student's cluster holds their work, and moving it means deleting it on one
host and creating an empty one on another. So placement must never move a
student because *someone else* joined or left the roster. That rules out any
scheme where students compete for slots in some order (a newcomer sorting
early would push an existing student to another host).

The rule used here is weighted rendezvous (highest-random-weight) hashing:
every (student, host) pair gets a pseudo-random score from SHA-256, scaled by
the host's `weight` (default 1; NOT its capacity, so raising a capacity never
moves anyone), and a student goes to the host with the highest score.
A student's host depends only on their own name and the set of hosts, never
on the other students, so:

- adding or removing students never moves anybody else;
- removing a host moves only the students that were on it;
- adding a host moves only students whose best score is now the new host
  (about capacity_new / total_capacity of them) — adding a host is therefore
  a planned change, visible in `pulumi preview`; pin students (`labs.pins`)
  to keep them where they are.

Capacity is a hard limit and is never "solved" by spilling a student to a
second-best host (spilling would make placement depend on other students
again). A host that would be over capacity is a ConfigError that says how
many more slots are needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    """A host as placement sees it."""

    name: str
    capacity: int
    weight: float = 1.0


def score(username: str, host: str, weight: float = 1.0) -> float:
    """Weighted rendezvous score; higher wins.

    -weight / ln(u) with u uniform in (0, 1) gives each host a share of
    students proportional to its weight (the standard weighted HRW form).
    """
    digest = hashlib.sha256(f"{host}\0{username}".encode()).digest()
    # 53 bits -> a float in (0, 1) exactly, never 0 or 1.
    u = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
    u = min(max(u, 2.0**-60), 1.0 - 2.0**-53)
    return -weight / math.log(u)


def preferred_host(username: str, hosts: Sequence[Slot]) -> str:
    """The host with the highest score for username (ties broken by host name)."""
    if not hosts:
        raise ValueError("no hosts")
    return max(hosts, key=lambda h: (score(username, h.name, h.weight), h.name)).name


def place(
    usernames: Iterable[str],
    hosts: Sequence[Slot],
    pins: Mapping[str, str] | None = None,
    *,
    key: str = "labs.hosts",
) -> dict[str, str]:
    """username -> host name for every student, or ConfigError.

    `pins` (username -> host name) override hashing for those students; they
    count against the host's capacity like everyone else.
    """
    pins = dict(pins or {})
    names = [h.name for h in hosts]
    placement: dict[str, str] = {}
    students = sorted(set(usernames))
    if students and not hosts:
        raise ConfigError(key, [], f"at least one lab host for the {len(students)} student(s) with labs")
    for user, host in pins.items():
        if host not in names:
            raise ConfigError(f"labs.pins.{user}", host, "the name of a host in labs.hosts: " + ", ".join(names))
    for user in students:
        placement[user] = pins.get(user) or preferred_host(user, hosts)
    load: dict[str, int] = {h.name: 0 for h in hosts}
    for host in placement.values():
        load[host] += 1
    over = [(h, load[h.name] - h.capacity) for h in hosts if load[h.name] > h.capacity]
    if over:
        detail = "; ".join(
            f"host '{h.name}' gets {load[h.name]} student(s) for capacity {h.capacity}: "
            f"{extra} more slot(s) needed there"
            for h, extra in over
        )
        total_missing = sum(extra for _, extra in over)
        raise ConfigError(
            key,
            {h.name: h.capacity for h in hosts},
            f"capacities that fit the roster ({detail}; {total_missing} slot(s) in all). Placement never "
            "spills a student to a second host, so raise those capacities, add a host, or pin students "
            "with labs.pins",
        )
    return placement
