#!/bin/sh
# 20-identity: remove everything that would make two containers from this template share an
# identity.
#
#  * /etc/machine-id truncated to 0 bytes (kept as a file): systemd treats an empty file as
#    "first boot", generates a fresh id and commits it (systemd-machine-id-commit). Proxmox
#    deletes the file at `pct create`, which systemd handles the same way.
#  * /var/lib/dbus/machine-id: a symlink to /etc/machine-id, never a copied id.
#  * SSH host keys removed (Proxmox writes new ones at `pct create`; elsewhere
#    lxcforge-ssh-hostkeys.service generates them on first boot).
#  * systemd's random seed and credential secret removed (must be per machine).
set -eu

: > /etc/machine-id
chmod 0444 /etc/machine-id
if [ -d /var/lib/dbus ] || [ -e /var/lib/dbus/machine-id ]; then
    install -d -m 0755 /var/lib/dbus
    rm -f /var/lib/dbus/machine-id
    ln -s /etc/machine-id /var/lib/dbus/machine-id
fi
echo "machine-id: emptied ($(stat -c %s /etc/machine-id) bytes); dbus: $(readlink /var/lib/dbus/machine-id 2>/dev/null || echo absent)"

rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/ssh/ssh_host_*_key-cert.pub
[ -z "$(ls /etc/ssh/ssh_host_* 2>/dev/null)" ] || { echo "20-identity: host keys still present" >&2; exit 1; }
echo "ssh host keys: removed"

rm -f /var/lib/systemd/random-seed /var/lib/systemd/credential.secret
rm -f /root/.ssh/known_hosts /root/.ssh/known_hosts.old
