"""The Debian login image, really built here, and what it contains.

``tools/loginimage.py build`` makes the base with Debian's debootstrap, then
buildah runs ``containers/login/Dockerfile`` (``RELEASE=debian:12``) itself: the packages
are installed by apt and ``containers/common/setup-image.sh`` runs as the
build's RUN step.  These tests read the docker-archive it produces (what a
node's containerd imports), layer by layer with whiteouts applied, and check
what setup-image.sh promises: sshd after rc.local, no host keys, the PAM stack
closed to ``~/.pam_environment``, the root-owned key directories, the entry
point, the locale, no /ready, and the image's own config (CMD, STOPSIGNAL).
The first run builds (about 1.5 min cold); later runs reuse the cached tar.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loginimage
import pytest

from tests.images import REQUIRED_PACKAGES

REPO = Path(__file__).resolve().parents[2]


RELEASE = loginimage.RELEASES["bookworm"]


@dataclass(frozen=True)
class Entry:
    """One path of the image's merged root file system."""

    mode: int
    uid: int
    gid: int
    linkname: str
    layer: int
    member: str

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


class Image:
    """A docker-archive tar: its config and the merged view of its layers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path)  # noqa: SIM115 - closed by close()
        manifest = json.load(self._extract("manifest.json"))
        assert len(manifest) == 1, manifest
        self.repo_tags: list[str] = manifest[0].get("RepoTags") or []
        self.config: dict[str, Any] = json.load(self._extract(manifest[0]["Config"]))
        self.layers: list[str] = manifest[0]["Layers"]
        self.files: dict[str, Entry] = {}
        for index, layer in enumerate(self.layers):
            with tarfile.open(fileobj=self._extract(layer)) as lt:
                for m in lt:
                    self._apply(index, m)

    def _extract(self, name: str) -> Any:
        f = self._tar.extractfile(name)
        assert f is not None, f"{self.path}: no {name}"
        return f

    def _apply(self, index: int, m: tarfile.TarInfo) -> None:
        name = "/" + m.name.lstrip("./").rstrip("/") if m.name not in (".", "./") else "/"
        parent, _, base = name.rpartition("/")
        if base == ".wh..wh..opq":  # opaque directory: the lower layers' content is hidden
            for path in [p for p in self.files if p.startswith(parent + "/")]:
                del self.files[path]
            return
        if base.startswith(".wh."):
            gone = f"{parent}/{base[4:]}"
            for path in [p for p in self.files if p == gone or p.startswith(gone + "/")]:
                del self.files[path]
            return
        kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK}.get(m.type, stat.S_IFREG)
        self.files[name] = Entry(kind | m.mode, m.uid, m.gid, m.linkname, index, m.name)

    def read(self, path: str) -> str:
        entry = self.files[path]
        if entry.is_symlink:
            target = entry.linkname if entry.linkname.startswith("/") else str(Path(path).parent / entry.linkname)
            return self.read(os.path.normpath(target))
        with tarfile.open(fileobj=self._extract(self.layers[entry.layer])) as lt:
            f = lt.extractfile(entry.member)
            assert f is not None, path
            return f.read().decode()

    def close(self) -> None:
        self._tar.close()


@pytest.fixture(scope="module")
def image() -> Any:
    if os.geteuid() != 0:
        pytest.fail("the image build needs root (debootstrap, buildah)")
    try:
        path = loginimage.build(RELEASE)
    except loginimage.ImageError as e:
        pytest.fail(str(e))
    img = Image(path)
    yield img
    img.close()


def test_image_is_named_and_built_from_the_debian_base(image: Image) -> None:
    assert image.repo_tags == [RELEASE.ref]
    assert len(image.layers) >= 2, "the debootstrap base plus the build's own layer"
    osr = dict(line.split("=", 1) for line in image.read("/etc/os-release").splitlines() if "=" in line)
    assert osr["ID"] == "debian" and osr["VERSION_CODENAME"] == "bookworm", osr


def test_image_config_runs_systemd_and_stops_it_cleanly(image: Image) -> None:
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["/sbin/init"], cfg
    assert not cfg.get("Entrypoint"), cfg
    assert cfg["StopSignal"] == "SIGRTMIN+3", cfg
    assert "container=docker" in cfg["Env"], cfg["Env"]
    assert "22/tcp" in cfg["ExposedPorts"], cfg


def test_packages_the_pod_relies_on_are_installed(image: Image) -> None:
    status = image.read("/var/lib/dpkg/status")
    installed = {
        block.split("\n", 1)[0].removeprefix("Package: ")
        for block in status.split("\n\n")
        if "Status: install ok installed" in block
    }
    wanted = REQUIRED_PACKAGES
    assert wanted <= installed, sorted(wanted - installed)
    # merged /usr: /sbin is usr/sbin, where systemd-sysv links init to systemd
    assert image.files["/sbin"].linkname == "usr/sbin"
    assert image.files["/usr/sbin/init"].linkname.endswith("systemd/systemd")


def test_setup_script_ran_sshd_waits_for_rc_local(image: Image) -> None:
    files = image.files
    assert "After=rc-local.service" in image.read("/etc/systemd/system/ssh.service.d/10-after-rc-local.conf")
    assert files["/etc/systemd/system/multi-user.target.wants/rc-local.service"].is_symlink
    assert files["/etc/systemd/system/multi-user.target.wants/ssh.service"].is_symlink
    assert files["/etc/systemd/system/ssh.socket"].linkname == "/dev/null", "socket activation masked"
    assert files["/etc/systemd/system/rc-local.service.d/debian.conf"].linkname == "/dev/null"
    assert files["/etc/systemd/system/default.target"].linkname.endswith("multi-user.target")
    for masked in ("getty.target", "systemd-udevd.service", "systemd-timesyncd.service"):
        assert files[f"/etc/systemd/system/{masked}"].linkname == "/dev/null", masked
    assert stat.S_IMODE(files["/etc/rc.local"].mode) == 0o755


def test_setup_script_ran_no_host_keys_and_root_owned_key_directories(image: Image) -> None:
    assert not [p for p in image.files if p.startswith("/etc/ssh/ssh_host_")], "host keys baked into the image"
    for directory in ("/etc/ssh/authorized_keys", "/etc/ssh/classroom", "/etc/ssh/host"):
        entry = image.files[directory]
        assert entry.is_dir and (entry.uid, entry.gid) == (0, 0), directory
        assert stat.S_IMODE(entry.mode) == 0o755, (directory, oct(entry.mode))
    assert "/ready" not in image.files, "only a running pod's rc.local may create /ready"
    assert not [
        p
        for p in image.files
        if p.startswith("/var/lib/apt/lists/") and not p.endswith("/partial") and p != "/var/lib/apt/lists/lock"
    ], "apt lists left in the image"


def test_setup_script_ran_pam_reads_no_user_environment(image: Image) -> None:
    pam_files = [p for p, e in image.files.items() if p.startswith("/etc/pam.d/") and not e.is_dir]
    assert "/etc/pam.d/sshd" in pam_files
    for path in pam_files:
        for line in image.read(path).splitlines():
            code = line.split("#", 1)[0]
            assert not ("pam_env.so" in code and "user_readenv=1" in code), f"{path}: {line}"
    assert "user_readenv=0" in image.read("/etc/pam.d/sshd"), "Debian's sshd PAM file, as setup-image.sh left it"


def test_setup_script_ran_sshd_defaults_locale_and_entry_point(image: Image) -> None:
    ours = (REPO / "containers" / "common" / "sshd-defaults.conf").read_text()
    assert image.read("/etc/ssh/sshd_config.d/50-classroom-defaults.conf") == ours
    assert "Include /etc/ssh/sshd_config.d/*.conf" in image.read("/etc/ssh/sshd_config")
    assert image.read("/etc/default/locale").strip() == "LANG=en_US.UTF-8"
    assert "/usr/lib/locale/locale-archive" in image.files, "locale-gen ran"
    entry = image.files["/usr/local/sbin/classroom-entrypoint"]
    assert stat.S_IMODE(entry.mode) == 0o755
    assert (
        image.read("/usr/local/sbin/classroom-entrypoint")
        == (REPO / "components" / "scripts" / "entrypoint-unprivileged.sh").read_text()
    )


def test_a_second_build_is_the_cached_one(image: Image) -> None:
    assert loginimage.build(RELEASE) == image.path
    assert loginimage.image_tar(RELEASE) == image.path


def test_an_unknown_release_is_a_named_error() -> None:
    with pytest.raises(loginimage.ImageError, match=r"release 'trixie'.*accepted: bookworm"):
        loginimage.release_named("trixie")
