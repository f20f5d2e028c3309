//! Stage: the version ledger, `versions/<image>.json` under the project root, committed to Git.
//!
//! Every published version of an image is recorded there by the build (sha256, size, build
//! time, base digest, validation verdict) and every upload by the upload client (node,
//! storage, volid, task). The resolver counts it too, so a number stays taken after its
//! artifact was deleted locally.
//!
//! Writes take an exclusive lock on `versions/.<image>.lock` (flock: released by the kernel if
//! the process dies), re-read the file, change it, write a temporary file beside it, fsync and
//! rename it over the old one: two builds finishing together never lose an entry, and a crash
//! never leaves a half-written ledger. The JSON is pretty, with sorted keys and versions in
//! ascending order, so Git diffs stay one entry long.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The ledger directory, relative to the project root.
pub const DIR: &str = "versions";
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub schema: u32,
    /// The definition name (`images/<image>.toml`).
    pub image: String,
    /// The artifact prefix at the last write.
    pub prefix: String,
    /// Ascending by version, each version once.
    pub versions: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u64,
    /// `<prefix>-v<N>.tar.<ext>`.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// RFC 3339, UTC.
    pub built_at: String,
    pub base_reference: String,
    pub base_digest: String,
    pub git_commit: String,
    pub validation: ValidationSummary,
    /// Where it was uploaded, sorted by (storage, node, volid).
    #[serde(default)]
    pub uploads: Vec<UploadRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub passed: bool,
    pub pve_version: String,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// One completed upload, as the upload client reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub node: String,
    pub storage: String,
    /// `<storage>:vztmpl/<file>`.
    pub volid: String,
    pub size: u64,
    /// What Proxmox verified in the upload task (`checksum-algorithm=sha256`).
    pub sha256: String,
    /// The upload task.
    pub upid: String,
    /// RFC 3339, UTC.
    pub uploaded_at: String,
}

impl Entry {
    pub fn from_manifest(m: &crate::artifact::Manifest) -> Entry {
        Entry {
            version: m.version,
            file: m.artifact.file.clone(),
            sha256: m.artifact.sha256.clone(),
            size: m.artifact.size,
            built_at: m.built_at.clone(),
            base_reference: m.base.reference.clone(),
            base_digest: m.base.digest.clone(),
            git_commit: m.git_commit.clone(),
            validation: ValidationSummary {
                passed: m.validation.passed,
                pve_version: m.validation.pve_version.clone(),
                pass: m.validation.pass,
                warn: m.validation.warn,
                fail: m.validation.fail,
            },
            uploads: Vec::new(),
        }
    }
}

impl Ledger {
    pub fn entry(&self, version: u64) -> Option<&Entry> {
        self.versions.iter().find(|e| e.version == version)
    }

    fn normalize(&mut self) {
        self.versions.sort_by_key(|e| e.version);
        for e in &mut self.versions {
            e.uploads.sort_by(|a, b| {
                (&a.storage, &a.node, &a.volid).cmp(&(&b.storage, &b.node, &b.volid))
            });
        }
    }

    /// The file's bytes: pretty JSON, keys sorted, one trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.normalize();
        // serde_json's map is a BTreeMap (no `preserve_order`): going through a Value sorts keys.
        let value = serde_json::to_value(&copy).expect("a ledger always serializes");
        let mut out = serde_json::to_vec_pretty(&value).expect("a value always serializes");
        out.push(b'\n');
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot {action} {path}: {source}\n  fix: check that {dir} exists and is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid ledger: {source}\n  fix: resolve any Git merge conflict in it (keep every version of both sides), or restore it with `git checkout -- {path}`"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path} records image '{found}', not '{expected}'\n  fix: the file belongs to another definition; rename it back or restore it from Git"
    )]
    WrongImage {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "v{version} of {image} is already recorded in {path} with sha256 {recorded}, not {new}; versions are immutable\n  fix: build the next version with --next"
    )]
    Conflict {
        image: String,
        version: u64,
        path: PathBuf,
        recorded: String,
        new: String,
    },
    #[error(
        "v{version} of {image} is not recorded in {path}\n  fix: only versions built by lxcforge are recorded; `lxcforge list {image}` shows what is there"
    )]
    NotRecorded {
        image: String,
        version: u64,
        path: PathBuf,
    },
}

/// `<root>/versions/<image>.json`.
pub fn path(root: &Path, image: &str) -> PathBuf {
    root.join(DIR).join(format!("{image}.json"))
}

fn lock_path(root: &Path, image: &str) -> PathBuf {
    root.join(DIR).join(format!(".{image}.lock"))
}

/// The ledger of `image`, `None` when it has none yet.
pub fn load(root: &Path, image: &str) -> Result<Option<Ledger>, LedgerError> {
    let p = path(root, image);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LedgerError::Io {
                action: "read",
                dir: root.join(DIR),
                path: p,
                source,
            });
        }
    };
    let ledger: Ledger = serde_json::from_slice(&bytes).map_err(|source| LedgerError::Parse {
        path: p.clone(),
        source,
    })?;
    if ledger.image != image {
        return Err(LedgerError::WrongImage {
            path: p,
            expected: image.to_owned(),
            found: ledger.image,
        });
    }
    Ok(Some(ledger))
}

/// The images that have a ledger, sorted.
pub fn images(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            let stem = n.strip_suffix(".json")?;
            (!stem.starts_with('.') && !stem.ends_with(".auto.tfvars")).then(|| stem.to_owned())
        })
        .collect();
    v.sort();
    v
}

/// Versions the ledger holds, with where each is recorded (for the resolver).
pub fn versions(root: &Path, image: &str) -> Result<Vec<(u64, String)>, LedgerError> {
    let p = path(root, image);
    Ok(load(root, image)?
        .map(|l| {
            l.versions
                .iter()
                .map(|e| (e.version, format!("recorded in {}", p.display())))
                .collect()
        })
        .unwrap_or_default())
}

/// An exclusive lock on the image's ledger, held until dropped.
struct Lock {
    _file: File,
}

fn lock(root: &Path, image: &str) -> Result<Lock, LedgerError> {
    let dir = root.join(DIR);
    let io = |action, path: &Path| {
        let (dir, path) = (dir.clone(), path.to_owned());
        move |source| LedgerError::Io {
            action,
            path,
            dir,
            source,
        }
    };
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let lp = lock_path(root, image);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lp)
        .map_err(io("open", &lp))?;
    f.lock().map_err(io("lock", &lp))?;
    Ok(Lock { _file: f })
}

/// Read-modify-write under the lock; the new content replaces the file atomically.
pub fn update<T>(
    root: &Path,
    image: &str,
    prefix: &str,
    change: impl FnOnce(&mut Ledger) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let _lock = lock(root, image)?;
    let mut ledger = load(root, image)?.unwrap_or_else(|| Ledger {
        schema: SCHEMA,
        image: image.to_owned(),
        prefix: prefix.to_owned(),
        versions: Vec::new(),
    });
    let out = change(&mut ledger)?;
    ledger.prefix = prefix.to_owned();
    write_atomic(&path(root, image), &ledger.to_json())?;
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `dest`, fsyncs it and renames it over `dest`.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let dir = dest.parent().unwrap_or(Path::new(".")).to_owned();
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let io = |action, path: &Path| {
        let (dir, path) = (dir.clone(), path.to_owned());
        move |source| LedgerError::Io {
            action,
            path,
            dir,
            source,
        }
    };
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io("write", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, dest).map_err(io("replace", dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Records a published version. Recording the same version with the same sha256 again is a
/// no-op (its uploads are kept); a different sha256 for a recorded version is refused.
pub fn record_build(
    root: &Path,
    image: &str,
    prefix: &str,
    entry: Entry,
) -> Result<(), LedgerError> {
    let p = path(root, image);
    update(root, image, prefix, |l| {
        if let Some(old) = l.versions.iter().find(|e| e.version == entry.version) {
            if old.sha256 == entry.sha256 {
                return Ok(());
            }
            return Err(LedgerError::Conflict {
                image: image.to_owned(),
                version: entry.version,
                path: p.clone(),
                recorded: old.sha256.clone(),
                new: entry.sha256.clone(),
            });
        }
        l.versions.push(entry);
        Ok(())
    })
}

/// Records an upload of a recorded version (for the upload client). A second upload to the
/// same node and volid replaces the earlier record.
pub fn record_upload(
    root: &Path,
    image: &str,
    version: u64,
    upload: UploadRecord,
) -> Result<(), LedgerError> {
    let p = path(root, image);
    let prefix = load(root, image)?
        .map(|l| l.prefix)
        .ok_or_else(|| LedgerError::NotRecorded {
            image: image.to_owned(),
            version,
            path: p.clone(),
        })?;
    update(root, image, &prefix, |l| {
        let e = l
            .versions
            .iter_mut()
            .find(|e| e.version == version)
            .ok_or_else(|| LedgerError::NotRecorded {
                image: image.to_owned(),
                version,
                path: p.clone(),
            })?;
        e.uploads
            .retain(|u| !(u.node == upload.node && u.volid == upload.volid));
        e.uploads.push(upload);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: u64) -> Entry {
        Entry {
            version: v,
            file: format!("img-v{v}.tar.gz"),
            sha256: format!("{v:064x}"),
            size: 100 + v,
            built_at: "2024-01-01T00:00:00Z".into(),
            base_reference: "bases/x.tar".into(),
            base_digest: "sha256:00".into(),
            git_commit: "abc".into(),
            validation: ValidationSummary {
                passed: true,
                pve_version: "8.4".into(),
                pass: 20,
                warn: 1,
                fail: 0,
            },
            uploads: vec![],
        }
    }

    #[test]
    fn json_is_sorted_and_stable() {
        let d = tempfile::tempdir().unwrap();
        for v in [10, 2, 1] {
            record_build(d.path(), "img", "img", entry(v)).unwrap();
        }
        let bytes = std::fs::read(path(d.path(), "img")).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let order: Vec<usize> = ["\"version\": 1\n", "\"version\": 2\n", "\"version\": 10\n"]
            .iter()
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // keys sorted: base_digest before built_at before file before sha256
        let keys: Vec<usize> = ["\"base_digest\"", "\"built_at\"", "\"file\"", "\"sha256\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        // the same content serializes to the same bytes
        let l = load(d.path(), "img").unwrap().unwrap();
        assert_eq!(l.to_json(), bytes);
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn same_version_other_sha_is_refused() {
        let d = tempfile::tempdir().unwrap();
        record_build(d.path(), "img", "img", entry(1)).unwrap();
        record_build(d.path(), "img", "img", entry(1)).unwrap();
        let mut other = entry(1);
        other.sha256 = "ff".repeat(32);
        let e = record_build(d.path(), "img", "img", other).unwrap_err();
        assert!(matches!(e, LedgerError::Conflict { .. }), "{e}");
        assert_eq!(load(d.path(), "img").unwrap().unwrap().versions.len(), 1);
    }

    #[test]
    fn damaged_or_foreign_ledgers_are_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(DIR)).unwrap();
        std::fs::write(path(d.path(), "img"), "<<<<<<< HEAD\n").unwrap();
        let e = load(d.path(), "img").unwrap_err().to_string();
        assert!(
            e.contains("not a valid ledger") && e.contains("merge conflict"),
            "{e}"
        );
        let other = Ledger {
            schema: 1,
            image: "other".into(),
            prefix: "o".into(),
            versions: vec![],
        };
        std::fs::write(path(d.path(), "img"), other.to_json()).unwrap();
        let e = load(d.path(), "img").unwrap_err();
        assert!(matches!(e, LedgerError::WrongImage { .. }), "{e}");
    }

    #[test]
    fn images_lists_ledgers_only() {
        let d = tempfile::tempdir().unwrap();
        record_build(d.path(), "a", "a", entry(1)).unwrap();
        std::fs::write(d.path().join(DIR).join("a.auto.tfvars.json"), "{}").unwrap();
        assert_eq!(images(d.path()), ["a"]);
        assert!(d.path().join(DIR).join(".a.lock").exists());
    }
}
