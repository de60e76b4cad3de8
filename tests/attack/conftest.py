"""Attack tier: a hostile student against the login server as the image really ships it.

The root file system is Debian's (debootstrap, the image's package list, the
same cache the image tests use), set up by the image's own
containers/common/setup-image.sh in a chroot, so /etc/pam.d/sshd and the
common-* files are exactly what openssh-server, libpam-runtime and
libpam-systemd install plus what setup-image.sh changes. The lab session is
installed the way rc.local installs it (install-lab-session.sh), the roster
applied by reconcile-roster, and the real sshd of that root listens on
127.0.0.1 with the project's sshd_config. labd is the real labd (driving the
k3d double, see tests/labs) on 127.0.0.1.

Every test plays a student: it writes only what a student can write (files
in their own home, owned by them) and connects with the real ssh client.
Each asserts the attack failed and that nothing changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.rosterdata import parse_access, roster_document
from components.sshcert import ca_public_key_line, known_hosts_line
from tests.hostkeys import install_host_keys
from tests.labs.conftest import labd_factory  # noqa: F401  (a fixture)
from tests.labs.support import Labd, wait_for
from tests.ssh.sshd import SCRIPTS, Sshd, free_port, new_key, ssh
from tests.sshclient import ssh_argv
from tests.unit.test_images import (  # noqa: F401  (debian_rootfs is a fixture)
    SETUP_DIR_IN_IMAGE,
    apply_copies,
    debian_rootfs,
)

REPO = Path(__file__).resolve().parents[2]
STACK = "cis90-test"
DAY = 86400
LAB_DIR = "/etc/classroom/lab-session"
HOOK_DIR = "/etc/lab-session-hook"
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def in_chroot(root: Path, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(["chroot", str(root), "/bin/sh", "-c", command], env=CHROOT_ENV, timeout=timeout)


@contextmanager
def mounted(lowers: list[Path], scratch: Path, devices: bool = False) -> Iterator[Path]:
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    done: list[Path] = []
    try:
        result = run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}",
                str(merged),
            ]
        )
        assert result.returncode == 0, result.stderr
        done.append(merged)
        assert run(["mount", "-t", "proc", "proc", str(merged / "proc")]).returncode == 0
        done.append(merged / "proc")
        if devices:
            assert run(["mount", "--bind", "/dev", str(merged / "dev")]).returncode == 0
            done.append(merged / "dev")
        yield merged
    finally:
        for path in reversed(done):
            run(["umount", "--lazy", str(path)])


@pytest.fixture(scope="session")
def image_layer(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:  # noqa: F811
    """setup-image.sh and install-lab-session.sh run in a chroot: the image's own /etc/pam.d."""
    scratch = tmp_path_factory.mktemp("attack-image")
    with mounted([debian_rootfs], scratch) as root:
        apply_copies(root)
        setup = in_chroot(root, f"UNMINIMIZE=0 {SETUP_DIR_IN_IMAGE}/setup-image.sh", timeout=600)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        lab = root / LAB_DIR.lstrip("/")
        lab.mkdir(parents=True)
        for name in ("lab-session-hook", "pam-lab-session", "install-lab-session.sh"):
            shutil.copy(SCRIPTS / name, lab / name)
        installed = in_chroot(root, f"sh {LAB_DIR}/install-lab-session.sh {LAB_DIR}")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        target = root / "usr/local/sbin/reconcile-roster"
        shutil.copy(SCRIPTS / "reconcile-roster", target)
        target.chmod(0o755)
        shutil.copy(SCRIPTS / "sshd_config", root / "etc/ssh/sshd_config")
    return [scratch / "upper", debian_rootfs]


@dataclass
class Server:
    """One login server: its root, sshd, labd, the people and their client keys."""

    root: Path
    tmp: Path
    sshd: Sshd
    labd: Labd
    known_hosts: Path
    keys: dict[str, tuple[Path, str]]
    people: list[dict[str, Any]]
    term: dict[str, Any]
    doc: dict[str, Any] = field(default_factory=dict)
    uids: dict[str, int] = field(default_factory=dict)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ---------------------------------------------------------------- the roster
    def write_roster(
        self,
        people: list[dict[str, Any]] | None = None,
        access_end: int | None = None,
        raw: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """roster.json as the Roster component renders it; `access_end` moves the end of access
        to that instant (the clock passing it), `raw` gives the stack's access keys verbatim."""
        if raw is None:
            raw = {"roster": people if people is not None else self.people, "term": self.term, **extra}
        access = parse_access(raw, base_dir=self.tmp)
        doc = roster_document(access, stack=STACK)
        if access_end is not None:
            doc["term"]["accessEnd"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(access_end))
        target = self.root / "etc/classroom/roster"
        target.mkdir(parents=True, exist_ok=True)
        (target / "roster.json").write_text(json.dumps(doc))
        self.doc = doc
        for person in doc["people"]:
            self.uids.setdefault(person["username"], int(person["uid"]))
        lab_users = [p["username"] for p in doc["people"] if p["labs"]]
        Path(self.labd.config["rosterFile"]).write_text("".join(u + "\n" for u in lab_users))
        return doc

    def reconcile(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            ["chroot", str(self.root), "python3", "/usr/local/sbin/reconcile-roster", "--offline", *args],
            env=CHROOT_ENV,
        )

    def uid(self, user: str) -> int:
        """The UID the user's account was first given (kept after they leave the roster)."""
        return self.uids[user]

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    # ---------------------------------------------------------------- the student
    def plant(self, user: str, relative: str, content: str | bytes, mode: int = 0o644) -> Path:
        """A file the student writes in their own home (owned by them, as if they made it)."""
        path = self.home(user) / relative
        uid = self.uid(user)
        parent = path.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            os.chown(directory, uid, uid)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        path.chmod(mode)
        os.chown(path, uid, uid)
        return path

    def login(self, user: str, command: str = "id -un", key: str | None = None) -> subprocess.CompletedProcess[str]:
        self.sshd.mark()
        return ssh(self.sshd.port, user, self.keys[key or user][0], self.known_hosts, command=command)

    def session(self, user: str, command: str, key: str | None = None) -> subprocess.Popen[bytes]:
        """A long-running SSH session (killed at teardown if it outlives the test)."""
        argv = ssh_argv(
            f"{user}@127.0.0.1",
            identity=self.keys[key or user][0],
            known_hosts=self.known_hosts,
            port=self.sshd.port,
            command=[command],
        )
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.background.append(process)
        return process

    def processes(self, user: str) -> list[int]:
        """Live (non-zombie) processes of this server (their root is its root) whose real or effective
        UID is the user's. Another test run on the machine may have a user of the same name and UID."""
        uid = str(self.uid(user))
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/root") != str(self.root):
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if uid in fields.get("Uid", "").split()[:2] and not fields.get("State", "").strip().startswith("Z"):
                found.append(int(entry))
        return found

    def hook_log(self) -> str:
        path = self.root / "var/log/lab-session-hook.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.sshd.stop()
        for uid in set(self.uids.values()):
            kill_all_of(uid)


def kill_all_of(uid: int) -> None:
    """Teardown: whatever a test user left running (kill(-1) as that user, repeated until none is left)."""
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, 9)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        alive = False
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    text = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
                if f"\nUid:\t{uid}\t" in text and "State:\tZ" not in text:
                    alive = True
        if not alive:
            return
        time.sleep(0.05)


PEOPLE_NAMES = ("alice", "bob", "carol", "mallory")


@pytest.fixture
def server(image_layer: list[Path], tmp_path: Path) -> Iterator[Server]:
    """A fresh login server: alice and bob (students with labs), carol (a TA who keeps own keys)."""
    now = int(time.time())
    keys = {name: new_key(tmp_path, name) for name in (*PEOPLE_NAMES, "carol_own")}
    people = [
        {"username": "alice", "keys": [keys["alice"][1]], "labs": True},
        {"username": "bob", "keys": [keys["bob"][1]], "labs": True},
        {"username": "carol", "role": "ta", "keys": [keys["carol"][1]]},
    ]
    term = {
        "start": time.strftime("%Y-%m-%d", time.gmtime(now - 10 * DAY)),
        "end": time.strftime("%Y-%m-%d", time.gmtime(now + 30 * DAY)),
    }
    labd = Labd(tmp_path / "labd", rosterFile=str(tmp_path / "labd" / "roster"))
    with mounted(image_layer, tmp_path / "overlay", devices=True) as root:
        ca = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], capture_output=True, check=True
        )
        del ca
        ca_pem = (tmp_path / "ca").read_text()
        (root / "etc/ssh/classroom/ca.pub").write_text(ca_public_key_line(ca_pem) + "\n")
        install_host_keys(ca_pem, root / "etc/ssh/host", ["127.0.0.1", "localhost"])
        sshd = Sshd(root=root, port=free_port(), log=tmp_path / "sshd.log")
        (tmp_path / "known_hosts").write_text(
            known_hosts_line(ca_public_key_line(ca_pem), [f"[127.0.0.1]:{sshd.port}"]) + "\n"
        )
        labd.root.mkdir(parents=True, exist_ok=True)
        box = Server(
            root=root,
            tmp=tmp_path,
            sshd=sshd,
            labd=labd,
            known_hosts=tmp_path / "known_hosts",
            keys=keys,
            people=people,
            term=term,
        )
        box.write_roster()
        labd.start()
        result = box.reconcile()
        assert result.returncode == 0, result.stdout + result.stderr
        # The hook's root-only configuration, as the lab-session Secret mounts it.
        hook_dir = root / HOOK_DIR.lstrip("/")
        hook_dir.mkdir(mode=0o700, exist_ok=True)
        (hook_dir / "session.key").write_bytes(labd.session_key + b"\n")
        (hook_dir / "session.key").chmod(0o600)
        (hook_dir / "config.json").write_text(
            json.dumps(
                {
                    "urls": {"alice": labd.url, "bob": labd.url},
                    "hostId": "login-test",
                    "keyFile": f"{HOOK_DIR}/session.key",
                    "stateDir": "/run/lab-session-hook",
                    "logFile": "/var/log/lab-session-hook.log",
                    "readyTimeout": 60,
                    "requestTimeout": 5,
                }
            )
        )
        (hook_dir / "config.json").chmod(0o600)
        sshd.start()
        try:
            yield box
        finally:
            box.stop()
            labd.stop()


def wait_until(predicate: Any, what: str, timeout: float = 60.0, server: Server | None = None) -> Any:
    """wait_for, and on a timeout say what the hook and labd logged (the only witnesses of a detached hook)."""
    try:
        return wait_for(predicate, timeout=timeout, what=what)
    except AssertionError as err:
        if server is None:
            raise
        labd_log = server.labd.root / "labd.log"
        tail = labd_log.read_text(errors="replace")[-4000:] if labd_log.exists() else "(no labd log)"
        raise AssertionError(f"{err}\n--- hook log ---\n{server.hook_log()}\n--- labd log (tail) ---\n{tail}") from None
