#!/bin/sh
# ensure-deps.sh build|test
#
# Installs, from Debian's packages, what `make image.build-next` (build) or `make test` (test)
# needs and this machine lacks; checks the parts that cannot be installed here (a running Docker
# Engine, the Rust toolchain). Quiet when everything is present. Needs root to install.
set -eu

what=${1:-build}
missing=""
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}

need debootstrap debootstrap
need tar tar
need gzip gzip
need sha256sum coreutils
if [ "$what" = test ]; then
    need lxc-start lxc
    need lxc-usernsexec lxc
    need docker-registry docker-registry
    need pigz pigz
    need python3 python3
    need getfattr attr
    need setfattr attr
    need getcap libcap2-bin
    need zstd zstd
    need xz xz-utils
    need ss iproute2
    need /usr/bin/time time
    need jq jq
    need ssh openssh-client
    need ssh-keygen openssh-client
    need curl curl
    need strace strace
    # The integration tests' tiny base image is a static busybox.
    dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
fi

if [ -n "$missing" ]; then
    echo "ensure-deps: installing:$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-deps: need root to install:$missing (run as root, or install them yourself)" >&2
        exit 1
    fi
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "ensure-deps: cargo is missing: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
if ! command -v docker >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ] && [ ! -S /var/run/docker.sock ]; then
    echo "ensure-deps: no Docker Engine found (no /var/run/docker.sock, DOCKER_HOST unset): install and start Docker" >&2
    exit 1
fi

if [ "$what" = test ]; then
    # Unprivileged LXC (and Proxmox's extraction under lxc-usernsexec) map root to 100000.
    for f in /etc/subuid /etc/subgid; do
        grep -qs '^root:100000:65536$' "$f" || echo 'root:100000:65536' >> "$f"
    done
fi
