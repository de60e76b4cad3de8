"""The PAM session hook under real sshd sessions, driving a real labd and the k3d double."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.labs.sshd_env import SshdEnv, home
from tests.labs.support import HOOK, Labd, wait_for

if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
    pytest.skip("needs root and Debian's openssh-server (/usr/sbin/sshd)", allow_module_level=True)


@pytest.fixture
def env(tmp_path: Path, labd_factory: list[Labd]) -> Iterator[SshdEnv]:
    # idleTimeout is long so that only session events (and sync) stop clusters here.
    daemon = Labd(tmp_path / "labd", stopGrace=0.3, idleTimeout=3600, reaperInterval=0.1)
    # Bound to the name the hook reaches it by: every login here also checks that the
    # hook signs the lab host exactly as labd/auth.py does.
    daemon.config["hostNames"] = [daemon.host_name]
    labd_factory.append(daemon)
    daemon.start()
    sshd = SshdEnv(daemon, users=2)
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()


def cluster(env: SshdEnv, user: str) -> str:
    return str(env.labd.status(user).get("cluster", ""))


def sessions(env: SshdEnv, user: str) -> int:
    return int(env.labd.status(user)["sessions"])


def is_running(env: SshdEnv, user: str) -> bool:
    name = cluster(env, user)
    return bool(name) and env.labd.double.running(name) is True


def is_stopped(env: SshdEnv, user: str) -> bool:
    name = cluster(env, user)
    return bool(name) and env.labd.double.running(name) is False


def end(client: subprocess.Popen[bytes]) -> None:
    assert client.stdin is not None
    client.stdin.close()
    client.wait(timeout=30)


def test_login_ensures_cluster_and_writes_kubeconfig_logout_stops_it(env: SshdEnv) -> None:
    user = env.users[0]
    client = env.ssh(user)
    wait_for(lambda: is_running(env, user), what="cluster ensured after login")
    config = home(user) / ".kube" / "config"
    wait_for(config.exists, what="kubeconfig in the student's home")
    info = config.stat()
    assert info.st_uid == int(subprocess.check_output(["id", "-u", user]))
    assert stat.S_IMODE(info.st_mode) == 0o600
    kube = yaml.safe_load(config.read_text())
    assert kube["clusters"][0]["cluster"]["server"].endswith(f":{env.labd.status(user)['ports']['api']}")
    assert env.labd.status(env.users[1])["state"] == "absent"  # nobody else's cluster was touched
    end(client)
    wait_for(lambda: is_stopped(env, user), what="cluster stopped after the last logout")
    assert env.hook_records() == []


def test_two_sessions_close_one_keeps_running_close_last_stops(env: SshdEnv) -> None:
    user = env.users[0]
    first, second = env.ssh(user), env.ssh(user)
    wait_for(lambda: sessions(env, user) == 2 and is_running(env, user), what="two sessions, running")
    end(first)
    wait_for(lambda: sessions(env, user) == 1, what="one session left")
    assert is_running(env, user)
    assert ["cluster", "stop", cluster(env, user)] not in env.labd.double.argvs()
    end(second)
    wait_for(lambda: is_stopped(env, user), what="stopped after the last session")


def test_kill_9_of_the_ssh_client_still_stops_the_cluster(env: SshdEnv) -> None:
    user = env.users[1]
    client = env.ssh(user)
    wait_for(lambda: is_running(env, user), what="running")
    client.send_signal(signal.SIGKILL)
    client.wait()
    wait_for(lambda: is_stopped(env, user), what="stopped after the client was killed")


def test_lost_close_event_is_recovered_by_sync(env: SshdEnv) -> None:
    user = env.users[0]
    env.ssh(user)
    wait_for(lambda: is_running(env, user) and env.hook_records(), what="running with a hook record")
    # Killing the per-connection sshd itself means PAM close_session never runs.
    os.kill(int(env.hook_records()[0]["pid"]), signal.SIGKILL)
    wait_for(lambda: sessions(env, user) == 1 and is_running(env, user), what="session still counted")
    done = env.run_hook("sync")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["closed"] == 1
    wait_for(lambda: is_stopped(env, user), what="stopped after sync")


def test_student_commands_act_only_for_sudo_user(env: SshdEnv) -> None:
    alice, bob = env.users
    done = env.run_hook("ensure", bob, env={"SUDO_USER": alice})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user"] == alice  # the argument naming bob is ignored under sudo
    wait_for(lambda: is_running(env, alice), what="alice running")
    assert env.labd.status(bob)["state"] == "absent"
    done = env.run_hook("kubeconfig", env={"SUDO_USER": alice})
    assert done.returncode == 0 and (home(alice) / ".kube" / "config").exists()
    # A student running the hook directly (no sudo) cannot read the key and is refused.
    direct = subprocess.run(
        ["runuser", "-u", alice, "--", str(HOOK), "--config", str(env.hook_config), "stop"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert direct.returncode == 2 and "must run as root" in direct.stderr
    assert is_running(env, alice)


def test_students_own_kubeconfig_is_not_overwritten(env: SshdEnv) -> None:
    user = env.users[0]
    kube = home(user) / ".kube"
    subprocess.run(
        ["runuser", "-u", user, "--", "sh", "-c", f"mkdir -p {kube} && echo mine > {kube}/config"], check=True
    )
    env.ssh(user)
    wait_for((kube / "lab-config").exists, what="lab kubeconfig written beside the student's own")
    assert (kube / "config").read_text() == "mine\n"


def test_hook_refuses_a_key_file_students_can_read(env: SshdEnv) -> None:
    key = Path(json.loads(env.hook_config.read_text())["keyFile"])
    key.chmod(0o644)
    done = env.run_hook("status", env={"SUDO_USER": env.users[0]})
    assert done.returncode == 1 and "mode 0600" in done.stderr
    assert env.labd.double.mutating() == []


def test_login_works_while_labd_is_down_and_sync_catches_up(env: SshdEnv) -> None:
    user = env.users[1]
    env.labd.stop()
    quick = env.ssh(user, "echo logged-in")
    out, _ = quick.communicate(timeout=60)
    assert quick.returncode == 0 and out == b"logged-in\n"
    env.ssh(user)  # a long session opened while labd is unreachable
    wait_for(lambda: len(env.hook_records()) == 1, what="hook recorded the open session")
    env.labd.start()
    done = env.run_hook("sync")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: is_running(env, user), what="cluster ensured once labd is back")
    # The short session's open, retried while labd was down, gave up once
    # that session had closed; only the long session counts.
    assert sessions(env, user) == 1
