#!/bin/sh
# fuzz.sh [SECONDS]: runs every cargo-fuzz target for SECONDS each (default 60), bounded.
# Needs a nightly toolchain and cargo-fuzz (installed from crates.io when missing).
# A crash fails the run; libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in pack_reader validate_reader definition; do
    echo "fuzz.sh: $t for ${secs}s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=512 -timeout=10
done
