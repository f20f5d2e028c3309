//! Hygiene and secrets: Docker leftovers (the packer's own rules, `pack::policy`), baked
//! machine ids, SSH host keys and authorized keys, unlocked passwords, shell history, sshd
//! password authentication, private keys and credentials in /etc, /root, /home, and tokens in
//! text files there ([`tokens`]: known token shapes FAIL, generic high-entropy values WARN).

pub(crate) mod tokens;

use super::Checks;
use super::tree::{Lookup, NodeKind, Tree, base_name, in_secret_scope, is_ssh_host_key_path};
use crate::pack::member::{Kind, Member, Meta};
use crate::pack::policy::{self, Verdict};

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The packer's leftover rules applied to one member; `Some(reason)` if the packer would have
/// dropped or replaced it. Device nodes are left to `archive.devices`.
pub(crate) fn leftover(path: &[u8], kind: &NodeKind, mode: u32) -> Option<String> {
    let k = match kind {
        NodeKind::File { size } => Kind::File { size: *size },
        NodeKind::Dir => Kind::Dir,
        NodeKind::Symlink(t) => Kind::Symlink { target: t.clone() },
        NodeKind::HardLink(t) => Kind::HardLink {
            target: crate::pack::normalize_path(t).unwrap_or_default(),
        },
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::Char | NodeKind::Block | NodeKind::Other => return None,
    };
    let m = Member {
        path: path.to_vec(),
        kind: k,
        meta: Meta {
            mode: mode & policy::MODE_MASK,
            uid: 0,
            gid: 0,
            mtime: 0,
        },
        pax: Vec::new(),
    };
    match policy::judge(&m, &[]) {
        Verdict::Keep => None,
        Verdict::Drop(reason) => Some(format!("Docker leftover ({reason})")),
        Verdict::Replace(_) => Some(
            "Docker leftover (init-layer stub: empty 0755 file; lxcforge pack writes a default)"
                .into(),
        ),
    }
}

fn sorted_paths(tree: &Tree, f: impl Fn(&[u8], &NodeKind) -> bool) -> Vec<&Vec<u8>> {
    let mut v: Vec<&Vec<u8>> = tree
        .nodes
        .iter()
        .filter(|(p, n)| f(p, &n.kind))
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

pub(crate) fn checks(tree: &Tree, checks: &mut Checks) {
    checks.evaluated("hygiene.leftovers", "no Docker leftovers");
    machine_ids(tree, checks);

    checks.evaluated("secrets.ssh-host-keys", "no SSH host private keys");
    for p in sorted_paths(tree, |p, k| {
        is_ssh_host_key_path(p) && !matches!(k, NodeKind::Dir)
    }) {
        checks.fail(
            "secrets.ssh-host-keys",
            "SSH host private key baked into the template: every container would share it (Proxmox generates new ones at create)".into(),
            Some(show(p)),
        );
    }

    checks.evaluated("secrets.authorized-keys", "no authorized_keys with content");
    for p in sorted_paths(tree, |p, k| {
        matches!(k, NodeKind::File { size } if *size > 0)
            && matches!(base_name(p), b"authorized_keys" | b"authorized_keys2")
    }) {
        checks.fail(
            "secrets.authorized-keys",
            "authorized_keys with content: whoever holds the key can log into every container"
                .into(),
            Some(show(p)),
        );
    }

    shadow(tree, checks);

    checks.evaluated("secrets.history", "no shell history");
    const HISTORY: &[&[u8]] = &[
        b".bash_history",
        b".zsh_history",
        b".ash_history",
        b".sh_history",
        b".history",
        b".python_history",
        b".mysql_history",
        b".psql_history",
        b".sqlite_history",
        b".node_repl_history",
        b".lesshst",
    ];
    for p in sorted_paths(tree, |p, k| {
        matches!(k, NodeKind::File { size } if *size > 0) && HISTORY.contains(&base_name(p))
    }) {
        checks.fail(
            "secrets.history",
            "shell history from the build".into(),
            Some(show(p)),
        );
    }

    sshd(tree, checks);
    credentials(tree, checks);
}

fn machine_ids(tree: &Tree, checks: &mut Checks) {
    match tree.node(b"etc/machine-id").map(|n| &n.kind) {
        None => checks.warn(
            "hygiene.machine-id",
            "/etc/machine-id is absent: systemd treats the first boot as unconfigured; ship it empty".into(),
            Some("etc/machine-id".into()),
        ),
        Some(NodeKind::File { size: 0 }) => {
            checks.pass("hygiene.machine-id", "/etc/machine-id is empty".into())
        }
        Some(NodeKind::File { .. }) => checks.fail(
            "hygiene.machine-id",
            "/etc/machine-id holds an id: every container would share it; truncate it to empty".into(),
            Some("etc/machine-id".into()),
        ),
        Some(_) => checks.warn(
            "hygiene.machine-id",
            "/etc/machine-id is not a regular file".into(),
            Some("etc/machine-id".into()),
        ),
    }
    match tree.node(b"var/lib/dbus/machine-id").map(|n| &n.kind) {
        Some(NodeKind::File { size }) if *size > 0 => checks.fail(
            "hygiene.dbus-machine-id",
            "/var/lib/dbus/machine-id holds a baked id; remove it or make it a symlink to /etc/machine-id".into(),
            Some("var/lib/dbus/machine-id".into()),
        ),
        Some(NodeKind::HardLink(_)) => {
            if let Lookup::Content(c) = tree.read(b"var/lib/dbus/machine-id")
                && !c.iter().all(|b| b.is_ascii_whitespace())
            {
                checks.fail(
                    "hygiene.dbus-machine-id",
                    "/var/lib/dbus/machine-id holds a baked id".into(),
                    Some("var/lib/dbus/machine-id".into()),
                );
            } else {
                checks.pass("hygiene.dbus-machine-id", "no baked D-Bus machine id".into());
            }
        }
        _ => checks.pass("hygiene.dbus-machine-id", "no baked D-Bus machine id".into()),
    }
}

fn shadow(tree: &Tree, checks: &mut Checks) {
    checks.evaluated("secrets.shadow", "every password in /etc/shadow is locked");
    let c = match tree.read(b"etc/shadow") {
        Lookup::Content(c) => c,
        Lookup::TooBig => {
            checks.warn(
                "secrets.shadow",
                "/etc/shadow is too large to check".into(),
                Some("etc/shadow".into()),
            );
            return;
        }
        _ => return,
    };
    for line in String::from_utf8_lossy(c).lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.splitn(3, ':');
        let user = f.next().unwrap_or("");
        let pw = f.next().unwrap_or("");
        if pw.starts_with('!') || pw.starts_with('*') {
            continue;
        }
        let what = if pw.is_empty() {
            "has an empty password (login without a password)"
        } else {
            "has a usable password hash baked into the template"
        };
        checks.fail(
            "secrets.shadow",
            format!("user '{user}' {what}; lock it (passwd -l / usermod -p '!')"),
            Some("etc/shadow".into()),
        );
    }
}

/// Glob with `*` and `?` within one path component (enough for sshd `Include`).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pat[1..], s) || (!s.is_empty() && s[0] != b'/' && glob_match(pat, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob_match(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// sshd's effective global `PasswordAuthentication`: first value wins, `Include` expanded in
/// place (files in lexical order), `Match` blocks are not global.
fn sshd_password_auth(tree: &Tree, file: &[u8], depth: u32, out: &mut Option<(String, String)>) {
    if depth > 8 || out.is_some() {
        return;
    }
    let Lookup::Content(c) = tree.read(file) else {
        return;
    };
    for line in String::from_utf8_lossy(c).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kw, rest) = match line.find(|ch: char| ch.is_whitespace() || ch == '=') {
            Some(i) => (
                &line[..i],
                line[i..].trim_start_matches(|ch: char| ch.is_whitespace() || ch == '='),
            ),
            None => (line, ""),
        };
        if kw.eq_ignore_ascii_case("match") {
            return;
        }
        if kw.eq_ignore_ascii_case("include") {
            for pat in rest.split_whitespace() {
                let pat = pat.trim_start_matches('/');
                let full: Vec<u8> = if pat.starts_with("etc/") {
                    pat.as_bytes().to_vec()
                } else {
                    [b"etc/ssh/".as_slice(), pat.as_bytes()].concat()
                };
                let mut hits: Vec<&Vec<u8>> =
                    tree.nodes.keys().filter(|k| glob_match(&full, k)).collect();
                hits.sort();
                for h in hits {
                    sshd_password_auth(tree, h, depth + 1, out);
                    if out.is_some() {
                        return;
                    }
                }
            }
            continue;
        }
        if kw.eq_ignore_ascii_case("passwordauthentication") {
            let v = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            *out = Some((v, show(file)));
            return;
        }
    }
}

fn sshd(tree: &Tree, checks: &mut Checks) {
    let installed =
        tree.node(b"etc/ssh/sshd_config").is_some() || tree.node(b"usr/sbin/sshd").is_some();
    if !installed {
        checks.pass("secrets.sshd-password-auth", "sshd is not installed".into());
        return;
    }
    let mut found = None;
    sshd_password_auth(tree, b"etc/ssh/sshd_config", 0, &mut found);
    match found {
        Some((v, _)) if v == "no" => checks.pass(
            "secrets.sshd-password-auth",
            "sshd PasswordAuthentication no".into(),
        ),
        Some((v, file)) => checks.fail(
            "secrets.sshd-password-auth",
            format!(
                "sshd PasswordAuthentication {v}: set it to no (e.g. in /etc/ssh/sshd_config.d/)"
            ),
            Some(file),
        ),
        None => checks.fail(
            "secrets.sshd-password-auth",
            "sshd PasswordAuthentication is not set, and OpenSSH defaults to yes: set it to no"
                .into(),
            Some("etc/ssh/sshd_config".into()),
        ),
    }
}

fn credentials(tree: &Tree, checks: &mut Checks) {
    checks.evaluated(
        "secrets.private-keys",
        "no private keys in /etc, /root, /home",
    );
    let mut keys = tree.private_keys.clone();
    keys.sort();
    for p in keys {
        checks.fail(
            "secrets.private-keys",
            "private key block (-----BEGIN … PRIVATE KEY-----)".into(),
            Some(show(&p)),
        );
    }

    checks.evaluated(
        "secrets.credentials",
        "no credential files in /etc, /root, /home",
    );
    for p in sorted_paths(tree, |p, k| {
        in_secret_scope(p) && matches!(k, NodeKind::File { size } if *size > 0)
    }) {
        let name = base_name(p);
        let reason = if p.ends_with(b"/.aws/credentials") {
            Some("AWS credentials")
        } else if p.ends_with(b"/.kube/config") {
            Some("Kubernetes client config")
        } else if name == b".git-credentials" {
            Some("git credentials")
        } else if name == b".netrc" {
            Some(".netrc with login credentials")
        } else if p.ends_with(b"/.docker/config.json") {
            match tree.read(p) {
                Lookup::Content(c) => {
                    docker_auths(c).then_some("Docker registry credentials (\"auths\")")
                }
                _ => Some("Docker config too large to check"),
            }
        } else if p == b"etc/apt/auth.conf" || p.starts_with(b"etc/apt/auth.conf.d/") {
            match tree.read(p) {
                Lookup::Content(c) => apt_password(c).then_some("apt repository password"),
                _ => Some("apt auth file too large to check"),
            }
        } else {
            None
        };
        if let Some(r) = reason {
            checks.fail("secrets.credentials", r.into(), Some(show(p)));
        }
    }
    tokens(tree, checks);
}

fn tokens(tree: &Tree, checks: &mut Checks) {
    let mut found: Vec<&(Vec<u8>, tokens::TokenFinding)> = tree.token_findings.iter().collect();
    found.sort_by(|a, b| (&a.0, a.1.line).cmp(&(&b.0, b.1.line)));
    for (p, f) in found {
        checks.note("secrets.tokens", f.status, f.message.clone(), Some(show(p)));
    }
    if !checks.has("secrets.tokens") {
        let big = match tree.token_too_big {
            0 => String::new(),
            n => format!(
                "; {n} file(s) over {} MiB not scanned",
                tokens::MAX_FILE >> 20
            ),
        };
        checks.pass(
            "secrets.tokens",
            format!(
                "no tokens in /etc, /root, /home ({} text files scanned{big})",
                tree.token_scanned
            ),
        );
    }
}

fn docker_auths(c: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(c) {
        Ok(v) => v
            .get("auths")
            .and_then(|a| a.as_object())
            .is_some_and(|o| !o.is_empty()),
        Err(_) => super::tree::find(c, b"\"auths\"").is_some(),
    }
}

fn apt_password(c: &[u8]) -> bool {
    String::from_utf8_lossy(c).lines().any(|l| {
        let l = l.trim();
        !l.starts_with('#')
            && l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "password" && !w[1].is_empty())
    })
}
