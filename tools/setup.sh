#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (tools/apt-packages.txt), the Python virtualenvs, and the
# Go-built toolchain (Pulumi engine + plugins, local control plane, linters).
#
# Usage: tools/setup.sh [system] [venv] [toolchain...]   (no argument: all)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

setup_system() {
    local wanted=() pkg
    while read -r pkg; do
        pkg=${pkg%%#*}; pkg=${pkg// /}
        [ -n "$pkg" ] || continue
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || wanted+=("$pkg")
    done < tools/apt-packages.txt
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ ${#wanted[@]} -eq 0 ]; then
        say "Debian packages: all present"
    else
        say "Debian packages: installing ${wanted[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${wanted[@]}"
    fi
    setup_tun "$sudo"
}

# Rootless Docker engines (labd's default, tests/labs/test_isolation.py) network through
# slirp4netns, which opens /dev/net/tun as the engine's own unprivileged user. Debian's
# default for that device is 0666 (access to it gives only a tap device in a network
# namespace one already owns); some container sandboxes create it 0600 root. Restore the
# distribution's default, and say so.
setup_tun() {
    local sudo=$1 mode
    [ -c /dev/net/tun ] || { say "/dev/net/tun: missing (rootless engines cannot network here)"; return; }
    mode=$(stat -c %a /dev/net/tun)
    if [ "$mode" != 666 ]; then
        say "/dev/net/tun: mode $mode -> 0666 (Debian's default; slirp4netns opens it as an unprivileged user)"
        $sudo chmod 0666 /dev/net/tun
    fi
}

make_venv() {  # make_venv DIR PROJECT REQUIREMENTS...   (PROJECT: a directory to install editable, or "")
    local dir=$1 project=$2; shift 2
    local stamp
    # The project's pyproject.toml (dependencies, entry points, build system) is part of the stamp.
    stamp=$(stamp_of "$@" ${project:+"$project/pyproject.toml"})
    if [ -f "$dir/.classroom-stamp" ] && [ "$(cat "$dir/.classroom-stamp")" = "$stamp" ]; then
        say "$dir: up to date"
        return
    fi
    say "$dir: installing $* (a few minutes on a fresh machine)"
    [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check --upgrade pip
    local args=()
    local req
    for req in "$@"; do args+=(-r "$req"); done
    "$dir/bin/pip" install -q --disable-pip-version-check "${args[@]}"
    # Editable: `import components`/`import ops` and the `classroom` command follow the checkout.
    [ -z "$project" ] || "$dir/bin/pip" install -q --disable-pip-version-check -e "$project"
    echo "$stamp" > "$dir/.classroom-stamp"
}

setup_venv() {
    make_venv .venv . requirements.txt requirements-dev.txt
    make_venv .venv-checkov "" requirements-checkov.txt
}

[ $# -gt 0 ] || set -- system venv toolchain
for step in "$@"; do
    case "$step" in
        system) setup_system ;;
        venv) setup_venv ;;
        toolchain) tools/toolchain.sh all ;;
        toolchain-*) tools/toolchain.sh "${step#toolchain-}" ;;
        *) say "unknown step '$step' (expected system, venv, toolchain or toolchain-<target>)"; exit 2 ;;
    esac
done
