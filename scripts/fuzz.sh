#!/bin/sh
# fuzz.sh [SECONDS]: runs every cargo-fuzz target for SECONDS each (default 60), bounded:
# one process (one core), at most 1 GiB RSS, at most 10 s per input. A crash, timeout or
# out-of-memory fails the run; libFuzzer leaves the input in fuzz/artifacts/<target>/ (turn it
# into a regression test in the normal suite, then delete it).
#
#   FUZZ_TARGETS="validate_reader definition"   a subset (default: all four)
#
# Toolchain: cargo-fuzz passes -Z flags (sanitizers, coverage) to rustc. It uses rustup's
# nightly when installed; without one it runs the default toolchain with RUSTC_BOOTSTRAP=1,
# which lets a stable rustc accept them (used only for this fuzz build, never for releases).
# cargo-fuzz itself is installed from crates.io when missing.
#
# Seeds are generated here (no binary files in the repository) into fuzz/corpus/<target>/,
# which also keeps what libFuzzer finds interesting between runs (ignored by git).
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
targets=${FUZZ_TARGETS:-pack_reader validate_reader tokens definition}

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=+nightly
else
    echo "fuzz.sh: no nightly toolchain; using the default one with RUSTC_BOOTSTRAP=1" >&2
    toolchain=
    RUSTC_BOOTSTRAP=1
    export RUSTC_BOOTSTRAP
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

# Seeds: a small root filesystem as GNU tar (plain, gzip, zstd, xz), and the shipped definitions.
seed_tar() {
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    r=$work/root
    mkdir -p "$r/etc/ssh/sshd_config.d" "$r/usr/bin" "$r/usr/lib" "$r/root" "$r/home/u/.ssh"
    printf 'ID=debian\nVERSION_ID="12"\n' > "$r/usr/lib/os-release"
    ln -s ../usr/lib/os-release "$r/etc/os-release"
    echo 12.7 > "$r/etc/debian_version"
    : > "$r/etc/machine-id"
    printf 'root:*:19000:0:99999:7:::\n' > "$r/etc/shadow"
    printf 'Include /etc/ssh/sshd_config.d/*.conf\n' > "$r/etc/ssh/sshd_config"
    printf 'PasswordAuthentication no\n' > "$r/etc/ssh/sshd_config.d/10.conf"
    printf 'export TOKEN=abc\nkey: "value"\n' > "$r/root/.profile"
    printf '#!/bin/sh\n' > "$r/usr/bin/dash"
    ln -s dash "$r/usr/bin/sh"
    ln "$r/usr/bin/dash" "$r/usr/bin/ash"
    ln -s usr/bin "$r/bin"
    long=$r/etc/a-rather-long-directory-name-to-need-a-gnu-long-name-record/and-a-long-file-name-inside-it
    mkdir -p "$(dirname "$long")"
    echo x > "$long"
    tar --format=gnu --numeric-owner --owner=0 --group=0 -C "$r" -cf "$work/seed.tar" .
    tar --format=pax --numeric-owner --owner=0 --group=0 -C "$r" -cf "$work/seed-pax.tar" .
    for t in pack_reader validate_reader; do
        mkdir -p "fuzz/corpus/$t"
        cp "$work/seed.tar" "$work/seed-pax.tar" "fuzz/corpus/$t/"
    done
    gzip -n -c "$work/seed.tar" > fuzz/corpus/validate_reader/seed.tar.gz
    if command -v zstd >/dev/null 2>&1; then
        zstd -q -c "$work/seed.tar" > fuzz/corpus/validate_reader/seed.tar.zst
    fi
    if command -v xz >/dev/null 2>&1; then
        xz -c "$work/seed.tar" > fuzz/corpus/validate_reader/seed.tar.xz
    fi
    rm -rf "$work"
    trap - EXIT
}
seed_tar
mkdir -p fuzz/corpus/definition fuzz/corpus/tokens
# token seeds: a leading chunk-size byte, then text with token-like values
printf '\001export GITHUB_TOKEN=ghp_%s\nkey: "%s"\n# c\nPVEAPIToken=u@pve!t=%s\n' \
    0123456789abcdefghijABCDEFGHIJ012345 q8Zr2LmX0vT9bN4kP7sW1yH6 \
    0b3f6a8e-52c1-4d5e-9a7b-1c2d3e4f5a6b > fuzz/corpus/tokens/seed-shapes
cp provision/*.sh fuzz/corpus/tokens/ 2>/dev/null || true
for f in images/*.toml; do
    cp "$f" "fuzz/corpus/definition/seed-$(basename "$f")"
done

summary=""
for t in $targets; do
    echo "fuzz.sh: $t for ${secs}s"
    log=fuzz/artifacts/$t.log
    mkdir -p "fuzz/artifacts/$t"
    rc=0
    # shellcheck disable=SC2086
    cargo $toolchain fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    if [ "$rc" != 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t FAILED (exit $rc) after ${runs:-?} runs; input in fuzz/artifacts/$t/, log in $log" >&2
        exit 1
    fi
    line="$t: ${runs:-?} runs in ${secs}s, no crash/timeout/oom, corpus $corpus inputs"
    echo "fuzz.sh: $line"
    summary="$summary
  $line"
done
echo "fuzz.sh: done$summary"
