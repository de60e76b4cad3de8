#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs the tiers.
#
# Usage: tools/test.sh [all|unit|ssh|labs|attack|labhost|e2e]...   (no argument: all)
#   unit  config, components under Pulumi mocks, manifests (kubernetes-validate,
#         checkov), policies, comment builder, linters       seconds
#   ssh   real OpenSSH on loopback / in network namespaces   tens of seconds
#   labs  labd over real HTTP, session hook under real sshd,
#         Traefik routing, the real k3d on a throwaway dockerd
#         (stand-in node images; the k3d double for faults)  a few minutes
#   attack   a hostile student against the image's real PAM stack:
#         Debian's pam.d as setup-image.sh leaves it, real sshd,
#         the lab hook, labd, reconcile-roster              a few minutes
#   labhost  a lab host in a network namespace: real sshd,
#         labd and Traefik, LabHost's generated commands     tens of seconds
#   e2e   real Pulumi engine + local control plane (kwok)    minutes
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || set -- all
tiers=()
for t in "$@"; do
    case "$t" in
        all) tiers+=(unit ssh labs attack labhost e2e) ;;
        unit|ssh|labs|attack|labhost|e2e) tiers+=("$t") ;;
        *) echo "[test] unknown tier '$t' (expected all, unit, ssh, labs, attack, labhost or e2e)" >&2; exit 2 ;;
    esac
done

tools/setup.sh system venv
needs_toolchain=0
for t in "${tiers[@]}"; do
    case "$t" in unit|labs|attack|labhost|e2e) needs_toolchain=1 ;; esac
done
if [ "$needs_toolchain" -eq 1 ]; then
    tools/setup.sh toolchain
fi
eval "$(tools/toolchain.sh env)"

paths=()
for t in "${tiers[@]}"; do paths+=("tests/$t"); done
mkdir -p out
echo "[test] running tiers: ${tiers[*]}" >&2
exec .venv/bin/pytest -p no:cacheprovider --junitxml=out/junit.xml -ra "${paths[@]}"
