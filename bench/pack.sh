#!/usr/bin/env bash
# bench/pack.sh — how fast lxcforge packs a container, against the shell pipelines it replaces.
#
# On one real provisioned container, measured in one run:
#   (a) docker export > /dev/null          the floor: what the engine alone costs
#   (b) docker export | gzip -9 -n         the seed's pipeline
#   (c) docker export | pigz -6 -n         the best shell pipeline
#   (d) lxcforge export                    normalize + parallel gzip + sha256, one pass
# and prints wall time, CPU time, peak RSS, output size, and the ratios the packer issue targets:
#   d/a ≤ 1.5, b/d ≥ 10, size(d)/size(b) ≤ 1.01, peak RSS(d) ≤ 64 MiB.
#
# Usage: bench/pack.sh [CONTAINER]
#   Without CONTAINER, one is made from bases/debian-12-minbase.tar.gz (`make base.debian-12`)
#   and provisioned with the shipped provision scripts, then removed at the end.
# Env: LXCFORGE (default target/release/lxcforge), LXCFORGE_FLAGS (extra export flags, e.g.
#      "--level 4"), BENCH_DIR (scratch, default a temp dir).
# Needs: docker, gzip, pigz, GNU time (/usr/bin/time), bc.
set -euo pipefail
cd "$(dirname "$0")/.."

LXCFORGE=${LXCFORGE:-target/release/lxcforge}
[ -x "$LXCFORGE" ] || cargo build --release
for t in docker gzip pigz /usr/bin/time bc; do
    command -v "$t" >/dev/null || { echo "bench/pack.sh: $t is missing (apt-get install pigz time bc)" >&2; exit 1; }
done

work=${BENCH_DIR:-$(mktemp -d /var/tmp/lxcforge-bench.XXXXXX)}
mkdir -p "$work"
made_container=""
made_image=""
cleanup() {
    [ -n "$made_container" ] && docker rm -f "$made_container" >/dev/null 2>&1 || true
    [ -n "$made_image" ] && docker rmi -f "$made_image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

container=${1:-}
if [ -z "$container" ]; then
    base=bases/debian-12-minbase.tar.gz
    [ -f "$base" ] || make base.debian-12
    made_image="lxcforge-bench/base:$$"
    docker import "$base" "$made_image" >/dev/null
    made_container="lxcforge-bench-$$"
    docker create --name "$made_container" "$made_image" sleep infinity >/dev/null
    docker start "$made_container" >/dev/null
    docker exec "$made_container" mkdir -p /.lxcforge
    for s in provision/[0-9]*.sh; do
        docker cp "$s" "$made_container:/.lxcforge/$(basename "$s")"
    done
    echo "provisioning a bench container from $base ..." >&2
    for s in provision/[0-9]*.sh; do
        docker exec -e DEBIAN_FRONTEND=noninteractive -e LXCFORGE_IMAGE=bench -e LXCFORGE_VERSION=0 \
            -e SOURCE_DATE_EPOCH=1700000000 "$made_container" "/.lxcforge/$(basename "$s")" >/dev/null
    done
    docker exec "$made_container" rm -rf /.lxcforge
    docker stop -t 1 "$made_container" >/dev/null
    container=$made_container
fi

# run NAME COMMAND: wall seconds, CPU seconds (user+sys of all children), peak RSS KiB
declare -A WALL CPU RSS SIZE
run() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local out
    out=$( { /usr/bin/time -f '%e %U %S %M' bash -c "$*" 2>&1 >/dev/null; } | tail -n 1)
    read -r wall user sys rss <<<"$out"
    WALL[$name]=$wall
    CPU[$name]=$(echo "$user + $sys" | bc)
    RSS[$name]=$rss
}

run a "docker export $container > /dev/null"
run b "docker export $container | gzip -9 -n > $work/b.tar.gz"
run c "docker export $container | pigz -6 -n > $work/c.tar.gz"
run d "$LXCFORGE --quiet export ${LXCFORGE_FLAGS:-} $container $work/d.tar.gz"
SIZE[a]=0
for k in b c d; do SIZE[$k]=$(stat -c %s "$work/$k.tar.gz"); done

printf '\n%-34s %9s %9s %10s %12s\n' "pipeline ($container)" "wall s" "cpu s" "peak MiB" "size MiB"
for k in a b c d; do
    case $k in
        a) label="(a) docker export > /dev/null" ;;
        b) label="(b) docker export | gzip -9 -n" ;;
        c) label="(c) docker export | pigz -6 -n" ;;
        d) label="(d) lxcforge export" ;;
    esac
    printf '%-34s %9.2f %9.2f %10.1f %12.1f\n' "$label" "${WALL[$k]}" "${CPU[$k]}" \
        "$(echo "${RSS[$k]} / 1024" | bc -l)" "$(echo "${SIZE[$k]} / 1048576" | bc -l)"
done
ratio() { echo "scale=3; $1 / $2" | bc -l; }
d_over_a=$(ratio "${WALL[d]}" "${WALL[a]}")
b_over_d=$(ratio "${WALL[b]}" "${WALL[d]}")
size_ratio=$(ratio "${SIZE[d]}" "${SIZE[b]}")
rss_mib=$(echo "scale=1; ${RSS[d]} / 1024" | bc -l)
echo
echo "d/a wall (target ≤ 1.5):          $d_over_a"
echo "b/d wall (target ≥ 10):           $b_over_d"
echo "size d/b (target ≤ 1.01):         $size_ratio"
echo "peak RSS of d (target ≤ 64 MiB):  $rss_mib MiB"
echo "nproc: $(nproc)"
