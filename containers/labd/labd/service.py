"""Cluster lifecycle, session accounting, the reaper, and labd's state file.

Two kinds of lock: one state lock guards the in-memory record and its file
(held only for microseconds), and one operation lock per user serialises that
user's k3d calls (held for as long as k3d runs), so one student's slow
`cluster create` never delays another student's login.
"""

from __future__ import annotations

import json
import logging
import os
import string
import threading
import time
from collections.abc import Callable
from typing import Any

from labd.config import LabdConfig
from labd.engines import ROOTLESS, EngineError, make_engines
from labd.k3d import K3d, K3dError
from labd.render import ClusterValues, cluster_name, render_k3d_config, to_yaml, traefik_dynamic_config, write_atomic
from labd.webhooks import call_webhook

log = logging.getLogger("labd")

STATE_VERSION = 1
RUNNING, STOPPED, ABSENT, ERROR = "running", "stopped", "absent", "error"


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class LabService:
    def __init__(self, cfg: LabdConfig, k3d: K3d | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.k3d = k3d or K3d(cfg.k3d_binary, cfg.k3d_timeout)
        # The engine each student's cluster runs under: their own rootless one, or the shared one.
        self.engines = make_engines(cfg.engine, cfg.rootless)
        self.clock = clock
        self._state_lock = threading.RLock()
        self._op_locks: dict[str, threading.Lock] = {}
        self._busy: set[str] = set()
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self.users: dict[str, dict[str, Any]] = {}
        self._roster_cache: tuple[float, frozenset[str]] | None = None
        self._load()

    # ----- persistence -------------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.cfg.state_file, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return
        except (OSError, json.JSONDecodeError) as err:
            # Refuse to start on an unreadable state file: starting empty would
            # forget port allocations and hand one student's ports to another.
            raise SystemExit(
                f"labd: state file {self.cfg.state_file} is unreadable ({err}); "
                "fix or move it away (a fresh start re-adopts clusters from 'k3d cluster list')"
            ) from None
        if data.get("version") != STATE_VERSION:
            raise SystemExit(
                f"labd: state file {self.cfg.state_file} has version {data.get('version')!r}; "
                f"this labd reads version {STATE_VERSION}"
            )
        self.users = data.get("users", {})

    def _save(self) -> None:
        with self._state_lock:
            text = json.dumps({"version": STATE_VERSION, "users": self.users}, indent=2, sort_keys=True)
            write_atomic(self.cfg.state_file, text, 0o600)

    def _write_routes(self) -> None:
        if not self.cfg.traefik_file:
            return
        with self._state_lock:
            routes = [
                (u, r["cluster"], r["ports"]["http"], r["ports"]["https"])
                for u, r in self.users.items()
                if r["state"] != ABSENT
            ]
        config = traefik_dynamic_config(
            routes,
            self.cfg.lab_domain,
            self.cfg.backend_host,
            self.cfg.traefik_http_entrypoint,
            self.cfg.traefik_https_entrypoint,
        )
        # Traefik runs unprivileged and only needs to read this file.
        write_atomic(self.cfg.traefik_file, to_yaml(config), 0o644)

    def routes_yaml(self) -> str:
        with self._state_lock:
            routes = [
                (u, r["cluster"], r["ports"]["http"], r["ports"]["https"])
                for u, r in self.users.items()
                if r["state"] != ABSENT
            ]
        return to_yaml(
            traefik_dynamic_config(
                routes,
                self.cfg.lab_domain,
                self.cfg.backend_host,
                self.cfg.traefik_http_entrypoint,
                self.cfg.traefik_https_entrypoint,
            )
        )

    # ----- records -----------------------------------------------------------------------------------------

    def _allocate_ports(self) -> dict[str, int]:
        # every port of every record: an adopted cluster keeps the ports k3d published it on
        used = {port for r in self.users.values() for port in r["ports"].values()}
        base = self.cfg.port_base
        while base + 2 <= self.cfg.port_limit:
            if not {base, base + 1, base + 2} & used:
                return {"api": base, "http": base + 1, "https": base + 2}
            base += 3
        raise Conflict(f"no free ports left between portBase {self.cfg.port_base} and portLimit {self.cfg.port_limit}")

    def _record(self, user: str) -> dict[str, Any]:
        """The user's record, created (state absent) on first sight."""
        with self._state_lock:
            record = self.users.get(user)
            if record is None:
                record = {
                    "cluster": cluster_name(self.cfg.cluster_prefix, user),
                    "state": ABSENT,
                    "ports": self._allocate_ports(),
                    "initialized": False,
                    "sessions": {},
                    "sessionCount": 0,
                    "lastSessionSeen": None,
                    "lastActivity": self.clock(),
                    "lastEvent": "new",
                    "error": "",
                }
                self.users[user] = record
            return record

    def in_roster(self, user: str) -> bool:
        if not self.cfg.roster_file:
            return True
        try:
            mtime = os.stat(self.cfg.roster_file).st_mtime
        except OSError:
            return False
        if self._roster_cache is None or self._roster_cache[0] != mtime:
            with open(self.cfg.roster_file, encoding="utf-8") as handle:
                names = frozenset(line.strip() for line in handle if line.strip() and not line.startswith("#"))
            self._roster_cache = (mtime, names)
        return user in self._roster_cache[1]

    def status(self, user: str) -> dict[str, Any]:
        with self._state_lock:
            record = self.users.get(user)
            if record is None:
                return {"user": user, "state": ABSENT, "sessions": 0}
            return {
                "user": user,
                "cluster": record["cluster"],
                "state": record["state"],
                "busy": user in self._busy,
                "sessions": len(record["sessions"]),
                "sessionCount": record["sessionCount"],
                "lastSessionSeen": record["lastSessionSeen"],
                "host": f"{user}.{self.cfg.lab_domain}",
                "ports": dict(record["ports"]),
                "error": record["error"],
            }

    def list_all(self) -> list[dict[str, Any]]:
        with self._state_lock:
            names = sorted(self.users)
        return [self.status(u) for u in names]

    # ----- sessions ----------------------------------------------------------------------------------------

    def open_session(self, user: str, session: str, host: str) -> dict[str, Any]:
        now = self.clock()
        with self._state_lock:
            record = self._record(user)
            if session not in record["sessions"]:
                record["sessionCount"] += 1
            record["sessions"][session] = {"opened": now, "seen": now, "host": host}
            record["lastSessionSeen"] = now
            record["lastActivity"] = now
            record["lastEvent"] = "open"
            self._save()
        self.ensure_async(user)
        return self.status(user)

    def close_session(self, user: str, session: str) -> dict[str, Any]:
        now = self.clock()
        with self._state_lock:
            record = self.users.get(user)
            if record is not None and record["sessions"].pop(session, None) is not None:
                record["lastSessionSeen"] = now
                record["lastActivity"] = now
                record["lastEvent"] = "close"
                self._save()
        return self.status(user)

    def sync_host(self, host: str, live: list[tuple[str, str]]) -> dict[str, int]:
        """Make labd's sessions from host exactly the live list the login server reports.

        This is how sessions whose close event was lost (sshd killed, network
        drop, pod restart) end: the login server's periodic sync no longer
        lists them.
        """
        now = self.clock()
        live_ids = {sid for sid, _ in live}
        closed = opened = 0
        to_ensure: list[str] = []
        with self._state_lock:
            for record in self.users.values():
                for sid, info in list(record["sessions"].items()):
                    if info.get("host") == host and sid not in live_ids:
                        del record["sessions"][sid]
                        record["lastActivity"] = now
                        record["lastEvent"] = "close"
                        closed += 1
            for sid, user in live:
                record = self._record(user)
                if sid in record["sessions"]:
                    record["sessions"][sid]["seen"] = now
                else:
                    record["sessions"][sid] = {"opened": now, "seen": now, "host": host}
                    record["sessionCount"] += 1
                    opened += 1
                    to_ensure.append(user)
                record["lastSessionSeen"] = now
            self._save()
        for user in to_ensure:
            self.ensure_async(user)
        return {"closed": closed, "added": opened, "live": len(live_ids)}

    # ----- operations --------------------------------------------------------------------------------------

    def _k3d_for(self, user: str) -> K3d:
        """k3d pointed at user's engine, started if need be (the shared engine: labd's own k3d)."""
        if self.cfg.engine != ROOTLESS:
            return self.k3d
        env = self.engines.env(user, start=True)
        return self.k3d.for_engine(env or {}, run_as=self.engines.identity(user))

    def _k3d_if_running(self, user: str) -> K3d | None:
        """k3d pointed at user's engine if that engine runs; None if it does not."""
        if self.cfg.engine != ROOTLESS:
            return self.k3d
        env = self.engines.env(user, start=False)
        return None if env is None else self.k3d.for_engine(env, run_as=self.engines.identity(user))

    def _op_lock(self, user: str) -> threading.Lock:
        with self._state_lock:
            return self._op_locks.setdefault(user, threading.Lock())

    def _set(self, user: str, **fields: Any) -> None:
        with self._state_lock:
            self.users[user].update(fields)
            self._save()

    def _hook(self, event: str, user: str, cluster: str) -> bool:
        hook = self.cfg.init_hook if event == "init" else self.cfg.cleanup_hook
        if hook is None:
            return True
        payload = {
            "class": self.cfg.class_name,
            "term": self.cfg.term,
            "user": user,
            "cluster": cluster,
            "event": event,
            "time": str(int(self.clock())),
        }
        return call_webhook(hook, payload)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def ensure_async(self, user: str) -> None:
        with self._state_lock:
            if user in self._busy:
                return
            self._busy.add(user)

        def run() -> None:
            try:
                self.ensure(user)
            except (K3dError, Conflict) as err:
                log.error("ensure %s failed: %s", user, err)
            finally:
                with self._state_lock:
                    self._busy.discard(user)

        self._spawn(f"ensure-{user}", run)

    def ensure(self, user: str) -> dict[str, Any]:
        """Create the cluster if absent, start it if stopped."""
        record = self._record(user)
        with self._op_lock(user):
            cluster = record["cluster"]
            try:
                k3d = self._k3d_for(user)
            except EngineError as err:
                self._set(user, state=ERROR, error=str(err))
                raise
            actual = k3d.list().get(cluster)
            try:
                if actual is None:
                    values = ClusterValues(
                        user,
                        cluster,
                        record["ports"]["api"],
                        record["ports"]["http"],
                        record["ports"]["https"],
                        self.cfg.class_name,
                        self.cfg.term,
                        self.cfg.lab_domain,
                        self.cfg.backend_host,
                    )
                    config = render_k3d_config(self.cfg.k3d_template, values)
                    path = os.path.join(self.cfg.work_dir, f"{cluster}.yaml")
                    write_atomic(path, to_yaml(config), 0o600)
                    if self.cfg.engine == ROOTLESS:
                        # k3d reads it as the student's host user; the directory stays root's, traversable.
                        uid, gid = self.engines.identity(user)
                        os.chown(path, uid, gid, follow_symlinks=False)
                        os.chmod(self.cfg.work_dir, 0o711)  # noqa: S103 (search only: its files are 0600)
                    log.info("creating cluster %s for %s", cluster, user)
                    k3d.create(path)
                    # Routes are written under the state lock so nobody sees
                    # "running" before Traefik's file names the cluster.
                    with self._state_lock:
                        self._set(user, state=RUNNING, error="", lastActivity=self.clock(), lastEvent="ensure")
                        self._write_routes()
                    if not record["initialized"] and self._hook("init", user, cluster):
                        self._set(user, initialized=True)
                elif not actual.running:
                    log.info("starting cluster %s for %s", cluster, user)
                    k3d.start(cluster)
                    self._set(user, state=RUNNING, error="", lastActivity=self.clock(), lastEvent="ensure")
                else:
                    self._set(user, state=RUNNING, error="")
            except K3dError as err:
                self._set(user, state=ERROR, error=str(err))
                raise
        return self.status(user)

    def stop(self, user: str, reason: str = "request") -> dict[str, Any]:
        with self._state_lock:
            if user not in self.users:
                raise NotFound(f"no cluster for user {user!r}")
            record = self.users[user]
        with self._op_lock(user):
            if reason == "idle":
                # A login may have arrived between the reaper's check and
                # this lock; stopping now would only make it wait for a start.
                with self._state_lock:
                    if record["sessions"] or user in self._busy:
                        return self.status(user)
            cluster = record["cluster"]
            k3d = self._k3d_if_running(user)
            actual = k3d.list().get(cluster) if k3d is not None else None
            if k3d is None:
                # No engine running: none of its containers can be.
                self._set(user, state=STOPPED if record["state"] != ABSENT else ABSENT)
            elif actual is None:
                self._set(user, state=ABSENT)
            elif actual.running:
                log.info("stopping cluster %s for %s (%s)", cluster, user, reason)
                try:
                    k3d.stop(cluster)
                except K3dError as err:
                    self._set(user, state=ERROR, error=str(err))
                    raise
                self._set(user, state=STOPPED, error="")
                self._hook("stop", user, cluster)
            else:
                self._set(user, state=STOPPED)
            if k3d is not None and self.cfg.engine == ROOTLESS:
                # Nothing of the student's runs now: their engine need not either (ensure starts it again).
                self.engines.stop(user)
        return self.status(user)

    def delete(self, user: str) -> dict[str, Any]:
        with self._state_lock:
            record = self.users.get(user)
        cluster = record["cluster"] if record else cluster_name(self.cfg.cluster_prefix, user)
        with self._op_lock(user):
            engine_made = self.cfg.engine == ROOTLESS and user in self.engines.students()
            k3d = self._k3d_for(user) if self.cfg.engine != ROOTLESS or engine_made else None
            if k3d is not None and cluster in k3d.list():
                log.info("deleting cluster %s for %s", cluster, user)
                k3d.delete(cluster)
                self._hook("delete", user, cluster)
            if engine_made:
                # The student's engine, its images and its host user go with the cluster.
                self.engines.remove(user)
            with self._state_lock:
                self.users.pop(user, None)
                self._save()
            self._write_routes()
        return {"user": user, "cluster": cluster, "state": "deleted"}

    def kubeconfig(self, user: str) -> str:
        with self._state_lock:
            record = self.users.get(user)
            if record is None:
                raise NotFound(f"no cluster for user {user!r}")
            if record["state"] != RUNNING:
                raise Conflict(f"cluster for {user!r} is {record['state']}, not running")
        # "$host" by default: <user>.<labDomain> resolves to the lab host already
        # (Traefik needs that DNS), and the default k3d template puts it in the
        # API certificate (--tls-san), so kubectl verifies the name it dials.
        server = string.Template(self.cfg.kubeconfig_server).substitute(
            host=f"{user}.{self.cfg.lab_domain}", user=user, lab_domain=self.cfg.lab_domain
        )
        k3d = self._k3d_for(user)
        return k3d.kubeconfig(record["cluster"], server, record["ports"]["api"])

    # ----- reconcile and reaper ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Align records with what k3d reports; adopt clusters labd made but forgot."""
        actual = self._list_every_engine()
        with self._state_lock:
            known = {r["cluster"]: u for u, r in self.users.items()}
            for record in self.users.values():
                info = actual.get(record["cluster"])
                record["state"] = ABSENT if info is None else (RUNNING if info.running else STOPPED)
                if info is not None and info.ports is not None and self._ports_taken(info.ports, record):
                    log.error(
                        "cluster %s says it is published on %s, ports of another student's record; keeping %s",
                        record["cluster"],
                        info.ports,
                        record["ports"],
                    )
                elif info is not None and info.ports is not None and info.ports != record["ports"]:
                    # Traefik must route to where the cluster really is, whatever the record says.
                    log.warning(
                        "cluster %s is published on %s, not on the recorded %s; recording what k3d says",
                        record["cluster"],
                        info.ports,
                        record["ports"],
                    )
                    record["ports"] = dict(info.ports)
            for name, info in actual.items():
                if name in known or not name.startswith(self.cfg.cluster_prefix):
                    continue
                user = name[len(self.cfg.cluster_prefix) :]
                if cluster_name(self.cfg.cluster_prefix, user) != name or user in self.users:
                    log.warning("cluster %s has the lab prefix but no recorded owner; leaving it alone", name)
                    continue
                record = self._record(user)
                record["state"] = RUNNING if info.running else STOPPED
                record["initialized"] = True
                if info.ports is not None and self._ports_taken(info.ports, record):
                    log.error("adopted cluster %s lists ports %s another record holds; reallocated", name, info.ports)
                elif info.ports is not None:
                    # The ports the cluster is really published on: routes keep pointing at it.
                    record["ports"] = dict(info.ports)
                    log.warning("adopted cluster %s for %s with its published ports %s", name, user, info.ports)
                else:
                    log.warning("adopted cluster %s for %s; k3d lists no ports for it, reallocated", name, user)
            self._save()
        self._write_routes()

    def _ports_taken(self, ports: dict[str, int], mine: dict[str, Any]) -> bool:
        """Whether any of ports is recorded for another student (whose routes must not move to it)."""
        with self._state_lock:
            others = {p for r in self.users.values() if r is not mine for p in r["ports"].values()}
        return bool(set(ports.values()) & others)

    def _list_every_engine(self) -> dict[str, Any]:
        """k3d's view of every cluster: the shared engine's, or each student's own cluster from their engine.

        A student's engine is theirs to fill (an escape from a node gives its owner the engine), so from
        it labd takes only the cluster of that student's name, and never lets one override another record.
        """
        if self.cfg.engine != ROOTLESS:
            return self.k3d.list()
        actual: dict[str, Any] = {}
        # Only students labd made an engine for can have a cluster; asking about others would make them one.
        for user in self.engines.students():
            try:
                was_running = self._k3d_if_running(user) is not None
                k3d = self._k3d_for(user)
                cluster = cluster_name(self.cfg.cluster_prefix, user)
                info = k3d.list().get(cluster)
            except K3dError as err:
                # One student's broken engine must not keep labd from serving the others.
                log.error("cannot list %s's engine at reconcile: %s", user, err)
                continue
            if info is not None:
                actual[cluster] = info
            if not was_running and not (info is not None and info.running):
                # Started only to be asked: a stopped cluster's engine stays stopped.
                self.engines.stop(user)
        return actual

    def reap(self) -> list[str]:
        """Stop clusters nobody uses; drop sessions not refreshed within sessionTtl."""
        now = self.clock()
        due: list[str] = []
        with self._state_lock:
            changed = False
            for user, record in self.users.items():
                for sid, info in list(record["sessions"].items()):
                    if now - info["seen"] >= self.cfg.session_ttl:
                        del record["sessions"][sid]
                        changed = True
                if record["state"] != RUNNING or record["sessions"] or user in self._busy:
                    continue
                wait = self.cfg.stop_grace if record["lastEvent"] == "close" else self.cfg.idle_timeout
                if now - float(record["lastActivity"]) >= wait:
                    due.append(user)
            if changed:
                self._save()
        for user in due:
            try:
                self.stop(user, reason="idle")
            except (K3dError, NotFound) as err:
                log.error("reaper could not stop %s: %s", user, err)
        return due

    def start_reaper(self) -> None:
        def loop() -> None:
            while not self._stop_event.wait(self.cfg.reaper_interval):
                try:
                    self.reap()
                except Exception:  # the reaper must outlive any single failure
                    log.exception("reaper pass failed")

        self._spawn("reaper", loop)

    def shutdown(self) -> None:
        self._stop_event.set()
