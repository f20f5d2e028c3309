#!/bin/sh
# 10-packages: leave package management as on a normal installed system, without caches.
#
#  * drop packages that are no longer needed, purge leftover configs of removed packages
#  * apt caches and /var/lib/apt/lists/* removed (the first `apt-get update` in the
#    container fetches fresh lists; stale lists would only mislead)
#  * Docker-image apt/dpkg tweaks removed: /etc/apt/apt.conf.d/docker-* (auto-clean hooks,
#    gzip'ed indexes, no translations, no periodic updates…) and
#    /etc/dpkg/dpkg.cfg.d/docker-apt-speedup (force-unsafe-io, unsafe on a real system).
#    The Ubuntu image's /etc/dpkg/dpkg.cfg.d/excludes (no man pages/docs) is kept on purpose:
#    the template stays "minimized" like the base; run `unminimize` inside to undo.
#  * the build-time /usr/sbin/policy-rc.d is removed, so package upgrades in the running
#    container restart services normally.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get -y autoremove --purge
rc=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "rc" { print $2 }')
if [ -n "$rc" ]; then
    echo "purging configuration of removed packages:" $rc
    # shellcheck disable=SC2086
    dpkg --purge $rc
fi
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/partial/*
install -d -m 0755 /var/lib/apt/lists/partial 2>/dev/null || true
dpkg --clear-avail 2>/dev/null || true
rm -f /var/lib/dpkg/*-old /var/cache/debconf/*-old

for f in /etc/apt/apt.conf.d/docker-* /etc/dpkg/dpkg.cfg.d/docker-apt-speedup; do
    [ -e "$f" ] || continue
    echo "removing Docker image tweak $f"
    rm -f "$f"
done

if [ -e /usr/sbin/policy-rc.d ]; then
    echo "removing /usr/sbin/policy-rc.d"
    rm -f /usr/sbin/policy-rc.d
fi
