#!/bin/sh
# 90-files: remove build leftovers — logs, temporary files, shell history, caches.
#
#  * /var/log: rotated/compressed logs and journal files deleted, other log files truncated
#    to 0 bytes (files and directories are kept with their owners and modes: wtmp, btmp,
#    lastlog, /var/log/journal — whose existence makes journald persistent — and the
#    per-package log directories must stay)
#  * /tmp/* and /var/tmp/* removed; /run's content removed (a tmpfs over it at boot hides
#    it anyway, but it must not ship)
#  * shell and tool history / caches of root removed
#  * /.lxcforge (the scripts directory this script is running from) is NOT touched here:
#    lxcforge removes it itself after the last script.
set -eu

# --- logs -----------------------------------------------------------------------------
if [ -d /var/log ]; then
    find /var/log -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.bz2' -o -name '*.zst' \
        -o -name '*.[0-9]' -o -name '*.old' -o -name '*.journal' -o -name '*.journal~' \) -delete
    find /var/log -type f ! -size 0 -exec truncate -s 0 {} +
fi

# --- temporary files ---------------------------------------------------------------------
find /tmp /var/tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
chmod 1777 /tmp /var/tmp
if [ -d /run ]; then
    # keep /run/lock (a /var/lock symlink points there on Debian); everything else goes
    find /run -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} + 2>/dev/null || true
    find /run/lock -mindepth 1 -exec rm -rf {} + 2>/dev/null || true
fi

# --- history and per-user caches -----------------------------------------------------------
for home in /root /home/*; do
    [ -d "$home" ] || continue
    rm -f "$home/.bash_history" "$home/.sh_history" "$home/.zsh_history" "$home/.history" \
          "$home/.lesshst" "$home/.viminfo" "$home/.python_history" "$home/.wget-hsts" \
          "$home/.sudo_as_admin_successful" "$home/.selected_editor"
    rm -rf "$home/.cache"
done

# --- caches --------------------------------------------------------------------------------
rm -f /var/cache/ldconfig/aux-cache
rm -rf /var/cache/man/* /var/cache/apt/*.bin
rm -f /var/lib/dhcp/*.leases /var/lib/dhcp/dhclient*.leases 2>/dev/null || true
rm -rf /var/backups/*.gz /var/backups/*.[0-9] 2>/dev/null || true

echo "logs truncated; /tmp, /var/tmp, /run emptied; root history and caches removed"
echo "left in /var/log: $(find /var/log -type f | wc -l) empty files"
