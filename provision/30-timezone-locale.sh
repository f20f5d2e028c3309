#!/bin/sh
# 30-timezone-locale: timezone Etc/UTC, locale en_US.UTF-8 (C.UTF-8 if it cannot be built).
#
# Proxmox overwrites /etc/localtime and /etc/timezone at every start only when the
# container config sets `timezone`; otherwise what is set here stays.
# LOCALE overrides the locale (default en_US.UTF-8; set it in the definition's [env] table).
set -eu
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release

# --- timezone -------------------------------------------------------------------------
[ -e /usr/share/zoneinfo/Etc/UTC ] || { echo "30-timezone-locale: tzdata not installed" >&2; exit 1; }
ln -sfn /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo "Etc/UTC" > /etc/timezone
# keep debconf's view in line so a later `dpkg-reconfigure tzdata` or upgrade keeps UTC
dpkg-reconfigure -f noninteractive tzdata >/dev/null 2>&1 || true
echo "timezone: $(readlink /etc/localtime) ($(date +%Z))"

# --- locale ---------------------------------------------------------------------------
WANT=${LOCALE:-en_US.UTF-8}
name=${WANT%%.*}                         # en_US
charset=${WANT#*.}; [ "$charset" != "$WANT" ] || charset=UTF-8
normalized=$(printf '%s.%s' "$name" "$charset" | sed 's/UTF-8$/utf8/; s/utf-8$/utf8/')

have_locale() { locale -a 2>/dev/null | grep -qx "$1"; }

if [ -f /etc/locale.gen ]; then
    # Debian (and Ubuntu where present): enable the line, or add it.
    if grep -Eq "^[#[:space:]]*${WANT} ${charset}[[:space:]]*\$" /etc/locale.gen; then
        sed -i -E "s/^[#[:space:]]*(${WANT} ${charset})[[:space:]]*\$/\\1/" /etc/locale.gen
    else
        echo "$WANT $charset" >> /etc/locale.gen
    fi
fi

case "$ID" in
    ubuntu) locale-gen "$WANT" ;;      # Ubuntu's locale-gen takes the locale as argument
    *)      locale-gen ;;              # Debian's locale-gen reads /etc/locale.gen
esac

if ! have_locale "$normalized"; then
    echo "30-timezone-locale: locale-gen did not produce $WANT, trying localedef" >&2
    localedef -i "$name" -c -f "$charset" "$WANT" || true
fi
if have_locale "$normalized"; then
    LANG_VALUE=$WANT
else
    echo "30-timezone-locale: WARNING: $WANT unavailable, falling back to C.UTF-8" >&2
    LANG_VALUE=C.UTF-8
fi

# /etc/default/locale is read by pam_env (ssh/console logins) and, through Debian's and
# Ubuntu's systemd patch, by PID 1 and localed when /etc/locale.conf is absent. No
# /etc/locale.conf is written: it would take precedence and drift from update-locale.
update-locale --reset LANG="$LANG_VALUE"
chmod 0644 /etc/default/locale
echo "locale: LANG=$LANG_VALUE ($(locale -a | tr '\n' ' '))"
