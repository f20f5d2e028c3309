#!/bin/sh
# 90-provenance: write /etc/lxcforge-release, a plain KEY=value file (os-release syntax:
# values double-quoted when they contain anything but [A-Za-z0-9._:@/+-]) that says what
# this template is and how it was built. Mode 0444, root-owned. No `chattr +i`: Docker
# lacks CAP_LINUX_IMMUTABLE and tar does not carry inode flags.
#
# Input (environment, set by lxcforge for every script):
#   LXCFORGE_IMAGE, LXCFORGE_VERSION, SOURCE_DATE_EPOCH, LXCFORGE_GIT_COMMIT,
#   LXCFORGE_BASE_REF, LXCFORGE_BASE_DIGEST (and, if set, LXCFORGE_PREFIX, LXCFORGE_TOOL_VERSION)
# Missing values are written as "unknown" (with a warning), so a hand-run build still works
# but is visibly unstamped. BUILD_DATE is derived from SOURCE_DATE_EPOCH (UTC, ISO 8601),
# not from the wall clock, so reruns from the same inputs produce the same file.
set -eu

STAMP=/etc/lxcforge-release

quote() {
    case "$1" in
        *[!A-Za-z0-9._:@/+-]*|'') printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"$`]/\\&/g')" ;;
        *) printf '%s' "$1" ;;
    esac
}
get() {
    eval "v=\${$1:-}"
    if [ -z "$v" ]; then
        echo "90-provenance: WARNING: $1 is not set, recording 'unknown'" >&2
        v=unknown
    fi
    printf '%s' "$v"
}

epoch=$(get SOURCE_DATE_EPOCH)
case "$epoch" in
    ''|unknown|*[!0-9]*) build_date=unknown ;;
    *) build_date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ) ;;
esac
. /etc/os-release

tmp=$(mktemp "$STAMP.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "# lxcforge template provenance; written at build time, do not edit"
    for k in LXCFORGE_IMAGE LXCFORGE_VERSION LXCFORGE_GIT_COMMIT LXCFORGE_BASE_REF LXCFORGE_BASE_DIGEST; do
        printf '%s=%s\n' "$k" "$(quote "$(get "$k")")"
    done
    # optional, recorded when lxcforge passes them
    for k in LXCFORGE_PREFIX LXCFORGE_TOOL_VERSION; do
        eval "v=\${$k:-}"
        [ -z "$v" ] || printf '%s=%s\n' "$k" "$(quote "$v")"
    done
    printf 'SOURCE_DATE_EPOCH=%s\n' "$(quote "$epoch")"
    printf 'BUILD_DATE=%s\n' "$(quote "$build_date")"
    printf 'BASE_OS_ID=%s\n' "$(quote "${ID:-unknown}")"
    printf 'BASE_OS_VERSION_ID=%s\n' "$(quote "${VERSION_ID:-unknown}")"
} > "$tmp"
chmod 0444 "$tmp"
chown 0:0 "$tmp"
mv -f "$tmp" "$STAMP"
echo "wrote $STAMP:"
cat "$STAMP"
