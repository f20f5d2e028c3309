//! Token scan: credentials pasted into text files under /etc, /root and /home.
//!
//! Streaming, line by line, over each regular file of at most [`MAX_FILE`] bytes that looks like
//! text (no NUL byte; few control characters in its first [`SNIFF`] bytes). Memory per file: one
//! line of at most [`MAX_LINE`] bytes and a handful of findings. Two tiers:
//!
//! **FAIL — known token shapes** ([`SHAPES`]), anywhere on a line, comments included: AWS access
//! key ids, GitHub, GitLab, Slack, npm, PyPI and Docker Hub tokens, Google API keys, JWTs, and
//! Proxmox VE API tokens (`USER@REALM!TOKENID=<uuid>`, as in `PVEAPIToken=…` headers and
//! Terraform's `api_token`). Also a UUID that is the value of a key naming a secret or token
//! (`token_secret`, `pm_api_token_secret`, …): that is what a PVE API token secret looks like.
//! Each shape has a fixed prefix or structure, so a clean rootfs does not contain them by chance.
//!
//! **WARN — generic high entropy**, only outside comments, only for a *value*: the word right
//! after `=`, `:` (optionally past spaces and one quote; `export X=` is covered by `=`) or an
//! opening quote, ending at a space, quote, `,`, `;`, `)`, `]`, `}`, `&`, `#` or the line's end — a
//! word followed by `.`, `/`, `@`, `:` … is part of a path, host name, address or larger structure
//! and is not a token, and a quoted value whose quote stays open to the line's end continues on
//! the next line (the DNSSEC root key in bind9's `bind.keys`, a wrapped certificate): multi-line
//! data, not a token. Candidates are runs of the base64 / url-safe alphabet
//! (`A-Za-z0-9+/_-`, then up to two `=` of padding) of at least [`MIN_LEN`] characters, and:
//!
//! - never a UUID (fstab `UUID=`, systemd units, partition ids) unless under a secret key (above),
//!   never an SSH public key blob (`AAAAB3NzaC1…`), never an absolute path (`/usr/…`);
//! - pure hex (≥ [`MIN_HEX_LEN`]) is a hash, commit, fingerprint or id far more often than a
//!   secret (the provenance stamp, dpkg and apt files are full of them), so it is flagged only
//!   under a key naming a secret ([`secret_key`]), with entropy ≥ [`HEX_THRESHOLD`] bits/char;
//! - anything else must mix upper case, lower case and digits (two of the three under a secret
//!   key) and reach the entropy threshold for its length ([`threshold`]).
//!
//! The threshold is the 5th percentile of the Shannon entropy of uniformly random strings of that
//! length over the 64-symbol url-safe alphabet (20 000 samples per length), so 95 % of real random
//! tokens clear it, while words, identifiers and paths (`org_freedesktop_NetworkManager`: 3.76
//! bits/char at 30, against 4.23) stay below. Calibrated on the `make base.debian-12` debootstrap
//! tarball, a provisioned `lxcforge build debian-12` template and a Debian 12 rootfs with ~25
//! server packages installed (nginx, apache2, postgresql, samba, bind9, cloud-init, …): no false
//! finding on any of them. The one finding on the third is real: bind9's postinst generates
//! `/etc/bind/rndc.key` (`secret "…";`), which every container made from such a template would
//! share. Certificates and PGP keys (`/etc/ssl/certs`, apt keyrings) never match:
//! their base64 lines hold no `=`/`:`/quote before the data, and binary keyrings are not text.
//! `/etc/shadow`-style files are left to `secrets.shadow`.

use crate::validate::Status;
use regex::bytes::Regex;
use std::sync::OnceLock;

/// Files larger than this are not scanned (configuration is small; `/etc/ssh/moduli`, 560 KiB,
/// is the largest text file of a provisioned Debian 12, the CA bundle about 220 KiB).
pub(crate) const MAX_FILE: u64 = 1 << 20;
/// A line longer than this is scanned in pieces of this size, overlapping by [`OVERLAP`] bytes
/// (longer than any token shape or candidate worth reporting).
const MAX_LINE: usize = 16 * 1024;
const OVERLAP: usize = 1024;
/// Bytes at the start of a file in which control characters decide "binary".
const SNIFF: usize = 8 * 1024;
/// Findings kept per file.
const MAX_PER_FILE: usize = 5;
/// Shortest generic candidate (base64 / url-safe).
pub(crate) const MIN_LEN: usize = 20;
/// Shortest hex candidate (a 128-bit key written in hex).
pub(crate) const MIN_HEX_LEN: usize = 32;
/// Entropy a hex value under a secret key must reach: the 1st percentile of random 32-digit hex
/// is 3.27 bits/char, while `0000…` or `deadbeefdeadbeef…` stay well below.
pub(crate) const HEX_THRESHOLD: f64 = 3.0;

/// (length, bits/char): 5th percentile of the Shannon entropy of uniformly random strings over
/// the 64-symbol url-safe alphabet, rounded down to 0.05; linear in between, flat after the last.
const THRESHOLDS: &[(usize, f64)] = &[
    (20, 3.75),
    (24, 4.0),
    (28, 4.15),
    (32, 4.3),
    (40, 4.55),
    (48, 4.7),
    (64, 5.0),
    (96, 5.3),
    (128, 5.45),
    (192, 5.65),
    (256, 5.75),
];

/// Entropy threshold (bits/char) for a base64 / url-safe candidate of `len` characters.
pub(crate) fn threshold(len: usize) -> f64 {
    let (first, last) = (THRESHOLDS[0], THRESHOLDS[THRESHOLDS.len() - 1]);
    if len <= first.0 {
        return first.1;
    }
    if len >= last.0 {
        return last.1;
    }
    for w in THRESHOLDS.windows(2) {
        let ((a, ta), (b, tb)) = (w[0], w[1]);
        if len <= b {
            return ta + (tb - ta) * (len - a) as f64 / (b - a) as f64;
        }
    }
    last.1
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in s {
        counts[*b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Known token shapes: (description, pattern). ASCII word boundaries (`(?-u:\b)`).
const SHAPES: &[(&str, &str)] = &[
    (
        "AWS access key id",
        r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
    ),
    ("GitHub token", r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{36}(?-u:\b)"),
    (
        "GitHub fine-grained token",
        r"(?-u:\b)github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}(?-u:\b)",
    ),
    ("GitLab token", r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}"),
    (
        "Slack token",
        r"(?-u:\b)xox[abposr]-[0-9]{4,}-[0-9A-Za-z-]{8,}",
    ),
    ("npm token", r"(?-u:\b)npm_[A-Za-z0-9]{36}(?-u:\b)"),
    (
        "PyPI token",
        r"(?-u:\b)pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
    ),
    ("Docker Hub token", r"(?-u:\b)dckr_pat_[A-Za-z0-9_-]{27,}"),
    ("Google API key", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}(?-u:\b)"),
    (
        "JSON Web Token",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ),
    (
        "Proxmox VE API token (USER@REALM!TOKENID=secret)",
        r"[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z0-9._-]+[=:]\s*[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?-u:\b)",
    ),
];

fn shapes() -> &'static [(&'static str, Regex)] {
    static S: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    S.get_or_init(|| {
        SHAPES
            .iter()
            .map(|(d, p)| (*d, Regex::new(p).expect("token shape pattern")))
            .collect()
    })
}

/// One finding in one file. Never holds the token itself: [`redact`] keeps 4 characters.
#[derive(Debug, Clone)]
pub(crate) struct TokenFinding {
    pub status: Status,
    pub line: u64,
    pub message: String,
}

/// `ghp_…` (40 chars): enough to find it, not enough to use it.
fn redact(tok: &[u8]) -> String {
    let head: String = tok.iter().take(4).map(|b| *b as char).collect();
    format!("`{head}…` ({} chars)", tok.len())
}

/// Files not scanned: `secrets.shadow` reads the password databases.
pub(crate) fn skipped(path: &[u8]) -> bool {
    matches!(
        path,
        b"etc/shadow" | b"etc/shadow-" | b"etc/gshadow" | b"etc/gshadow-"
    )
}

/// Streaming scanner for one member.
pub(crate) struct TokenScan {
    line: Vec<u8>,
    line_no: u64,
    seen: usize,
    controls: usize,
    binary: bool,
    findings: Vec<TokenFinding>,
}

impl TokenScan {
    pub(crate) fn new() -> TokenScan {
        TokenScan {
            line: Vec::new(),
            line_no: 1,
            seen: 0,
            controls: 0,
            binary: false,
            findings: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, mut c: &[u8]) {
        if self.binary {
            return;
        }
        if c.contains(&0) {
            self.binary = true;
            return;
        }
        if self.seen < SNIFF {
            let k = (SNIFF - self.seen).min(c.len());
            self.controls += c[..k]
                .iter()
                .filter(|b| {
                    (**b < 0x20 && !matches!(**b, b'\t' | b'\n' | b'\r' | 0x0c)) || **b == 0x7f
                })
                .count();
            self.seen += k;
            // More than 1 in 10 bytes a control character: not text.
            if self.controls * 10 > self.seen.max(64) {
                self.binary = true;
                return;
            }
        }
        while !c.is_empty() {
            match c.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.push(&c[..i]);
                    self.end_line();
                    self.line_no += 1;
                    c = &c[i + 1..];
                }
                None => {
                    self.push(c);
                    c = &[];
                }
            }
        }
    }

    fn push(&mut self, mut part: &[u8]) {
        while self.line.len() + part.len() > MAX_LINE {
            let k = MAX_LINE - self.line.len();
            self.line.extend_from_slice(&part[..k]);
            // Scan this piece, then start the next one with its tail, so a token across the
            // cut is seen whole in one of them.
            let tail = self.line[MAX_LINE - OVERLAP..].to_vec();
            self.end_line();
            self.line.extend_from_slice(&tail);
            part = &part[k..];
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        if self.findings.len() < MAX_PER_FILE && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let text = line.strip_suffix(b"\r").unwrap_or(&line);
            let mut found = Vec::new();
            scan_line(text, self.line_no, &mut found);
            for f in found {
                // a token inside the overlap of two pieces is found twice
                if !self
                    .findings
                    .iter()
                    .any(|g| g.line == f.line && g.message == f.message)
                {
                    self.findings.push(f);
                }
            }
            self.line = line;
        }
        self.line.clear();
    }

    /// The findings, or none if the file turned out to be binary.
    pub(crate) fn finish(mut self) -> Option<Vec<TokenFinding>> {
        self.end_line();
        if self.binary {
            return None;
        }
        self.findings.truncate(MAX_PER_FILE);
        Some(self.findings)
    }
}

fn is_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-')
}

fn is_terminator(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b'`' | b',' | b';' | b')' | b']' | b'}' | b'&' | b'#'
        )
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn is_uuid(t: &[u8]) -> bool {
    t.len() == 36
        && t.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_hex(t: &[u8]) -> bool {
    t.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || t.iter().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// A key whose value is meant to be secret (lower-cased comparison).
pub(crate) fn secret_key(key: &[u8]) -> bool {
    let k = key.to_ascii_lowercase();
    const WORDS: &[&[u8]] = &[
        b"password",
        b"passwd",
        b"secret",
        b"token",
        b"apikey",
        b"api_key",
        b"api-key",
        b"credential",
        b"private_key",
        b"privatekey",
        b"access_key",
        b"accesskey",
        b"auth",
    ];
    WORDS.iter().any(|w| k.windows(w.len()).any(|x| x == *w))
}

/// A key naming a token secret: a UUID under it is a Proxmox VE-style API token secret.
fn token_secret_key(key: &[u8]) -> bool {
    let k = key.to_ascii_lowercase();
    [b"secret".as_slice(), b"token"]
        .iter()
        .any(|w| k.windows(w.len()).any(|x| x == *w))
}

/// The key before a separator at `sep`: the identifier ending there (past spaces and a quote).
fn key_before(line: &[u8], sep: usize) -> &[u8] {
    let mut end = sep;
    while end > 0 && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    if end > 0 && matches!(line[end - 1], b'"' | b'\'') {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && is_key_char(line[start - 1]) {
        start -= 1;
    }
    &line[start..end]
}

fn is_comment(line: &[u8]) -> bool {
    let t = line.trim_ascii_start();
    t.starts_with(b"#") || t.starts_with(b";") || t.starts_with(b"//")
}

fn scan_line(line: &[u8], line_no: u64, out: &mut Vec<TokenFinding>) {
    let mut hits: Vec<(usize, usize)> = Vec::new();
    for (what, re) in shapes() {
        for m in re.find_iter(line) {
            hits.push((m.start(), m.end()));
            out.push(TokenFinding {
                status: Status::Fail,
                line: line_no,
                message: format!(
                    "line {line_no}: {what} {}: remove it from the template, revoke it, and provide it at deploy time",
                    redact(m.as_bytes())
                ),
            });
        }
    }
    let comment = is_comment(line);
    let mut last_start = usize::MAX;
    for (j, &sep) in line.iter().enumerate() {
        if !matches!(sep, b'=' | b':' | b'"' | b'\'') {
            continue;
        }
        let mut k = j + 1;
        let mut quote = matches!(sep, b'"' | b'\'').then_some(sep);
        if sep == b'=' || sep == b':' {
            while k < line.len() && matches!(line[k], b' ' | b'\t') {
                k += 1;
            }
            if k < line.len() && matches!(line[k], b'"' | b'\'') {
                quote = Some(line[k]);
                k += 1;
            }
        }
        let start = k;
        while k < line.len() && is_run(line[k]) {
            k += 1;
        }
        let mut pad = 0;
        while pad < 2 && k < line.len() && line[k] == b'=' {
            k += 1;
            pad += 1;
        }
        let tok = &line[start..k];
        if start == last_start || tok.len() < MIN_LEN.min(MIN_HEX_LEN) {
            continue;
        }
        if k < line.len() && !is_terminator(line[k]) {
            continue;
        }
        if let Some(q) = quote
            && !line[k..].contains(&q)
        {
            // The quote stays open: the value continues on the next line (a DNSKEY in
            // bind.keys, a wrapped certificate), multi-line data rather than one token.
            continue;
        }
        if hits.iter().any(|(a, b)| start < *b && *a < k) {
            continue; // already reported as a known shape
        }
        last_start = start;
        let key = if sep == b'=' || sep == b':' {
            key_before(line, j)
        } else {
            // `--token "…"`: the word before the quote
            let before = line[..j].trim_ascii_end();
            let s = before
                .iter()
                .rposition(|b| !is_key_char(*b))
                .map_or(0, |i| i + 1);
            &before[s..]
        };
        if let Some(f) = judge(tok, key, comment, line_no) {
            out.push(f);
        }
    }
}

fn judge(tok: &[u8], key: &[u8], comment: bool, line_no: u64) -> Option<TokenFinding> {
    let keyname = String::from_utf8_lossy(key);
    if comment {
        return None;
    }
    if is_uuid(tok) {
        let digits: Vec<u8> = tok.iter().copied().filter(|b| *b != b'-').collect();
        let real = entropy(&digits) >= HEX_THRESHOLD; // not 00000000-0000-… or a pattern
        return (real && token_secret_key(key)).then(|| TokenFinding {
            status: Status::Fail,
            line: line_no,
            message: format!(
                "line {line_no}: `{keyname}` holds a UUID {}: the shape of a Proxmox VE API token secret; remove it from the template, revoke it, and provide it at deploy time",
                redact(tok)
            ),
        });
    }
    if tok.starts_with(b"/") {
        return None;
    }
    if [b"AAAAB3NzaC1".as_slice(), b"AAAAC3NzaC1", b"AAAAE2VjZHNh"]
        .iter()
        .any(|p| tok.starts_with(p))
    {
        return None; // an SSH public key
    }
    let secret = secret_key(key);
    let h = entropy(tok);
    let (flag, limit) = if is_hex(tok) {
        (
            secret && tok.len() >= MIN_HEX_LEN && h >= HEX_THRESHOLD,
            HEX_THRESHOLD,
        )
    } else {
        let classes = [
            tok.iter().any(u8::is_ascii_uppercase),
            tok.iter().any(u8::is_ascii_lowercase),
            tok.iter().any(u8::is_ascii_digit),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let t = threshold(tok.len());
        (
            tok.len() >= MIN_LEN && classes >= if secret { 2 } else { 3 } && h >= t,
            t,
        )
    };
    if !flag {
        return None;
    }
    let of = if key.is_empty() {
        String::new()
    } else {
        format!(" for `{keyname}`")
    };
    Some(TokenFinding {
        status: Status::Warn,
        line: line_no,
        message: format!(
            "line {line_no}: high-entropy value{of} {} ({h:.2} bits/char, threshold {limit:.2}): if it is a secret, remove it and provide it at deploy time",
            redact(tok)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<TokenFinding> {
        let mut s = TokenScan::new();
        s.feed(text.as_bytes());
        s.finish().unwrap()
    }

    #[test]
    fn thresholds_interpolate_and_clamp() {
        assert_eq!(threshold(10), 3.75);
        assert_eq!(threshold(20), 3.75);
        assert!((threshold(22) - 3.875).abs() < 1e-9);
        assert_eq!(threshold(64), 5.0);
        assert_eq!(threshold(10_000), 5.75);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert_eq!(entropy(b"aaaa"), 0.0);
    }

    #[test]
    fn shapes_fail_and_generic_warns() {
        let f = scan("GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].status, Status::Fail);
        assert!(f[0].message.contains("GitHub token `ghp_…` (40 chars)"));
        assert!(!f[0].message.contains("0123456789"), "token printed");
        let f = scan("x\nclient_key: \"q8Zr2LmX0vT9bN4kP7sW1yH6\"\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].status, f[0].line), (Status::Warn, 2));
    }

    #[test]
    fn words_paths_hashes_and_uuids_pass() {
        for l in [
            "ExecStart=/usr/lib/systemd/systemd-networkd-wait-online",
            "Ciphersuites = TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
            "UUID=0b3f6a8e-52c1-4d5e-9a7b-1c2d3e4f5a6b / ext4 defaults 0 1",
            "LXCFORGE_GIT_COMMIT=6523ff3644eca277f2e3d1ad7ecf50390d4c07d9",
            "SHA256: 94b75c688f87fffa6a0b82fc9d22809eb44e06e4c2f8edd0baa883224e1f24b1",
            "name = org_freedesktop_NetworkManager1",
            "host = mirror-01.example.org",
            "# token: q8Zr2LmX0vT9bN4kP7sW1yH6q8Zr2LmX",
            "key = \"AAAAC3NzaC1lZDI1NTE5AAAAIGm8zQ7rT1pV9wX3yB5nK0cL2dF4hJ6sA8uE1oR3tY7i\"",
        ] {
            assert!(scan(l).is_empty(), "{l}: {:?}", scan(l));
        }
    }

    #[test]
    fn binary_and_long_lines() {
        let mut s = TokenScan::new();
        s.feed(b"token=ghp_0123456789abcdefghijABCDEFGHIJ012345\n\0");
        assert!(s.finish().is_none());
        // a token across the cut between two pieces of a long line, found once
        for at in [
            MAX_LINE - 20,
            MAX_LINE - 1,
            MAX_LINE,
            2 * MAX_LINE - OVERLAP - 3,
        ] {
            let mut l = vec![b'x'; at];
            l.extend_from_slice(b" t=ghp_0123456789abcdefghijABCDEFGHIJ012345 ");
            l.extend(vec![b'y'; MAX_LINE]);
            let mut s = TokenScan::new();
            s.feed(&l);
            let f = s.finish().unwrap();
            assert_eq!(f.len(), 1, "at {at}: {f:?}");
        }
        // a token split across feeds and after a line longer than MAX_LINE
        let mut s = TokenScan::new();
        s.feed(&vec![b'a'; MAX_LINE * 2 + 7]);
        s.feed(b"\nk=ghp_0123456789abcdefghij");
        s.feed(b"ABCDEFGHIJ012345\n");
        let f = s.finish().unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].line, 2);
    }
}
