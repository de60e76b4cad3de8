#!/bin/sh
# Turns a Debian/Ubuntu root filesystem with the login server's packages into
# the classroom login image: systemd as PID 1, sshd waiting for rc.local, no
# host keys, the root-owned key and CA directories the sshd_config expects.
#
# Runs as the Dockerfile's RUN step (from the directory it was copied to) and,
# in the tests, in a chroot of a Debian root filesystem.  Everything here must
# therefore work without a running systemd (systemctl enable/mask are offline).
#
# Environment:
#   UNMINIMIZE=1   restore man pages and docs on Ubuntu's minimized images
#                  (students read man pages; default 1; 0 for a smaller image)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
unminimize=${UNMINIMIZE:-1}

say() { printf 'setup-image: %s\n' "$*"; }

# Units that need hardware, a console or kernel access a pod does not have;
# left enabled they fail at every boot and make `systemctl is-system-running`
# report "degraded".
container_masked_units="
getty.target
console-getty.service
getty-static.service
serial-getty@.service
systemd-udevd.service
systemd-udevd-control.socket
systemd-udevd-kernel.socket
systemd-udev-trigger.service
systemd-udev-settle.service
systemd-modules-load.service
systemd-remount-fs.service
systemd-firstboot.service
systemd-hwdb-update.service
systemd-timesyncd.service
systemd-networkd.service
systemd-networkd-wait-online.service
systemd-resolved.service
sys-kernel-config.mount
sys-kernel-debug.mount
sys-kernel-tracing.mount
sys-fs-fuse-connections.mount
dev-hugepages.mount
dev-mqueue.mount
proc-sys-fs-binfmt_misc.automount
e2scrub_reap.service
e2scrub_all.timer
fstrim.timer
motd-news.timer
ondemand.service
networkd-dispatcher.service
"

if [ "$unminimize" = 1 ] && command -v unminimize >/dev/null 2>&1; then
    say "restoring man pages and documentation (unminimize)"
    yes | unminimize >/dev/null
fi

say "installing the boot units"
install -D -m 0644 "$here/rc-local.service" /etc/systemd/system/rc-local.service
install -D -m 0644 "$here/ssh-after-rc-local.conf" /etc/systemd/system/ssh.service.d/10-after-rc-local.conf
# Debian and Ubuntu ship a drop-in for rc-local.service (debian.conf) that
# copies rc.local's output to /dev/console and waits for network-online.target;
# a pod has no console of its own and its network is up before PID 1 starts.
# The same name under /etc, pointing at /dev/null, masks that drop-in.
install -d -m 0755 /etc/systemd/system/rc-local.service.d
ln -sf /dev/null /etc/systemd/system/rc-local.service.d/debian.conf
# Standalone runs only: the pod's sshd_config (components/scripts/sshd_config)
# replaces the distro's and does not include sshd_config.d.
install -D -m 0644 "$here/sshd-defaults.conf" /etc/ssh/sshd_config.d/50-classroom-defaults.conf
# The pod mounts its own rc.local over this one; keep any that is already there.
if [ ! -e /etc/rc.local ]; then
    install -m 0755 "$here/rc.local.default" /etc/rc.local
fi

# Ubuntu >= 22.10 starts sshd by socket activation, which would bypass the
# ordering after rc-local.service (the socket accepts connections at once).
# Run ssh.service as a plain daemon instead, as Ubuntu documents for reverting.
rm -f /etc/systemd/system/ssh.service.d/00-socket.conf /etc/systemd/system/ssh.socket.d/addresses.conf
systemctl mask ssh.socket
systemctl enable ssh.service rc-local.service
systemctl set-default multi-user.target

say "masking units that cannot work in a container"
# shellcheck disable=SC2086  # the list is split on purpose
systemctl mask $container_masked_units

say "removing the distro's host keys"
# Host keys are generated per pod by the init container and signed by the
# class CA; keys baked into an image would be shared by every pod from it.
rm -f /etc/ssh/ssh_host_*

say "closing the PAM stack to students' own environment files"
# Debian (openssh-server up to 1:9.7p1-6) and Ubuntu jammy/noble ship
# /etc/pam.d/sshd with "pam_env.so user_readenv=1": every variable a student
# writes into ~/.pam_environment (LD_PRELOAD, PYTHONPATH, http_proxy,
# PAM_USER ...) would be in the environment of each later session module,
# including the lab session hook that pam_exec runs as ROOT. Turn it off in
# every PAM file; /etc/environment and /etc/default/locale are still read.
for pam_file in /etc/pam.d/*; do
    [ -f "$pam_file" ] || continue
    if grep -Eq '^[^#]*pam_env\.so.*user_readenv=1' "$pam_file"; then
        sed -i -E '/^[^#]*pam_env\.so/s/user_readenv=1/user_readenv=0/' "$pam_file"
    fi
done
if grep -Eq '^[^#]*pam_env\.so.*user_readenv=1' /etc/pam.d/* 2>/dev/null; then
    say "ERROR: a PAM file still reads the user's environment file" >&2
    exit 1
fi

say "creating the root-owned key directories"
# AuthorizedKeysFile /etc/ssh/authorized_keys/%u: root-owned and not writable
# by students, so a student cannot add a key that outlives the term.
install -d -o root -g root -m 0755 /etc/ssh/authorized_keys
# The class CA's public key and the KRL (TrustedUserCAKeys, RevokedKeys).
install -d -o root -g root -m 0755 /etc/ssh/classroom
# Mount point of the signed host keys from the init container (HostKey lines).
install -d -o root -g root -m 0755 /etc/ssh/host

say "generating the en_US.UTF-8 locale"
if [ -d /var/lib/locales/supported.d ]; then
    # Ubuntu: locale-gen records the locale in supported.d, so it survives
    # upgrades of the locales package.
    locale-gen en_US.UTF-8
else
    # Debian: locale-gen builds what /etc/locale.gen lists.
    if grep -q '^# *en_US.UTF-8 UTF-8' /etc/locale.gen; then
        sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
    elif ! grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen; then
        echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
    fi
    locale-gen
fi
echo 'LANG=en_US.UTF-8' >/etc/default/locale

# Ubuntu's images since 23.04 have a user "ubuntu" with UID 1000; the roster
# owns every login account and its UIDs, so nothing else may hold one.
if id ubuntu >/dev/null 2>&1; then
    say "removing the image's default user 'ubuntu'"
    # --remove fails (after removing the user) when there is no mail spool.
    userdel --remove ubuntu 2>/dev/null || true
    if id ubuntu >/dev/null 2>&1; then
        userdel ubuntu
    fi
fi

# /ready is the readiness probe's file: only the boot script of a running pod
# may create it, never the image build.
rm -f /ready

# The image is rebuilt rather than upgraded in place; apt's lists only bloat it.
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
say "done"
