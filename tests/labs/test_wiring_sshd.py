"""The lab session hook as the login server installs it, under real sshd and real labds.

Two labd processes (lab hosts) share the class's session key; students are
spread over them. Part one drives the hook directly with a `urls` map. Part
two installs everything the way the pod does: the files come from the
program (`server.lab_session_scripts()`, `server.lab_session_config()`), and
the lab part of the project's own rc.local runs them through
install-lab-session.sh - inside a private mount namespace whose /etc and
/usr/local are overlays (writes land in the test's directory, the machine's
own files are never touched) and whose /run and /var/log are empty tmpfs.
sshd then runs there with the resulting PAM stack, so a login goes
sshd -> PAM -> @include lab-session -> pam_exec -> /usr/local/sbin/lab-session-hook
-> /etc/lab-session-hook/config.json -> the student's own labd.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import server
from tests.labs.sshd_env import SshdEnv, home
from tests.labs.support import REPO, Labd, wait_for

if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
    pytest.skip("needs root and Debian's openssh-server (/usr/sbin/sshd)", allow_module_level=True)

RC_LOCAL = REPO / "components" / "scripts" / "rc.local"


def rc_local_lab_part() -> str:
    """The lab block of the project's rc.local, verbatim (from its comment to its closing fi)."""
    text = RC_LOCAL.read_text()
    start = text.index("# Lab clusters (stacks with labs)")
    end = text.index("\nfi\n", text.index('if [ -f "$lab_dir/install-lab-session.sh" ]')) + len("\nfi\n")
    return text[start:end]


@pytest.fixture
def labds(tmp_path: Path, labd_factory: list[Labd]) -> tuple[Labd, Labd]:
    """Two lab hosts with the class's one session key (as LabHost installs it on each)."""
    first = Labd(tmp_path / "lab1", stopGrace=0.3, idleTimeout=3600, reaperInterval=0.1)
    second = Labd(tmp_path / "lab2", stopGrace=0.3, idleTimeout=3600, reaperInterval=0.1)
    (second.root / "session.key").write_bytes(first.session_key + b"\n")
    second.session_key = first.session_key
    for daemon in (first, second):
        labd_factory.append(daemon)
        daemon.start()
    return first, second


def state(labd: Labd, user: str) -> str:
    return str(labd.status(user)["state"])


def running(labd: Labd, user: str) -> bool:
    status = labd.status(user)
    return bool(status.get("cluster")) and labd.double.running(str(status["cluster"])) is True


def stopped(labd: Labd, user: str) -> bool:
    status = labd.status(user)
    return bool(status.get("cluster")) and labd.double.running(str(status["cluster"])) is False


def end(client: subprocess.Popen[bytes]) -> None:
    assert client.stdin is not None
    client.stdin.close()
    client.wait(timeout=30)


# ------------------------------------------------------------------ part one: the hook's `urls` map


@pytest.fixture
def mapped(labds: tuple[Labd, Labd]) -> Iterator[SshdEnv]:
    env = SshdEnv(labds[0], users=3)
    try:
        yield env
    finally:
        env.stop()


def set_hook_config(env: SshdEnv, **changes: object) -> None:
    config = json.loads(env.hook_config.read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    env.hook_config.write_text(json.dumps(config))


def test_urls_map_sends_each_student_to_their_own_labd(mapped: SshdEnv, labds: tuple[Labd, Labd]) -> None:
    lab1, lab2 = labds
    alice, bob, nolab = mapped.users
    # Only `urls`: a user missing from it (the instructor, a student without labs) has no lab.
    set_hook_config(mapped, url=None, urls={alice: lab1.url, bob: lab2.url})
    mapped.start()
    clients = [mapped.ssh(alice), mapped.ssh(bob), mapped.ssh(nolab)]
    wait_for(lambda: running(lab1, alice) and running(lab2, bob), what="each student's cluster on their own labd")
    assert state(lab2, alice) == "absent" and state(lab1, bob) == "absent"
    wait_for(lambda: len(mapped.hook_records()) == 2, what="two hook records")
    assert {r["user"]: r["url"] for r in mapped.hook_records()} == {alice: lab1.url, bob: lab2.url}
    assert state(lab1, nolab) == "absent" and state(lab2, nolab) == "absent"
    # sync reports to every labd, each getting only the sessions it counted.
    done = mapped.run_hook("sync")
    assert done.returncode == 0, done.stderr
    answers = {a["url"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert set(answers) == {lab1.url, lab2.url}
    assert lab1.status(alice)["sessions"] == 1 and lab2.status(bob)["sessions"] == 1
    for client in clients:
        end(client)
    wait_for(lambda: stopped(lab1, alice) and stopped(lab2, bob), what="both stopped after logout")


def test_user_missing_from_urls_falls_back_to_url(mapped: SshdEnv, labds: tuple[Labd, Labd]) -> None:
    lab1, lab2 = labds
    alice, bob, _ = mapped.users
    set_hook_config(mapped, url=lab1.url, urls={bob: lab2.url})
    mapped.start()
    mapped.ssh(alice)
    mapped.ssh(bob)
    wait_for(lambda: running(lab1, alice) and running(lab2, bob), what="alice on the fallback, bob on his own")
    assert state(lab2, alice) == "absent" and state(lab1, bob) == "absent"


def test_sync_reaches_a_labd_even_when_its_last_close_was_lost(mapped: SshdEnv, labds: tuple[Labd, Labd]) -> None:
    lab1, lab2 = labds
    alice, bob, _ = mapped.users
    set_hook_config(mapped, url=None, urls={alice: lab1.url, bob: lab2.url})
    mapped.start()
    mapped.ssh(alice)
    mapped.ssh(bob)
    wait_for(
        lambda: running(lab1, alice) and running(lab2, bob) and len(mapped.hook_records()) == 2, what="both running"
    )
    record = next(r for r in mapped.hook_records() if r["user"] == bob)
    os.kill(int(record["pid"]), signal.SIGKILL)  # no close_session for bob's session
    done = mapped.run_hook("sync")
    assert done.returncode == 0, done.stderr
    answers = {a["url"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert answers[lab2.url]["closed"] == 1 and answers[lab1.url]["closed"] == 0
    wait_for(lambda: stopped(lab2, bob), what="bob's cluster stopped after sync")
    assert running(lab1, alice)


def test_a_bad_urls_map_is_refused_with_its_key(mapped: SshdEnv) -> None:
    set_hook_config(mapped, url=None, urls={mapped.users[0]: "not a url"})
    done = mapped.run_hook("status", env={"SUDO_USER": mapped.users[0]})
    assert done.returncode == 1 and "key 'urls'" in done.stderr


# ------------------------------------------------------------------ part two: installed as the pod does it


class InstalledLoginServer(SshdEnv):
    """sshd in a mount namespace where rc.local's lab part installed the program's files."""

    def __init__(self, urls: dict[int, Labd], users: int) -> None:
        super().__init__(urls[0], users=users)
        self.urls = {self.users[i]: labd.url for i, labd in urls.items()}
        self.key = urls[0].session_key

    def start(self) -> InstalledLoginServer:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key")], check=True)
        # The pod's two mounts: the scripts ConfigMap and the lab-session Secret, as the program renders them.
        scripts = self.dir / "configmap"
        scripts.mkdir()
        for name, text in server.lab_session_scripts().items():
            (scripts / name).write_text(text)
        secret = self.dir / "secret"
        secret.mkdir(mode=0o700)
        (secret / "config.json").write_text(server.lab_session_config(self.urls))
        (secret / "session.key").write_bytes(self.key + b"\n")
        for item in secret.iterdir():
            item.chmod(0o400)  # the Secret volume's defaultMode
        overlays = ""
        for target in ("/etc", "/usr/local"):
            upper, work = self.dir / f"upper{target.replace('/', '-')}", self.dir / f"work{target.replace('/', '-')}"
            upper.mkdir()
            work.mkdir()
            overlays += f"mount -t overlay overlay -o lowerdir={target},upperdir={upper},workdir={work} {target}\n"
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host_key'}\n"
            f"PidFile /run/sshd.pid\nUsePAM yes\nAuthorizedKeysFile {self.dir / 'keys'}/%u\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nLogLevel VERBOSE\nPermitRootLogin no\n"
        )
        setup = self.dir / "boot.sh"
        setup.write_text(
            "set -eu\n"
            + overlays
            + "mount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /var/log\ninstall -d -m 0755 /run/sshd\n"
            # The image's PAM file for sshd, here without its final newline on purpose.
            "printf 'auth required pam_permit.so\\naccount required pam_permit.so\\n"
            "session required pam_permit.so' >/etc/pam.d/sshd\n"
            # The pod's read-only mounts.
            f"mkdir -p /etc/lab-session-hook /etc/classroom/lab-session\n"
            f"mount --bind {secret} /etc/lab-session-hook\nmount -o remount,bind,ro /etc/lab-session-hook\n"
            f"mount --bind {scripts} /etc/classroom/lab-session\n"
            "mount -o remount,bind,ro /etc/classroom/lab-session\n"
            "export LAB_SESSION_SYNC_INTERVAL=1\n"  # the loop every second instead of every minute
            "set +u\n" + rc_local_lab_part() + f"\nexec /usr/sbin/sshd -D -e -f {config}\n"
        )
        self.log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "bash", str(setup)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(self._listening, what="installed sshd listening")
        return self

    def path(self, inside: str) -> Path:
        """A path as the namespace sees it (through the sshd process's root)."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root{inside}")

    def run(self, *argv: str, user: str = "") -> subprocess.CompletedProcess[str]:
        assert self.proc is not None
        prefix = ["runuser", "-u", user, "--"] if user else []
        return subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-m", "--", *prefix, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        )

    def records(self) -> list[dict[str, str]]:
        directory = self.path("/run/lab-session-hook")
        if not directory.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The sync loop lives in the namespace; end it (and only it) first.
            pidfile = self.path("/run/lab-session-sync.pid")
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
        super().stop()


@pytest.fixture
def installed(labds: tuple[Labd, Labd]) -> Iterator[InstalledLoginServer]:
    env = InstalledLoginServer({0: labds[0], 1: labds[1]}, users=3)
    try:
        env.start()
        yield env
    finally:
        env.stop()


def test_rc_local_installs_hook_pam_include_and_sudo_rule(installed: InstalledLoginServer) -> None:
    hook = installed.path("/usr/local/sbin/lab-session-hook").stat()
    assert (hook.st_uid, stat.S_IMODE(hook.st_mode)) == (0, 0o755)
    assert (
        installed.path("/usr/local/sbin/lab-session-hook").read_text()
        == server.lab_session_scripts()["lab-session-hook"]
    )
    pam = installed.path("/etc/pam.d/lab-session")
    assert "pam_exec.so quiet /usr/local/sbin/lab-session-hook" in pam.read_text()
    sudoers = installed.path("/etc/sudoers.d/lab-session")
    info = sudoers.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o440)
    # Running the installer again (every boot does) adds the include only once.
    again = installed.run("sh", "/etc/classroom/lab-session/install-lab-session.sh")
    assert again.returncode == 0, again.stderr
    lines = installed.path("/etc/pam.d/sshd").read_text().splitlines()
    assert lines.count("@include lab-session") == 1
    assert "session required pam_permit.so" in lines  # the missing final newline did not glue the include on
    if shutil.which("visudo"):
        check = installed.run("visudo", "-c")
        assert check.returncode == 0, check.stdout + check.stderr
    # The machine's own files were not touched.
    assert not Path("/usr/local/sbin/lab-session-hook").exists()
    assert "lab-session" not in Path("/etc/pam.d/sshd").read_text()


def test_login_reaches_the_students_own_labd_through_the_installed_pam_stack(
    installed: InstalledLoginServer, labds: tuple[Labd, Labd]
) -> None:
    lab1, lab2 = labds
    alice, bob, nolab = installed.users
    first, second, third = installed.ssh(alice), installed.ssh(bob), installed.ssh(nolab)
    wait_for(lambda: running(lab1, alice) and running(lab2, bob), what="clusters on each student's labd")
    assert state(lab2, alice) == "absent" and state(lab1, bob) == "absent"
    assert state(lab1, nolab) == "absent" and state(lab2, nolab) == "absent"
    wait_for((home(alice) / ".kube" / "config").exists, what="alice's kubeconfig")
    sessions = {r["user"]: r for r in installed.records()}
    assert set(sessions) == {alice, bob}
    assert sessions[alice]["session"].startswith("login-0:")  # hostId from the program's config.json
    for client in (first, second, third):
        end(client)
    wait_for(lambda: stopped(lab1, alice) and stopped(lab2, bob), what="stopped after logout")
    log = installed.path("/var/log/lab-session-hook.log").read_text()
    assert "open login-0:" in log and f"for {alice}: HTTP 202" in log


def test_the_sync_loop_rc_local_started_ends_a_lost_session(
    installed: InstalledLoginServer, labds: tuple[Labd, Labd]
) -> None:
    lab1, _ = labds
    alice = installed.users[0]
    installed.ssh(alice)
    wait_for(lambda: running(lab1, alice) and installed.records(), what="running with a hook record")
    os.kill(int(installed.records()[0]["pid"]), signal.SIGKILL)  # sshd gone: close_session never runs
    # Nobody calls sync here: only the loop rc.local started can end it.
    wait_for(lambda: stopped(lab1, alice), what="stopped by the rc.local sync loop")


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed (apt-get install sudo)")
def test_students_run_only_their_own_lab_commands_through_sudo(
    installed: InstalledLoginServer, labds: tuple[Labd, Labd]
) -> None:
    lab1, lab2 = labds
    alice, bob, nolab = installed.users
    done = installed.run("sudo", "-n", "/usr/local/sbin/lab-session-hook", "ensure", user=bob)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user"] == bob
    wait_for(lambda: running(lab2, bob), what="bob's cluster ensured on his labd")
    status = installed.run("lab", "status", user=bob)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "running"
    # Any other argument list is not in the rule: sudo refuses without asking.
    for argv in (["sync"], ["ensure", alice], ["status", "--config", "/tmp/x"]):
        refused = installed.run("sudo", "-n", "/usr/local/sbin/lab-session-hook", *argv, user=bob)
        assert refused.returncode == 1 and "password is required" in refused.stderr, refused
    assert state(lab1, alice) == "absent"
    # A student without a lab is told so by the hook itself.
    none = installed.run("lab", "status", user=nolab)
    assert none.returncode == 1 and "has no lab" in none.stderr
    assert re.search(r"usage: lab ", installed.run("lab", "sync", user=bob).stderr)
