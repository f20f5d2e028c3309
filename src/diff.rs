//! `lxcforge diff`: what changes between two artifacts, so a reviewer sees what a promotion
//! brings: members added, removed and changed (type, size, mode, owner, link target, content),
//! and package version changes from the two manifests.
//!
//! Both archives are streamed once, in parallel, through the validator's decompressing reader
//! and the packer's tar reader; file contents are hashed (sha256) on the way and dropped. Only
//! per-member metadata is kept: memory grows with the number of members, not their size.
//! Modification times are not compared: the packer clamps them to `SOURCE_DATE_EPOCH`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::artifact::{ManifestView, Package};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(
        "cannot open {path}: {source}\n  fix: check the path (`lxcforge list` shows the artifacts)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read {path} as a template: {reason}\n  fix: check it with `lxcforge validate {path}`"
    )]
    Read { path: PathBuf, reason: String },
}

/// A member's metadata, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    sha256: Option<[u8; 32]>,
}

/// The member table of one archive.
#[derive(Debug, Default)]
pub struct Inventory {
    members: BTreeMap<String, Meta>,
    pub compression: &'static str,
}

impl Inventory {
    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// `./etc/x`, `etc/x/`, `/etc/x` → `/etc/x`; the root is `/`.
fn normalize(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut t: &str = &s;
    while let Some(r) = t.strip_prefix("./") {
        t = r;
    }
    let t = t.trim_start_matches('/').trim_end_matches('/');
    if t.is_empty() || t == "." {
        "/".to_owned()
    } else {
        format!("/{t}")
    }
}

/// Reads an archive once and keeps its member table.
pub fn inventory(path: &Path) -> Result<Inventory, DiffError> {
    let f = std::fs::File::open(path).map_err(|source| DiffError::Open {
        path: path.to_owned(),
        source,
    })?;
    let read_err = |reason: String| DiffError::Read {
        path: path.to_owned(),
        reason,
    };
    let (stream, compression) = crate::validate::input::decompressed(
        &path.display().to_string(),
        std::io::BufReader::with_capacity(256 * 1024, f),
    )
    .map_err(|e| read_err(e.to_string()))?;
    let mut tar = crate::pack::tarread::TarReader::new(stream);
    let mut members = BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let entry = match tar.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(read_err(e.to_string())),
        };
        use tar::EntryType as T;
        let ty = entry.header.entry_type();
        let kind = match ty {
            T::Regular | T::Continuous | T::GNUSparse => "file",
            T::Directory => "dir",
            T::Symlink => "symlink",
            T::Link => "hardlink",
            T::Fifo => "fifo",
            T::Char => "char",
            T::Block => "block",
            _ => "other",
        };
        let mode = entry.header.mode().unwrap_or(0) & 0o7777;
        let link = matches!(ty, T::Symlink | T::Link).then(|| {
            if ty == T::Link {
                normalize(&entry.link)
            } else {
                String::from_utf8_lossy(&entry.link).into_owned()
            }
        });
        let sha256 = if kind == "file" {
            let mut h = Sha256::new();
            let mut data = tar.data();
            loop {
                match data.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(read_err(e.to_string())),
                }
            }
            Some(h.finalize().into())
        } else {
            None
        };
        members.insert(
            normalize(&entry.path),
            Meta {
                kind,
                size: if kind == "file" { entry.size } else { 0 },
                mode,
                uid: entry.uid,
                gid: entry.gid,
                link,
                sha256,
            },
        );
    }
    Ok(Inventory {
        members,
        compression,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub path: String,
    pub kind: &'static str,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub path: String,
    /// `size 10 → 12`, `mode 0644 → 0755`, `content`, …
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageChange {
    pub name: String,
    pub architecture: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<PackageChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub file: PathBuf,
    pub members: usize,
    pub compression: &'static str,
    /// The manifest read beside it, if there is one.
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub packages_added: Option<usize>,
    pub packages_removed: Option<usize>,
    pub packages_changed: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: Side,
    pub b: Side,
    pub summary: Summary,
    pub added: Vec<Member>,
    pub removed: Vec<Member>,
    pub changed: Vec<Changed>,
    /// `None` when either side has no manifest to read the package list from.
    pub packages: Option<PackageDiff>,
}

fn compare(a: &Meta, b: &Meta) -> Vec<String> {
    let mut c = Vec::new();
    if a.kind != b.kind {
        c.push(format!("type {} → {}", a.kind, b.kind));
    }
    if a.size != b.size {
        c.push(format!("size {} → {}", a.size, b.size));
    }
    if a.kind == b.kind && a.size == b.size && a.sha256 != b.sha256 {
        c.push("content".to_owned());
    }
    if a.mode != b.mode {
        c.push(format!("mode {:04o} → {:04o}", a.mode, b.mode));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        c.push(format!("owner {}:{} → {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.link != b.link {
        c.push(format!(
            "target {} → {}",
            a.link.as_deref().unwrap_or("-"),
            b.link.as_deref().unwrap_or("-")
        ));
    }
    c
}

/// Package changes between two sorted package lists, keyed by (name, architecture).
pub fn package_diff(a: &[Package], b: &[Package]) -> PackageDiff {
    let key = |p: &Package| (p.name.clone(), p.architecture.clone());
    let ma: BTreeMap<_, &Package> = a.iter().map(|p| (key(p), p)).collect();
    let mb: BTreeMap<_, &Package> = b.iter().map(|p| (key(p), p)).collect();
    let mut d = PackageDiff::default();
    for (k, pa) in &ma {
        match mb.get(k) {
            None => d.removed.push((*pa).clone()),
            Some(pb) if pb.version != pa.version => d.changed.push(PackageChange {
                name: pa.name.clone(),
                architecture: pa.architecture.clone(),
                from: pa.version.clone(),
                to: pb.version.clone(),
            }),
            Some(_) => {}
        }
    }
    for (k, pb) in &mb {
        if !ma.contains_key(k) {
            d.added.push((*pb).clone());
        }
    }
    d
}

fn manifest_beside(archive: &Path) -> Option<PathBuf> {
    let name = archive.file_name()?.to_str()?;
    let m = archive.with_file_name(crate::build::manifest_name(name));
    (m != archive && m.is_file()).then_some(m)
}

/// Compares two archives (and their manifests, when they sit beside them).
pub fn diff(a: &Path, b: &Path) -> Result<DiffReport, DiffError> {
    let (ia, ib) = std::thread::scope(|s| {
        let ta = s.spawn(|| inventory(a));
        let ib = inventory(b);
        (ta.join().expect("the diff reader thread panicked"), ib)
    });
    let (ia, ib) = (ia?, ib?);
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for (p, ma) in &ia.members {
        match ib.members.get(p) {
            None => removed.push(Member {
                path: p.clone(),
                kind: ma.kind,
                size: ma.size,
            }),
            Some(mb) => {
                let c = compare(ma, mb);
                if c.is_empty() {
                    unchanged += 1;
                } else {
                    changed.push(Changed {
                        path: p.clone(),
                        changes: c,
                    });
                }
            }
        }
    }
    for (p, mb) in &ib.members {
        if !ia.members.contains_key(p) {
            added.push(Member {
                path: p.clone(),
                kind: mb.kind,
                size: mb.size,
            });
        }
    }
    let (man_a, man_b) = (manifest_beside(a), manifest_beside(b));
    let read = |m: &Option<PathBuf>| -> Result<Option<ManifestView>, DiffError> {
        match m {
            None => Ok(None),
            Some(p) => ManifestView::read(p).map_err(|reason| DiffError::Read {
                path: p.clone(),
                reason,
            }),
        }
    };
    let packages = match (read(&man_a)?, read(&man_b)?) {
        (Some(x), Some(y)) => Some(package_diff(&x.packages, &y.packages)),
        _ => None,
    };
    Ok(DiffReport {
        a: Side {
            file: a.to_owned(),
            members: ia.len(),
            compression: ia.compression,
            manifest: man_a,
        },
        b: Side {
            file: b.to_owned(),
            members: ib.len(),
            compression: ib.compression,
            manifest: man_b,
        },
        summary: Summary {
            added: added.len(),
            removed: removed.len(),
            changed: changed.len(),
            unchanged,
            packages_added: packages.as_ref().map(|p| p.added.len()),
            packages_removed: packages.as_ref().map(|p| p.removed.len()),
            packages_changed: packages.as_ref().map(|p| p.changed.len()),
        },
        added,
        removed,
        changed,
        packages,
    })
}

impl DiffReport {
    /// Summary counts, then each list, at most `limit` lines per list.
    pub fn render(&self, limit: usize) -> String {
        let mut out = String::new();
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} ({} members) → {} ({} members)",
            self.a.file.display(),
            self.a.members,
            self.b.file.display(),
            self.b.members
        );
        let _ = writeln!(
            out,
            "files: {} added, {} removed, {} changed, {} unchanged",
            s.added, s.removed, s.changed, s.unchanged
        );
        match &self.packages {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "packages: {} added, {} removed, {} changed",
                    p.added.len(),
                    p.removed.len(),
                    p.changed.len()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "packages: not compared (no manifest beside {})",
                    if self.a.manifest.is_none() {
                        self.a.file.display()
                    } else {
                        self.b.file.display()
                    }
                );
            }
        }
        let more = |out: &mut String, n: usize| {
            if n > limit {
                let _ = writeln!(out, "  … and {} more (--json lists all)", n - limit);
            }
        };
        if let Some(p) = &self.packages {
            if !p.changed.is_empty() {
                let _ = writeln!(out, "\npackages changed:");
                for c in p.changed.iter().take(limit) {
                    let _ = writeln!(
                        out,
                        "  ~ {}:{} {} → {}",
                        c.name, c.architecture, c.from, c.to
                    );
                }
                more(&mut out, p.changed.len());
            }
            for (title, sign, list) in [("added", '+', &p.added), ("removed", '-', &p.removed)] {
                if !list.is_empty() {
                    let _ = writeln!(out, "\npackages {title}:");
                    for x in list.iter().take(limit) {
                        let _ =
                            writeln!(out, "  {sign} {}:{} {}", x.name, x.architecture, x.version);
                    }
                    more(&mut out, list.len());
                }
            }
        }
        for (title, sign, list) in [("added", '+', &self.added), ("removed", '-', &self.removed)] {
            if !list.is_empty() {
                let _ = writeln!(out, "\nfiles {title}:");
                for m in list.iter().take(limit) {
                    let _ = writeln!(out, "  {sign} {} ({}, {} B)", m.path, m.kind, m.size);
                }
                more(&mut out, list.len());
            }
        }
        if !self.changed.is_empty() {
            let _ = writeln!(out, "\nfiles changed:");
            for c in self.changed.iter().take(limit) {
                let _ = writeln!(out, "  ~ {}: {}", c.path, c.changes.join(", "));
            }
            more(&mut out, self.changed.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_to_absolute_paths() {
        assert_eq!(normalize(b"./"), "/");
        assert_eq!(normalize(b"."), "/");
        assert_eq!(normalize(b"./etc/"), "/etc");
        assert_eq!(normalize(b"etc/passwd"), "/etc/passwd");
        assert_eq!(normalize(b"/usr/bin/x"), "/usr/bin/x");
    }

    #[test]
    fn packages_are_matched_by_name_and_architecture() {
        let p = |n: &str, v: &str, a: &str| Package {
            name: n.into(),
            version: v.into(),
            architecture: a.into(),
        };
        let a = [
            p("bash", "5.2", "amd64"),
            p("gone", "1", "all"),
            p("libc6", "2.36", "amd64"),
        ];
        let b = [
            p("bash", "5.2", "amd64"),
            p("libc6", "2.37", "amd64"),
            p("new", "3", "all"),
        ];
        let d = package_diff(&a, &b);
        assert_eq!(d.removed, [p("gone", "1", "all")]);
        assert_eq!(d.added, [p("new", "3", "all")]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            (d.changed[0].from.as_str(), d.changed[0].to.as_str()),
            ("2.36", "2.37")
        );
    }
}
