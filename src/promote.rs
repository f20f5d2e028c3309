//! Stage: promotion. Terraform references one template version explicitly; promoting vN of an
//! image writes that reference to `versions/<image>.auto.tfvars.json`, to be reviewed and
//! committed through Git:
//!
//! ```json
//! { "lxc_template_debian_12": "local:vztmpl/debian-12-lxc-rootfs-v3.tar.gz",
//!   "lxc_template_debian_12_sha256": "<hex>" }
//! ```
//!
//! Nothing is written unless vN is recorded in the ledger, passed validation, and is present
//! with the recorded size (and sha256, when an upload recorded one) on every configured node
//! of the storage named.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ledger::{self, LedgerError};
use crate::remote::{self, RemoteError, TemplateStore};

/// What Terraform modules check the template value against (see the README).
pub const TERRAFORM_PATTERN: &str = r"^.+:vztmpl/.+\.tar\.gz$";

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(
        "v{version} of {image} is not recorded in {ledger}{known}\n  fix: promote a version that was built here (`lxcforge list {image}`), or build one with `make image.build-next IMAGE={image}`"
    )]
    Unknown {
        image: String,
        version: u64,
        ledger: PathBuf,
        /// ` (recorded: v1, v2)` or empty.
        known: String,
    },
    #[error(
        "v{version} of {image} failed validation ({fail} check(s) failed for Proxmox VE {pve}); it must never be pinned\n  fix: fix the provision/cleanup scripts and build a new version"
    )]
    FailedValidation {
        image: String,
        version: u64,
        fail: usize,
        pve: String,
    },
    #[error(
        "no Proxmox store is configured for storage '{storage}'{configured}\n  fix: pass --storage with a configured storage, or configure that one"
    )]
    NoStore {
        storage: String,
        /// ` (configured: pve1/local, …)` or empty.
        configured: String,
    },
    #[error(
        "{volid} is not on {missing}\n  fix: upload it first (`make image.upload IMAGE={image} VERSION={version}`), then promote it"
    )]
    Absent {
        volid: String,
        missing: String,
        image: String,
        version: u64,
    },
    #[error(
        "{volid} on {store} is {remote} bytes, but v{version} is {recorded} bytes; the file on storage is not this build\n  fix: do not pin it; remove it from the storage (`pvesm free {volid}` on the node) and upload v{version} again"
    )]
    SizeMismatch {
        volid: String,
        store: String,
        version: u64,
        remote: u64,
        recorded: u64,
    },
    #[error(
        "{volid} was uploaded to {store} with sha256 {uploaded}, but v{version} has sha256 {recorded}\n  fix: do not pin it; remove it from the storage and upload v{version} again"
    )]
    ShaMismatch {
        volid: String,
        store: String,
        version: u64,
        uploaded: String,
        recorded: String,
    },
    #[error(
        "{path} is not a JSON object of Terraform variables: {reason}\n  fix: restore it from Git (`git checkout -- {path}`) or delete it"
    )]
    BadTfvars { path: PathBuf, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// The Terraform variable holding the template of `image`: `lxc_template_<image>` with every
/// character outside `[a-z0-9_]` as `_` (`ubuntu-24.04` → `lxc_template_ubuntu_24_04`).
pub fn variable_name(image: &str) -> String {
    let mut v = String::from("lxc_template_");
    v.extend(image.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    v
}

/// `versions/<image>.auto.tfvars.json`, relative to the project root.
pub fn tfvars_rel(image: &str) -> PathBuf {
    Path::new(ledger::DIR).join(format!("{image}.auto.tfvars.json"))
}

/// The pinned template of an image, from its tfvars file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub volid: String,
    pub sha256: Option<String>,
    /// The version, when the volid names `<prefix>-v<N>.tar.<ext>`.
    pub version: Option<u64>,
}

/// The current tfvars object (empty when there is no file).
fn read_tfvars(
    root: &Path,
    image: &str,
) -> Result<(Option<String>, serde_json::Map<String, serde_json::Value>), PromoteError> {
    let path = root.join(tfvars_rel(image));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, serde_json::Map::new()));
        }
        Err(e) => {
            return Err(PromoteError::BadTfvars {
                path,
                reason: e.to_string(),
            });
        }
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => Ok((Some(text), m)),
        Ok(_) => Err(PromoteError::BadTfvars {
            path,
            reason: "not an object".into(),
        }),
        Err(e) => Err(PromoteError::BadTfvars {
            path,
            reason: e.to_string(),
        }),
    }
}

/// What `versions/<image>.auto.tfvars.json` pins, if anything.
pub fn read_pin(root: &Path, image: &str, prefix: &str) -> Result<Option<Pin>, PromoteError> {
    let (_, vars) = read_tfvars(root, image)?;
    let var = variable_name(image);
    let Some(volid) = vars.get(&var).and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let version = remote::split_volid(volid)
        .and_then(|(_, file)| crate::version::parse_version(prefix, file));
    Ok(Some(Pin {
        volid: volid.to_owned(),
        sha256: vars
            .get(&format!("{var}_sha256"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        version,
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub image: String,
    pub version: u64,
    pub storage: String,
    /// `<storage>:vztmpl/<file>`: the value Terraform gets.
    pub volid: String,
    pub sha256: String,
    pub size: u64,
    /// The Terraform variable set, and its `_sha256` companion.
    pub variable: String,
    /// The file written, relative to the project root.
    pub tfvars: PathBuf,
    /// The volid pinned before, if any.
    pub previous: Option<String>,
    /// False when vN was already pinned (the file was left as it was).
    pub changed: bool,
    /// Unified diff of the tfvars file, old → new (empty when unchanged).
    pub diff: String,
    /// The stores on which the template was found with the right size.
    pub verified_on: Vec<String>,
    /// Shell commands that commit the promotion.
    pub git: Vec<String>,
    /// Things a reviewer should know (e.g. a value Terraform modules' pattern refuses).
    pub warnings: Vec<String>,
}

/// Checks vN of `image` and pins it on `storage`; see the module documentation.
pub async fn promote<S: TemplateStore>(
    root: &Path,
    image: &str,
    version: u64,
    storage: &str,
    stores: &[S],
) -> Result<Promotion, PromoteError> {
    let ledger_path = ledger::path(root, image);
    let ledger = ledger::load(root, image)?;
    let entry = ledger
        .as_ref()
        .and_then(|l| l.entry(version))
        .cloned()
        .ok_or_else(|| PromoteError::Unknown {
            image: image.to_owned(),
            version,
            ledger: ledger_path.clone(),
            known: match &ledger {
                Some(l) if !l.versions.is_empty() => format!(
                    " (recorded: {})",
                    l.versions
                        .iter()
                        .map(|e| format!("v{}", e.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            },
        })?;
    if !entry.validation.passed {
        return Err(PromoteError::FailedValidation {
            image: image.to_owned(),
            version,
            fail: entry.validation.fail,
            pve: entry.validation.pve_version.clone(),
        });
    }

    let volid = remote::volid(storage, &entry.file);
    let matching: Vec<&S> = stores.iter().filter(|s| s.storage() == storage).collect();
    if matching.is_empty() {
        return Err(PromoteError::NoStore {
            storage: storage.to_owned(),
            configured: if stores.is_empty() {
                String::new()
            } else {
                format!(
                    " (configured: {})",
                    stores
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        });
    }
    let mut missing = Vec::new();
    let mut verified_on = Vec::new();
    for s in &matching {
        let listing = s
            .list_templates()
            .await
            .map_err(|source| RemoteError::Listing {
                store: s.name(),
                source,
            })?;
        match listing.iter().find(|t| t.volid == volid) {
            None => missing.push(s.name()),
            Some(t) if t.size != entry.size => {
                return Err(PromoteError::SizeMismatch {
                    volid,
                    store: s.name(),
                    version,
                    remote: t.size,
                    recorded: entry.size,
                });
            }
            Some(_) => verified_on.push(s.name()),
        }
    }
    if !missing.is_empty() {
        return Err(PromoteError::Absent {
            volid,
            missing: missing.join(", "),
            image: image.to_owned(),
            version,
        });
    }
    // The sha256 Proxmox verified during an upload, where the ledger recorded one.
    for u in entry.uploads.iter().filter(|u| u.volid == volid) {
        if !u.sha256.is_empty() && !u.sha256.eq_ignore_ascii_case(&entry.sha256) {
            return Err(PromoteError::ShaMismatch {
                volid,
                store: format!("{}/{}", u.node, u.storage),
                version,
                uploaded: u.sha256.clone(),
                recorded: entry.sha256.clone(),
            });
        }
    }

    // Write the pin: our two variables set, any other variable in the file kept.
    let rel = tfvars_rel(image);
    let path = root.join(&rel);
    let (old_text, mut vars) = read_tfvars(root, image)?;
    let var = variable_name(image);
    let previous = vars.get(&var).and_then(|v| v.as_str()).map(str::to_owned);
    vars.insert(var.clone(), serde_json::Value::String(volid.clone()));
    vars.insert(
        format!("{var}_sha256"),
        serde_json::Value::String(entry.sha256.clone()),
    );
    let mut new_text =
        serde_json::to_string_pretty(&serde_json::Value::Object(vars)).expect("a JSON object");
    new_text.push('\n');
    let old = old_text.clone().unwrap_or_default();
    let changed = old != new_text;
    let diff = if changed {
        let from = if old_text.is_some() {
            format!("a/{}", rel.display())
        } else {
            "/dev/null".to_owned()
        };
        similar::TextDiff::from_lines(&old, &new_text)
            .unified_diff()
            .header(&from, &format!("b/{}", rel.display()))
            .to_string()
    } else {
        String::new()
    };
    if changed {
        ledger::write_atomic(&path, new_text.as_bytes())?;
    }

    let mut warnings = Vec::new();
    if !regex_like_terraform_pattern(&volid) {
        warnings.push(format!(
            "{volid} does not match {TERRAFORM_PATTERN}: Terraform modules that check that pattern (e.g. a `.tar.gz`-only precondition) will refuse it"
        ));
    }
    let git = git_commands(
        root,
        &rel,
        &ledger::path(Path::new(""), image),
        image,
        version,
        &volid,
    );
    Ok(Promotion {
        image: image.to_owned(),
        version,
        storage: storage.to_owned(),
        volid,
        sha256: entry.sha256,
        size: entry.size,
        variable: var,
        tfvars: rel,
        previous,
        changed,
        diff,
        verified_on,
        git,
        warnings,
    })
}

/// `^.+:vztmpl/.+\.tar\.gz$`, without a regex engine.
fn regex_like_terraform_pattern(volid: &str) -> bool {
    match volid.split_once(":vztmpl/") {
        Some((storage, file)) => {
            !storage.is_empty() && file.len() > ".tar.gz".len() && file.ends_with(".tar.gz")
        }
        None => false,
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn git_commands(
    root: &Path,
    tfvars: &Path,
    ledger: &Path,
    image: &str,
    version: u64,
    volid: &str,
) -> Vec<String> {
    let git = if root == Path::new(".") || root.as_os_str().is_empty() {
        "git".to_owned()
    } else {
        format!("git -C {}", shell_quote(&root.display().to_string()))
    };
    vec![
        format!(
            "{git} add {} {}",
            shell_quote(&tfvars.display().to_string()),
            shell_quote(&ledger.display().to_string())
        ),
        format!(
            "{git} commit -m {}",
            shell_quote(&format!("Promote {image} v{version}: {volid}"))
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_terraform_identifiers() {
        assert_eq!(variable_name("debian-12"), "lxc_template_debian_12");
        assert_eq!(variable_name("ubuntu-24.04"), "lxc_template_ubuntu_24_04");
        assert_eq!(variable_name("My_Img"), "lxc_template_my_img");
    }

    #[test]
    fn the_pattern_check_matches_the_terraform_regex() {
        let re = regex_like_terraform_pattern;
        assert!(re("local:vztmpl/x-v1.tar.gz"));
        assert!(!re("local:vztmpl/x-v1.tar.zst"));
        assert!(!re(":vztmpl/x-v1.tar.gz"));
        assert!(!re("local:vztmpl/.tar.gz"));
        assert!(!re("vztmpl/x-v1.tar.gz"));
    }

    #[test]
    fn git_commands_quote_what_needs_it() {
        let c = git_commands(
            Path::new("/tmp/my project"),
            &tfvars_rel("d"),
            Path::new("versions/d.json"),
            "d",
            3,
            "local:vztmpl/d-v3.tar.gz",
        );
        assert_eq!(
            c[0],
            "git -C '/tmp/my project' add versions/d.auto.tfvars.json versions/d.json"
        );
        assert_eq!(
            c[1],
            "git -C '/tmp/my project' commit -m 'Promote d v3: local:vztmpl/d-v3.tar.gz'"
        );
        let c = git_commands(
            Path::new("."),
            &tfvars_rel("d"),
            Path::new("versions/d.json"),
            "d",
            3,
            "x",
        );
        assert!(c[0].starts_with("git add "), "{}", c[0]);
    }
}
