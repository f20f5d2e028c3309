#!/bin/sh
# 10-apt-base: prepare package management for a non-interactive build and bring the
# base up to date.
#
# Runs inside the Docker build container as root (no systemd running, PID 1 is a sleep
# process). Works on Debian 12 (debootstrap minbase) and Ubuntu 24.04 (docker "minimized"
# image). Safe to run twice.
set -eu
export DEBIAN_FRONTEND=noninteractive
log() { printf '%s\n' "$*"; }

. /etc/os-release
case "${ID:-}" in
    debian|ubuntu) ;;
    *) echo "10-apt-base: unsupported distribution ID='${ID:-}' (expected debian or ubuntu)" >&2; exit 1 ;;
esac
log "base: ${PRETTY_NAME:-$ID}"

# Keep maintainer scripts from starting daemons (sshd, cron, dbus…) inside the build
# container: there is no init, and a daemon left running would write state (pid files,
# host keys in use, logs) into the template. Removed again by cleanup/10-packages.sh.
# Written even if the base already has one, so its content is known.
cat > /usr/sbin/policy-rc.d <<'EOF'
#!/bin/sh
# lxcforge build-time policy: forbid service (re)starts by maintainer scripts.
# Removed by the lxcforge cleanup; must not ship in the template.
exit 101
EOF
chmod 0755 /usr/sbin/policy-rc.d

# Answers for packages that would otherwise ask (tzdata is configured for UTC here;
# 20-timezone-locale.sh enforces it again after installation).
if command -v debconf-set-selections >/dev/null 2>&1; then
    debconf-set-selections <<'EOF'
tzdata tzdata/Areas select Etc
tzdata tzdata/Zones/Etc select UTC
locales locales/default_environment_locale select en_US.UTF-8
locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8
EOF
fi

APT_OPTS="-o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"

log "apt-get update"
# shellcheck disable=SC2086
apt-get $APT_OPTS update

# Apply pending (security) updates of the base so the template starts patched.
log "apt-get dist-upgrade"
# shellcheck disable=SC2086
apt-get $APT_OPTS -y --no-install-recommends dist-upgrade
