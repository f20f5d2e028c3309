#!/usr/bin/env bash
# bench/upload.sh — lxcforge upload against the seed's `curl -F` upload, to the Proxmox
# emulator (pve-emu) on 127.0.0.1, in one run.
#
#   (a) curl -F content=vztmpl -F filename=@FILE     the seed's one-liner: one POST, the task
#                                                     is not followed, nothing is checked
#   (b) lxcforge upload FILE  (with its .sha256)      the artifact case: checks, the upload
#                                                     with its checksum, the task followed,
#                                                     the listing read back
#   (c) lxcforge upload FILE  (no sidecar)            as (b), hashing the file first
#
# Prints wall time, CPU time and peak RSS of each, and the targets of the upload issue:
#   wall(b)/wall(a) ≤ 1.1 and peak RSS(b) ≤ 64 MiB.
#
# Usage: bench/upload.sh [SIZE_MIB]     (default 2048: a 2 GiB file; BENCH_SIZE_MIB also works)
# Env: LXCFORGE, PVE_EMU (default target/release/{lxcforge,pve-emu}), BENCH_DIR (scratch).
# Needs: curl, GNU time (/usr/bin/time), bc. The token never goes into an argv: curl reads
# it from a config file, lxcforge from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-${BENCH_SIZE_MIB:-2048}}
LXCFORGE=${LXCFORGE:-target/release/lxcforge}
PVE_EMU=${PVE_EMU:-target/release/pve-emu}
for t in curl /usr/bin/time bc; do
    command -v "$t" >/dev/null || { echo "bench/upload.sh: $t is missing (apt-get install curl time bc)" >&2; exit 1; }
done
if [ ! -x "$LXCFORGE" ] || [ ! -x "$PVE_EMU" ]; then
    cargo build --release -p lxcforge -p pve-emu
fi

work=${BENCH_DIR:-$(mktemp -d /var/tmp/lxcforge-upload-bench.XXXXXX)}
mkdir -p "$work/emu"
emu_pid=""
cleanup() {
    if [ -n "$emu_pid" ]; then
        kill -TERM "$emu_pid" 2>/dev/null || true
        wait "$emu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The emulator, with Proxmox's own timings (3 s auth delay; tasks finish when their copy does).
"$PVE_EMU" --listen 127.0.0.1:0 --data-dir "$work/emu" --task-ms 0 > "$work/emu.json" &
emu_pid=$!
for _ in $(seq 100); do [ -s "$work/emu.json" ] && break; sleep 0.1; done
[ -s "$work/emu.json" ] || { echo "bench/upload.sh: pve-emu did not start" >&2; exit 1; }
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$work/emu.json"; }
api_url=$(field api_url)
ca=$(field cert_pem_file)
token_id='automation@pve!ci'
secret='00000000-0000-4000-8000-000000000001'   # pve-emu's default token

echo "making a ${SIZE_MIB} MiB incompressible file ..." >&2
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$work/src"
# Different names on the storage, the same bytes.
ln "$work/src" "$work/curl-v1.tar.gz"
ln "$work/src" "$work/lxc-v1.tar.gz"
ln "$work/src" "$work/lxc-v2.tar.gz"
sum=$(sha256sum "$work/src" | cut -d' ' -f1)
printf '%s  lxc-v1.tar.gz\n' "$sum" > "$work/lxc-v1.tar.gz.sha256"

# curl's settings in a file (-K), so the token is not in its argv. "Expect:" stops curl from
# waiting a second for a "100 Continue" that pveproxy never sends (ref §2.2): curl at its best.
umask 077
cat > "$work/curl.cfg" <<EOF
header = "Authorization: PVEAPIToken=${token_id}=${secret}"
header = "Expect:"
EOF

declare -A WALL CPU RSS
# run NAME COMMAND…: wall seconds, CPU seconds (user+sys), peak RSS KiB of COMMAND itself.
run() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    if ! /usr/bin/time -o "$work/$name.time" -f '%e %U %S %M' "$@" > "$work/$name.out" 2> "$work/$name.err"; then
        echo "bench/upload.sh: ($name) failed:" >&2; cat "$work/$name.err" "$work/$name.out" >&2; exit 1
    fi
    local wall user sys rss
    read -r wall user sys rss < "$work/$name.time"
    WALL[$name]=$wall
    CPU[$name]=$(echo "$user + $sys" | bc)
    RSS[$name]=$rss
}

run a curl -sS --fail-with-body -K "$work/curl.cfg" --cacert "$ca" \
    -F content=vztmpl -F "filename=@$work/curl-v1.tar.gz" \
    "$api_url/nodes/pve/storage/local/upload"
export PM_API_URL="$api_url" PM_API_TOKEN_ID="$token_id" PM_API_TOKEN_SECRET="$secret" \
    PM_NODE=pve PM_STORAGE=local PM_TLS_CA_CERT="$ca"
run b "$LXCFORGE" --quiet --json upload "$work/lxc-v1.tar.gz"
run c "$LXCFORGE" --quiet --json upload "$work/lxc-v2.tar.gz"
grep -q '"ok": true' "$work/b.out" && grep -q '"ok": true' "$work/c.out" || {
    echo "bench/upload.sh: an lxcforge upload did not succeed" >&2; cat "$work/b.out" "$work/c.out" >&2; exit 1; }
grep -q '"data":"UPID:' "$work/a.out" || { echo "bench/upload.sh: curl got no UPID: $(cat "$work/a.out")" >&2; exit 1; }
for f in curl-v1 lxc-v1 lxc-v2; do
    stored=$(find "$work/emu" -path "*template/cache/$f.tar.gz" | head -n 1)
    [ -n "$stored" ] && [ "$(stat -c %s "$stored")" = "$((SIZE_MIB << 20))" ] || {
        echo "bench/upload.sh: $f.tar.gz is not on the emulated storage (curl's task may still run)" >&2; }
done

printf '\nupload of %d MiB to pve-emu on 127.0.0.1 (%s cores)\n' "$SIZE_MIB" "$(nproc)"
printf '%-40s %9s %9s %11s\n' "" "wall s" "cpu s" "peak RSS"
label() { case $1 in
    a) echo "(a) curl -F (seed, task not followed)";;
    b) echo "(b) lxcforge upload, sidecar";;
    c) echo "(c) lxcforge upload, hashing first";; esac; }
for k in a b c; do
    printf '%-40s %9s %9s %8d MiB\n' "$(label $k)" "${WALL[$k]}" "${CPU[$k]}" "$(( ${RSS[$k]} / 1024 ))"
done
ratio() { echo "scale=3; $1 / $2" | bc; }
echo
echo "wall(b)/wall(a) = $(ratio "${WALL[b]}" "${WALL[a]}")   (target ≤ 1.1)"
echo "wall(c)/wall(a) = $(ratio "${WALL[c]}" "${WALL[a]}")"
echo "peak RSS(b) = $(( ${RSS[b]} / 1024 )) MiB, RSS(c) = $(( ${RSS[c]} / 1024 )) MiB   (target ≤ 64 MiB)"
