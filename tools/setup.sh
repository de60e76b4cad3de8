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
    if [ ${#wanted[@]} -eq 0 ]; then
        say "Debian packages: all present"
        return
    fi
    say "Debian packages: installing ${wanted[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${wanted[@]}"
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
