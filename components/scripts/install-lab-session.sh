#!/bin/sh
# Installs the lab session hook on the login server. rc.local runs it at boot
# when the stack has labs (the program then mounts this directory, holding
# the hook and the PAM snippet, at /etc/classroom/lab-session, and the hook's
# root-only config and session key at /etc/lab-session-hook).
#
#   install-lab-session.sh [SOURCE_DIR]
#
# LAB_SESSION_ROOT (default: empty, the real root) prefixes every target so
# a test can install into a scratch tree. Safe to run again: every step
# replaces its file, and the PAM include is added once.
set -eu

src=${1:-/etc/classroom/lab-session}
root=${LAB_SESSION_ROOT:-}
hook=/usr/local/sbin/lab-session-hook

# Root-owned and not writable by anyone else: the hook reads the session key
# and acts for any student, so whoever can change it owns every lab.
install -d -o root -g root -m 0755 "$root/usr/local/sbin" "$root/usr/local/bin" "$root/etc/pam.d"
install -o root -g root -m 0755 "$src/lab-session-hook" "$root$hook"

# PAM session phase: every client kind (shell, VS Code Remote SSH, scp,
# sftp) opens and closes a session, unlike ~/.bash_logout.
install -o root -g root -m 0644 "$src/pam-lab-session" "$root/etc/pam.d/lab-session"
pam_sshd="$root/etc/pam.d/sshd"
if [ ! -f "$pam_sshd" ]; then
    echo "install-lab-session: $pam_sshd is missing (is openssh-server installed?)" >&2
    exit 1
fi
# The hook runs as root with the PAM environment: a student's
# ~/.pam_environment must never be part of it. The image turns user_readenv
# off (setup-image.sh); do it here too, so an image built before that (or
# another distro's) is closed at every boot before the hook goes in.
for pam_file in "$root"/etc/pam.d/*; do
    [ -f "$pam_file" ] || continue
    if grep -Eq '^[^#]*pam_env\.so.*user_readenv=1' "$pam_file"; then
        sed -i -E '/^[^#]*pam_env\.so/s/user_readenv=1/user_readenv=0/' "$pam_file"
    fi
done
if grep -Eq '^[^#]*pam_env\.so.*user_readenv=1' "$root"/etc/pam.d/* 2>/dev/null; then
    echo "install-lab-session: a PAM file still reads users' ~/.pam_environment; not installing the hook" >&2
    exit 1
fi
if ! grep -qx '@include lab-session' "$pam_sshd"; then
    # A file without a final newline would glue the include onto its last line.
    if [ -n "$(tail -c 1 "$pam_sshd")" ]; then
        printf '\n' >>"$pam_sshd"
    fi
    printf '# Lab clusters start at login and stop after the last logout (classroom).\n@include lab-session\n' \
        >>"$pam_sshd"
fi

# Students may run exactly these subcommands as root; the hook acts for
# sudo's SUDO_USER only, so nobody can touch another student's cluster.
if [ -d "$root/etc/sudoers.d" ]; then
    rule=$(mktemp)
    printf '%s\n' \
        "# Installed by classroom's install-lab-session.sh: students manage only their own lab cluster." \
        "ALL ALL=(root) NOPASSWD: $hook status, $hook ensure, $hook stop, $hook kubeconfig" >"$rule"
    # A broken drop-in would disable sudo altogether: check before installing.
    if command -v visudo >/dev/null 2>&1 && ! visudo -cqf "$rule"; then
        echo "install-lab-session: the sudoers rule does not parse; not installed" >&2
        rm -f "$rule"
        exit 1
    fi
    install -o root -g root -m 0440 "$rule" "$root/etc/sudoers.d/lab-session"
    rm -f "$rule"
fi

# `lab status|ensure|stop|kubeconfig` for students.
wrapper=$(mktemp)
cat >"$wrapper" <<'WRAPPER'
#!/bin/sh
# Students' front end to the lab session hook (installed by classroom).
case "${1:-}" in
    status | ensure | stop | kubeconfig) ;;
    *)
        echo "usage: lab status|ensure|stop|kubeconfig" >&2
        exit 2
        ;;
esac
# The unprivileged server mode sets no_new_privs, so sudo cannot work there.
if grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status 2>/dev/null || ! command -v sudo >/dev/null 2>&1; then
    echo "lab: this server does not allow sudo; your cluster still starts at login and stops after logout" >&2
    exit 1
fi
exec sudo -n /usr/local/sbin/lab-session-hook "$1"
WRAPPER
install -o root -g root -m 0755 "$wrapper" "$root/usr/local/bin/lab"
rm -f "$wrapper"
