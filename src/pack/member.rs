//! The packer's view of one archive member: normalized name, type, metadata and the PAX records
//! it carries, plus the canonical member order.

use super::policy;
use super::tarread::RawEntry;
use std::cmp::Ordering;

/// Metadata that describes the inode (shared by all names of a hard-link group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// `target` is a normalized member path (same form as [`Member::path`]).
    HardLink {
        target: Vec<u8>,
    },
    Fifo,
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Normalized path relative to the root: no leading `./` or `/`, no empty or `.` components,
    /// no trailing `/`. The root itself is the empty path.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub meta: Meta,
    /// PAX records carried to the output (`SCHILY.xattr.*`, `SCHILY.acl.*`), sorted by key.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Member {
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size } => size,
            _ => 0,
        }
    }

    /// The member name as written to the archive: `./` + path, `/` after directories.
    pub fn archive_name(&self) -> Vec<u8> {
        archive_name(&self.path, matches!(self.kind, Kind::Dir))
    }
}

/// Why a raw name could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// A `..` component: the member would land outside the root.
    Escapes,
}

/// Normalizes a raw tar member name (or hard-link target) to the packer's internal form:
/// leading `/` and `./`, repeated `/`, `.` components and the trailing `/` are removed.
/// `..` components are refused. The root (`.`, `./`, `/`) normalizes to the empty path.
pub fn normalize_path(raw: &[u8]) -> Result<Vec<u8>, NameError> {
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(NameError::Escapes),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// The archive name Proxmox expects for a normalized path: `./` prefix, and a trailing `/` for
/// directories. The root is `./`.
pub fn archive_name(path: &[u8], is_dir: bool) -> Vec<u8> {
    let mut name = Vec::with_capacity(path.len() + 3);
    name.extend_from_slice(b"./");
    name.extend_from_slice(path);
    if is_dir && !path.is_empty() {
        name.push(b'/');
    }
    name
}

/// The canonical member order: component-wise byte order of normalized paths, i.e. a depth-first
/// walk that visits each directory's entries sorted by name bytes. This is the order of Docker's
/// export (Go's lexical `filepath.Walk`), so in-order input can be streamed straight through.
/// Mapping `/` to the lowest byte makes a plain byte comparison component-wise (`a/b` < `a-b`),
/// because a component can never contain NUL.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0u8 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// Sorts raw member names (any of `dir/`, `./dir`, `/dir` spellings) in canonical order,
/// comparing their normalized forms. Names that cannot be normalized sort last.
pub fn canonical_sort(names: &mut [Vec<u8>]) {
    names.sort_by(|a, b| match (normalize_path(a), normalize_path(b)) {
        (Ok(a), Ok(b)) => canonical_cmp(&a, &b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    });
}

/// Error while turning a tar entry into a [`Member`]; the caller maps it to a `PackError`.
#[derive(Debug)]
pub(crate) enum ParseError {
    Io(std::io::Error),
    Name { raw: Vec<u8>, err: NameError },
    Unsupported { name: Vec<u8>, what: String },
}

impl From<std::io::Error> for ParseError {
    fn from(e: std::io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// Turns one entry's header and extensions (not its data) into a [`Member`]. Applies the pure
/// normalization rules (mode mask, mtime clamp, PAX selection) from [`policy`].
pub(crate) fn parse_entry(e: RawEntry, epoch: u64) -> Result<Member, ParseError> {
    use tar::EntryType as T;
    let RawEntry {
        header: h,
        path: raw_path,
        link,
        size,
        uid,
        gid,
        pax_mtime,
        pax: records,
    } = e;
    let path = normalize_path(&raw_path).map_err(|err| ParseError::Name {
        raw: raw_path.clone(),
        err,
    })?;

    let mut pax = Vec::new();
    for (key, value) in records {
        if key.starts_with(b"GNU.sparse.") {
            return Err(ParseError::Unsupported {
                name: raw_path,
                what: "PAX sparse file".into(),
            });
        }
        if policy::pax_key_wanted(&key) {
            pax.push((key, value));
        }
    }
    // Sorted keys, last record wins for a repeated key: the output must not depend on the
    // order in which the writer listed the records.
    pax.reverse();
    pax.sort_by(|a, b| a.0.cmp(&b.0));
    pax.dedup_by(|later, earlier| later.0 == earlier.0);

    let mtime = match pax_mtime {
        Some(t) => parse_pax_time(&t),
        None => h.mtime()?,
    };
    let meta = Meta {
        mode: h.mode()? & policy::MODE_MASK,
        uid,
        gid,
        mtime: policy::clamp_mtime(mtime, epoch),
    };
    let ty = h.entry_type();
    let kind = match ty {
        T::Regular | T::Continuous => Kind::File { size },
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink { target: link },
        T::Link => {
            let target =
                normalize_path(&link).map_err(|err| ParseError::Name { raw: link, err })?;
            Kind::HardLink { target }
        }
        T::Fifo => Kind::Fifo,
        T::Char | T::Block => {
            let major = h.device_major()?.unwrap_or(0);
            let minor = h.device_minor()?.unwrap_or(0);
            if ty == T::Char {
                Kind::Char { major, minor }
            } else {
                Kind::Block { major, minor }
            }
        }
        other => {
            return Err(ParseError::Unsupported {
                name: raw_path,
                what: format!("member type {:?}", other.as_byte() as char),
            });
        }
    };
    Ok(Member {
        path,
        kind,
        meta,
        pax,
    })
}

/// PAX times are decimal seconds with an optional fraction; negative (pre-1970) times become 0.
fn parse_pax_time(v: &[u8]) -> u64 {
    let s = std::str::from_utf8(v).unwrap_or("0");
    let int = s.split('.').next().unwrap_or("0");
    int.parse::<i64>().map(|t| t.max(0) as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_prefixes_and_dots() {
        assert_eq!(normalize_path(b"etc/hosts").unwrap(), b"etc/hosts");
        assert_eq!(normalize_path(b"./etc/hosts").unwrap(), b"etc/hosts");
        assert_eq!(normalize_path(b"/etc//./hosts").unwrap(), b"etc/hosts");
        assert_eq!(normalize_path(b"usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(normalize_path(b"././usr/").unwrap(), b"usr");
        for root in [&b"."[..], b"./", b"/", b""] {
            assert_eq!(normalize_path(root).unwrap(), b"");
        }
    }

    #[test]
    fn normalize_refuses_dotdot_but_keeps_odd_bytes() {
        assert_eq!(normalize_path(b"a/../b"), Err(NameError::Escapes));
        assert_eq!(normalize_path(b"../etc"), Err(NameError::Escapes));
        assert_eq!(normalize_path(b"a/..b/...").unwrap(), b"a/..b/...");
        assert_eq!(
            normalize_path(b"x\xff\xfe/\xc3\xa9").unwrap(),
            b"x\xff\xfe/\xc3\xa9"
        );
    }

    #[test]
    fn archive_names_follow_proxmox_convention() {
        assert_eq!(archive_name(b"", true), b"./");
        assert_eq!(archive_name(b"dev", true), b"./dev/");
        assert_eq!(archive_name(b"dev/null", false), b"./dev/null");
    }

    #[test]
    fn canonical_order_is_component_wise() {
        use Ordering::*;
        assert_eq!(canonical_cmp(b"a", b"a/b"), Less);
        assert_eq!(canonical_cmp(b"a/b", b"a-b"), Less);
        assert_eq!(canonical_cmp(b"a/b", b"a.b"), Less);
        assert_eq!(canonical_cmp(b"a-b", b"a/b"), Greater);
        assert_eq!(canonical_cmp(b"", b"a"), Less);
        assert_eq!(canonical_cmp(b"a/b/c", b"a/b/c"), Equal);
        assert_eq!(canonical_cmp(b"a/z", b"a\x01"), Less);
        // plain byte order would disagree on this one
        assert_eq!(b"a/b".as_slice().cmp(b"a-b".as_slice()), Greater);
    }

    #[test]
    fn canonical_sort_matches_a_lexical_walk() {
        let mut names: Vec<Vec<u8>> = [
            "usr/",
            "usr-x",
            "etc/hosts",
            "usr/bin/",
            "etc/",
            "./a",
            "usr/bin/x",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        canonical_sort(&mut names);
        let got: Vec<&str> = names
            .iter()
            .map(|n| std::str::from_utf8(n).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "./a",
                "etc/",
                "etc/hosts",
                "usr/",
                "usr/bin/",
                "usr/bin/x",
                "usr-x"
            ]
        );
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.123456"), 1_700_000_000);
        assert_eq!(parse_pax_time(b"-12.5"), 0);
        assert_eq!(parse_pax_time(b"junk"), 0);
    }
}
