"""The Docker engine each student's k3d cluster runs under.

`shared`: every cluster on the one engine k3d finds by itself (DOCKER_HOST of
labd's environment, else /var/run/docker.sock). k3d's nodes are privileged
containers, so a student with cluster-admin on their own cluster can become
root on the lab host through it.

`rootless` (the default): every student gets a host user of their own
(`<userPrefix><student>`, its own /etc/subuid and /etc/subgid range) and a
rootless dockerd (`dockerd-rootless.sh`: rootlesskit, slirp4netns) running as
that user, with its data under `<dataDir>/<host user>` and its socket under
`<runDir>/<host user>`, both 0700 and owned by that user. k3d is pointed at
that socket (DOCKER_HOST) for every call about that student. The engine runs
in a user namespace where root is the host user, so whatever escapes a node,
privileged or not, is that unprivileged user on the host: it owns its own
engine and nothing else. See containers/labd/SECURITY.md.

labd runs as root to do this (it creates the host users and starts the
engines with their uid and gid); it was already root-equivalent through the
docker group. An engine outlives labd (its own session, its pid in
<runDir>/.<host user>.pid), as the shared docker.service did, and is
adopted when labd starts again. It stops when the student's cluster stops
(labd starts it again with the cluster) and is removed, with its host user
and data, when the student is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from labd.k3d import K3dError

log = logging.getLogger("labd")

SHARED, ROOTLESS = "shared", "rootless"
ENGINES = (SHARED, ROOTLESS)
# Written into the host user's GECOS field: labd uses and removes only accounts that carry it.
MARKER = "labd engine for "
MAX_LOGIN_NAME = 32


class EngineError(K3dError):
    """A student's engine could not be made, started or reached (handled wherever a k3d failure is)."""


@dataclass(frozen=True)
class RootlessConfig:
    user_prefix: str = "labu-"
    data_dir: str = "/var/lib/labd/engines"
    run_dir: str = "/run/labd/engines"
    dockerd_rootless: str = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
    docker_binary: str = "/usr/bin/docker"
    # Extra dockerd arguments for every engine (e.g. a default OCI runtime).
    dockerd_args: tuple[str, ...] = ()
    # Image tarballs (`docker save` output) loaded into each engine when it starts:
    # every engine has its own image store, and lab hosts may have no registry.
    preload_images: tuple[str, ...] = ()
    start_timeout: float = 60.0


def host_user_for(prefix: str, student: str) -> str:
    """The host account of student's engine: prefix + name, or prefix + a hash if that is too long."""
    name = prefix + student
    if len(name) <= MAX_LOGIN_NAME and re.fullmatch(r"[a-z_][a-z0-9_-]*", name):
        return name
    return prefix + hashlib.sha256(student.encode()).hexdigest()[:12]


class SharedEngine:
    """The one engine of labd's own environment (the old behaviour)."""

    kind = SHARED

    def env(self, student: str, start: bool = True) -> dict[str, str] | None:
        return {}

    def students(self) -> list[str]:
        return []

    def stop(self, student: str) -> None:
        return None

    def remove(self, student: str) -> None:
        return None

    def identity(self, student: str) -> tuple[int, int]:
        raise EngineError("the shared engine has no host user per student")


class RootlessEngines:
    kind = ROOTLESS

    def __init__(self, cfg: RootlessConfig) -> None:
        self.cfg = cfg
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # ----- paths -------------------------------------------------------------------------------------------

    def host_user(self, student: str) -> str:
        return host_user_for(self.cfg.user_prefix, student)

    def run_dir(self, student: str) -> str:
        return os.path.join(self.cfg.run_dir, self.host_user(student))

    def data_dir(self, student: str) -> str:
        return os.path.join(self.cfg.data_dir, self.host_user(student))

    def socket(self, student: str) -> str:
        return os.path.join(self.run_dir(student), "docker.sock")

    def docker_host(self, student: str) -> str:
        return "unix://" + self.socket(student)

    # labd's own files about an engine sit beside the user's directories, in root-owned ones: root never
    # opens a path inside a directory the student's host user (an escaped student) can change.
    def pid_file(self, student: str) -> str:
        return os.path.join(self.cfg.run_dir, f".{self.host_user(student)}.pid")

    def log_file(self, student: str) -> str:
        return os.path.join(self.cfg.data_dir, f".{self.host_user(student)}.log")

    def _marker(self, student: str) -> str:
        return os.path.join(self.cfg.data_dir, f".{self.host_user(student)}.preloaded")

    def identity(self, student: str) -> tuple[int, int]:
        """(uid, gid) of student's host user."""
        entry = self._account(student)
        if entry is None:
            raise EngineError(f"{student} has no engine account")
        return entry.pw_uid, entry.pw_gid

    def _as_user(self, student: str, argv: list[str]) -> list[str]:
        uid, gid = self.identity(student)
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]

    def _student_lock(self, student: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(student, threading.Lock())

    # ----- the host user -----------------------------------------------------------------------------------

    def _account(self, student: str) -> pwd.struct_passwd | None:
        name = self.host_user(student)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if entry.pw_gecos != MARKER + student or entry.pw_uid == 0:
            # Never take over an account labd did not make for this student.
            raise EngineError(f"host user {name!r} exists but is not labd's engine account for {student!r}")
        return entry

    def ensure_account(self, student: str) -> pwd.struct_passwd:
        entry = self._account(student)
        if entry is None:
            name = self.host_user(student)
            argv = [
                "useradd",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                self.data_dir(student),
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                MARKER + student,
                name,
            ]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise EngineError(f"useradd {name} exited {done.returncode}: {done.stderr.strip()}")
            log.info("made host user %s for %s's engine", name, student)
            entry = pwd.getpwnam(name)
        for path in ("/etc/subuid", "/etc/subgid"):
            if not _has_range(path, entry.pw_name, entry.pw_uid):
                raise EngineError(
                    f"{path} has no range for {entry.pw_name}: a rootless engine needs one "
                    "(useradd adds it when /etc/subuid and /etc/subgid exist; see SUB_UID_COUNT in /etc/login.defs)"
                )
        return entry

    # ----- the engine --------------------------------------------------------------------------------------

    def _answers(self, student: str) -> bool:
        if not os.path.exists(self.socket(student)):
            return False
        done = subprocess.run(
            self._as_user(student, [self.cfg.docker_binary, "version", "--format", "{{.Server.Version}}"]),
            env=self._client_env(student),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.returncode == 0

    def _client_env(self, student: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "DOCKER_HOST": self.docker_host(student),
            "HOME": self.data_dir(student),
        }

    def _engine_pid(self, student: str) -> int | None:
        """The pid of student's running rootlesskit, if the pid file names one that is really theirs."""
        try:
            with open(self.pid_file(student), encoding="ascii") as handle:
                pid = int(handle.read().strip())
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                uid_line = next(line for line in handle if line.startswith("Uid:"))
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv0 = handle.read().split(b"\0")[0]
        except (OSError, ValueError, StopIteration):
            return None
        entry = pwd.getpwnam(self.host_user(student)) if self._account(student) else None
        if entry is None or int(uid_line.split()[1]) != entry.pw_uid or not argv0.endswith(b"rootlesskit"):
            return None
        return pid

    def running(self, student: str) -> bool:
        return self._engine_pid(student) is not None and self._answers(student)

    def env(self, student: str, start: bool = True) -> dict[str, str] | None:
        """k3d's environment for student's engine (started if need be); None if not running and start is False."""
        with self._student_lock(student):
            if not self.running(student):
                if self._engine_pid(student) is not None:
                    # Alive but not answering on its socket (its owner may have moved it): a second engine
                    # on the same data would fail, and labd does not guess.
                    raise EngineError(f"{student}'s engine runs but does not answer on {self.socket(student)}")
                if not start:
                    return None
                self._start(student)
        # k3d must run as the student's host user (identity) with it: the socket's directory is that user's.
        return {"DOCKER_HOST": self.docker_host(student), "HOME": self.data_dir(student)}

    def _start(self, student: str) -> None:
        entry = self.ensure_account(student)
        uid, gid = entry.pw_uid, entry.pw_gid
        for parent in (self.cfg.run_dir, self.cfg.data_dir):
            os.makedirs(parent, mode=0o755, exist_ok=True)
        run, data = self.run_dir(student), self.data_dir(student)
        for path in (run, data):
            os.makedirs(path, mode=0o700, exist_ok=True)
            _own_private(path, uid, gid)
        # A stale socket or rootlesskit state from a killed engine makes the next start fail.
        # (removed as root inside the user's directory: unlink and rmtree do not follow symlinks)
        for stale in ("docker.sock", "docker.pid", "dockerd-rootless"):
            target = os.path.join(run, stale)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            elif os.path.lexists(target):
                os.unlink(target)
        if not os.path.exists(self.cfg.dockerd_rootless):
            raise EngineError(
                f"{self.cfg.dockerd_rootless} not found (rootless.dockerdRootless): Debian's docker.io ships it, "
                "with rootlesskit, slirp4netns and uidmap"
            )
        env = {
            "HOME": data,
            "USER": entry.pw_name,
            "LOGNAME": entry.pw_name,
            "XDG_RUNTIME_DIR": run,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        argv = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--init-groups",
            self.cfg.dockerd_rootless,
            "--data-root",
            os.path.join(data, "docker"),
            "--host",
            self.docker_host(student),
            "--pidfile",
            os.path.join(run, "docker.pid"),
            *self.cfg.dockerd_args,
        ]
        log_path = self.log_file(student)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(log_path, flags, 0o600), "ab") as log_file:
            # Its own session: the engine outlives labd, like docker.service did.
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with open(self.pid_file(student) + ".tmp", "w", encoding="ascii") as handle:
            handle.write(f"{proc.pid}\n")
        os.replace(self.pid_file(student) + ".tmp", self.pid_file(student))
        log.info("starting %s's rootless engine as %s (pid %d)", student, entry.pw_name, proc.pid)
        deadline = time.monotonic() + self.cfg.start_timeout
        while not self._answers(student):
            if proc.poll() is not None:
                raise EngineError(
                    f"{student}'s engine exited {proc.returncode} at start; log {log_path}: {_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                self._stop_pid(proc.pid)
                raise EngineError(
                    f"{student}'s engine did not answer within {self.cfg.start_timeout:g}s; "
                    f"log {log_path}: {_tail(log_path)}"
                )
            time.sleep(0.2)
        self._preload(student)

    def _preload(self, student: str) -> None:
        """Load the preload images into student's engine once (again when the list or a file changes)."""
        try:
            wanted = "".join(f"{path} {os.stat(path).st_mtime_ns}\n" for path in self.cfg.preload_images)
        except OSError as err:
            raise EngineError(f"rootless.preloadImages: {err.filename}: {err.strerror}") from None
        marker = self._marker(student)
        try:
            with open(marker, encoding="utf-8") as handle:
                if handle.read() == wanted:
                    return
        except OSError:
            pass
        for image in self.cfg.preload_images:
            # The tarball goes in on stdin: the host user need not be able to read its path.
            with open(image, "rb") as tarball:
                done = subprocess.run(
                    self._as_user(student, [self.cfg.docker_binary, "load"]),
                    stdin=tarball,
                    env=self._client_env(student),
                    capture_output=True,
                    timeout=300,
                    check=False,
                )
            if done.returncode != 0:
                raise EngineError(
                    f"docker load {image} into {student}'s engine exited {done.returncode}: "
                    f"{done.stderr.decode(errors='replace').strip()}"
                )
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(wanted)

    @staticmethod
    def _stop_pid(pid: int, timeout: float = 30) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped = 0
                if not os.path.exists(f"/proc/{pid}"):
                    return
            if reaped == pid:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return

    def stop(self, student: str) -> None:
        """Stop student's engine (its containers stop with it)."""
        with self._student_lock(student):
            pid = self._engine_pid(student)
            if pid is not None:
                log.info("stopping %s's engine (pid %d)", student, pid)
                self._stop_pid(pid)

    def remove(self, student: str) -> None:
        """Stop the engine, then remove its data, its runtime directory and its host user."""
        self.stop(student)
        with self._student_lock(student):
            entry = self._account(student)
            shutil.rmtree(self.run_dir(student), ignore_errors=True)
            shutil.rmtree(self.data_dir(student), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._marker(student))
            for path in (self.log_file(student), self.pid_file(student)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if entry is not None:
                done = subprocess.run(
                    ["userdel", entry.pw_name], capture_output=True, text=True, timeout=60, check=False
                )
                if done.returncode != 0:
                    raise EngineError(f"userdel {entry.pw_name} exited {done.returncode}: {done.stderr.strip()}")

    def students(self) -> list[str]:
        """Every student with an engine account of labd's (from the accounts' GECOS marker)."""
        found = []
        for entry in pwd.getpwall():
            if entry.pw_name.startswith(self.cfg.user_prefix) and entry.pw_gecos.startswith(MARKER):
                student = entry.pw_gecos[len(MARKER) :]
                if self.host_user(student) == entry.pw_name:
                    found.append(student)
        return sorted(found)


def _has_range(path: str, name: str, uid: int) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)) and parts[2].isdigit() and int(parts[2]) >= 65536:
                    return True
    except OSError:
        return False
    return False


def _own_private(path: str, uid: int, gid: int) -> None:
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise EngineError(f"{path} is not a directory")
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, 0o700)


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().strip().splitlines()[-3:])
    except OSError:
        return "(no log)"


def make_engines(kind: str, rootless: RootlessConfig) -> SharedEngine | RootlessEngines:
    return RootlessEngines(rootless) if kind == ROOTLESS else SharedEngine()
