//! Stage: versions. Artifacts are `<prefix>-v<N>.tar.<ext>`, N monotonic, never reused.
//!
//! N is one more than the highest version seen anywhere: the local artifacts (and builds in
//! progress), the ledger `versions/<image>.json` (so a number stays taken after its artifact
//! was deleted), and the `vztmpl` listings of the Proxmox storages configured ([`resolve`]).
//!
//! A build reserves its N before it starts by creating `<out>/.reserved/<prefix>-v<N>` with
//! `O_EXCL`: two builds started together on one machine cannot pick the same number. The
//! reservation is released when the build ends (success or failure); a published artifact
//! keeps the number taken from then on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ledger::{self, LedgerError};
use crate::remote::{self, RemoteError, TemplateStore};

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
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Every place a version number of one image is already taken.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    /// Artifacts in the output directory and builds in progress.
    pub local: Vec<(u64, String)>,
    /// Versions recorded in the ledger.
    pub ledger: Vec<(u64, String)>,
    /// Versions on the Proxmox storages listed.
    pub remote: Vec<(u64, String)>,
    /// The stores that were listed (`<node>/<storage>`).
    pub stores: Vec<String>,
}

impl Seen {
    fn all(&self) -> impl Iterator<Item = &(u64, String)> {
        self.local.iter().chain(&self.ledger).chain(&self.remote)
    }
    pub fn highest(&self) -> Option<u64> {
        self.all().map(|(v, _)| *v).max()
    }
    /// 1 + the highest version seen anywhere (1 when none).
    pub fn next(&self) -> u64 {
        self.highest().map_or(1, |v| v + 1)
    }
    /// What holds `version`, if anything does.
    pub fn holder(&self, version: u64) -> Option<&str> {
        self.all()
            .find(|(v, _)| *v == version)
            .map(|(_, h)| h.as_str())
    }
    /// Versions taken outside the output directory (ledger and remote).
    pub fn elsewhere(&self) -> Vec<(u64, String)> {
        self.ledger.iter().chain(&self.remote).cloned().collect()
    }
}

/// Where the versions of `image` (artifacts `<prefix>-v<N>.*`) are taken: `out_dir`, the
/// ledger under `root`, and every store (a store that cannot be listed is an error).
pub async fn resolve<S: TemplateStore>(
    root: &Path,
    image: &str,
    prefix: &str,
    out_dir: &Path,
    stores: &[S],
) -> Result<Seen, VersionError> {
    let listings = remote::list_all(stores).await?;
    Ok(Seen {
        local: local_versions(out_dir, prefix),
        ledger: ledger::versions(root, image)?,
        remote: remote::versions_in(&listings, prefix),
        stores: listings.iter().map(|l| l.store.clone()).collect(),
    })
}

/// `Err(Taken)` if `version` is held anywhere in `seen`.
pub fn check_free(seen: &Seen, prefix: &str, version: u64) -> Result<(), VersionError> {
    if version == 0 {
        return Err(VersionError::Zero(0));
    }
    match seen.holder(version) {
        Some(h) => Err(VersionError::Taken {
            prefix: prefix.to_owned(),
            version,
            existing: h.to_owned(),
            next: seen.next(),
        }),
        None => Ok(()),
    }
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

/// Published artifacts of `prefix` in `out_dir`, ascending.
pub fn local_artifacts(out_dir: &Path, prefix: &str) -> Vec<(u64, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        if let Some(name) = entry.file_name().to_str()
            && let Some(v) = parse_version(prefix, name)
        {
            found.push((v, entry.path()));
        }
    }
    found.sort();
    found
}

/// Versions seen locally: published artifacts and live reservations, with what holds each.
pub fn local_versions(out_dir: &Path, prefix: &str) -> Vec<(u64, String)> {
    let mut found: Vec<(u64, String)> = local_artifacts(out_dir, prefix)
        .into_iter()
        .map(|(v, p)| (v, p.display().to_string()))
        .collect();
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
    /// `Some(n)`: exactly that version (refused if taken); `None`: the next free one. Only the
    /// output directory is consulted; see [`Reservation::acquire_beyond`].
    pub fn acquire(
        out_dir: &Path,
        prefix: &str,
        wanted: Option<u64>,
    ) -> Result<Reservation, VersionError> {
        Self::acquire_beyond(out_dir, prefix, wanted, &[])
    }

    /// As [`Reservation::acquire`], with versions known to be taken outside the output
    /// directory (`elsewhere`: the ledger, Proxmox storage): never one of those, and with
    /// `None` always above the highest of them.
    pub fn acquire_beyond(
        out_dir: &Path,
        prefix: &str,
        wanted: Option<u64>,
        elsewhere: &[(u64, String)],
    ) -> Result<Reservation, VersionError> {
        let dir = reserved_dir(out_dir);
        std::fs::create_dir_all(&dir).map_err(|source| VersionError::Io {
            dir: dir.clone(),
            source,
        })?;
        if wanted == Some(0) {
            return Err(VersionError::Zero(0));
        }
        let taken_now = || {
            let mut t = local_versions(out_dir, prefix);
            t.extend(elsewhere.iter().cloned());
            t.sort();
            t
        };
        let next_of = |t: &[(u64, String)]| t.last().map_or(1, |(v, _)| v + 1);
        let taken_err = |version: u64, existing: String, t: &[(u64, String)]| VersionError::Taken {
            prefix: prefix.to_owned(),
            version,
            existing,
            next: next_of(t),
        };
        let mut candidate = wanted.unwrap_or_else(|| next_of(&taken_now()));
        loop {
            let taken = taken_now();
            if let Some((_, existing)) = taken.iter().find(|(v, _)| *v == candidate) {
                if wanted.is_some() {
                    return Err(taken_err(candidate, existing.clone(), &taken));
                }
                candidate = next_of(&taken);
                continue;
            }
            let path = dir.join(format!("{prefix}-v{candidate}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    if let Err(source) = f.write_all(format!("{}\n", std::process::id()).as_bytes())
                    {
                        let _ = std::fs::remove_file(&path);
                        return Err(VersionError::Io { dir, source });
                    }
                    // Re-check after taking it: an artifact may have been published meanwhile.
                    let taken = taken_now();
                    if let Some((_, existing)) = taken
                        .iter()
                        .find(|(v, h)| *v == candidate && !h.contains(".reserved"))
                    {
                        let _ = std::fs::remove_file(&path);
                        if wanted.is_some() {
                            return Err(taken_err(candidate, existing.clone(), &taken));
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
                        let existing = format!("a build in progress ({})", path.display());
                        return Err(taken_err(candidate, existing, &taken_now()));
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

    /// An in-memory storage listing.
    struct Fake(&'static str, Vec<&'static str>);
    impl TemplateStore for Fake {
        fn node(&self) -> String {
            "pve1".into()
        }
        fn storage(&self) -> String {
            self.0.into()
        }
        fn list_templates(
            &self,
        ) -> futures_util::future::BoxFuture<'_, anyhow::Result<Vec<remote::RemoteTemplate>>>
        {
            let items = self
                .1
                .iter()
                .map(|f| remote::RemoteTemplate {
                    volid: remote::volid(self.0, f),
                    size: 1,
                    ctime: 0,
                    format: "tgz".into(),
                })
                .collect();
            Box::pin(async move { Ok(items) })
        }
    }
    struct Broken;
    impl TemplateStore for Broken {
        fn node(&self) -> String {
            "pve1".into()
        }
        fn storage(&self) -> String {
            "nas".into()
        }
        fn list_templates(
            &self,
        ) -> futures_util::future::BoxFuture<'_, anyhow::Result<Vec<remote::RemoteTemplate>>>
        {
            Box::pin(async { anyhow::bail!("401 authentication failure") })
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn ledger_entry(v: u64) -> crate::ledger::Entry {
        crate::ledger::Entry {
            version: v,
            file: artifact_name("img", v, "tar.gz"),
            sha256: "00".repeat(32),
            size: 1,
            built_at: "2024-01-01T00:00:00Z".into(),
            base_reference: "b".into(),
            base_digest: "sha256:00".into(),
            git_commit: "c".into(),
            validation: crate::ledger::ValidationSummary {
                passed: true,
                pve_version: "8.4".into(),
                pass: 1,
                warn: 0,
                fail: 0,
            },
            uploads: vec![],
        }
    }

    #[test]
    fn resolver_takes_the_highest_of_local_ledger_and_remote() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("artifacts");
        std::fs::create_dir_all(&out).unwrap();
        let none: &[Fake] = &[];
        let seen =
            |stores: &[Fake]| block_on(resolve(root.path(), "image", "img", &out, stores)).unwrap();
        // nothing anywhere → 1
        assert_eq!(seen(none).next(), 1);
        // local v1, v2, v10 → 11; names that do not match are ignored
        for f in [
            "img-v1.tar.gz",
            "img-v2.tar.zst",
            "img-v10.tar.gz",
            "img-v12.json",
        ] {
            std::fs::write(out.join(f), b"").unwrap();
        }
        assert_eq!(seen(none).next(), 11);
        // a version only in the ledger (its artifact deleted) is still taken
        crate::ledger::record_build(root.path(), "image", "img", ledger_entry(14)).unwrap();
        let s = seen(none);
        assert_eq!(s.next(), 15);
        assert!(
            s.holder(14).unwrap().contains("versions/image.json"),
            "{s:?}"
        );
        // a version only on Proxmox storage counts; foreign and malformed names do not
        let stores = [
            Fake(
                "local",
                vec!["img-v20.tar.gz", "img-v99.iso", "other-v50.tar.gz"],
            ),
            Fake(
                "nas",
                vec!["img-v030.tar.gz", "img-v17.tar.zst", "img-vx.tar.gz"],
            ),
        ];
        let s = seen(&stores);
        assert_eq!(s.next(), 21, "{s:?}");
        assert_eq!(
            s.remote.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [17, 20]
        );
        assert!(
            s.holder(17)
                .unwrap()
                .contains("nas:vztmpl/img-v17.tar.zst on pve1/nas")
        );
        assert_eq!(s.stores, ["pve1/local", "pve1/nas"]);
        // an explicit version is refused wherever it exists
        for v in [2, 14, 17] {
            let e = check_free(&s, "img", v).unwrap_err().to_string();
            assert!(
                e.contains("already exists") && e.contains("would be v21"),
                "{e}"
            );
        }
        check_free(&s, "img", 3).unwrap();
        assert!(matches!(
            check_free(&s, "img", 0),
            Err(VersionError::Zero(_))
        ));
    }

    #[test]
    fn an_unlistable_store_is_an_error_not_a_skip() {
        let root = tempfile::tempdir().unwrap();
        let e = block_on(resolve(root.path(), "image", "img", root.path(), &[Broken]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pve1/nas") && e.contains("401"), "{e}");
    }

    #[test]
    fn reservations_skip_versions_taken_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = vec![(5, "on pve1/local".to_owned())];
        let r = Reservation::acquire_beyond(d.path(), "img", None, &elsewhere).unwrap();
        assert_eq!(r.version, 6);
        let e = Reservation::acquire_beyond(d.path(), "img", Some(5), &elsewhere)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("on pve1/local") && e.contains("would be v7"),
            "{e}"
        );
        let r3 = Reservation::acquire_beyond(d.path(), "img", Some(3), &elsewhere).unwrap();
        assert_eq!(r3.version, 3);
    }
}
