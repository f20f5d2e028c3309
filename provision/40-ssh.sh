#!/bin/sh
# 40-ssh: key-only sshd, enabled at boot, with host keys generated on first boot.
#
#  * /etc/ssh/sshd_config.d/10-lxcforge.conf: no passwords, no keyboard-interactive,
#    root only with a key (the bootstrap key Proxmox/Terraform injects), no empty passwords.
#    sshd keeps the FIRST value it reads for a keyword and reads drop-ins in lexical order
#    at the Include line near the top of sshd_config: to override a setting (e.g. Ansible's
#    later "PermitRootLogin no"), put a drop-in that sorts before this one (00-….conf) or
#    edit/remove this file — a line added further down sshd_config has no effect.
#  * lxcforge-ssh-hostkeys.service: runs `ssh-keygen -A` before sshd when a host key is
#    missing. Proxmox writes fresh host keys at `pct create`; plain LXC/Incus does not,
#    and the template ships without keys (cleanup removes them).
#  * the distribution's own way of starting sshd is kept and verified:
#    Debian 12 ssh.service; Ubuntu 24.04 ssh.socket (socket activation, systemd listens on
#    port 22 and starts sshd per connection) — ssh.service if the socket unit is absent.
set -eu
. /etc/os-release

command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || { echo "40-ssh: openssh-server not installed" >&2; exit 1; }

# --- sshd drop-in -----------------------------------------------------------------------
install -d -m 0755 /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/10-lxcforge.conf <<'EOF'
# lxcforge template baseline (see /etc/lxcforge-release).
# sshd uses the first value it reads for each keyword: a drop-in sorting before this
# file (e.g. 00-local.conf) overrides it; settings appended to sshd_config do not.
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
X11Forwarding no
EOF
chmod 0644 /etc/ssh/sshd_config.d/10-lxcforge.conf

# The drop-in only counts if sshd_config includes the directory, before any of the keywords
# above are set (Debian 12 and Ubuntu 24.04 have the Include as the first directive).
if ! grep -Eq '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' /etc/ssh/sshd_config; then
    echo "40-ssh: sshd_config lacks 'Include /etc/ssh/sshd_config.d/*.conf'; adding it at the top"
    { echo "Include /etc/ssh/sshd_config.d/*.conf"; echo; cat /etc/ssh/sshd_config; } > /etc/ssh/sshd_config.new
    chmod 0644 /etc/ssh/sshd_config.new
    mv /etc/ssh/sshd_config.new /etc/ssh/sshd_config
fi

# --- first-boot host keys -----------------------------------------------------------------
cat > /etc/systemd/system/lxcforge-ssh-hostkeys.service <<'EOF'
# Installed by lxcforge: the template ships without SSH host keys (each container must have
# its own). Proxmox generates them at `pct create`; plain LXC/Incus does not, so generate
# any that are missing before sshd (or its socket) starts. Does nothing when keys exist.
[Unit]
Description=Generate missing SSH host keys
Documentation=man:ssh-keygen(1)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=ssh.service ssh.socket sshd.service sockets.target multi-user.target shutdown.target
Conflicts=shutdown.target
ConditionPathIsDirectory=/etc/ssh
ConditionPathIsReadWrite=/etc/ssh

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
WantedBy=ssh.service
WantedBy=ssh.socket
EOF
chmod 0644 /etc/systemd/system/lxcforge-ssh-hostkeys.service
systemctl enable lxcforge-ssh-hostkeys.service

# sshd's privilege-separation directory, made at every boot. With socket activation
# (Ubuntu) /run/sshd only appears with the first connection, and until then `sshd -t` /
# `sshd -T` — what an operator or Ansible's sshd_config validation runs — fail with
# "Missing privilege separation directory: /run/sshd".
install -d -m 0755 /etc/tmpfiles.d
printf '# lxcforge: sshd privilege separation dir, also before the first (socket-activated) connection\nd /run/sshd 0755 root root -\n' \
    > /etc/tmpfiles.d/lxcforge-sshd.conf
chmod 0644 /etc/tmpfiles.d/lxcforge-sshd.conf

# --- enable sshd --------------------------------------------------------------------------
unit_exists() { [ -e "/lib/systemd/system/$1" ] || [ -e "/usr/lib/systemd/system/$1" ] || [ -e "/etc/systemd/system/$1" ]; }
if [ "$ID" = ubuntu ] && unit_exists ssh.socket; then
    # Ubuntu >= 22.10 default: socket activation. Do not also enable ssh.service, both
    # would bind port 22.
    systemctl enable ssh.socket
    systemctl is-enabled --quiet ssh.service 2>/dev/null && systemctl disable ssh.service || true
    SSH_UNIT=ssh.socket
else
    systemctl enable ssh.service
    SSH_UNIT=ssh.service
fi
echo "sshd starts via $SSH_UNIT ($(systemctl is-enabled "$SSH_UNIT"))"

# --- verify the effective configuration ---------------------------------------------------
# sshd -t/-T need host keys and the privilege-separation dir; host keys exist here (made by
# the package's postinst, removed again by cleanup); create temporary ones if not.
install -d -m 0755 /run/sshd
tmpkeys=""
if ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
    ssh-keygen -A >/dev/null
    tmpkeys=1
fi
/usr/sbin/sshd -t
eff=$(/usr/sbin/sshd -T -C user=root,host=localhost,addr=127.0.0.1 2>/dev/null)
fail=0
for kv in "pubkeyauthentication yes" "passwordauthentication no" "kbdinteractiveauthentication no" \
          "permitemptypasswords no" "permitrootlogin without-password"; do
    # sshd -T prints prohibit-password as its old name without-password
    if ! printf '%s\n' "$eff" | grep -qx "$kv"; then
        alt=$(printf '%s' "$kv" | sed 's/without-password/prohibit-password/')
        printf '%s\n' "$eff" | grep -qx "$alt" || { echo "40-ssh: effective sshd config lacks '$kv'" >&2; fail=1; }
    fi
done
[ -z "$tmpkeys" ] || rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
rm -rf /run/sshd
[ "$fail" = 0 ] || exit 1
echo "sshd effective: $(printf '%s\n' "$eff" | grep -E '^(pubkeyauthentication|passwordauthentication|kbdinteractiveauthentication|permitemptypasswords|permitrootlogin) ' | tr '\n' ';')"
