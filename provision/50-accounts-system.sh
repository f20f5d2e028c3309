#!/bin/sh
# 50-accounts-system: accounts and systemd settings for a userless, key-only template.
#
#  * root's password is locked (`usermod -L`: "!" prefix in /etc/shadow). Key login still
#    works (sshd uses PAM account checks, UsePAM yes), and Proxmox replaces the hash when a
#    password is given at `pct create`.
#  * no users are created and no keys injected; the default "ubuntu" user (uid 1000) of the
#    Ubuntu >= 23.04 docker image is removed, so the template stays userless and uid 1000 is
#    free for the operator account Ansible creates.
#  * no authorized_keys ship for root.
#  * systemd-firstboot is masked: everything it would ask for (locale, timezone, root
#    password) is configured here, and on an empty /etc/machine-id (first boot) it would
#    otherwise be pulled in and could wait for console input.
#  * sys-kernel-debug.mount and sys-kernel-config.mount get ConditionVirtualization=!lxc
#    (drop-ins): in an unprivileged LXC container CAP_SYS_RAWIO exists inside the user
#    namespace, so their condition passes, but debugfs/configfs cannot be mounted there —
#    the units fail ("permission denied") and the system boots "degraded". systemd already
#    ships sys-kernel-tracing.mount with exactly this condition. (Privileged Proxmox CTs
#    drop CAP_SYS_RAWIO, so the units are skipped there anyway.)
set -eu
. /etc/os-release

# --- root -----------------------------------------------------------------------------
usermod -L root
state=$(passwd -S root | awk '{print $2}')
[ "$state" = L ] || { echo "50-accounts-system: root password not locked (passwd -S: $state)" >&2; exit 1; }
echo "root password: locked"
rm -f /root/.ssh/authorized_keys /root/.ssh/authorized_keys2
[ ! -d /root/.ssh ] || rmdir /root/.ssh 2>/dev/null || true

# --- image-provided users -------------------------------------------------------------
if [ "$ID" = ubuntu ] && getent passwd ubuntu >/dev/null 2>&1; then
    uid=$(getent passwd ubuntu | cut -d: -f3)
    echo "removing the base image's default user 'ubuntu' (uid $uid)"
    userdel --remove ubuntu 2>/dev/null || userdel ubuntu
    getent group ubuntu >/dev/null 2>&1 && groupdel ubuntu || true
fi
# report any remaining login-capable accounts with uid >= 1000 (there should be none)
extra=$(awk -F: '$3 >= 1000 && $3 < 65534 { print $1 }' /etc/passwd)
if [ -n "$extra" ]; then
    echo "50-accounts-system: unexpected regular users in the base: $extra" >&2
    exit 1
fi

# --- systemd ----------------------------------------------------------------------------
systemctl mask systemd-firstboot.service >/dev/null 2>&1 || true
for unit in sys-kernel-debug.mount sys-kernel-config.mount; do
    install -d -m 0755 "/etc/systemd/system/$unit.d"
    cat > "/etc/systemd/system/$unit.d/lxcforge-container.conf" <<'EOF'
# lxcforge: not mountable inside an (unprivileged) LXC container; skip instead of failing.
[Unit]
ConditionVirtualization=!lxc
EOF
    chmod 0644 "/etc/systemd/system/$unit.d/lxcforge-container.conf"
done
systemctl set-default multi-user.target
echo "default target: $(systemctl get-default)"
