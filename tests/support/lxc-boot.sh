#!/bin/bash
# lxc-boot.sh ARTIFACT.tar.gz
#
# Boot an lxcforge template under real LXC the way Proxmox VE would, and check it.
#
#  1. extract   the artifact exactly as pve-container does for an UNPRIVILEGED container
#               (default idmap 0:100000:65536, tar flags from pve-storage @COMMON_TAR_FLAGS,
#               see ../shared/reference/proxmox-api.md §8.2); any tar error or message fails
#  2. boot      lxc-start with a config close to Proxmox's (common.conf + userns.conf, the
#               same idmap, no network device) and wait for systemd to settle
#  3. checks    inside the container, one line each: `PASS name` / `FAIL name: detail`
#                 system-running  systemctl is-system-running --wait says "running"
#                 failed-units    systemctl --failed is empty
#                 init-systemd    PID 1 is systemd
#                 sshd-config     /usr/sbin/sshd -t passes
#                 sshd-keyonly    sshd -T: no passwords, no keyboard-interactive,
#                                 root by key only
#                 ssh-listen      something listens on TCP port 22 (ss -ltn)
#                 ssh-login       a key login as root over 127.0.0.1 works, and the server
#                                 offers only "publickey" (temporary key, removed again)
#                 machine-id      /etc/machine-id is 32 hex chars (freshly generated; the
#                                 artifact ships it empty)
#                 ssh-hostkeys    rsa/ecdsa/ed25519 host keys exist (made on first boot by
#                                 lxcforge-ssh-hostkeys.service, which is not failed)
#                 root-locked     root's password is locked
#                 provenance      /etc/lxcforge-release exists and names the image
#  Exit 0 only if every check passes. On failure it prints the failed units, the end of
#  the container's journal and of the LXC log.
#  The container is always stopped and destroyed and its directory removed (EXIT trap;
#  also on Ctrl-C / SIGTERM).
#
# Env: LXC_BOOT_TIMEOUT (s, default 120), LXC_BOOT_KEEP=1 (keep the container for
#      debugging; prints how to remove it), LXC_BOOT_PRIVILEGED=1 (boot without idmap,
#      the extraction test stays unprivileged).
#
# Findings on the development host (Debian 12, LXC 5.0.2, kernel 6.x, cgroup v1 only —
# no unified hierarchy mounted), running as root:
#  * An unprivileged container (lxc.idmap 0 100000 65536) boots Debian 12's systemd 252 to
#    "running" with the config below: common.conf + userns.conf and
#    `lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed` — no cgroup:rw:force or
#    cgroup-full needed; systemd mounts its own cgroup2 at /sys/fs/cgroup/unified.
#    So no privileged fallback is needed here; LXC_BOOT_PRIVILEGED=1 exists and also passes.
#  * sys-kernel-debug.mount fails in the unprivileged container (CAP_SYS_RAWIO exists in the
#    user namespace, debugfs cannot be mounted: "permission denied") → "degraded". The
#    template fixes this (provision/50-accounts-system.sh: ConditionVirtualization=!lxc,
#    as systemd already does for sys-kernel-tracing.mount); the test does not paper over it.
#  * "running" is reported while a failed unit still waits for its automatic restart
#    (e.g. ssh.service without host keys fails ~2 s later), so the script waits until no
#    unit is activating and no job is queued before judging.
#  * The rootfs directory must be owned by 100000:100000 before extraction (as Proxmox
#    does) and its parent must be traversable by that uid.
#  * `--exclude ./dev/*` is anchored: a member named `dev/x` (no "./" prefix, as
#    `docker export` writes them) is NOT excluded; a device node there makes the
#    unprivileged tar fail ("Cannot mknod: Operation not permitted", exit 2). Artifacts
#    must use "./"-prefixed names and carry no device nodes.
set -euo pipefail

usage() { echo "usage: $0 ARTIFACT.tar.gz" >&2; exit 2; }
[ $# -eq 1 ] || usage
ARTIFACT=$1
[ -f "$ARTIFACT" ] || { echo "lxc-boot: no such file: $ARTIFACT" >&2; exit 2; }
ARTIFACT=$(readlink -f "$ARTIFACT")
[ "$(id -u)" = 0 ] || { echo "lxc-boot: must run as root (lxc-start, lxc-usernsexec)" >&2; exit 2; }
for tool in lxc-start lxc-attach lxc-usernsexec lxc-stop lxc-destroy lxc-wait tar; do
    command -v "$tool" >/dev/null 2>&1 || { echo "lxc-boot: $tool not found (apt-get install lxc)" >&2; exit 2; }
done

TIMEOUT=${LXC_BOOT_TIMEOUT:-120}
LXCPATH=$(lxc-config lxc.lxcpath 2>/dev/null || echo /var/lib/lxc)
NAME="lxcforge-boot-$(date +%s)-$$-$RANDOM"
CTDIR="$LXCPATH/$NAME"
ROOTFS="$CTDIR/rootfs"
LOG="$CTDIR/lxc.log"
MAP_UID=100000
MAP_RANGE=65536

FAILED=0
pass() { printf 'PASS %s\n' "$1"; }
fail() { printf 'FAIL %s: %s\n' "$1" "$2"; FAILED=$((FAILED + 1)); }
info() { printf '# %s\n' "$*"; }

# ---------------------------------------------------------------------------------------
# cleanup: always stop, destroy, remove
# ---------------------------------------------------------------------------------------
STARTED=0
CHILD=""          # long-running child (tar, the boot wait): run in the background and
                  # `wait`ed for, so a signal is handled at once instead of after it ends
killtree() {
    local p
    for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do killtree "$p"; done
    kill -TERM "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$CHILD" ]; then
        killtree "$CHILD"
        wait "$CHILD" 2>/dev/null || true
    fi
    if [ "${LXC_BOOT_KEEP:-0}" = 1 ] && [ -d "$CTDIR" ]; then
        info "LXC_BOOT_KEEP=1: container $NAME kept; remove with: lxc-stop -k -n $NAME; lxc-destroy -f -n $NAME"
        exit "$rc"
    fi
    if [ "$STARTED" = 1 ] || lxc-info -n "$NAME" >/dev/null 2>&1; then
        timeout 30 lxc-stop -n "$NAME" -k >/dev/null 2>&1 || true
        timeout 30 lxc-destroy -n "$NAME" -f >/dev/null 2>&1 || true
    fi
    # the container directory is ours alone (unique name); make sure nothing is left
    case "$CTDIR" in
        "$LXCPATH"/lxcforge-boot-*) [ ! -e "$CTDIR" ] || rm -rf --one-file-system "$CTDIR" ;;
    esac
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "lxc-boot: interrupted" >&2; exit 130' INT
trap 'echo "lxc-boot: terminated" >&2; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------
# 0. subordinate ids for root (what Proxmox has by default)
# ---------------------------------------------------------------------------------------
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -qx "root:$MAP_UID:$MAP_RANGE" "$f" || echo "root:$MAP_UID:$MAP_RANGE" >> "$f"
done

# ---------------------------------------------------------------------------------------
# 1. extraction, exactly as pve-container for an unprivileged CT
# ---------------------------------------------------------------------------------------
info "artifact: $ARTIFACT"
info "container: $NAME ($CTDIR)"
mkdir -p "$CTDIR"
chmod 0755 "$CTDIR"
mkdir "$ROOTFS"
chown "$MAP_UID:$MAP_UID" "$ROOTFS"

case "$ARTIFACT" in
    *.tar.gz|*.tgz) ZFLAG=-z ;;
    *.tar.zst) ZFLAG=--zstd ;;
    *.tar.xz) ZFLAG=-J ;;
    *.tar.bz2) ZFLAG=-j ;;
    *.tar) ZFLAG= ;;
    *) echo "lxc-boot: not a template archive name (Proxmox decides by file name): $ARTIFACT" >&2; exit 2 ;;
esac

tar_err="$CTDIR/tar.stderr"
set +e
# shellcheck disable=SC2086
lxc-usernsexec -m "u:0:$MAP_UID:$MAP_RANGE" -m "g:0:$MAP_UID:$MAP_RANGE" -- \
    tar xpf - $ZFLAG --totals --one-file-system -p --sparse --numeric-owner --acls \
    --xattrs --xattrs-include=user.* --xattrs-include=security.capability \
    --warning=no-file-ignored --warning=no-xattr-write \
    -C "$ROOTFS" --skip-old-files --anchored --exclude ./dev/* \
    < "$ARTIFACT" 2> "$tar_err" &
CHILD=$!
wait "$CHILD"
tar_rc=$?
CHILD=""
set -e
totals=$(grep -E '^Total bytes read' "$tar_err" || true)
errors=$(grep -vE '^Total bytes read' "$tar_err" || true)
if [ "$tar_rc" -ne 0 ] || [ -n "$errors" ]; then
    fail extract "tar exited $tar_rc; $(printf '%s' "$errors" | head -20 | tr '\n' '|')"
    exit 1
fi
pass extract
info "$totals"

# Proxmox-like sanity of what was extracted (cheap, catches packer mistakes early)
root_owner=$(stat -c '%u:%g %a' "$ROOTFS")
[ "$root_owner" = "$MAP_UID:$MAP_UID 755" ] || info "note: rootfs / is $root_owner (expected $MAP_UID:$MAP_UID 755)"

# ---------------------------------------------------------------------------------------
# 2. config + start
# ---------------------------------------------------------------------------------------
{
    echo "# generated by lxcforge tests/support/lxc-boot.sh"
    echo "lxc.include = /usr/share/lxc/config/common.conf"
    if [ "${LXC_BOOT_PRIVILEGED:-0}" != 1 ]; then
        echo "lxc.include = /usr/share/lxc/config/userns.conf"
        echo "lxc.idmap = u 0 $MAP_UID $MAP_RANGE"
        echo "lxc.idmap = g 0 $MAP_UID $MAP_RANGE"
    fi
    echo "lxc.arch = $(uname -m)"
    echo "lxc.rootfs.path = dir:$ROOTFS"
    echo "lxc.uts.name = lxcforge-boot"
    echo "lxc.net.0.type = empty"
    echo "lxc.apparmor.profile = unconfined"
    echo "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed"
    echo "lxc.console.logfile = $CTDIR/console.log"
} > "$CTDIR/config"
if [ "${LXC_BOOT_PRIVILEGED:-0}" = 1 ]; then
    # the unprivileged extraction above has passed; re-extract as a privileged CT would
    info "LXC_BOOT_PRIVILEGED=1: booting privileged (re-extracting without the idmap)"
    rm -rf --one-file-system "$ROOTFS"
    mkdir "$ROOTFS"
    # shellcheck disable=SC2086
    tar xpf - $ZFLAG --totals --one-file-system -p --sparse --numeric-owner --acls \
        --xattrs --xattrs-include=user.* --xattrs-include=security.capability \
        --warning=no-file-ignored --warning=no-xattr-write \
        -C "$ROOTFS" --skip-old-files --anchored --exclude ./dev/* < "$ARTIFACT" 2>/dev/null
fi

STARTED=1
if ! lxc-start -n "$NAME" -d -o "$LOG" -l INFO; then
    fail start "lxc-start failed"
    tail -30 "$LOG" 2>/dev/null | sed 's/^/# lxc.log: /'
    exit 1
fi
if ! lxc-wait -n "$NAME" -s RUNNING -t 30; then
    fail start "container not RUNNING after 30 s"
    tail -30 "$LOG" 2>/dev/null | sed 's/^/# lxc.log: /'
    exit 1
fi
pass start

# run a command inside, with a clean environment
in_ct() { lxc-attach -n "$NAME" --clear-env --set-var PATH=/usr/sbin:/usr/bin:/sbin:/bin --set-var LANG=C.UTF-8 -- "$@"; }

# systemd needs a moment before it accepts bus connections; is-system-running --wait then
# blocks until start-up finishes
t0=$(date +%s)
state=""
while :; do
    timeout "$TIMEOUT" lxc-attach -n "$NAME" --clear-env --set-var PATH=/usr/sbin:/usr/bin:/sbin:/bin -- \
        systemctl is-system-running --wait > "$CTDIR/state" 2>/dev/null < /dev/null &
    CHILD=$!
    wait "$CHILD" || true
    CHILD=""
    state=$(cat "$CTDIR/state" 2>/dev/null || true)
    case "$state" in running|degraded|maintenance|stopping) break ;; esac
    [ $(( $(date +%s) - t0 )) -lt "$TIMEOUT" ] || break
    sleep 1
done
info "systemd reached '$state' after $(( $(date +%s) - t0 )) s"

# "running" is reported as soon as the boot jobs are done; a unit that failed and waits for
# its automatic restart (e.g. ssh.service without host keys) is still "activating" then and
# only fails seconds later. Settle: wait (within the same time limit) until no unit is
# activating/deactivating and no job is queued, then ask again.
busy=""
while :; do
    busy=$(in_ct systemctl list-units --all --state=activating,deactivating --no-legend --plain 2>/dev/null \
           | awk '{print $1}' | tr '\n' ' ' || true)
    jobs=$(in_ct systemctl list-jobs --no-legend 2>/dev/null || true)
    [ -n "$busy$jobs" ] || break
    [ $(( $(date +%s) - t0 )) -lt "$TIMEOUT" ] || { info "units still busy after ${TIMEOUT} s: $busy"; break; }
    sleep 1
done
case "$state" in
    running|degraded) state=$(in_ct systemctl is-system-running 2>/dev/null || true) ;;
esac
info "settled: '$state' after $(( $(date +%s) - t0 )) s"

# ---------------------------------------------------------------------------------------
# 3. checks
# ---------------------------------------------------------------------------------------
if [ "$state" = running ]; then pass system-running; else fail system-running "state is '${state:-no answer}' (waited $(( $(date +%s) - t0 )) s, limit ${TIMEOUT} s)"; fi

failed_units=$(in_ct systemctl --failed --no-legend --plain 2>&1 || true)
if [ -z "$failed_units" ]; then pass failed-units; else fail failed-units "$(printf '%s' "$failed_units" | awk '{print $1}' | tr '\n' ' ')"; fi

pid1=$(in_ct readlink /proc/1/exe 2>&1 || true)
case "$pid1" in */systemd) pass init-systemd ;; *) fail init-systemd "PID 1 is '$pid1'" ;; esac

if out=$(in_ct /usr/sbin/sshd -t 2>&1); then pass sshd-config; else fail sshd-config "$(printf '%s' "$out" | tr '\n' ' ')"; fi

eff=$(in_ct /usr/sbin/sshd -T -C user=root,host=localhost,addr=127.0.0.1 2>/dev/null || true)
bad=""
for kv in "passwordauthentication no" "kbdinteractiveauthentication no" "permitemptypasswords no" "pubkeyauthentication yes"; do
    printf '%s\n' "$eff" | grep -qx "$kv" || bad="$bad [$kv]"
done
printf '%s\n' "$eff" | grep -Eqx 'permitrootlogin (without-password|prohibit-password)' || bad="$bad [permitrootlogin prohibit-password]"
if [ -z "$bad" ]; then pass sshd-keyonly; else fail sshd-keyonly "effective config lacks$bad"; fi

listen=$(in_ct ss -Hltn 'sport = :22' 2>&1 || true)
if printf '%s' "$listen" | grep -q ':22'; then pass ssh-listen; else fail ssh-listen "nothing listens on tcp/22 (${listen:-no output})"; fi

# key login over loopback with a throw-away key; password/keyboard-interactive not offered
login=$(in_ct sh -c '
    set -e
    d=$(mktemp -d)
    trap "rm -rf \"\$d\"; rm -f /root/.ssh/authorized_keys.lxcforge-test" EXIT
    ssh-keygen -q -t ed25519 -N "" -f "$d/k" >/dev/null
    install -d -m 0700 /root/.ssh
    # AuthorizedKeysFile default includes .ssh/authorized_keys only; use it, restore after
    if [ -e /root/.ssh/authorized_keys ]; then cp -p /root/.ssh/authorized_keys /root/.ssh/authorized_keys.lxcforge-test; fi
    cat "$d/k.pub" >> /root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
    o="-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR"
    r=$(ssh $o -i "$d/k" root@127.0.0.1 echo key-login-ok 2>&1) || true
    m=$(ssh $o -o PubkeyAuthentication=no -o PreferredAuthentications=none root@127.0.0.1 true 2>&1) || true
    if [ -e /root/.ssh/authorized_keys.lxcforge-test ]; then mv /root/.ssh/authorized_keys.lxcforge-test /root/.ssh/authorized_keys; else rm -f /root/.ssh/authorized_keys; rmdir /root/.ssh 2>/dev/null || true; fi
    echo "$r"
    echo "$m"
' 2>&1 || true)
if ! printf '%s\n' "$login" | grep -qx 'key-login-ok'; then
    fail ssh-login "key login as root failed: $(printf '%s' "$login" | tr '\n' ' ')"
elif ! printf '%s\n' "$login" | grep -q 'Permission denied (publickey)'; then
    fail ssh-login "server offers more than publickey: $(printf '%s' "$login" | grep -i 'permission denied' | head -1)"
else
    pass ssh-login
fi

mid=$(in_ct cat /etc/machine-id 2>&1 || true)
if printf '%s' "$mid" | grep -Eqx '[0-9a-f]{32}'; then pass machine-id; else fail machine-id "'$mid' is not a 32-hex-digit id"; fi

keys=$(in_ct sh -c 'for t in rsa ecdsa ed25519; do [ -s /etc/ssh/ssh_host_${t}_key ] && [ -s /etc/ssh/ssh_host_${t}_key.pub ] || echo "missing:$t"; done' 2>&1 || true)
unit=$(in_ct systemctl is-active lxcforge-ssh-hostkeys.service 2>&1 || true)
keys=$(printf '%s' "$keys" | tr '\n' ' ')
if [ -z "$keys" ] && [ "$unit" = active ]; then pass ssh-hostkeys; else fail ssh-hostkeys "${keys:-keys ok} lxcforge-ssh-hostkeys.service=$unit"; fi

pw=$(in_ct passwd -S root 2>&1 | awk '{print $2}' || true)
if [ "$pw" = L ]; then pass root-locked; else fail root-locked "passwd -S root says '$pw'"; fi

prov=$(in_ct cat /etc/lxcforge-release 2>&1 || true)
if printf '%s\n' "$prov" | grep -q '^LXCFORGE_IMAGE='; then pass provenance; else fail provenance "/etc/lxcforge-release missing or without LXCFORGE_IMAGE"; fi

# ---------------------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------------------
if [ "$FAILED" -ne 0 ]; then
    info "---- systemctl --failed"
    in_ct systemctl --failed --no-pager 2>&1 | sed 's/^/# /' || true
    info "---- journalctl -b (last 50 lines)"
    in_ct journalctl -b --no-pager 2>&1 | tail -50 | sed 's/^/# /' || true
    info "---- lxc log (last 20 lines)"
    tail -20 "$LOG" 2>/dev/null | sed 's/^/# /' || true
    echo "RESULT: $FAILED check(s) failed"
    exit 1
fi
echo "RESULT: all checks passed"
exit 0
