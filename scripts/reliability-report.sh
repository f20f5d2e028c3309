#!/bin/sh
# reliability-report.sh [OUT]   (make reliability)
#
# Runs every test target in tests/ that records faults (calls `record_fault`), with
# LXCFORGE_FAULT_REPORT pointing at a scratch file, and renders OUT (default
# docs/reliability.md) from the records: one table per area (fault | observed outcome | left
# behind), with the date, the machine and the command. Every figure in it is what a test
# measured in this run. CI=true is set unless given, so a missing component fails its test
# instead of silently dropping its row. Exits non-zero if a test failed (OUT is written anyway,
# and says which).
set -eu
cd "$(dirname "$0")/.."
out=${1:-docs/reliability.md}
cargo=${CARGO:-cargo}
export CI="${CI:-true}"

command -v jq >/dev/null 2>&1 || { echo "reliability-report: needs jq (apt-get install jq)" >&2; exit 1; }

targets=$(grep -l 'record_fault(' tests/*.rs | sed 's|^tests/||; s|\.rs$||' | sort)
[ -n "$targets" ] || { echo "reliability-report: no test calls record_fault" >&2; exit 1; }
args=""
for t in $targets; do args="$args --test $t"; done
cmd="$cargo test --release$args -- --test-threads=2"

records=$(mktemp)
log=$(mktemp)
trap 'rm -f "$records" "$log"' EXIT

echo "reliability-report: $cmd" >&2
status=0
LXCFORGE_FAULT_REPORT=$records $cmd >"$log" 2>&1 || status=$?
grep -E '^test result:|FAILED|^SKIP' "$log" >&2 || true

# "test result: ok. 17 passed; 0 failed; …" per target: the totals.
totals=$(awk '/^test result:/ { p += $4; f += $6; n++ } END { if (n) print p, f }' "$log")
passed=${totals% *}
failed=${totals#* }
failures=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log" | sort | sed 's/^/`/; s/$/`/' | paste -sd, - | sed 's/,/, /g')
skipped=$(grep -c '^SKIP' "$log" || true)
if [ "$status" != 0 ] && [ -z "${passed}${failed}" ]; then
    echo "reliability-report: the tests did not run; the end of their output:" >&2
    tail -n 30 "$log" >&2
    exit "$status"
fi

docker_version=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo "unreachable")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit-dirty"; fi

mkdir -p "$(dirname "$out")"
{
    echo "# Reliability: the fault matrix"
    echo
    echo "What lxcforge does when things go wrong, and what it leaves behind (which must be"
    echo "nothing). Every row is what a test in \`tests/\` observed in the run below: the exit"
    echo "code, the first line of the error and the leftovers its checks found, measured, not"
    echo "written by hand. Regenerate with \`make reliability\`; do not edit. In \"left behind\","
    echo "\"+ … by design\" marks what is kept on purpose (a base image a build imported or pulled"
    echo "completely is the engine-side cache); everything else listed there is a leak."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), Docker Engine $docker_version"
    echo "- lxcforge: commit $commit"
    echo "- command: \`make reliability\`, i.e. \`LXCFORGE_FAULT_REPORT=… CI=$CI $cmd\`"
    printf -- "- tests: %s passed, %s failed" "${passed:-0}" "${failed:-0}"
    [ -n "$failures" ] && printf " (%s)" "$failures"
    [ "$skipped" != 0 ] && printf ", %s skipped" "$skipped"
    echo
    # Areas in the issue's order, then any others; rows sorted by fault within an area.
    jq -rs '
        def cell: tostring | gsub("\\|"; "\\|") | gsub("\n"; " ");
        (["Builds", "Uploads", "Input", "Secrets", "Soak"]) as $known
        | group_by(.area)
        | sort_by(.[0].area as $a | ($known | index($a)) // 99, $a)
        | .[]
        | "\n## \(.[0].area)\n\n| fault | observed outcome | left behind |\n|---|---|---|\n"
          + (sort_by(.fault) | map("| \(.fault | cell) | \(.outcome | cell) | \(.left_behind | cell) |") | join("\n"))
    ' "$records"
    if [ ! -s "$records" ]; then
        echo
        echo "No test recorded anything (were the tests skipped?)."
    fi
} >"$out"
echo "reliability-report: wrote $out ($(wc -l <"$records") faults)" >&2
exit "$status"
