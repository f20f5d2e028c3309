//! Stage: versions. Artifacts are `<prefix>-v<N>.tar.<ext>`, N monotonic, never reused.
//!
//! A build reserves its N before it starts by creating `<out>/.reserved/<prefix>-v<N>` with
//! `O_EXCL`: two builds started together on one machine cannot pick the same number. The
//! reservation is released when the build ends (success or failure); a published artifact
//! keeps the number taken from then on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Extensions an artifact may carry (what Proxmox accepts for templates).
pub const EXTENSIONS: &[&str] = &["tar.gz", "tar.zst", "tar.xz", "tar.bz2", "tar.lzo", "tar"];

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "version v{version} of {prefix} already exists: {existing}\n  fix: templates are immutable; build the next version with --next (it would be v{next})"
    )]
    Taken {
        prefix: String,
        version: u64,
        existing: String,
        next: u64,
    },
    #[error("version must be 1 or more, got {0}\n  fix: pass --version N with N ≥ 1, or --next")]
    Zero(u64),
    #[error(
        "cannot reserve a version in {dir}: {source}\n  fix: check that the directory is writable"
    )]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// `N` if `file` is `<prefix>-v<N>.tar[.<ext>]` (N without leading zeros), else None.
pub fn parse_version(prefix: &str, file: &str) -> Option<u64> {
    let rest = file.strip_prefix(prefix)?.strip_prefix("-v")?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, ext) = rest.split_at(digits_end);
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    let ext = ext.strip_prefix('.')?;
    if !EXTENSIONS.contains(&ext) {
        return None;
    }
    digits.parse().ok()
}

pub fn artifact_name(prefix: &str, version: u64, ext: &str) -> String {
    format!("{prefix}-v{version}.{ext}")
}

fn reserved_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(".reserved")
}

/// Versions seen locally: published artifacts and live reservations, with what holds each.
pub fn local_versions(out_dir: &Path, prefix: &str) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        if let Some(name) = entry.file_name().to_str()
            && let Some(v) = parse_version(prefix, name)
        {
            found.push((v, entry.path().display().to_string()));
        }
    }
    for entry in std::fs::read_dir(reserved_dir(out_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(v) = parse_version(prefix, &format!("{name}.tar")) else {
            continue;
        };
        if reservation_is_live(&entry.path()) {
            found.push((
                v,
                format!("a build in progress ({})", entry.path().display()),
            ));
        } else {
            // Left by a build that was killed: its number was never published, so it is free.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    found.sort();
    found
}

/// A reservation holds the pid of its build; it is live while that process exists.
fn reservation_is_live(path: &Path) -> bool {
    match std::fs::read_to_string(path) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            // Being written right now by its creator.
            Err(_) => true,
        },
        Err(_) => false,
    }
}

pub fn next_local(out_dir: &Path, prefix: &str) -> u64 {
    local_versions(out_dir, prefix)
        .last()
        .map_or(1, |(v, _)| v + 1)
}

/// A held version number; released on drop unless the artifact was published.
#[derive(Debug)]
pub struct Reservation {
    pub version: u64,
    path: PathBuf,
}

impl Reservation {
    /// `Some(n)`: exactly that version (refused if taken); `None`: the next free one.
    pub fn acquire(
        out_dir: &Path,
        prefix: &str,
        wanted: Option<u64>,
    ) -> Result<Reservation, VersionError> {
        let dir = reserved_dir(out_dir);
        std::fs::create_dir_all(&dir).map_err(|source| VersionError::Io {
            dir: dir.clone(),
            source,
        })?;
        if wanted == Some(0) {
            return Err(VersionError::Zero(0));
        }
        let mut candidate = wanted.unwrap_or_else(|| next_local(out_dir, prefix));
        loop {
            let taken = local_versions(out_dir, prefix);
            if let Some((_, existing)) = taken.iter().find(|(v, _)| *v == candidate) {
                if wanted.is_some() {
                    return Err(VersionError::Taken {
                        prefix: prefix.to_owned(),
                        version: candidate,
                        existing: existing.clone(),
                        next: taken.last().map_or(1, |(v, _)| v + 1),
                    });
                }
                candidate = taken.last().map_or(1, |(v, _)| v + 1);
                continue;
            }
            let path = dir.join(format!("{prefix}-v{candidate}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .map_err(|source| VersionError::Io {
                            dir: dir.clone(),
                            source,
                        })?;
                    // Re-check after taking it: an artifact may have been published meanwhile.
                    if let Some((_, existing)) = local_versions(out_dir, prefix)
                        .into_iter()
                        .find(|(v, h)| *v == candidate && !h.contains(".reserved"))
                    {
                        let _ = std::fs::remove_file(&path);
                        if wanted.is_some() {
                            return Err(VersionError::Taken {
                                prefix: prefix.to_owned(),
                                version: candidate,
                                existing,
                                next: next_local(out_dir, prefix),
                            });
                        }
                        continue;
                    }
                    return Ok(Reservation {
                        version: candidate,
                        path,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if wanted.is_some() {
                        return Err(VersionError::Taken {
                            prefix: prefix.to_owned(),
                            version: candidate,
                            existing: format!("a build in progress ({})", path.display()),
                            next: next_local(out_dir, prefix),
                        });
                    }
                    candidate += 1;
                }
                Err(source) => return Err(VersionError::Io { dir, source }),
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_matching_names() {
        let p = "debian-12-lxc-rootfs";
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-v1.tar.gz"), Some(1));
        assert_eq!(
            parse_version(p, "debian-12-lxc-rootfs-v10.tar.zst"),
            Some(10)
        );
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-v7.tar"), Some(7));
        assert_eq!(
            parse_version(p, "debian-12-lxc-rootfs-v1.tar.gz.sha256"),
            None
        );
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-v1.json"), None);
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-v01.tar.gz"), None);
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-vx.tar.gz"), None);
        assert_eq!(
            parse_version(p, "debian-12-lxc-rootfs-extra-v3.tar.gz"),
            None
        );
        assert_eq!(parse_version(p, "debian-12-lxc-rootfs-v3.zip"), None);
    }

    #[test]
    fn next_is_one_past_the_highest() {
        let d = tempfile::tempdir().unwrap();
        let p = "img";
        assert_eq!(next_local(d.path(), p), 1);
        for n in [1, 2, 10] {
            std::fs::write(d.path().join(artifact_name(p, n, "tar.gz")), b"").unwrap();
        }
        std::fs::write(d.path().join("img-v99.txt"), b"").unwrap();
        std::fs::write(d.path().join("other-v50.tar.gz"), b"").unwrap();
        assert_eq!(next_local(d.path(), p), 11);
    }

    #[test]
    fn reservations_are_exclusive_and_released() {
        let d = tempfile::tempdir().unwrap();
        let a = Reservation::acquire(d.path(), "img", None).unwrap();
        let b = Reservation::acquire(d.path(), "img", None).unwrap();
        assert_eq!((a.version, b.version), (1, 2));
        let e = Reservation::acquire(d.path(), "img", Some(1)).unwrap_err();
        assert!(e.to_string().contains("in progress"), "{e}");
        drop(a);
        // v1 was never published, so it is free again; v2 is still held.
        let c = Reservation::acquire(d.path(), "img", Some(1)).unwrap();
        assert_eq!(c.version, 1);
        std::fs::write(d.path().join("img-v3.tar.gz"), b"").unwrap();
        let e = Reservation::acquire(d.path(), "img", Some(3))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already exists") && e.contains("would be v4"),
            "{e}"
        );
        assert!(matches!(
            Reservation::acquire(d.path(), "img", Some(0)),
            Err(VersionError::Zero(_))
        ));
    }

    #[test]
    fn stale_reservations_are_freed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".reserved")).unwrap();
        // A pid above the kernel's pid_max never names a live process.
        std::fs::write(d.path().join(".reserved/img-v1"), "999999999\n").unwrap();
        assert_eq!(next_local(d.path(), "img"), 1);
        assert!(!d.path().join(".reserved/img-v1").exists());
    }

    #[test]
    fn concurrent_reservations_never_collide() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().to_owned();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || Reservation::acquire(&p, "img", None).unwrap())
            })
            .collect();
        let held: Vec<Reservation> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut versions: Vec<u64> = held.iter().map(|r| r.version).collect();
        versions.sort();
        versions.dedup();
        assert_eq!(versions.len(), 8, "{versions:?}");
    }
}
