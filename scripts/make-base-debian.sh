#!/bin/sh
# make-base-debian.sh SUITE OUT.tar.gz
#
# Build an offline Debian base rootfs tarball with debootstrap (minbase variant),
# for image definitions whose base is `rootfs = "bases/…tar.gz"` (e.g. `make base.debian-12`).
#
#   * mirror: scripts/debian-mirror.sh (DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR override it;
#     otherwise taken from this machine's apt sources — no mirror host is written into the
#     repository). The base gets deb822 sources for SUITE, SUITE-updates and SUITE-security.
#   * output is written as OUT.partial and renamed to OUT only when complete, then
#     OUT.sha256 (sha256sum format, file name relative to its directory) is written the same way
#   * idempotent: does nothing if OUT exists, unless FORCE=1
#   * the temporary debootstrap directory is removed on any exit (including Ctrl-C)
#   * needs root (debootstrap creates device nodes and chowns files)
#
# Env: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, FORCE=1, TMPDIR (where the temporary rootfs is built),
#      DEBOOTSTRAP_ARGS (extra arguments, e.g. --include=…), GZIP_CMD (default: pigz -n if
#      available, else gzip -n).
set -eu

usage() { echo "usage: $0 SUITE OUT.tar.gz" >&2; exit 2; }
[ $# -eq 2 ] || usage
SUITE=$1
OUT=$2
case "$OUT" in *.tar.gz|*.tgz) ;; *) echo "make-base-debian: OUT must end in .tar.gz: $OUT" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)

if [ -e "$OUT" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "make-base-debian: $OUT already exists (FORCE=1 rebuilds it)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "make-base-debian: must run as root (debootstrap needs it)" >&2
    exit 1
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "make-base-debian: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }

MIRROR=$(sh "$here/debian-mirror.sh")
case "$SUITE" in
    sid|unstable|experimental|rc-buggy) SECURITY_MIRROR="" ;;   # no -security/-updates suites
    *) SECURITY_MIRROR=$(sh "$here/debian-mirror.sh" --security) ;;
esac

outdir=$(dirname "$OUT")
outname=$(basename "$OUT")
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

work=$(mktemp -d "${TMPDIR:-/var/tmp}/lxcforge-debootstrap.XXXXXX")
cleanup() {
    rc=$?
    trap - EXIT INT TERM HUP
    # debootstrap may leave /proc, /sys mounted inside the target when interrupted
    if [ -d "$work/rootfs" ]; then
        for m in $(awk -v p="$work/rootfs" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
            umount -l "$m" 2>/dev/null || true
        done
    fi
    rm -rf "$work"
    rm -f "$outdir/$outname.partial" "$outdir/$outname.sha256.partial"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if command -v pigz >/dev/null 2>&1; then
    GZIP_CMD=${GZIP_CMD:-pigz -n}
else
    GZIP_CMD=${GZIP_CMD:-gzip -n}
fi

start=$(date +%s)
echo "make-base-debian: debootstrap --variant=minbase $SUITE from $MIRROR"
# shellcheck disable=SC2086
debootstrap --variant=minbase ${DEBOOTSTRAP_ARGS:-} "$SUITE" "$work/rootfs" "$MIRROR"
mid=$(date +%s)
echo "make-base-debian: debootstrap took $((mid - start)) s"

# debootstrap configures only "$SUITE main". Give the base the same sources an official
# Debian image has — the release, its -updates and -security suites — so the provisioning's
# dist-upgrade applies security fixes. deb822 format, as in Debian's own container images.
if [ -z "$SECURITY_MIRROR" ]; then
    suites="$SUITE"
    security_stanza=""
else
    suites="$SUITE $SUITE-updates"
    security_stanza="
Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
fi
rm -f "$work/rootfs/etc/apt/sources.list"
cat > "$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
$security_stanza
EOF
chmod 0644 "$work/rootfs/etc/apt/sources.list.d/debian.sources"

# debootstrap leaves the build host's resolv.conf and hostname, its own log and apt lists
# behind: drop what must not ship in a base (provisioning runs apt-get update anyway).
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
       "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/log/bootstrap.log"
install -d -m 0755 "$work/rootfs/var/lib/apt/lists/partial"
: > "$work/rootfs/etc/resolv.conf"
echo localhost > "$work/rootfs/etc/hostname"

echo "make-base-debian: packing $OUT"
# (--use-compress-program keeps tar's exit status; a pipe in sh would lose it)
tar --numeric-owner --xattrs --use-compress-program="$GZIP_CMD" -C "$work/rootfs" -cf "$outdir/$outname.partial" .
mv -f "$outdir/$outname.partial" "$outdir/$outname"
(cd "$outdir" && sha256sum "$outname" > "$outname.sha256.partial" && mv -f "$outname.sha256.partial" "$outname.sha256")
end=$(date +%s)
echo "make-base-debian: wrote $OUT ($(du -h "$outdir/$outname" | cut -f1)), packing took $((end - mid)) s, total $((end - start)) s"
cat "$outdir/$outname.sha256"
