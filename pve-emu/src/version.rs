//! Version-dependent behaviour (ref §0.2). The mapping from storage/http-server package
//! versions to PVE releases is approximate, as the reference says; the boundaries chosen here
//! are documented in the README.

use regex::bytes::Regex;

/// A dotted version, compared numerically part by part ("7.4-3" → [7, 4, 3]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub Vec<u64>);

impl Version {
    pub fn parse(s: &str) -> Version {
        Version(
            s.split(['.', '-', '~', '+'])
                .map(|p| {
                    p.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0)
                })
                .collect(),
        )
    }

    pub fn at_least(&self, other: &str) -> bool {
        let o = Version::parse(other);
        let n = self.0.len().max(o.0.len());
        let pad = |v: &Vec<u64>| {
            let mut v = v.clone();
            v.resize(n, 0);
            v
        };
        pad(&self.0) >= pad(&o.0)
    }
}

/// What the configured versions imply.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `$VZTMPL_EXT_RE_1` used as `m![^/]+RE$!`, whole-name form (ref §2.6).
    pub vztmpl_upload_re: Regex,
    /// The listing form `m!/([^/]+RE)$!` on the bare file name; group 2 is the extension.
    pub vztmpl_list_re: Regex,
    /// Upload `content` enum (ref §2.4).
    pub upload_content_enum: Vec<&'static str>,
    /// ≥ libpve-http-server-perl 5.2.0: 500 instead of 501, error text in the body, `message`.
    pub http_5_2_0: bool,
    /// AnyEvent::Handle `rbuf_max` (ref §2.3 item 6).
    pub rbuf_max: usize,
    /// `$limit_max_post` (ref §2.2).
    pub limit_max_post: usize,
    /// Token failures answer `Authentication failed!` instead of the detailed reason.
    pub unified_auth_reason: bool,
}

impl Behaviour {
    pub fn new(pve_version: &str, http_server_version: &str, auth: crate::AuthReason) -> Self {
        let pve = Version::parse(pve_version);
        let http = Version::parse(http_server_version);
        // ref §2.6: the four generations of the regex. Perl's `(tar)(?!\.)` followed by `$`
        // is the same as `tar$`, which the regex crate can express without look-ahead.
        let exts = if pve.at_least("9.1") {
            r"tar|tar\.(gz|xz|zst|bz2)"
        } else if pve.at_least("8.3") {
            r"tar\.(gz|xz|zst|bz2)"
        } else if pve.at_least("7.0") {
            r"tar\.(gz|xz|zst)"
        } else {
            r"tar\.([gx]z)"
        };
        // Group 2 in the listing regex is the format suffix. For plain `.tar`, Perl's branch
        // reset `(?|(tar)…|tar\.(…))` puts "tar" into the same group; we emulate that by
        // capturing the whole alternative and post-processing (see `list_format`).
        let vztmpl_upload_re = Regex::new(&format!(r"(?s-u)^[^/]+\.(?i:{exts})$")).unwrap();
        let vztmpl_list_re = Regex::new(&format!(r"(?s-u)^([^/]+\.(?i:({exts})))$")).unwrap();
        let upload_content_enum = if pve.at_least("8.4") {
            vec!["iso", "vztmpl", "import"]
        } else {
            vec!["iso", "vztmpl"]
        };
        let http_5_2_0 = http.at_least("5.2.0");
        let (rbuf_max, limit_max_post) = if http.at_least("5.2.1") {
            (512 * 1024 + 8 * 1024, 512 * 1024)
        } else {
            (64 * 1024, 64 * 1024)
        };
        let version_unified =
            pve.at_least("9.1.5") || (pve.at_least("8.4.17") && !pve.at_least("9.0"));
        let unified_auth_reason = match auth {
            crate::AuthReason::Unified => true,
            crate::AuthReason::Detailed => false,
            crate::AuthReason::ByVersion => version_unified,
        };
        Behaviour {
            vztmpl_upload_re,
            vztmpl_list_re,
            upload_content_enum,
            http_5_2_0,
            rbuf_max,
            limit_max_post,
            unified_auth_reason,
        }
    }

    /// For a file name in `template/cache`: `Some((volname, format))` if it is listed as
    /// vztmpl (ref §5.1: `"t" . $2`, or `tar` for the plain `.tar` of ≥ 9.0.15; case kept).
    pub fn list_format(&self, name: &str) -> Option<String> {
        let caps = self.vztmpl_list_re.captures(name.as_bytes())?;
        let whole = String::from_utf8_lossy(caps.get(2)?.as_bytes()).to_string();
        // whole is "tar" (any case) or "tar.<ext>".
        match whole.split_once('.') {
            Some((_, ext)) => Some(format!("t{ext}")),
            None => Some(if whole == "tar" {
                whole
            } else {
                format!("t{whole}")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthReason;

    #[test]
    fn extension_generations() {
        let b = Behaviour::new("8.2.4", "6.0.5", AuthReason::Unified);
        assert!(b.vztmpl_upload_re.is_match(b"a.tar.zst"));
        assert!(b.vztmpl_upload_re.is_match(b"a.TAR.GZ"));
        assert!(!b.vztmpl_upload_re.is_match(b"a.tar.bz2"));
        assert!(!b.vztmpl_upload_re.is_match(b".tar.gz"));
        assert!(!b.vztmpl_upload_re.is_match(b"a.tgz"));
        assert!(!b.vztmpl_upload_re.is_match(b"a.tar"));
        let b = Behaviour::new("9.1.2", "6.0.5", AuthReason::Unified);
        assert!(b.vztmpl_upload_re.is_match(b"a.tar"));
        assert!(b.vztmpl_upload_re.is_match(b"a.tar.bz2"));
        assert!(!b.vztmpl_upload_re.is_match(b"a.tar.lzo"));
        assert_eq!(b.list_format("x.tar").as_deref(), Some("tar"));
        assert_eq!(b.list_format("x.TAR").as_deref(), Some("tTAR"));
        assert_eq!(b.list_format("x.TAR.GZ").as_deref(), Some("tGZ"));
        assert_eq!(b.list_format("x.tar.zst").as_deref(), Some("tzst"));
        assert_eq!(b.list_format("x.txt"), None);
        let b = Behaviour::new("6.4", "6.0.5", AuthReason::Unified);
        assert!(!b.vztmpl_upload_re.is_match(b"a.tar.zst"));
        assert!(b.vztmpl_upload_re.is_match(b"a.tar.xz"));
    }

    #[test]
    fn reason_by_version() {
        let unified = |v| Behaviour::new(v, "6.0.5", AuthReason::ByVersion).unified_auth_reason;
        assert!(!unified("8.2.4"));
        assert!(unified("8.4.17"));
        assert!(!unified("9.0.3"));
        assert!(unified("9.1.5"));
        assert!(Behaviour::new("8.2.4", "6.0.5", AuthReason::Unified).unified_auth_reason);
    }

    #[test]
    fn http_server_limits() {
        let b = Behaviour::new("8.2.4", "5.2.0", AuthReason::Unified);
        assert!(b.http_5_2_0);
        assert_eq!(b.rbuf_max, 64 * 1024);
        let b = Behaviour::new("8.2.4", "5.1.2", AuthReason::Unified);
        assert!(!b.http_5_2_0);
    }
}
