//! `lxcforge list`: every version of an image, from the ledger, the output directory and the
//! Proxmox storages, with which one Terraform pins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ledger::{self, LedgerError};
use crate::promote::{self, Pin, PromoteError};
use crate::remote::{self, RemoteError, TemplateStore};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Pin(#[from] PromoteError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub version: u64,
    pub file: Option<String>,
    pub size: Option<u64>,
    pub built_at: Option<String>,
    pub sha256: Option<String>,
    /// `passed`, `failed`, or `unknown` (neither ledger nor manifest says).
    pub validation: &'static str,
    /// Recorded in the ledger.
    pub recorded: bool,
    /// The artifact in the output directory, if it is there.
    pub local: Option<PathBuf>,
    /// Uploads recorded in the ledger: `<node>/<storage> <volid>`.
    pub uploads: Vec<String>,
    /// Seen now on the storages listed: `<node>/<storage> <volid>`.
    pub on_storage: Vec<String>,
    pub pinned: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub image: String,
    pub prefix: String,
    pub ledger: PathBuf,
    pub pinned: Option<Pin>,
    /// The stores listed (empty without Proxmox settings).
    pub stores: Vec<String>,
    pub versions: Vec<Row>,
}

fn row(version: u64) -> Row {
    Row {
        version,
        file: None,
        size: None,
        built_at: None,
        sha256: None,
        validation: "unknown",
        recorded: false,
        local: None,
        uploads: Vec::new(),
        on_storage: Vec::new(),
        pinned: false,
    }
}

fn verdict(passed: bool) -> &'static str {
    if passed { "passed" } else { "failed" }
}

pub async fn list<S: TemplateStore>(
    root: &Path,
    image: &str,
    prefix: &str,
    out_dir: &Path,
    stores: &[S],
) -> Result<Listing, ListError> {
    let mut rows: BTreeMap<u64, Row> = BTreeMap::new();
    if let Some(l) = ledger::load(root, image)? {
        for e in l.versions {
            let r = rows.entry(e.version).or_insert_with(|| row(e.version));
            r.file = Some(e.file);
            r.size = Some(e.size);
            r.built_at = Some(e.built_at);
            r.sha256 = Some(e.sha256);
            r.validation = verdict(e.validation.passed);
            r.recorded = true;
            r.uploads = e
                .uploads
                .iter()
                .map(|u| format!("{}/{} {}", u.node, u.storage, u.volid))
                .collect();
        }
    }
    for (v, path) in crate::version::local_artifacts(out_dir, prefix) {
        let r = rows.entry(v).or_insert_with(|| row(v));
        if !r.recorded {
            // Not in the ledger (built before it existed, or copied in): the manifest says more.
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            r.file = Some(name.to_owned());
            let manifest = path.with_file_name(crate::build::manifest_name(name));
            if let Ok(Some(m)) = crate::artifact::ManifestView::read(&manifest) {
                r.size = Some(m.artifact.size);
                r.built_at = Some(m.built_at);
                r.sha256 = Some(m.artifact.sha256);
                r.validation = verdict(m.validation.passed);
            } else {
                r.size = std::fs::metadata(&path).ok().map(|m| m.len());
            }
        }
        r.local = Some(path);
    }
    let listings = remote::list_all(stores).await?;
    for l in &listings {
        for t in &l.templates {
            if let Some((_, file)) = remote::split_volid(&t.volid)
                && let Some(v) = crate::version::parse_version(prefix, file)
            {
                let r = rows.entry(v).or_insert_with(|| row(v));
                r.on_storage.push(format!("{} {}", l.store, t.volid));
                if r.file.is_none() {
                    r.file = Some(file.to_owned());
                    r.size = Some(t.size);
                }
            }
        }
    }
    let pinned = promote::read_pin(root, image, prefix)?;
    if let Some(p) = &pinned
        && let Some(v) = p.version
        && let Some(r) = rows.get_mut(&v)
    {
        r.pinned = true;
    }
    Ok(Listing {
        image: image.to_owned(),
        prefix: prefix.to_owned(),
        ledger: ledger::path(Path::new(""), image),
        pinned,
        stores: listings.iter().map(|l| l.store.clone()).collect(),
        versions: rows.into_values().collect(),
    })
}

impl Listing {
    /// The human table: one line per version.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({}-v<N>), ledger {}{}",
            self.image,
            self.prefix,
            self.ledger.display(),
            match &self.pinned {
                Some(p) => format!(", pinned: {}", p.volid),
                None => ", nothing pinned".to_owned(),
            }
        );
        if self.versions.is_empty() {
            let _ = writeln!(out, "  no versions yet");
            return out;
        }
        let _ = writeln!(
            out,
            "  {:<3} {:<6} {:>9}  {:<20}  {:<12}  {:<10}  WHERE",
            "PIN", "VER", "SIZE", "BUILT", "SHA256", "VALIDATION"
        );
        for r in &self.versions {
            let mut wher: Vec<String> = Vec::new();
            if r.local.is_some() {
                wher.push("local".into());
            }
            if !r.recorded {
                wher.push("(not in ledger)".into());
            }
            for u in &r.uploads {
                wher.push(u.split_once(' ').map_or(u.as_str(), |x| x.1).to_owned());
            }
            for s in &r.on_storage {
                let volid = s.split_once(' ').map_or(s.as_str(), |x| x.1);
                if !wher.iter().any(|w| w == volid) {
                    wher.push(format!("{volid} (on storage, not recorded)"));
                }
            }
            let _ = writeln!(
                out,
                "  {:<3} {:<6} {:>9}  {:<20}  {:<12}  {:<10}  {}",
                if r.pinned { "*" } else { "" },
                format!("v{}", r.version),
                r.size.map(crate::ui::human_bytes).unwrap_or_default(),
                r.built_at.as_deref().unwrap_or("-"),
                r.sha256.as_deref().map_or("-", |s| &s[..s.len().min(12)]),
                r.validation,
                wher.join(", ")
            );
        }
        out
    }
}
