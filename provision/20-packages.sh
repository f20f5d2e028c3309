#!/bin/sh
# 20-packages: install what a Proxmox LXC system container needs to boot and be managed.
#
#   init        systemd, systemd-sysv (/sbin/init -> systemd), dbus, libpam-systemd
#   access      openssh-server, openssh-sftp-server (only a Recommends of openssh-server,
#               but Ansible and scp -s use sftp), sudo
#   network     iproute2, iputils-ping, netbase, ca-certificates, curl;
#               Debian: ifupdown + isc-dhcp-client (Proxmox writes /etc/network/interfaces),
#               Ubuntu: systemd-networkd from the systemd package (Proxmox writes
#               /etc/systemd/network/*.network)
#   ops         less, procps, vim-tiny, cron, logrotate, tzdata, locales,
#               python3 (Ansible needs a full python3, python3-minimal lacks modules)
#
# Always --no-install-recommends. Extra packages can be added at build time with
# EXTRA_PACKAGES="pkg1 pkg2" (set it in the definition's [env] table).
set -eu
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release

PACKAGES="
systemd
systemd-sysv
dbus
libpam-systemd
openssh-server
openssh-sftp-server
sudo
iproute2
iputils-ping
netbase
ca-certificates
curl
less
procps
vim-tiny
cron
logrotate
tzdata
locales
python3
"
case "$ID" in
    debian) PACKAGES="$PACKAGES ifupdown isc-dhcp-client" ;;
    ubuntu) ;;   # systemd-networkd is part of the systemd package
esac
PACKAGES="$PACKAGES ${EXTRA_PACKAGES:-}"

# 10-apt-base.sh must have installed the build-time policy-rc.d (no daemons started).
[ -x /usr/sbin/policy-rc.d ] || { echo "20-packages: /usr/sbin/policy-rc.d missing (run 10-apt-base.sh first)" >&2; exit 1; }

# tzdata: preset UTC so its postinst neither asks nor picks something else.
ln -sfn /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo "Etc/UTC" > /etc/timezone

echo "installing:" $PACKAGES
# shellcheck disable=SC2086
apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    -y --no-install-recommends install $PACKAGES

# /sbin/init must resolve to systemd: Proxmox and LXC start /sbin/init, and pve-container
# decides its getty/preset handling from it.
init=$(readlink -f /sbin/init || true)
case "$init" in
    */systemd) echo "/sbin/init -> $init" ;;
    *) echo "20-packages: /sbin/init does not resolve to systemd (got '$init')" >&2; exit 1 ;;
esac
