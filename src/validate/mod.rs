//! `lxcforge validate`: predicts what `pct create` will do with a template, in one streaming read.
//!
//! Nothing is extracted or written: the archive is decompressed through bounded readers
//! ([`input`]), its 512-byte tar headers are parsed here ([`tar`], with caps on extended headers),
//! the member table and a few small files of interest are kept in memory ([`tree`]), and the
//! checks run at the end ([`pve`]: what pve-container does, [`hygiene`]: leftovers and secrets).
//!
//! The source for every Proxmox rule is `shared/reference/proxmox-api.md` §8.

mod hygiene;
pub(crate) mod input;
pub mod pve;
mod tar;
mod tree;

pub use pve::{ContainerVersion, PveVersion};

use serde::Serialize;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Default wall-clock budget for reading one template. A multi-GiB template is read in well
/// under a minute here; ten minutes leaves room for slow disks and network file systems while
/// still ending a read that never finishes (an endless or trickling stream).
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(600);

/// What to validate against.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Target Proxmox VE release; `None` = the newest one known to [`pve::PVE_CONTAINER`].
    pub pve_version: Option<PveVersion>,
    /// Wall-clock budget for the read: past it the validator gives up with
    /// [`ValidateError::TimeBudget`] (exit 2). Checked on every read from the input and from the
    /// decompressor, so it bounds slow and endless streams; a single read that blocks forever
    /// (a FIFO nobody writes to) is not interrupted.
    pub time_budget: Duration,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            pve_version: None,
            time_budget: DEFAULT_TIME_BUDGET,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    pub member: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    /// Target Proxmox VE release, `X.Y`.
    pub pve_version: String,
    /// The pve-container version assumed for that release (see [`pve::PVE_CONTAINER`]).
    pub pve_container: String,
    /// Compression found by sniffing the content (`gzip`, `zstd`, `xz`, `none`).
    pub compression: String,
    /// Number of archive members seen (PAX / GNU long-name headers excluded).
    pub members: u64,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub fn exit_code(&self) -> i32 {
        if self.passed() { 0 } else { 1 }
    }

    /// (pass, warn, fail)
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.checks.iter().filter(|c| c.status == s).count();
        (n(Status::Pass), n(Status::Warn), n(Status::Fail))
    }

    /// Checks with the given id (tests and callers).
    pub fn find(&self, id: &str) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(move |c| c.id == id)
    }

    /// The worst status among checks with this id, `None` if the id was not evaluated.
    pub fn status_of(&self, id: &str) -> Option<Status> {
        self.find(id).map(|c| c.status).max_by_key(|s| match s {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        })
    }

    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} members, {} compression, Proxmox VE {} (pve-container {})",
            self.file, self.members, self.compression, self.pve_version, self.pve_container
        );
        let idw = self
            .checks
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "{:<6} {:<idw$}  DETAIL", "STATUS", "CHECK");
        for c in &self.checks {
            let mut detail = c.message.replace('\n', " ");
            if let Some(m) = &c.member {
                detail = format!("{m}: {detail}");
            }
            let _ = writeln!(out, "{:<6} {:<idw$}  {}", c.status.label(), c.id, detail);
        }
        let (p, w, f) = self.counts();
        let _ = writeln!(out, "{p} passed, {w} warnings, {f} failed");
        out
    }
}

/// The input could not be read at all (exit code 2). A damaged archive is not an error: it is a
/// report with FAIL checks.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot open {path}: {source}; check the path and its permissions")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {file}: {source}; check the file system or the download")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} is {compression}-compressed, which the validator cannot decode; recompress it as .tar.zst or .tar.gz"
    )]
    UnsupportedCompression {
        file: String,
        compression: &'static str,
    },
    #[error(
        "{file} is neither a tar archive nor gzip/zstd/xz-compressed tar (first bytes: {magic}); pass a template archive"
    )]
    NotAnArchive { file: String, magic: String },
    #[error(
        "reading {file} took longer than the {} time budget ({read} bytes read, {decompressed} decompressed): the input is too slow or never ends; if it is a genuine template on slow storage, copy it locally or raise --time-budget",
        humantime::format_duration(*.budget)
    )]
    TimeBudget {
        file: String,
        budget: Duration,
        read: u64,
        decompressed: u64,
    },
    #[error(
        "unknown Proxmox VE version {version}: the table knows {known}; pass --pve-version with one of those"
    )]
    UnknownPveVersion { version: String, known: String },
}

/// Validates a template file on disk.
pub fn validate_file(path: &Path, opts: &ValidateOptions) -> Result<Report, ValidateError> {
    let f = std::fs::File::open(path).map_err(|source| ValidateError::Open {
        path: path.display().to_string(),
        source,
    })?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(ValidateError::Open {
            path: path.display().to_string(),
            source: std::io::Error::other("is a directory"),
        });
    }
    let name = path.display().to_string();
    validate_reader(
        &name,
        std::io::BufReader::with_capacity(256 * 1024, f),
        opts,
    )
}

/// Validates a template read from `r`; `file_name` decides the expected compression (as
/// Proxmox does: by extension only).
pub fn validate_reader<R: Read>(
    file_name: &str,
    r: R,
    opts: &ValidateOptions,
) -> Result<Report, ValidateError> {
    let (pve, cv) = pve::resolve_target(opts.pve_version)?;
    let mut checks = Checks::default();
    let scan = input::scan(file_name, r, opts.time_budget, &mut checks)?;
    let members = scan.tree.members;
    if scan.fatal {
        checks.note(
            "validate.coverage",
            Status::Warn,
            "the archive could not be read to its end; content checks were skipped".into(),
            None,
        );
    } else {
        tar::archive_checks(&scan.tree, &mut checks);
        pve::checks(&scan.tree, cv, &mut checks);
        hygiene::checks(&scan.tree, &mut checks);
    }
    Ok(Report {
        file: file_name.to_string(),
        pve_version: pve.to_string(),
        pve_container: cv.to_string(),
        compression: scan.compression.to_string(),
        members,
        checks: checks.finish(),
    })
}

/// Findings per check id, capped so a hostile archive cannot grow the report without bound.
#[derive(Default)]
pub(crate) struct Checks {
    list: Vec<Check>,
    /// ids for which the number of findings went over the cap: (id, dropped count).
    dropped: Vec<(&'static str, usize)>,
    /// ids that were evaluated (so a PASS line is added when they found nothing).
    evaluated: Vec<(&'static str, &'static str)>,
}

const MAX_FINDINGS_PER_ID: usize = 50;

/// Every check id, in report order.
pub const CHECK_IDS: &[&str] = &[
    "archive.extension",
    "archive.compression",
    "archive.complete",
    "archive.trailing",
    "archive.header",
    "archive.limits",
    "archive.root",
    "archive.names",
    "archive.naming",
    "archive.ids",
    "archive.devices",
    "archive.duplicates",
    "archive.hardlinks",
    "archive.symlinks",
    "pve.distro",
    "pve.version",
    "pve.init",
    "pve.arch",
    "hygiene.leftovers",
    "hygiene.machine-id",
    "hygiene.dbus-machine-id",
    "secrets.ssh-host-keys",
    "secrets.authorized-keys",
    "secrets.shadow",
    "secrets.history",
    "secrets.sshd-password-auth",
    "secrets.private-keys",
    "secrets.credentials",
    "secrets.tokens",
    "validate.coverage",
];

impl Checks {
    /// Records a finding (or an explicit result).
    pub(crate) fn note(
        &mut self,
        id: &'static str,
        status: Status,
        message: String,
        member: Option<String>,
    ) {
        let n = self.list.iter().filter(|c| c.id == id).count();
        if n >= MAX_FINDINGS_PER_ID {
            match self.dropped.iter_mut().find(|(i, _)| *i == id) {
                Some((_, c)) => *c += 1,
                None => self.dropped.push((id, 1)),
            }
            return;
        }
        self.list.push(Check {
            id,
            status,
            message,
            member,
        });
    }

    pub(crate) fn fail(&mut self, id: &'static str, message: String, member: Option<String>) {
        self.note(id, Status::Fail, message, member)
    }

    pub(crate) fn warn(&mut self, id: &'static str, message: String, member: Option<String>) {
        self.note(id, Status::Warn, message, member)
    }

    pub(crate) fn pass(&mut self, id: &'static str, message: String) {
        self.note(id, Status::Pass, message, None)
    }

    /// Declares `id` evaluated: if no finding is recorded for it, `pass_message` becomes a PASS.
    pub(crate) fn evaluated(&mut self, id: &'static str, pass_message: &'static str) {
        self.evaluated.push((id, pass_message));
    }

    pub(crate) fn has(&self, id: &str) -> bool {
        self.list.iter().any(|c| c.id == id)
    }

    fn finish(mut self) -> Vec<Check> {
        for (id, msg) in std::mem::take(&mut self.evaluated) {
            if !self.has(id) {
                self.list.push(Check {
                    id,
                    status: Status::Pass,
                    message: msg.to_string(),
                    member: None,
                });
            }
        }
        for (id, n) in std::mem::take(&mut self.dropped) {
            let status = self
                .list
                .iter()
                .filter(|c| c.id == id)
                .map(|c| c.status)
                .find(|s| *s == Status::Fail)
                .unwrap_or(Status::Warn);
            self.list.push(Check {
                id,
                status,
                message: format!("{n} more findings not listed"),
                member: None,
            });
        }
        // Report order: the fixed list of check ids, then anything else as first recorded.
        let mut order: Vec<&'static str> = CHECK_IDS.to_vec();
        for c in &self.list {
            if !order.contains(&c.id) {
                order.push(c.id);
            }
        }
        self.list
            .sort_by_key(|c| order.iter().position(|i| *i == c.id));
        self.list
    }
}
