#!/bin/sh
# Generates the server's host keys and signs them with the class CA, so students
# trust the server through one @cert-authority line. Runs in the init container:
# the CA private key is mounted there and never in the container users log into.
#
# Usage: sign-host-keys.sh CA_KEY OUT_DIR PRINCIPALS
#   CA_KEY      path of the CA private key (OpenSSH format)
#   OUT_DIR     directory that receives ssh_host_*_key{,.pub,-cert.pub}
#   PRINCIPALS  comma-separated host names the certificate is valid for
set -eu

ca_key=${1:?CA private key path}
out_dir=${2:?output directory}
principals=${3:?comma-separated host principals}

umask 077
mkdir -p "$out_dir"
for type in ed25519 rsa; do
    key="$out_dir/ssh_host_${type}_key"
    if [ ! -f "$key" ]; then
        ssh-keygen -q -t "$type" -N '' -C "host-$type" -f "$key"
    fi
    # Re-sign every boot: host names may have changed with the stack config.
    ssh-keygen -q -s "$ca_key" -h -I "host:${principals%%,*}" -n "$principals" "$key.pub"
    chmod 0644 "$key.pub" "$key-cert.pub"
done
