#!/bin/sh
# Print the Debian package mirror URL to use for debootstrap.
#   debian-mirror.sh             the archive mirror (…/debian)
#   debian-mirror.sh --security  the security archive (…/debian-security): $DEBIAN_SECURITY_MIRROR,
#                                else the apt source with suite <suite>-security and a URI
#                                ending in /debian-security, else "<archive mirror>-security"
#
# Order (archive mirror):
#   1. $DEBIAN_MIRROR, if set and non-empty (printed as given, minus a trailing '/').
#   2. The machine's own apt configuration:
#        - deb822 files /etc/apt/sources.list.d/*.sources: the first stanza whose
#          Suites include "bookworm" (exactly) and one of whose URIs ends in /debian
#        - one-line /etc/apt/sources.list and /etc/apt/sources.list.d/*.list:
#          the first "deb" line whose suite is "bookworm" and whose URI ends in /debian
#      ($APT_ETC overrides /etc/apt, $DEBIAN_MIRROR_SUITE overrides "bookworm";
#       both exist for testing.)
# Exits 1 with a message on stderr when nothing suitable is found.
#
# No mirror host name is hard-coded anywhere in this repository on purpose:
# the machine that builds knows which mirror it may reach.
set -eu

MODE=archive
case "${1:-}" in
    --security) MODE=security ;;
    "") ;;
    *) echo "usage: $0 [--security]" >&2; exit 2 ;;
esac

APT_ETC=${APT_ETC:-/etc/apt}
SUITE=${DEBIAN_MIRROR_SUITE:-bookworm}

# find_uri SUITE PATH: first enabled "deb" source for SUITE whose URI ends in /PATH
find_uri() {
    suite=$1 want=$2
    {
        for f in "$APT_ETC"/sources.list.d/*.sources; do
            [ -f "$f" ] && printf '#FILE deb822 %s\n' "$f" && cat "$f" && printf '\n'
        done
        for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
            [ -f "$f" ] && printf '#FILE list %s\n' "$f" && cat "$f" && printf '\n'
        done
    } | awk -v suite="$suite" -v want="$want" '
        function isdebian(u) { sub(/\/+$/, "", u); return u ~ ("^(https?|file|ftp)://.*/" want "$") }
        function trim(u) { sub(/\/+$/, "", u); return u }
        function flush(   i, n, us, ss, hassuite, enabled) {
            if (mode != "deb822") return
            enabled = (tolower(st_enabled) != "no")
            hastype = (st_types == "" || (" " st_types " ") ~ / deb /)
            n = split(st_suites, ss, /[ \t]+/); hassuite = 0
            for (i = 1; i <= n; i++) if (ss[i] == suite) hassuite = 1
            if (enabled && hastype && hassuite) {
                n = split(st_uris, us, /[ \t]+/)
                for (i = 1; i <= n; i++) if (isdebian(us[i])) { print trim(us[i]); done = 1; exit 0 }
            }
            st_uris = ""; st_suites = ""; st_types = ""; st_enabled = ""; key = ""
        }
        /^#FILE / { flush(); mode = $2; next }
        mode == "deb822" {
            if ($0 ~ /^[ \t]*$/) { flush(); next }      # stanza separator
            if ($0 ~ /^[ \t]*#/) next                     # comment
            if ($0 ~ /^[ \t]/) {                           # continuation line
                if (key == "uris") st_uris = st_uris " " $0
                else if (key == "suites") st_suites = st_suites " " $0
                next
            }
            line = $0; k = line; sub(/:.*/, "", k); v = line; sub(/^[^:]*:[ \t]*/, "", v)
            key = tolower(k)
            if (key == "uris") st_uris = v
            else if (key == "suites") st_suites = v
            else if (key == "types") st_types = v
            else if (key == "enabled") st_enabled = v
            next
        }
        mode == "list" {
            sub(/#.*/, "")
            if ($1 != "deb") next
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }   # [ options ]
            if ($(i + 1) == suite && isdebian($i)) { print trim($i); done = 1; exit 0 }
        }
        END { if (!done) flush() }
    ' | head -n 1
}

archive_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "${DEBIAN_MIRROR%/}"
        return 0
    fi
    found=$(find_uri "$SUITE" debian)
    if [ -z "$found" ]; then
        echo "debian-mirror: no Debian mirror found: no apt source in $APT_ETC has suite '$SUITE' with a URI ending in /debian;" >&2
        echo "debian-mirror: set DEBIAN_MIRROR=<url of a Debian archive> to choose one explicitly" >&2
        return 1
    fi
    printf '%s\n' "$found"
}

if [ "$MODE" = archive ]; then
    archive_mirror
    exit $?
fi

# --security
if [ -n "${DEBIAN_SECURITY_MIRROR:-}" ]; then
    printf '%s\n' "${DEBIAN_SECURITY_MIRROR%/}"
    exit 0
fi
sec=$(find_uri "$SUITE-security" debian-security)
if [ -z "$sec" ]; then
    archive=$(archive_mirror) || exit 1
    sec="$archive-security"
fi
printf '%s\n' "$sec"
