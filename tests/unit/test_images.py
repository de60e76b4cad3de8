"""The login server images' contract, checked without a Docker engine.

No Docker daemon runs here, so the Dockerfiles are parsed and their promises
checked statically (systemd as PID 1, clean stop signal, sshd after rc.local,
no host keys, root-owned key directories), and the shared setup script that
does the real work (containers/common/setup-image.sh) is run for real in a
chroot of a debootstrapped Debian root filesystem (tests marked ``ssh``:
they need root, debootstrap and Debian's package mirror on first run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hostkeys import install_host_keys, new_ca
from tests.images import REQUIRED_PACKAGES

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
COMMON = CONTAINERS / "common"
SETUP_SCRIPT = COMMON / "setup-image.sh"
SSHD_CONFIG = REPO / "components" / "scripts" / "sshd_config"

# Ubuntu releases the project ships login images for, by image name (the images workflow's matrix).
UBUNTU_RELEASES = {"jammy": "22.04", "noble": "24.04", "resolute": "26.04"}
# Debian releases likewise (built here too, by tools/loginimage.py: tests/e2e/test_login_image.py).
DEBIAN_RELEASES = {"bookworm": "12"}

SYSTEMD_INITS = {"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"}
SETUP_DIR_IN_IMAGE = "/usr/local/lib/classroom-image"

unit = pytest.mark.unit
# The chroot tests run real programs as root, like the ssh tier's tests do.
chroot_tier = pytest.mark.ssh

# One login Dockerfile for every release; the release is its RELEASE build argument.
LOGIN_DIR = CONTAINERS / "login"
LOGIN_DOCKERFILE = LOGIN_DIR / "Dockerfile"


# --------------------------------------------------------------- parsing ---
@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped.

    Enough of Docker's grammar for these files: no heredocs, default escape.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        # Docker drops comment lines even in the middle of a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"instruction at line {start} ends with a line continuation")
    return instructions


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"line {number} is neither a [Section] nor Key=Value: {raw!r}")
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_list(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> list[str]:
    """All whitespace-separated values of a list-valued key (After=, Requires=...)."""
    return [item for value in unit.get(section, {}).get(key, []) for item in value.split()]


def dockerfile(image_dir: Path) -> list[Instruction]:
    return parse_dockerfile((image_dir / "Dockerfile").read_text())


def apt_installed_packages(instructions: list[Instruction]) -> list[str]:
    packages: list[str] = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", ins.args):
            words = shlex.split(command)
            if words[:1] == ["apt-get"] and "install" in words:
                after = words[words.index("install") + 1 :]
                packages += [w for w in after if not w.startswith("-")]
    return packages


def setup_script_lines() -> list[str]:
    """The setup script's commands, without comments, continuation lines joined."""
    text = SETUP_SCRIPT.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def sshd_key_paths() -> dict[str, list[str]]:
    """Paths the project's sshd_config reads keys from, by lower-case directive."""
    wanted = {"authorizedkeysfile", "trustedusercakeys", "revokedkeys", "hostkey", "hostcertificate"}
    found: dict[str, list[str]] = {}
    for raw in SSHD_CONFIG.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0].lower() in wanted:
            # Only absolute paths: relative ones (.ssh/authorized_keys) are per user.
            found.setdefault(words[0].lower(), []).extend(w for w in words[1:] if w.startswith("/"))
    return found


def sshd_directories() -> dict[str, str]:
    """Directories holding the sshd_config's key files, by 'Directive path'."""
    return {
        f"{directive} {path}": str(Path(path).parent) for directive, paths in sshd_key_paths().items() for path in paths
    }


# ----------------------------------------------------- Dockerfile contract ---
def expected_release(image: str) -> str:
    """The base image a login image is built from: `ubuntu:22.04` for jammy, `debian:12` for bookworm."""
    if image in UBUNTU_RELEASES:
        return f"ubuntu:{UBUNTU_RELEASES[image]}"
    return f"debian:{DEBIAN_RELEASES[image]}"


def login_entries() -> dict[str, dict[str, str]]:
    """The images workflow's matrix entries that build the login Dockerfile, by image name."""
    return {e["image"]: e for e in image_matrix() if e["dockerfile"] == str(LOGIN_DOCKERFILE.relative_to(REPO))}


@unit
def test_every_supported_release_has_an_image_built_from_the_one_login_dockerfile() -> None:
    entries = login_entries()
    assert set(entries) == set(UBUNTU_RELEASES) | set(DEBIAN_RELEASES), f"login images built: {sorted(entries)}"
    for image, entry in entries.items():
        assert entry["release"] == expected_release(image), f"{image}: built from {entry['release']}"
    # No second login Dockerfile drifting on its own.
    others = [p for p in CONTAINERS.glob("*/Dockerfile") if p.parent.name not in {"login", "labd"}]
    assert not others, others


@unit
def test_base_image_is_the_release_argument_pinned_by_default() -> None:
    instructions = dockerfile(LOGIN_DIR)
    froms = [ins for ins in instructions if ins.keyword == "FROM"]
    assert len(froms) == 1 and froms[0].args == "${RELEASE}", "login images are single-stage, FROM ${RELEASE}"
    # The default (a plain `docker build`) is a supported, pinned release, declared before FROM.
    before = instructions[: instructions.index(froms[0])]
    defaults = [ins.args.split("=", 1)[1] for ins in before if ins.keyword == "ARG" and ins.args.startswith("RELEASE=")]
    assert defaults and defaults[0] in {expected_release(name) for name in login_entries()}, defaults
    for image, entry in login_entries().items():
        assert not entry["release"].endswith(":latest"), image


@unit
def test_stop_signal_lets_systemd_shut_down() -> None:
    signals = [ins.args for ins in dockerfile(LOGIN_DIR) if ins.keyword == "STOPSIGNAL"]
    assert signals and signals[-1] == "SIGRTMIN+3", signals


@unit
def test_systemd_is_pid_1() -> None:
    instructions = dockerfile(LOGIN_DIR)
    assert not [i for i in instructions if i.keyword == "ENTRYPOINT"], "an ENTRYPOINT would wrap systemd"
    cmds = [i for i in instructions if i.keyword == "CMD"]
    assert cmds, "no CMD"
    # Exec form only: the shell form would make /bin/sh PID 1, not systemd.
    argv = json.loads(cmds[-1].args)
    assert isinstance(argv, list) and argv[0] in SYSTEMD_INITS, argv


@unit
def test_installs_what_the_pod_relies_on() -> None:
    packages = set(apt_installed_packages(dockerfile(LOGIN_DIR)))
    assert packages >= REQUIRED_PACKAGES, f"missing: {sorted(REQUIRED_PACKAGES - packages)}"


@unit
def test_apt_installs_are_lean_and_leave_no_lists() -> None:
    runs = [i for i in dockerfile(LOGIN_DIR) if i.keyword == "RUN" and "apt-get install" in i.args]
    assert runs
    for run in runs:
        assert "--no-install-recommends" in run.args, f"line {run.line}"
        assert "rm -rf /var/lib/apt/lists/*" in run.args, f"line {run.line}: apt lists stay in the layer"


@unit
def test_runs_the_shared_setup_script() -> None:
    instructions = dockerfile(LOGIN_DIR)
    copies = [i.args.split() for i in instructions if i.keyword == "COPY"]
    assert ["containers/common/", f"{SETUP_DIR_IN_IMAGE}/"] in copies, copies
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert any(f"{SETUP_DIR_IN_IMAGE}/setup-image.sh" in run for run in runs), runs
    # The setup must come after the packages it configures.
    kinds = [(i.keyword, i.args) for i in instructions if i.keyword == "RUN"]
    assert "apt-get install" in kinds[0][1] and "setup-image.sh" in kinds[-1][1]


@unit
def test_image_ships_the_unprivileged_entry_point() -> None:
    # components/server.py runs it as the container command when privileged=false.
    copies = [i.args.split() for i in dockerfile(LOGIN_DIR) if i.keyword == "COPY"]
    shipped = [c for c in copies if c[-1] == entrypoint_path()]
    assert shipped, f"no COPY to {entrypoint_path()}: {copies}"
    assert "--chmod=0755" in shipped[0]


@unit
def test_image_build_does_not_create_ready() -> None:
    text = "\n".join(i.args for i in dockerfile(LOGIN_DIR))
    assert "/ready" not in text, "only the pod's boot script may create the readiness file"
    assert "rm -f /ready" in setup_script_lines()


# ----------------------------------------------------------- boot units ---
@unit
def test_rc_local_unit_is_a_oneshot_that_stays_active() -> None:
    unit = parse_unit((COMMON / "rc-local.service").read_text())
    service = unit["Service"]
    assert service["Type"] == ["oneshot"]
    # RemainAfterExit keeps the unit "active" so Requires= from ssh.service holds.
    assert service["RemainAfterExit"] == ["yes"]
    assert service["ExecStart"] == ["/etc/rc.local"]
    assert unit_list(unit, "Install", "WantedBy") == ["multi-user.target"]


@unit
def test_sshd_waits_for_rc_local() -> None:
    dropin = parse_unit((COMMON / "ssh-after-rc-local.conf").read_text())
    assert "rc-local.service" in unit_list(dropin, "Unit", "After")
    assert "rc-local.service" in unit_list(dropin, "Unit", "Requires")
    # ...and the drop-in lands where systemd reads drop-ins for ssh.service.
    installs = [line for line in setup_script_lines() if "ssh-after-rc-local.conf" in line]
    assert installs and installs[0].split()[-1].startswith("/etc/systemd/system/ssh.service.d/")
    assert installs[0].endswith(".conf")


@unit
def test_setup_removes_distro_host_keys_and_creates_key_directories() -> None:
    lines = setup_script_lines()
    assert "rm -f /etc/ssh/ssh_host_*" in lines
    created = [line.split()[-1] for line in lines if line.startswith("install -d")]
    for directory in ("/etc/ssh/authorized_keys", "/etc/ssh/classroom"):
        matching = [line for line in lines if line.startswith("install -d") and line.endswith(directory)]
        assert matching, f"{directory} not created (created: {created})"
        assert "-o root" in matching[0] and "-m 0755" in matching[0], matching[0]


@unit
def test_setup_creates_every_directory_sshd_config_reads() -> None:
    created = {line.split()[-1] for line in setup_script_lines() if line.startswith("install -d")}
    created.add("/etc/ssh")  # openssh-server's own directory
    needed = sshd_directories()
    assert needed, f"no key directives found in {SSHD_CONFIG}"
    missing = {directive: d for directive, d in needed.items() if d not in created}
    assert not missing, f"directories the sshd_config needs but the image lacks: {missing}"


@unit
def test_parsers_reject_what_they_cannot_read() -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_unit("After=x\n")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM ubuntu:22.04\nRUN true \\\n")


# ------------------------------------------------------------ workflows ---
WORKFLOWS = REPO / ".github" / "workflows"


def load_workflow(name: str) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def image_matrix() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = load_workflow("images.yml")["jobs"]["image"]["strategy"]["matrix"]["include"]
    return entries


@unit
def test_images_workflow_builds_every_image_on_its_tag() -> None:
    workflow = load_workflow("images.yml")
    tag_patterns = set(workflow["on"]["push"]["tags"])
    by_image = {entry["image"]: entry for entry in image_matrix()}
    expected = {image: LOGIN_DOCKERFILE for image in {**UBUNTU_RELEASES, **DEBIAN_RELEASES}}
    if (CONTAINERS / "labd" / "Dockerfile").is_file():
        expected["labd"] = CONTAINERS / "labd" / "Dockerfile"
    for image, path in expected.items():
        assert f"{image}-*" in tag_patterns, f"no tag trigger {image}-* (have {sorted(tag_patterns)})"
        assert image in by_image, f"images.yml has no matrix entry for {image}"
        assert by_image[image]["dockerfile"] == str(path.relative_to(REPO))
    assert workflow["permissions"]["packages"] == "write"


@unit
@pytest.mark.parametrize("entry", image_matrix(), ids=lambda e: e["image"])
def test_images_workflow_context_holds_every_copied_file(entry: dict[str, str]) -> None:
    dockerfile_path = REPO / entry["dockerfile"]
    if not dockerfile_path.is_file():
        pytest.skip(f"{entry['dockerfile']} does not exist yet (the workflow skips it too)")
    context = REPO / entry["context"]
    for ins in parse_dockerfile(dockerfile_path.read_text()):
        if ins.keyword not in {"COPY", "ADD"} or "--from=" in ins.args:
            continue
        sources = [w for w in ins.args.split() if not w.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"line {ins.line}: {source} is not in the build context {context}"


@unit
@pytest.mark.parametrize("name", ["images.yml", "ci.yml"])
def test_workflow_actions_are_pinned_to_a_release(name: str) -> None:
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", (WORKFLOWS / name).read_text(), re.M)
    assert uses
    loose = [u for u in uses if not re.search(r"@(v\d+\.\d+\.\d+|[0-9a-f]{40})$", u)]
    assert not loose, f"actions not pinned to an exact release or commit: {loose}"


@unit
def test_ci_workflow_runs_the_project_test_command_with_caches() -> None:
    workflow = load_workflow("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    steps = workflow["jobs"]["test"]["steps"]
    runs = [str(step.get("run", "")) for step in steps]
    # The project's own test command, as root: the system tiers create accounts and namespaces.
    assert any(run.startswith("sudo ") and run.endswith(" bash .ci/run") for run in runs), runs
    cache = next(step for step in steps if str(step.get("uses", "")).startswith("actions/cache@"))
    assert {"~/.cache/classroom", "~/.cache/go-build"} <= set(cache["with"]["path"].split())
    for keyed_on in ("tools/toolchain.sh", "requirements.txt", "requirements-dev.txt"):
        assert keyed_on in cache["with"]["key"]


# ------------------------------------------------- chroot (real scripts) ---
CACHE = Path(os.environ.get("CLASSROOM_CACHE", Path.home() / ".cache" / "classroom"))
ROOTFS = CACHE / "rootfs-images"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("CLASSROOM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Ubuntu-only packages with no Debian counterpart; everything else in the
# login image's list is installed into the Debian root filesystem as well.
NOT_IN_DEBIAN = {"unminimize"}


def chroot_packages() -> list[str]:
    packages = apt_installed_packages(dockerfile(LOGIN_DIR))
    return sorted(set(packages) - NOT_IN_DEBIAN)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def installed_packages(root: Path) -> set[str]:
    """Packages dpkg records as installed in a root filesystem."""
    status = root / "var" / "lib" / "dpkg" / "status"
    if not status.is_file():
        return set()
    installed = set()
    for stanza in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status") == "install ok installed":
            installed.add(fields["Package"])
    return installed


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A cached Debian root filesystem with the image's packages installed.

    Built with debootstrap on first use (a few minutes, Debian's mirror) and
    rebuilt only when the login Dockerfile gains a package it lacks.
    """
    if os.geteuid() != 0:
        pytest.skip("chroot tests need root (mount, chroot)")
    if shutil.which("debootstrap") is None:
        pytest.skip("chroot tests need debootstrap (apt-get install debootstrap)")
    packages = chroot_packages()
    if set(packages) <= installed_packages(ROOTFS):
        return ROOTFS
    building = ROOTFS.with_name(ROOTFS.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    result = run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            DEBIAN_SUITE,
            str(building),
            DEBIAN_MIRROR,
        ]
    )
    if result.returncode != 0:
        pytest.fail(f"debootstrap failed (rc={result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    shutil.rmtree(ROOTFS, ignore_errors=True)
    building.rename(ROOTFS)
    return ROOTFS


@dataclass(frozen=True)
class ImageLayer:
    """The setup script's changes to the Debian root, as an overlay upper layer."""

    upper: Path
    rootfs: Path
    host_keys_before: list[str]
    setup: subprocess.CompletedProcess[str]


@contextmanager
def overlay(lowers: list[Path], scratch: Path) -> Iterator[Path]:
    """Mount an overlay (writes go to scratch/upper) with /proc; unmount on exit."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    mounted = run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount an overlay over {lowers}: {mounted.stderr}")
    try:
        # systemctl decides it may work offline by looking at /proc.
        proc = run(["mount", "-t", "proc", "proc", str(merged / "proc")])
        assert proc.returncode == 0, proc.stderr
        try:
            yield merged
        finally:
            run(["umount", "--lazy", str(merged / "proc")])
    finally:
        run(["umount", "--lazy", str(merged)])


def in_chroot(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return run(["chroot", str(root), "/bin/sh", "-c", command], env=env)


def apply_copies(root: Path, image_dir: Path = LOGIN_DIR) -> None:
    """Do what the Dockerfile's COPY instructions do, into a root filesystem."""
    for ins in dockerfile(LOGIN_DIR):
        if ins.keyword != "COPY":
            continue
        words = ins.args.split()
        mode = next((int(w.split("=", 1)[1], 8) for w in words if w.startswith("--chmod=")), None)
        source, destination = (w for w in words if not w.startswith("--"))
        target = root / destination.lstrip("/")
        if source.endswith("/"):
            shutil.copytree(REPO / source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
        if mode is not None:
            target.chmod(mode)


@pytest.fixture(scope="module")
def image_layer(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageLayer:
    scratch = tmp_path_factory.mktemp("image-layer")
    with overlay([debian_rootfs], scratch) as root:
        before = sorted(p.name for p in (root / "etc" / "ssh").glob("ssh_host_*"))
        # Like Ubuntu's images since 23.04: a default user holding UID 1000.
        made = in_chroot(root, "id ubuntu >/dev/null 2>&1 || useradd --create-home --uid 1000 ubuntu")
        assert made.returncode == 0, made.stderr
        apply_copies(root)
        setup = in_chroot(root, f"{SETUP_DIR_IN_IMAGE}/setup-image.sh")
    return ImageLayer(scratch / "upper", debian_rootfs, before, setup)


@pytest.fixture
def image_root(image_layer: ImageLayer, tmp_path: Path) -> Iterator[Path]:
    """A fresh writable copy of the set-up image root for one test."""
    assert image_layer.setup.returncode == 0, image_layer.setup.stdout + image_layer.setup.stderr
    with overlay([image_layer.upper, image_layer.rootfs], tmp_path) as root:
        yield root


@chroot_tier
def test_chroot_setup_script_succeeds(image_layer: ImageLayer) -> None:
    assert image_layer.setup.returncode == 0, image_layer.setup.stdout + image_layer.setup.stderr
    assert "setup-image: done" in image_layer.setup.stdout


@chroot_tier
def test_chroot_distro_host_keys_are_gone(image_layer: ImageLayer, image_root: Path) -> None:
    # openssh-server's postinst made keys in the root filesystem; the image must not keep them.
    assert image_layer.host_keys_before, "precondition: the package generated host keys"
    left = sorted(p.name for p in (image_root / "etc" / "ssh").rglob("ssh_host_*"))
    assert left == []


@chroot_tier
@pytest.mark.parametrize("directory", ["authorized_keys", "classroom", "host"])
def test_chroot_key_directories_are_root_owned_and_not_writable_by_others(image_root: Path, directory: str) -> None:
    info = (image_root / "etc" / "ssh" / directory).lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert stat.S_IMODE(info.st_mode) == 0o755


@chroot_tier
def test_chroot_boot_units_enabled_and_container_units_masked(image_root: Path) -> None:
    expected = {
        "rc-local.service": "enabled",
        "ssh.service": "enabled",
        "ssh.socket": "masked",
        "getty.target": "masked",
        "systemd-udevd.service": "masked",
        "systemd-timesyncd.service": "masked",
    }
    states = {}
    for unit in expected:
        states[unit] = in_chroot(image_root, f"systemctl is-enabled {unit}").stdout.strip()
    assert states == expected
    assert os.readlink(image_root / "etc/systemd/system/default.target").endswith("multi-user.target")


@chroot_tier
def test_chroot_systemd_accepts_the_units_and_drop_in(image_root: Path) -> None:
    verify = in_chroot(image_root, "systemd-analyze verify --man=no ssh.service rc-local.service")
    # verify exits 0 even for unknown keys; what it prints is the verdict.
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    dropins = sorted((image_root / "etc/systemd/system/ssh.service.d").glob("*.conf"))
    assert [p.name for p in dropins] == ["10-after-rc-local.conf"]
    unit = parse_unit(dropins[0].read_text())
    assert "rc-local.service" in unit_list(unit, "Unit", "Requires")


@chroot_tier
def test_chroot_distro_default_user_is_removed(image_root: Path) -> None:
    # The roster owns every account and UID; a leftover "ubuntu" (UID 1000) could collide.
    assert in_chroot(image_root, "id ubuntu").returncode != 0
    assert in_chroot(image_root, "getent passwd 1000").stdout == ""


@chroot_tier
def test_chroot_setup_is_idempotent(image_root: Path) -> None:
    again = in_chroot(image_root, f"{SETUP_DIR_IN_IMAGE}/setup-image.sh")
    assert again.returncode == 0, again.stdout + again.stderr


@chroot_tier
def test_chroot_locale_is_generated(image_root: Path) -> None:
    assert "en_US.utf8" in in_chroot(image_root, "locale -a").stdout.split()
    assert (image_root / "etc/default/locale").read_text().strip() == "LANG=en_US.UTF-8"


@chroot_tier
def test_chroot_no_ready_until_the_boot_script_runs(image_root: Path) -> None:
    assert not (image_root / "ready").exists()
    rc_local = image_root / "etc" / "rc.local"
    assert rc_local.stat().st_mode & 0o111, "rc-local.service runs /etc/rc.local directly"
    boot = in_chroot(image_root, "/etc/rc.local")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert (image_root / "ready").exists()
    # Standalone (no host-key Secret mounted): the default script made unsigned host keys.
    assert list((image_root / "etc" / "ssh").glob("ssh_host_ed25519_key"))


@chroot_tier
def test_chroot_project_sshd_config_works_with_signed_host_keys(image_root: Path) -> None:
    """The pod's sshd_config, host keys signed as the program signs them, sshd -t."""
    shutil.copy(SSHD_CONFIG, image_root / "etc" / "ssh" / "sshd_config")
    paths = sshd_key_paths()
    (host_dir,) = {str(Path(p).parent) for p in paths["hostkey"]}
    (ca_pub,) = paths["trustedusercakeys"]
    (krl,) = paths["revokedkeys"]
    install_host_keys(new_ca(image_root / "root" / "ca"), image_root / host_dir.lstrip("/"), ["login.example.edu"])
    prepare = in_chroot(
        image_root,
        f"set -e; cp /root/ca.pub {ca_pub}; ssh-keygen -q -k -f {krl}; mkdir -p /run/sshd",
    )
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    check = in_chroot(image_root, "/usr/sbin/sshd -t")
    assert check.returncode == 0, check.stdout + check.stderr
    # sshd -t really reads the HostKey paths: without the keys it must refuse.
    for key in Path(image_root, host_dir.lstrip("/")).glob("ssh_host_*"):
        key.unlink()
    refused = in_chroot(image_root, "/usr/sbin/sshd -t")
    assert refused.returncode != 0


def unprivileged_capabilities() -> list[str]:
    """The capabilities components/server.py gives the login container in unprivileged mode."""
    source = (REPO / "components" / "server.py").read_text()
    block = re.search(r"^UNPRIVILEGED_CAPABILITIES\s*=\s*\((.*?)^\)", source, re.S | re.M)
    assert block, "components/server.py no longer defines UNPRIVILEGED_CAPABILITIES = (...)"
    return re.findall(r'"([A-Z_]+)"', block.group(1))


def entrypoint_path() -> str:
    match = re.search(r'^ENTRYPOINT_PATH\s*=\s*"([^"]+)"', (REPO / "components" / "server.py").read_text(), re.M)
    assert match, "components/server.py no longer defines ENTRYPOINT_PATH"
    return match.group(1)


@chroot_tier
def test_chroot_unprivileged_pod_boots_and_a_certificate_logs_in(image_root: Path) -> None:
    """The image with the pod's own files, run like unprivileged mode runs it.

    The project's sshd_config, rc.local, rc.user and rc.env go where the pod
    mounts them, host keys are signed as the program signs them, and
    the entry point runs with no_new_privs and only the capabilities
    components/server.py grants - in a network and PID namespace this test
    creates, so sshd listens on nothing outside it and dies with it.  A user
    certificate from the class CA must then log in without a host-key prompt.
    """
    scripts = REPO / "components" / "scripts"
    etc = image_root / "etc"
    shutil.copy(scripts / "sshd_config", etc / "ssh" / "sshd_config")
    for name in ("rc.local", "rc.user"):
        shutil.copy(scripts / name, etc / name)
        (etc / name).chmod(0o755)
    (etc / "rc.env").write_text("DEFAULT_USER=human\nDEFAULT_UID=10000\n")
    paths = sshd_key_paths()
    (host_dir,) = {str(Path(p).parent) for p in paths["hostkey"]}
    (ca_pub,) = paths["trustedusercakeys"]
    install_host_keys(new_ca(image_root / "root" / "ca"), image_root / host_dir.lstrip("/"), ["localhost", "127.0.0.1"])
    bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in unprivileged_capabilities())])
    script = f"""
set -eu
cp /root/ca.pub {ca_pub}
ssh-keygen -q -t ed25519 -N '' -f /root/user
ssh-keygen -q -s /root/ca -I human-test -n human -V -5m:+1h /root/user.pub
echo "@cert-authority * $(cat /root/ca.pub)" >/root/known_hosts
ip link set lo up
setpriv --no-new-privs --bounding-set={bounding} {entrypoint_path()} >/tmp/entrypoint.log 2>&1 &
# Bounded wait for rc.local (/ready) and sshd's socket; the login below is the check.
for _ in $(seq 300); do
    if [ -f /ready ] && ssh-keyscan -T 1 127.0.0.1 >/dev/null 2>&1; then break; fi
    sleep 0.1
done
ssh -i /root/user -o CertificateFile=/root/user-cert.pub -o UserKnownHostsFile=/root/known_hosts \\
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 human@127.0.0.1 \\
    'echo "user=$(id -un) uid=$(id -u)"' || {{ echo "ssh failed; sshd log:"; cat /tmp/entrypoint.log; exit 1; }}
"""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    session = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--kill-child", "chroot", str(image_root), "/bin/bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=180,
    )
    assert session.returncode == 0, session.stdout + session.stderr
    assert "user=human uid=10000" in session.stdout
    # Nothing students could use to add a key of their own: the file is root's.
    keys = etc / "ssh" / "authorized_keys" / "human"
    assert keys.is_file() and keys.stat().st_uid == 0 and stat.S_IMODE(keys.stat().st_mode) == 0o644


# A stack carried over from the cloud-server chart keeps its own rcLocal and
# rcUser. Written in the chart's style (not copied from it): rc.env sourced
# without `set -a`, the account made from DEFAULT_USER_ID, rc.user run as a
# child through `su` - which sees only what rc.env exported.
CHART_STYLE_RC_LOCAL = """#!/usr/bin/bash
set -e
. /etc/rc.env
groupadd "${DEFAULT_USER}" -g "${DEFAULT_USER_ID}"
useradd "${DEFAULT_USER}" -u "${DEFAULT_USER_ID}" -g "${DEFAULT_USER}" -m -s /usr/bin/bash
tempfile=$(mktemp)
cp /etc/rc.user "$tempfile"
chown "${DEFAULT_USER}:${DEFAULT_USER}" "$tempfile"
chmod u+x "$tempfile"
su "${DEFAULT_USER}" -c "$tempfile"
rm "$tempfile"
touch /ready
"""
CHART_STYLE_RC_USER = """#!/usr/bin/bash
set -e
echo "user=${DEFAULT_USER} id=${DEFAULT_USER_ID} host=${SET_HOSTNAME} cmd=${CUSTOMIZE_COMMAND}" >"$HOME/rc-user.out"
"""


@chroot_tier
def test_chroot_a_chart_style_rc_local_and_rc_user_work_with_the_programs_rc_env(image_root: Path) -> None:
    from components.config import parse_config
    from components.server import render_rc_env
    from tests.harness import MAIN

    cfg = parse_config(
        {
            "user": "chartuser",
            "userID": 12345,
            "hostName": "opus",
            "customizeCommand": "make",
            "rcLocal": CHART_STYLE_RC_LOCAL,
            "rcUser": CHART_STYLE_RC_USER,
        },
        stack="dev",
        base_dir=REPO,
    )
    assert cfg.warnings == ()  # it touches /ready
    etc = image_root / "etc"
    (etc / "rc.env").write_text(render_rc_env(MAIN.default_user(cfg), MAIN.boot_files(cfg), cfg.privileged))
    for name, text in (("rc.local", cfg.rc_local), ("rc.user", cfg.rc_user)):
        (etc / name).write_text(text)
        (etc / name).chmod(0o755)
    ran = in_chroot(image_root, "/etc/rc.local")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (image_root / "ready").exists()
    home = image_root / "home" / "chartuser"
    assert home.stat().st_uid == 12345
    assert (home / "rc-user.out").read_text() == "user=chartuser id=12345 host=opus cmd=make\n"


# ------------------------------------- systemd boot (systemd-nspawn, real) ---
# systemd-nspawn boots the set-up root with systemd as PID 1, the way the
# privileged pod runs the image, in a private network namespace (only its own
# loopback) - the nearest thing to the container runtime available here.


def install_pod_files(root: Path, rc_local: str | None = None) -> None:
    """Put the pod's ConfigMap files and its Secret's host keys into the root."""
    scripts = REPO / "components" / "scripts"
    etc = root / "etc"
    shutil.copy(scripts / "sshd_config", etc / "ssh" / "sshd_config")
    shutil.copy(scripts / "rc.user", etc / "rc.user")
    (etc / "rc.user").chmod(0o755)
    if rc_local is None:
        shutil.copy(scripts / "rc.local", etc / "rc.local")
    else:
        (etc / "rc.local").write_text(rc_local)
    (etc / "rc.local").chmod(0o755)
    (etc / "rc.env").write_text("DEFAULT_USER=human\nDEFAULT_UID=10000\n")
    paths = sshd_key_paths()
    (host_dir,) = {str(Path(p).parent) for p in paths["hostkey"]}
    (ca_pub,) = paths["trustedusercakeys"]
    install_host_keys(new_ca(root / "root" / "ca"), root / host_dir.lstrip("/"), ["localhost", "127.0.0.1"])
    made = in_chroot(
        root,
        "set -e;"
        f" cp /root/ca.pub {ca_pub};"
        " ssh-keygen -q -t ed25519 -N '' -f /root/user;"
        " ssh-keygen -q -s /root/ca -I human-test -n human -V -5m:+1h /root/user.pub;"
        ' echo "@cert-authority * $(cat /root/ca.pub)" >/root/known_hosts',
    )
    assert made.returncode == 0, made.stdout + made.stderr


@dataclass
class Booted:
    nspawn: subprocess.Popen[str]
    leader: int

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """A command inside the booted system (all of PID 1's namespaces)."""
        return run(["nsenter", "--target", str(self.leader), "--all", "/bin/sh", "-c", command], timeout=120)

    def show(self, unit: str, prop: str) -> str:
        return self.run(f"systemctl show --property={prop} --value {unit}").stdout.strip()


def nspawn_leader(nspawn: subprocess.Popen[str]) -> int | None:
    """PID of the container's systemd, once nspawn's helper children have exec'd it."""
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
    try:
        for pid in children.read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return int(pid)
    except OSError:  # a helper exited between the two reads
        pass
    return None


BOOT_TIMEOUT = 180  # seconds; a normal boot here takes 2-5
# What `systemctl is-system-running` reports once start-up is over (good or bad).
BOOTED_STATES = frozenset({"running", "degraded", "maintenance", "stopping"})


@contextmanager
def boot(root: Path) -> Iterator[Booted]:
    # The overlay's /proc mount would confuse systemd; nspawn mounts its own.
    run(["umount", str(root / "proc")])
    nspawn = subprocess.Popen(
        [
            "systemd-nspawn",
            "--quiet",
            f"--directory={root}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=pipe",
            # What the Dockerfile's STOPSIGNAL asks the container runtime to send.
            "--kill-signal=SIGRTMIN+3",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    leader: int | None = None
    try:
        # Bounded wait for nspawn to fork PID 1 (sub-second in practice).
        for _ in range(600):
            leader = nspawn_leader(nspawn)
            if leader is not None or nspawn.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"], check=False)
        if leader is None:
            output = nspawn.communicate(timeout=30)[0]
            pytest.fail(f"systemd-nspawn did not start PID 1 (rc={nspawn.returncode}):\n{output}")
        booted = Booted(nspawn, leader)
        # `--wait` blocks until start-up has finished, but only once systemd's
        # socket exists; until then systemctl fails at once and prints no state.
        # A deadline, not a count of tries: on a loaded CI machine the boot can
        # take far longer than the polls add up to, and a test that went on
        # before systemd answered would fail for the wrong reason.
        # systemctl answers "offline" (or nothing) while it cannot reach the
        # manager's bus yet: only a state after start-up ends the wait.
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while state not in BOOTED_STATES and time.monotonic() < deadline and nspawn.poll() is None:
            state = booted.run("systemctl is-system-running --wait").stdout.strip()
            if state not in BOOTED_STATES:
                # nsenter into a PID that was not (or is no longer) the
                # container's PID 1 fails at once every time: look again.
                current = nspawn_leader(nspawn)
                if current is not None and current != booted.leader:
                    leader = current
                    booted = Booted(nspawn, current)
                time.sleep(0.1)
        if state not in BOOTED_STATES:
            exited = f"nspawn exited with {nspawn.returncode}" if nspawn.poll() is not None else "still running"
            pytest.fail(
                f"the booted system's systemd did not finish start-up within {BOOT_TIMEOUT}s "
                f"(last state {state!r}; {exited})"
            )
        yield booted
    finally:
        if nspawn.poll() is None:
            # SIGKILL to the container's PID 1 ends every process of its PID
            # namespace; killing only nspawn would orphan the booted system.
            if leader is not None:
                with suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)
            try:
                nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait(timeout=30)


@pytest.fixture
def nspawn_available() -> None:
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd boot tests need systemd-nspawn (apt-get install systemd-container)")


@chroot_tier
@pytest.mark.usefixtures("nspawn_available")
def test_boot_systemd_runs_rc_local_then_sshd_and_stops_on_sigrtmin3(image_root: Path) -> None:
    install_pod_files(image_root)
    with boot(image_root) as system:
        probe = system.run("systemctl is-system-running")
        state = probe.stdout.strip()
        failed = system.run("systemctl --failed --no-legend --plain").stdout
        # "running", not "degraded": every unit that cannot work in a container is masked.
        assert state == "running", f"{state!r} (rc={probe.returncode}, {probe.stderr.strip()}); failed units:\n{failed}"
        assert system.show("rc-local.service", "ActiveState") == "active"
        assert system.show("rc-local.service", "StandardOutput") == "journal"
        assert system.show("ssh.service", "ActiveState") == "active"
        # The dependency as systemd loaded it, and the order it really started in.
        assert "rc-local.service" in system.show("ssh.service", "Requires").split()
        assert "rc-local.service" in system.show("ssh.service", "After").split()
        rc_local_done = int(system.show("rc-local.service", "ActiveEnterTimestampMonotonic"))
        sshd_started = int(system.show("ssh.service", "InactiveExitTimestampMonotonic"))
        assert 0 < rc_local_done <= sshd_started
        assert system.run("test -f /ready").returncode == 0
        # A student's view: a CA certificate logs in, the host is trusted by the CA line.
        login = system.run(
            "ssh -i /root/user -o CertificateFile=/root/user-cert.pub -o UserKnownHostsFile=/root/known_hosts"
            " -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 human@127.0.0.1 id -un"
        )
        assert login.stdout.strip() == "human", login.stderr
        # The container runtime's stop: STOPSIGNAL SIGRTMIN+3 to PID 1 = clean shutdown.
        os.kill(system.leader, signal.SIGRTMIN + 3)
        try:
            output = system.nspawn.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            pytest.fail("systemd did not shut down on SIGRTMIN+3")
        assert system.nspawn.returncode == 0, output


@chroot_tier
@pytest.mark.usefixtures("nspawn_available")
def test_boot_sshd_does_not_start_when_rc_local_fails(image_root: Path) -> None:
    # Without the boot script's accounts and keys sshd must stay down (Requires=).
    install_pod_files(image_root, rc_local="#!/bin/sh\necho 'rc.local: simulated failure' >&2\nexit 1\n")
    with boot(image_root) as system:
        assert system.show("rc-local.service", "ActiveState") == "failed"
        assert system.show("ssh.service", "ActiveState") == "inactive"
        assert system.run("test -f /ready").returncode != 0
