#!/usr/bin/env python3
"""Builds the Debian login image here, from Debian's own tools, with no registry.

Nothing can be pulled from an image registry on these machines, so the base
image ``FROM debian:12`` names (the login Dockerfile's ``RELEASE`` argument for
the bookworm image) is made locally: a minbase root file system from
``debootstrap`` (what Debian's official image is made of, too), imported into a
private buildah store under that very name.  Then the real
``containers/login/Dockerfile`` is built by buildah with
``--build-arg RELEASE=debian:12``, as the images workflow builds it: its
``apt-get install`` and its ``RUN .../setup-image.sh`` really run.  The result
is saved as a docker-archive tar that ``ctr images import`` (a node's
containerd) and ``docker load`` read.

    python tools/loginimage.py build [--release bookworm]   # prints the tar's path
    python tools/loginimage.py ref   [--release bookworm]   # prints the image reference

Both steps are cached under ~/.cache/classroom/images: the base by its
debootstrap command, the image by a hash of the base and of every file the
build reads (Dockerfile, containers/common/, the entry point), so a warm call
costs a hash of a few files.  Each build's duration goes to
``images/build-times.tsv`` (bench/image_bench.py reports it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CLASSROOM_CACHE", Path.home() / ".cache" / "classroom")) / "images"
MIRROR = os.environ.get("CLASSROOM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
IMAGE_REPOSITORY = "classroom.local/login"


class ImageError(RuntimeError):
    """A build step failed; the message names the step and its log."""


@dataclass(frozen=True)
class Release:
    name: str  # the image tag (as in the images workflow's matrix)
    suite: str  # debootstrap's suite
    release: str  # the Dockerfile's RELEASE build argument (its FROM)
    base_ref: str  # what that FROM resolves to

    @property
    def dockerfile(self) -> Path:
        return LOGIN_DOCKERFILE

    @property
    def ref(self) -> str:
        return f"{IMAGE_REPOSITORY}:{self.name}"


LOGIN_DOCKERFILE = REPO / "containers" / "login" / "Dockerfile"
RELEASES = {"bookworm": Release("bookworm", "bookworm", "debian:12", "docker.io/library/debian:12")}

# Everything the Dockerfile copies or runs, besides the Dockerfile itself.
BUILD_INPUTS = (REPO / "containers" / "common", REPO / "components" / "scripts" / "entrypoint-unprivileged.sh")


def log(msg: str) -> None:
    print(f"[loginimage] {msg}", file=sys.stderr, flush=True)


def release_named(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise ImageError(
            f"release {name!r}: not a Debian release with a login image (accepted: {', '.join(sorted(RELEASES))})"
        ) from None


def _run(argv: list[str], logfile: Path, what: str, timeout: float = 3600) -> None:
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            rc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout
            ).returncode
        except FileNotFoundError:
            raise ImageError(f"{what}: {argv[0]} is not installed (tools/apt-packages.txt lists it)") from None
    if rc != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise ImageError(f"{what} failed (exit {rc}); {logfile} ends with:\n{tail}")


def _record(name: str, seconds: float, kind: str) -> None:
    with (CACHE / "build-times.tsv").open("a") as f:
        f.write(f"{name}\t{seconds:.1f}\t{kind}\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build once
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ base ---
def base_tar(release: Release) -> Path:
    """A minbase root file system of the release as a tar (debootstrap, cached)."""
    tar = CACHE / f"base-debian-{release.suite}.tar"
    marker = tar.with_suffix(".json")
    recipe = ["debootstrap", "--variant=minbase", release.suite, MIRROR]
    if tar.exists() and marker.exists() and json.loads(marker.read_text()).get("recipe") == recipe:
        return tar
    if os.geteuid() != 0:
        raise ImageError("debootstrap of the base needs root")
    logfile = CACHE / f"base-debian-{release.suite}.log"
    logfile.write_text("")
    partial = CACHE / f"base-debian-{release.suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.monotonic()
    log(f"debootstrap {release.suite} (minbase) from {MIRROR} ...")
    _run([recipe[0], recipe[1], recipe[2], str(partial), recipe[3]], logfile, f"debootstrap {release.suite}")
    # what Debian's official image leaves out too: downloaded lists and packages
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (partial / leftover).glob("*"):
            if entry.is_file():
                entry.unlink()
    _run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(partial), "-cf", str(tar) + ".tmp", "."],
        logfile,
        "tar of the base",
    )
    os.replace(str(tar) + ".tmp", tar)
    shutil.rmtree(partial, ignore_errors=True)
    marker.write_text(json.dumps({"recipe": recipe, "sha256": _sha256(tar)}) + "\n")
    _record(f"base-{release.suite}", time.monotonic() - t0, "debootstrap")
    return tar


# --------------------------------------------------------------- buildah ---
def _buildah(*args: str) -> list[str]:
    # a store of our own: nothing of the machine's /var/lib/containers is touched
    return [
        "buildah",
        "--root",
        str(CACHE / "buildah" / "root"),
        "--runroot",
        str(CACHE / "buildah" / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]


def _image_label(ref: str, label: str) -> str | None:
    result = subprocess.run(
        _buildah("inspect", "--type", "image", "--format", '{{index .ImageAnnotations "' + label + '"}}', ref),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def ensure_base_image(release: Release) -> str:
    """The base tar imported as the Dockerfile's FROM image; returns the tar's sha256."""
    tar = base_tar(release)
    sha = str(json.loads(tar.with_suffix(".json").read_text())["sha256"])
    if _image_label(release.base_ref, "classroom.base-sha256") == sha:
        return sha
    logfile = CACHE / f"import-{release.name}.log"
    logfile.write_text("")
    log(f"importing the base as {release.base_ref}")
    container = f"classroom-base-{release.name}"
    subprocess.run(_buildah("rm", container), capture_output=True)
    _run(_buildah("from", "--name", container, "scratch"), logfile, "buildah from scratch")
    try:
        _run(_buildah("add", container, str(tar), "/"), logfile, "buildah add of the base")
        _run(
            _buildah(
                "config",
                "--cmd",
                "bash",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--annotation",
                f"classroom.base-sha256={sha}",
                container,
            ),
            logfile,
            "buildah config",
        )
        _run(_buildah("commit", "--rm", container, release.base_ref), logfile, "buildah commit of the base")
    finally:
        subprocess.run(_buildah("rm", container), capture_output=True)
    return sha


def input_digest(release: Release, base_sha: str) -> str:
    """A hash of the base and of every file the build reads."""
    digest = hashlib.sha256(f"base {base_sha}\nrelease {release.release}\n".encode())
    files = [release.dockerfile]
    for item in BUILD_INPUTS:
        files += sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
    for path in files:
        digest.update(f"{path.relative_to(REPO)} {oct(path.stat().st_mode & 0o777)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def image_tar(release: Release) -> Path | None:
    """The cached image tar for the current inputs, if built (no build)."""
    marker = CACHE / f"base-debian-{release.suite}.json"
    if not marker.exists():
        return None
    tar = CACHE / f"login-{release.name}-{input_digest(release, json.loads(marker.read_text())['sha256'])[:16]}.tar"
    return tar if tar.exists() else None


def build(release: Release) -> Path:
    """The login image as a docker-archive tar, built if its inputs changed."""
    if not release.dockerfile.is_file():
        raise ImageError(f"release {release.name!r}: {release.dockerfile} does not exist")
    with _locked():
        base_sha = ensure_base_image(release)
        key = input_digest(release, base_sha)[:16]
        out = CACHE / f"login-{release.name}-{key}.tar"
        if out.exists():
            log(f"{release.ref} is up to date ({out.name})")
            return out
        logfile = CACHE / f"build-{release.name}.log"
        logfile.write_text("")
        log(f"building {release.ref} from {release.dockerfile.relative_to(REPO)} (log: {logfile}) ...")
        t0 = time.monotonic()
        _run(
            _buildah(
                "bud",
                "--pull=never",
                "--network",
                "host",
                "--layers=false",
                "--format",
                "docker",
                "--annotation",
                f"classroom.inputs={key}",
                "--build-arg",
                f"RELEASE={release.release}",
                "-f",
                str(release.dockerfile),
                "-t",
                release.ref,
                str(REPO),
            ),
            logfile,
            f"buildah bud of {release.dockerfile.relative_to(REPO)}",
        )
        tmp = out.with_suffix(".tar.tmp")
        tmp.unlink(missing_ok=True)
        _run(_buildah("push", release.ref, f"docker-archive:{tmp}:{release.ref}"), logfile, "buildah push")
        os.replace(tmp, out)
        for old in CACHE.glob(f"login-{release.name}-*.tar"):
            if old != out:
                old.unlink()
        # images of older inputs in the store are unreferenced now
        subprocess.run(_buildah("rmi", "--prune"), capture_output=True)
        _record(f"login-{release.name}", time.monotonic() - t0, "build")
        log(f"built {release.ref} in {time.monotonic() - t0:.0f}s -> {out}")
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "ref"))
    parser.add_argument("--release", default="bookworm", help="Debian release (accepted: %(default)s)")
    args = parser.parse_args(argv)
    try:
        release = release_named(args.release)
        print(build(release) if args.command == "build" else release.ref)
    except ImageError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
