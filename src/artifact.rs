//! Stage: the artifact on disk. Files are written into a staging directory beside the final
//! location (same filesystem) and linked into place only when all of them are complete, with a
//! no-clobber link so nothing is ever overwritten. An interrupted build leaves only its
//! staging directory, which the build's cleanup removes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "{path} already exists; lxcforge never overwrites an artifact\n  fix: build the next version (--next)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}{}", disk_full_hint(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn disk_full_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(28) {
        "\n  fix: the disk is full; free space there or choose another --out-dir"
    } else {
        ""
    }
}

/// Staging directories are `<out>/.staging-<build id>`.
pub const STAGING_PREFIX: &str = ".staging-";
/// In a staging directory: the `gc::Owner` label of the build using it.
pub const OWNER_FILE: &str = ".owner";

pub struct Staging {
    pub dir: PathBuf,
    out_dir: PathBuf,
}

impl Staging {
    /// Creates `<out>/.staging-<build id>/`, with an `.owner` file naming this process, so a
    /// staging directory left by a killed build can be told from one in use (`gc`).
    pub fn create(out_dir: &Path, build_id: &str) -> Result<Staging, ArtifactError> {
        let dir = out_dir.join(format!("{STAGING_PREFIX}{build_id}"));
        std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io {
            path: dir.clone(),
            source,
        })?;
        if let Some(owner) = crate::gc::Owner::current() {
            let path = dir.join(OWNER_FILE);
            std::fs::write(&path, owner.label())
                .map_err(|source| ArtifactError::Io { path, source })?;
        }
        Ok(Staging {
            dir,
            out_dir: out_dir.to_owned(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), ArtifactError> {
        let path = self.path(name);
        let io = |source| ArtifactError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&path).map_err(io)?;
        std::io::Write::write_all(&mut f, data).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Moves the named files into the output directory. Each is linked under its final name
    /// (`link` fails if the name exists, so a concurrent writer can never be overwritten); if
    /// any link fails, the ones already made are removed again. The last name is the one that
    /// marks the artifact as present, so it goes last.
    pub fn publish(&self, names: &[&str]) -> Result<Vec<PathBuf>, ArtifactError> {
        let mut done: Vec<PathBuf> = Vec::new();
        for name in names {
            let from = self.path(name);
            let to = self.out_dir.join(name);
            if let Err(e) = std::fs::hard_link(&from, &to) {
                for p in &done {
                    let _ = std::fs::remove_file(p);
                }
                return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ArtifactError::Exists { path: to }
                } else {
                    ArtifactError::Io {
                        path: to,
                        source: e,
                    }
                });
            }
            done.push(to);
        }
        if let Ok(d) = std::fs::File::open(&self.out_dir) {
            let _ = d.sync_all();
        }
        Ok(done)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `sha256sum -c` format: two spaces, then the file name relative to the sidecar.
pub fn sha256_sidecar(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// Parses `dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n'` output.
pub fn parse_packages(lines: &[String]) -> Vec<Package> {
    let mut pkgs: Vec<Package> = lines
        .iter()
        .filter_map(|l| {
            let mut it = l.split('\t');
            let (name, version, arch) = (it.next()?, it.next()?, it.next()?);
            (!name.is_empty()).then(|| Package {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: arch.to_owned(),
            })
        })
        .collect();
    pkgs.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.architecture.cmp(&b.architecture))
    });
    pkgs
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub schema: u32,
    pub tool: ToolInfo,
    pub image: ImageInfo,
    pub version: u64,
    pub artifact: ArtifactInfo,
    pub base: crate::engine::ResolvedBase,
    pub scripts: Vec<crate::definition::Script>,
    pub git_commit: String,
    pub source_date_epoch: u64,
    pub built_at: String,
    pub packages: Vec<Package>,
    pub validation: Validation,
    /// Seconds spent in each stage, in order.
    pub timings: BTreeMap<String, f64>,
}

/// The validator's verdict on the artifact (`lxcforge validate` gives the full report).
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub passed: bool,
    pub pve_version: String,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    /// `check: member: message` for every WARN and FAIL.
    pub findings: Vec<String>,
}

impl Validation {
    pub fn from_report(r: &crate::validate::Report) -> Validation {
        let (pass, warn, fail) = r.counts();
        Validation {
            passed: r.passed(),
            pve_version: r.pve_version.clone(),
            pass,
            warn,
            fail,
            findings: r
                .checks
                .iter()
                .filter(|c| c.status != crate::validate::Status::Pass)
                .map(|c| match &c.member {
                    Some(m) => format!("{} {}: {m}: {}", c.status.label(), c.id, c.message),
                    None => format!("{} {}: {}", c.status.label(), c.id, c.message),
                })
                .collect(),
        }
    }
}

/// The parts of a manifest that `list` and `diff` read back (unknown fields are ignored, so
/// newer manifests stay readable).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestView {
    pub version: u64,
    pub built_at: String,
    pub artifact: ArtifactView,
    #[serde(default)]
    pub packages: Vec<Package>,
    pub validation: ValidationView,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArtifactView {
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ValidationView {
    pub passed: bool,
}

impl ManifestView {
    /// Reads `path`; `Ok(None)` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<ManifestView>, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{} is not an lxcforge manifest: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for ToolInfo {
    fn default() -> Self {
        ToolInfo {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub definition: String,
    pub definition_sha256: String,
    pub description: Option<String>,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactInfo {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub compression: String,
    /// The uncompressed, normalized tar: its size and sha256 identify the content.
    pub tar_size: u64,
    pub tar_sha256: String,
    pub members: u64,
    /// What the packer removed or replaced because Docker put it there.
    pub dropped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_never_overwrites_and_rolls_back() {
        let out = tempfile::tempdir().unwrap();
        let s = Staging::create(out.path(), "t1").unwrap();
        s.write("a.json", b"{}").unwrap();
        s.write("a.tar.gz", b"new").unwrap();
        std::fs::write(out.path().join("a.tar.gz"), b"old").unwrap();
        let e = s.publish(&["a.json", "a.tar.gz"]).unwrap_err();
        assert!(matches!(e, ArtifactError::Exists { .. }), "{e}");
        assert!(!out.path().join("a.json").exists(), "rolled back");
        assert_eq!(std::fs::read(out.path().join("a.tar.gz")).unwrap(), b"old");
        std::fs::remove_file(out.path().join("a.tar.gz")).unwrap();
        let done = s.publish(&["a.json", "a.tar.gz"]).unwrap();
        assert_eq!(done.len(), 2);
        s.remove();
        assert!(!s.dir.exists());
        assert_eq!(std::fs::read(out.path().join("a.tar.gz")).unwrap(), b"new");
    }

    #[test]
    fn sidecar_format_matches_sha256sum() {
        assert_eq!(sha256_sidecar("ab", "x.tar.gz"), "ab  x.tar.gz\n");
    }

    #[test]
    fn packages_parse_and_sort() {
        let lines = vec![
            "zlib1g\t1:1.2\tamd64".to_owned(),
            "bash\t5.2\tamd64".to_owned(),
            "junk".to_owned(),
        ];
        let p = parse_packages(&lines);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "bash");
        assert_eq!(p[1].version, "1:1.2");
    }
}
