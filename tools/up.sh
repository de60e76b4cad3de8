#!/usr/bin/env bash
# The main job: deploy a stack with the real Pulumi engine.
#
# Usage: tools/up.sh up|preview|destroy|purge-homes STACK
#        tools/up.sh cluster-start|cluster-stop
#
# Backend: PULUMI_BACKEND_URL, default a local file backend in .state/backend
#   (no Pulumi Cloud account needed).
# Secrets: PULUMI_CONFIG_PASSPHRASE encrypts the stack's secrets (the CA key).
#   For the `dev` stack only, a fixed development passphrase is used when unset.
# Cluster: KUBECONFIG (and optionally KUBE_CONTEXT) select a real cluster;
#   without them the local control plane in .state/cluster is started and used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '[up] %s\n' "$*" >&2; }
die() { printf '[up] error: %s\n' "$*" >&2; exit 2; }

action=${1:-}
stack=${2:-dev}
cluster_dir="$root/.state/cluster"

start_local_cluster() {
    tools/setup.sh system venv toolchain-cluster
    eval "$(tools/toolchain.sh env)"
    .venv/bin/python tools/localcluster.py start --dir "$cluster_dir"
}

case "$action" in
    cluster-start) start_local_cluster; exit 0 ;;
    cluster-stop)
        if [ -d "$cluster_dir" ]; then .venv/bin/python tools/localcluster.py stop --dir "$cluster_dir"; fi
        exit 0 ;;
    up|preview|destroy|purge-homes) ;;
    *) die "unknown action '$action' (expected up, preview, destroy, purge-homes, cluster-start or cluster-stop)" ;;
esac

[ -f "stacks/Pulumi.$stack.yaml" ] || die "no stack file stacks/Pulumi.$stack.yaml (stacks here: $(find stacks -name 'Pulumi.*.yaml' -printf '%f\n' | sed 's/^Pulumi\.//; s/\.yaml$//' | sort | tr '\n' ' '))"

tools/setup.sh system venv toolchain-engine
eval "$(tools/toolchain.sh env)"

if [ -n "${KUBECONFIG:-}" ] || [ -n "${KUBE_CONTEXT:-}" ]; then
    say "using the cluster of KUBECONFIG=${KUBECONFIG:-~/.kube/config} ${KUBE_CONTEXT:+context $KUBE_CONTEXT}"
else
    if ! .venv/bin/python tools/localcluster.py status --dir "$cluster_dir" >/dev/null 2>&1; then
        say "no KUBECONFIG given: starting the local control plane in .state/cluster"
        start_local_cluster
    fi
    export KUBECONFIG="$cluster_dir/kubeconfig"
    say "using the local control plane (KUBECONFIG=$KUBECONFIG)"
fi

export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$root/.state/backend}
mkdir -p "$root/.state/backend"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    [ "$stack" = dev ] || die "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) to the passphrase that protects stack '$stack''s secrets"
    export PULUMI_CONFIG_PASSPHRASE=classroom-dev-only
    say "dev stack: using the development passphrase 'classroom-dev-only' (set PULUMI_CONFIG_PASSPHRASE to use your own)"
fi
export PULUMI_SKIP_UPDATE_CHECK=true

pulumi stack select --create --stack "$stack" --non-interactive >/dev/null
if [ -n "${KUBE_CONTEXT:-}" ]; then
    pulumi config set --stack "$stack" kubernetes:context "$KUBE_CONTEXT" >/dev/null
fi

case "$action" in
    up)
        pulumi up --stack "$stack" --yes --non-interactive
        # What an instructor needs next: how to connect, and the one line
        # that makes every client trust the server's CA-signed host keys.
        say "connect with:   $(pulumi stack output --stack "$stack" sshCommand)"
        say "known_hosts:    $(pulumi stack output --stack "$stack" knownHostsLine)"
        say "(put that line in ~/.ssh/known_hosts; certificates: classroom roster issue --stack $stack --out certs/)"
        ;;
    preview) pulumi preview --stack "$stack" --diff --non-interactive ;;
    destroy)
        # End of term: everything but the protected home and extra-mount PVCs
        # (and the namespace that holds them) goes; see README "End of term".
        pulumi destroy --stack "$stack" --yes --exclude-protected --non-interactive ;;
    purge-homes)
        die "deleting homes is a deliberate manual step; see README 'End of term', step 2" ;;
esac
