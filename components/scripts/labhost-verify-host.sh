#!/bin/sh
# Verifies a lab host's SSH host certificate through the class CA with OpenSSH,
# and prints the exact certificate the host presented ("TYPE BASE64").
#
# Run on the machine that runs `pulumi up` (command.local.Command), before any
# remote command: pulumi-command's own SSH client cannot check a host
# certificate against a CA, only compare the presented key with a pinned one.
# So this step lets OpenSSH do the real check (@cert-authority line,
# StrictHostKeyChecking=yes: CA signature, host-certificate type, principal,
# validity window) and hands the verified certificate to LabHost, which pins
# it as the `hostKey` of every remote connection to this host.
#
# Only certificate host-key algorithms are offered, so a host with no
# certificate is refused. RSA certificates are not among them: pulumi-command
# 1.2.1 offers exactly the pinned key's type, and for an RSA certificate that
# is ssh-rsa-cert-v01@openssh.com (SHA-1), which OpenSSH >= 8.8 no longer
# accepts ("no common algorithm for host key", seen with the real engine).
# A lab host needs an ed25519 (or ECDSA) host certificate.
#
# Environment: LABHOST_ADDRESS LABHOST_PORT LABHOST_USER LABHOST_PRINCIPAL
#   LABHOST_CA (CA public key line) LABHOST_KEY (private key; secret)
#   LABHOST_AGENT (optional ssh-agent socket instead of LABHOST_KEY)
set -eu

: "${LABHOST_ADDRESS:?}" "${LABHOST_PORT:?}" "${LABHOST_USER:?}" "${LABHOST_PRINCIPAL:?}" "${LABHOST_CA:?}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
umask 077

printf '@cert-authority %s %s\n' "$LABHOST_PRINCIPAL" "$LABHOST_CA" >"$work/known_hosts"
identity=""
if [ -n "${LABHOST_KEY:-}" ]; then
    printf '%s\n' "$LABHOST_KEY" >"$work/id"
    identity="-i $work/id -o IdentitiesOnly=yes -o IdentityAgent=none"
elif [ -n "${LABHOST_AGENT:-}" ]; then
    identity="-o IdentityAgent=$LABHOST_AGENT"
fi

algorithms=ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com
algorithms=$algorithms,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com

# KnownHostsCommand runs with the presented key before verification and
# prints nothing, so it adds no trust; it only records what was presented.
# shellcheck disable=SC2086 # $identity is a list of options on purpose
if ! ssh -F none -T -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$work/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o HostKeyAlias="$LABHOST_PRINCIPAL" -o HostKeyAlgorithms="$algorithms" \
    -o CheckHostIP=no -o UpdateHostKeys=no -o ConnectTimeout=15 \
    -o "KnownHostsCommand=/bin/sh -c 'printf \"%%s %%s\\n\" \"\$1\" \"\$2\" >$work/presented' sh %t %K" \
    $identity -p "$LABHOST_PORT" -l "$LABHOST_USER" "$LABHOST_ADDRESS" true 2>"$work/err"; then
    echo "lab host $LABHOST_ADDRESS:$LABHOST_PORT failed host verification against the class CA" \
        "(principal $LABHOST_PRINCIPAL; an ed25519 or ECDSA host certificate is needed, RSA ones" \
        "cannot be pinned by pulumi-command):" >&2
    cat "$work/err" >&2
    exit 1
fi
cat "$work/presented"
