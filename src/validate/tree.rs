//! The member table: every normalized path with its type, the symlink table (for resolving paths
//! chroot-style, as pve-container does), and the few small files the checks read, buffered as
//! they stream by (each at most [`MAX_BUFFERED`] bytes).

use super::Checks;
use super::hygiene::tokens::{self, TokenFinding, TokenScan};
use crate::pack::policy::MAX_UNPRIVILEGED_ID;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Largest file of interest kept in memory.
pub(crate) const MAX_BUFFERED: usize = 64 * 1024;
/// Bytes kept from the start of executables (ELF header).
const ELF_HEAD: usize = 64;
const MAX_SYMLINK_HOPS: u32 = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    File {
        size: u64,
    },
    Dir,
    Symlink(Vec<u8>),
    /// Raw target as written in the archive.
    HardLink(Vec<u8>),
    Fifo,
    Char,
    Block,
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    #[allow(dead_code)]
    pub mode: u32,
    #[allow(dead_code)]
    pub uid: u64,
}

#[derive(Default)]
pub(crate) struct Tree {
    pub members: u64,
    pub nodes: HashMap<Vec<u8>, Node>,
    /// Small files of interest, by normalized path.
    pub contents: HashMap<Vec<u8>, Vec<u8>>,
    /// Files of interest larger than [`MAX_BUFFERED`].
    pub too_big: HashSet<Vec<u8>>,
    /// First bytes of executables in the bin directories.
    pub heads: HashMap<Vec<u8>, Vec<u8>>,
    /// Files in /etc, /root, /home holding a PEM/PGP private key block.
    pub private_keys: Vec<Vec<u8>>,
    /// Token scan findings (`hygiene::tokens`), by member.
    pub token_findings: Vec<(Vec<u8>, TokenFinding)>,
    /// Text files the token scan read, and files too large for it.
    pub token_scanned: u64,
    pub token_too_big: u64,
    pub dot_example: Option<String>,
    pub plain_example: Option<String>,
    /// First components of member paths.
    pub top_level: BTreeSet<Vec<u8>>,
}

/// What to keep from one member's data.
pub(crate) struct Sink {
    path: Option<Vec<u8>>,
    buffer: Option<Vec<u8>>,
    overflow: bool,
    head: Option<Vec<u8>>,
    scan: Option<KeyScan>,
    tokens: Option<TokenScan>,
}

impl Sink {
    fn none() -> Sink {
        Sink {
            path: None,
            buffer: None,
            overflow: false,
            head: None,
            scan: None,
            tokens: None,
        }
    }

    pub(crate) fn feed(&mut self, c: &[u8]) {
        if let Some(b) = &mut self.buffer {
            if b.len() + c.len() > MAX_BUFFERED {
                self.overflow = true;
                self.buffer = None;
            } else {
                b.extend_from_slice(c);
            }
        }
        if let Some(h) = &mut self.head
            && h.len() < ELF_HEAD
        {
            let k = (ELF_HEAD - h.len()).min(c.len());
            h.extend_from_slice(&c[..k]);
        }
        if let Some(s) = &mut self.scan {
            s.feed(c);
        }
        if let Some(t) = &mut self.tokens {
            t.feed(c);
        }
    }
}

/// Streaming search for `-----BEGIN … PRIVATE KEY-----` / `-----BEGIN PGP PRIVATE KEY BLOCK-----`.
struct KeyScan {
    carry: Vec<u8>,
    found: bool,
}

impl KeyScan {
    fn feed(&mut self, c: &[u8]) {
        if self.found {
            return;
        }
        let mut w = std::mem::take(&mut self.carry);
        w.extend_from_slice(c);
        self.found = contains_private_key(&w);
        let keep = w.len().min(96);
        self.carry = w[w.len() - keep..].to_vec();
    }
}

pub(crate) fn contains_private_key(w: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = find(&w[from..], b"-----BEGIN ") {
        let start = from + i + 11;
        let line_end = w[start..]
            .iter()
            .take(64)
            .position(|b| *b == b'\n')
            .map(|p| start + p)
            .unwrap_or_else(|| (start + 64).min(w.len()));
        let label = &w[start..line_end];
        if find(label, b"PRIVATE KEY-----").is_some()
            || find(label, b"PRIVATE KEY BLOCK-----").is_some()
        {
            return true;
        }
        from = start;
    }
    false
}

pub(crate) fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    h.windows(n.len()).position(|w| w == n)
}

/// Normalizes a member name. `Err` for `..`.
fn normalize(raw: &[u8]) -> Result<Vec<u8>, ()> {
    crate::pack::normalize_path(raw).map_err(|_| ())
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

fn file_name(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// Small files whose content the checks read.
fn is_of_interest(p: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"etc/os-release",
        b"usr/lib/os-release",
        b"etc/lsb-release",
        b"etc/debian_version",
        b"etc/shadow",
        b"etc/ssh/sshd_config",
        b"etc/machine-id",
        b"var/lib/dbus/machine-id",
        b"etc/apt/auth.conf",
    ];
    if EXACT.contains(&p) {
        return true;
    }
    let par = parent(p);
    if par == b"etc/ssh/sshd_config.d" || par == b"etc/apt/auth.conf.d" {
        return true;
    }
    in_secret_scope(p) && p.ends_with(b"/.docker/config.json")
}

/// Where the token scan looks: /etc (including /etc/ssl), /root, /home.
fn in_token_scope(p: &[u8]) -> bool {
    p.starts_with(b"etc/") || p.starts_with(b"root/") || p.starts_with(b"home/")
}

/// /etc (but not /etc/ssl), /root, /home.
pub(crate) fn in_secret_scope(p: &[u8]) -> bool {
    (p.starts_with(b"etc/") && !p.starts_with(b"etc/ssl/"))
        || p.starts_with(b"root/")
        || p.starts_with(b"home/")
}

fn is_bin_dir(d: &[u8]) -> bool {
    matches!(
        d,
        b"bin" | b"sbin" | b"usr/bin" | b"usr/sbin" | b"usr/local/bin" | b"usr/local/sbin"
    ) || d == b"usr/lib/systemd"
        || d == b"lib/systemd"
}

impl Tree {
    /// Records a member and returns what to keep from its data.
    pub(crate) fn add(
        &mut self,
        raw: &[u8],
        kind: NodeKind,
        mode: u32,
        uid: u64,
        gid: u64,
        checks: &mut Checks,
    ) -> Sink {
        let shown = show(raw);
        // Naming.
        if raw.starts_with(b"/") {
            checks.fail(
                "archive.names",
                "absolute member name (tar strips the /, other tools write outside the target)"
                    .into(),
                Some(shown.clone()),
            );
        } else if raw.starts_with(b"./") || raw == b"." {
            if self.dot_example.is_none() {
                self.dot_example = Some(shown.clone());
            }
        } else if self.plain_example.is_none() {
            self.plain_example = Some(shown.clone());
        }
        let Ok(path) = normalize(raw) else {
            checks.fail(
                "archive.names",
                "member name with a .. component: path traversal".into(),
                Some(shown),
            );
            return Sink::none();
        };
        if let Some(first) = path.split(|b| *b == b'/').next()
            && !first.is_empty()
            && !self.top_level.contains(first)
        {
            self.top_level.insert(first.to_vec());
        }
        if uid > MAX_UNPRIVILEGED_ID || gid > MAX_UNPRIVILEGED_ID {
            checks.fail(
                "archive.ids",
                format!(
                    "owned by {uid}:{gid}; ids above {MAX_UNPRIVILEGED_ID} cannot be mapped in an unprivileged container"
                ),
                Some(shown.clone()),
            );
        }
        match &kind {
            NodeKind::Char | NodeKind::Block => checks.fail(
                "archive.devices",
                "device node: an unprivileged container cannot create it (LXC populates /dev)"
                    .into(),
                Some(shown.clone()),
            ),
            NodeKind::HardLink(t) => match normalize(t) {
                Ok(t) if matches!(self.nodes.get(&t), Some(n) if !matches!(n.kind, NodeKind::Dir)) =>
                    {}
                _ => checks.fail(
                    "archive.hardlinks",
                    format!(
                        "hard link to {}, which is not an earlier member of the archive",
                        show(t)
                    ),
                    Some(shown.clone()),
                ),
            },
            NodeKind::Symlink(t) if !t.starts_with(b"/") => {
                let mut depth = parent(&path)
                    .split(|b| *b == b'/')
                    .filter(|c| !c.is_empty())
                    .count() as i64;
                for c in t.split(|b| *b == b'/') {
                    match c {
                        b"" | b"." => {}
                        b".." => depth -= 1,
                        _ => depth += 1,
                    }
                    if depth < 0 {
                        checks.warn(
                            "archive.symlinks",
                            format!(
                                "relative symlink to {} climbs above the root (it resolves to / inside the container, elsewhere outside it)",
                                show(t)
                            ),
                            Some(shown.clone()),
                        );
                        break;
                    }
                }
            }
            _ => {}
        }
        if self.nodes.contains_key(&path) {
            checks.fail(
                "archive.duplicates",
                "duplicate member: tar --skip-old-files keeps the first, the rest is ignored"
                    .into(),
                Some(shown.clone()),
            );
        }
        // Docker leftovers: the packer's own rules.
        if let Some(reason) = super::hygiene::leftover(&path, &kind, mode) {
            checks.fail("hygiene.leftovers", reason, Some(shown.clone()));
        }

        let mut sink = Sink::none();
        if let NodeKind::File { size } = kind {
            sink.path = Some(path.clone());
            if is_of_interest(&path) {
                if size as usize <= MAX_BUFFERED {
                    sink.buffer = Some(Vec::with_capacity(size as usize));
                } else {
                    sink.overflow = true;
                }
            }
            if is_bin_dir(parent(&path)) {
                sink.head = Some(Vec::with_capacity(ELF_HEAD));
            }
            if in_secret_scope(&path) && !is_ssh_host_key_path(&path) {
                sink.scan = Some(KeyScan {
                    carry: Vec::new(),
                    found: false,
                });
            }
            if in_token_scope(&path) && !is_ssh_host_key_path(&path) && !tokens::skipped(&path) {
                if size <= tokens::MAX_FILE {
                    sink.tokens = Some(TokenScan::new());
                } else {
                    self.token_too_big += 1;
                }
            }
        }
        // Keep the first occurrence (what tar --skip-old-files extracts).
        self.nodes.entry(path).or_insert(Node { kind, mode, uid });
        sink
    }

    pub(crate) fn finish(&mut self, sink: Sink, _checks: &mut Checks) {
        let Some(path) = sink.path else { return };
        if sink.overflow {
            self.too_big.insert(path.clone());
        } else if let Some(b) = sink.buffer {
            self.contents.entry(path.clone()).or_insert(b);
        }
        if let Some(h) = sink.head {
            self.heads.entry(path.clone()).or_insert(h);
        }
        if let Some(s) = sink.scan
            && s.found
        {
            self.private_keys.push(path.clone());
        }
        if let Some(t) = sink.tokens
            && let Some(found) = t.finish()
        {
            self.token_scanned += 1;
            self.token_findings
                .extend(found.into_iter().map(|f| (path.clone(), f)));
        }
    }

    /// Resolves `path` (absolute or relative to the root) inside the archive as a chroot would:
    /// symlinks in every component, `..` stops at the root, then one hard-link step.
    /// `None` on a symlink loop.
    pub(crate) fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            path.split(|b| *b == b'/').map(|c| c.to_vec()).collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => cur.push(c),
            }
            let joined = cur.join(&b'/');
            if let Some(Node {
                kind: NodeKind::Symlink(t),
                ..
            }) = self.nodes.get(&joined)
            {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return None;
                }
                cur.pop();
                if t.starts_with(b"/") {
                    cur.clear();
                }
                for (i, tc) in t.split(|b| *b == b'/').enumerate() {
                    queue.insert(i, tc.to_vec());
                }
            }
        }
        let joined = cur.join(&b'/');
        if let Some(Node {
            kind: NodeKind::HardLink(t),
            ..
        }) = self.nodes.get(&joined)
            && let Ok(t) = normalize(t)
        {
            return Some(t);
        }
        Some(joined)
    }

    /// Content of a buffered file of interest, following symlinks.
    pub(crate) fn read(&self, path: &[u8]) -> Lookup<'_> {
        let Some(r) = self.resolve(path) else {
            return Lookup::Loop;
        };
        match self.nodes.get(&r) {
            None => Lookup::Missing,
            Some(Node {
                kind: NodeKind::File { .. },
                ..
            }) => {
                if let Some(c) = self.contents.get(&r) {
                    Lookup::Content(c)
                } else if self.too_big.contains(&r) {
                    Lookup::TooBig
                } else {
                    Lookup::NotBuffered
                }
            }
            Some(_) => Lookup::NotAFile,
        }
    }

    pub(crate) fn node(&self, path: &[u8]) -> Option<&Node> {
        self.nodes.get(path)
    }
}

pub(crate) enum Lookup<'a> {
    Content(&'a [u8]),
    Missing,
    TooBig,
    NotBuffered,
    NotAFile,
    Loop,
}

pub(crate) fn is_ssh_host_key_path(p: &[u8]) -> bool {
    parent(p) == b"etc/ssh" && {
        let f = file_name(p);
        f.starts_with(b"ssh_host_") && f.ends_with(b"_key")
    }
}

pub(crate) fn base_name(p: &[u8]) -> &[u8] {
    file_name(p)
}
