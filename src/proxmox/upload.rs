//! The upload flow, for one file and one or more nodes:
//!
//! 1. local checks: a regular, non-empty file whose name Proxmox accepts for vztmpl;
//! 2. `GET /version` (URL, TLS, token), then for every node: the storage exists, is enabled
//!    and active, holds `vztmpl`, has room, and the volid is not there yet. Any failure stops
//!    everything before a single byte is uploaded. Meanwhile the file's sha256 is taken from
//!    its `.sha256` sidecar, or computed;
//! 3. one multipart POST per node (a shared storage only once), all at once, each streaming
//!    the file from disk;
//! 4. the UPID is followed on the node that received the request (an early `no such task` is
//!    retried) until it stops; anything but `OK` fails, with the task log's tail;
//! 5. the content listing is read back: the volid must be there with the exact size.
//!
//! Retries: GETs are retried on transient errors. The POST is sent again only when the body
//! did not get out in full (then Proxmox cannot have started a task), never once the whole
//! body went out or Proxmox answered, and the listing is checked again before every retry.
//!
//! The checksum: an artifact's sidecar was written from the same stream as the artifact, so
//! its hash is sent as the upload's `checksum` without reading the file an extra time. That is
//! still a verification, not trust: Proxmox's task hashes what it received and compares, and a
//! stale or wrong sidecar makes the task fail, storing nothing. On such a failure lxcforge
//! hashes the local file to tell which side is wrong. Without a sidecar the file is hashed
//! first (while the storages are being checked).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::{Client, PostError, RemoteTemplate, StorageInfo, is_no_such_task, upid_node};
use super::error::{ProxmoxError, format_log_tail, mentions_disk_full};
use super::multipart::{MultipartBody, fresh_boundary};
use super::settings::Settings;
use crate::ui::{Progress, Ui, human_bytes};

/// One verified upload.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// The node the upload was made to (for a shared storage: the one that took it).
    pub node: String,
    pub storage: String,
    pub volid: String,
    pub size: u64,
    pub sha256: String,
    pub upid: String,
    pub duration_secs: f64,
    /// The storage is shared: this one upload serves every node that has it.
    pub shared: bool,
}

/// The vztmpl extensions of current Proxmox (`$VZTMPL_EXT_RE_1`, case-insensitive).
pub const VZTMPL_EXTENSIONS: [&str; 5] = [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tar"];

/// Whether Proxmox's upload accepts `name` as a container template: something, then one of
/// [`VZTMPL_EXTENSIONS`], any case.
pub fn vztmpl_extension_ok(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    VZTMPL_EXTENSIONS
        .iter()
        .any(|ext| lower.len() > ext.len() && lower.ends_with(ext))
}

/// pve-storage `normalize_content_filename`: the path is stripped, anything but
/// `[a-zA-Z0-9_.-]` becomes `_`.
pub fn normalize_content_filename(name: &str) -> String {
    let name = name.trim_end_matches('\n');
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn volid(storage: &str, name: &str) -> String {
    format!("{storage}:vztmpl/{name}")
}

/// A local template ready to go.
#[derive(Debug, Clone)]
pub struct LocalTemplate {
    pub path: PathBuf,
    pub file_name: String,
    /// The name Proxmox will store it under (normalised).
    pub remote_name: String,
    pub size: u64,
}

pub fn check_local(path: &Path) -> Result<LocalTemplate, ProxmoxError> {
    let local = |detail: String, fix: &str| ProxmoxError::LocalFile {
        path: path.to_owned(),
        detail,
        fix: fix.to_owned(),
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        local(
            format!("cannot read it ({e})"),
            "give the path of a template, e.g. artifacts/<prefix>-v<N>.tar.gz",
        )
    })?;
    if !meta.is_file() {
        return Err(local(
            "not a regular file".into(),
            "give the path of a template file",
        ));
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| local("the file name is not UTF-8".into(), "rename it"))?
        .to_owned();
    if !vztmpl_extension_ok(&file_name) {
        return Err(ProxmoxError::WrongExtension {
            name: file_name,
            server: String::new(),
        });
    }
    if file_name.len() > 255 {
        return Err(local(
            "the name is longer than the 255 characters Proxmox allows".into(),
            "rename it",
        ));
    }
    if meta.len() == 0 {
        return Err(local(
            "the file is empty".into(),
            "build the template again; an empty file is never a template",
        ));
    }
    std::fs::File::open(path)
        .map_err(|e| local(format!("cannot open it ({e})"), "check its permissions"))?;
    Ok(LocalTemplate {
        remote_name: normalize_content_filename(&file_name),
        path: path.to_owned(),
        file_name,
        size: meta.len(),
    })
}

/// Where the checksum sent to Proxmox came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumSource {
    Sidecar,
    Computed,
}

/// The sidecar `<file>.sha256` (`sha256sum` format, `<hex>  <name>`): `None` if absent,
/// `Some(Err)` if present but unusable (it is then ignored with a warning).
pub fn read_sidecar(path: &Path, file_name: &str) -> Option<Result<String, String>> {
    let mut side = path.as_os_str().to_owned();
    side.push(".sha256");
    let side = PathBuf::from(side);
    let text = std::fs::read_to_string(&side).ok()?;
    Some(parse_sidecar(&text, file_name).map_err(|e| format!("{}: {e}", side.display())))
}

pub fn parse_sidecar(text: &str, file_name: &str) -> Result<String, String> {
    let line = text.lines().next().unwrap_or("").trim();
    let (hash, name) = line
        .split_once(char::is_whitespace)
        .map(|(h, n)| (h, n.trim().trim_start_matches('*')))
        .unwrap_or((line, ""));
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not a sha256sum line (64 hex digits, two spaces, the file name)".into());
    }
    if !name.is_empty() && name.rsplit('/').next() != Some(file_name) {
        return Err(format!("it is for '{name}', not '{file_name}'"));
    }
    Ok(hash.to_ascii_lowercase())
}

/// sha256 of a file, streaming, on a blocking thread.
pub async fn sha256_file(path: &Path, progress: Option<Progress>) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            if let Some(p) = &progress {
                p.inc(n as u64);
            }
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A node to upload to, after its checks passed.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub storage: StorageInfo,
}

fn candidates(list: &[StorageInfo], storage: &str) -> Vec<String> {
    list.iter()
        .filter(|s| s.holds("vztmpl") && s.enabled && s.storage != storage)
        .map(|s| s.storage.clone())
        .collect()
}

/// Checks one node: its storage, and that the volid is absent.
pub async fn preflight(
    client: &Client,
    node: &str,
    storage: &str,
    local: &LocalTemplate,
) -> Result<Target, ProxmoxError> {
    let list = match client.storages(node).await {
        Err(ProxmoxError::Api { reason, .. }) if reason.contains("hostname lookup") => {
            return Err(ProxmoxError::UnknownNode {
                node: node.into(),
                detail: reason,
            });
        }
        other => other?,
    };
    let Some(info) = list.iter().find(|s| s.storage == storage).cloned() else {
        if list.is_empty() {
            return Err(ProxmoxError::StorageInvisible {
                storage: storage.into(),
                node: node.into(),
                token_id: client.token_id().to_string(),
            });
        }
        let c = candidates(&list, storage);
        return Err(ProxmoxError::UnknownStorage {
            storage: storage.into(),
            node: node.into(),
            available: if c.is_empty() {
                " (the token sees no storage with container templates there)".into()
            } else {
                format!(
                    " (storages with container templates there: {})",
                    c.join(", ")
                )
            },
        });
    };
    if !info.enabled {
        return Err(ProxmoxError::StorageUnusable {
            storage: storage.into(),
            node: node.into(),
            state: "disabled, or not available on this node".into(),
            fix: format!(
                "enable it for node '{node}' (Datacenter → Storage → {storage}: Enable, Nodes; or `pvesm set {storage} --disable 0`), or choose another storage"
            ),
        });
    }
    if !info.holds("vztmpl") {
        let c = candidates(&list, storage);
        return Err(ProxmoxError::NoTemplateContent {
            storage: storage.into(),
            node: node.into(),
            content: if info.content.is_empty() {
                "none".into()
            } else {
                info.content.join(",")
            },
            candidates: if c.is_empty() {
                String::new()
            } else {
                format!(
                    "; storages with container templates there: {}",
                    c.join(", ")
                )
            },
        });
    }
    if !info.active {
        return Err(ProxmoxError::StorageUnusable {
            storage: storage.into(),
            node: node.into(),
            state: "not active (an unmounted share, or unreachable)".into(),
            fix: format!("check `pvesm status --storage {storage}` on the node"),
        });
    }
    // A storage reporting no size (total 0) reports no free space either.
    if let (Some(total), Some(avail)) = (info.total, info.avail)
        && total > 0
        && avail < local.size
    {
        return Err(ProxmoxError::DiskFull {
            node: node.into(),
            storage: storage.into(),
            detail: format!(
                "storage '{storage}' has {} free, the template needs {} (checked before uploading)",
                human_bytes(avail),
                human_bytes(local.size)
            ),
        });
    }
    let vid = volid(storage, &local.remote_name);
    if let Some(t) = find(&client.list_templates(node, storage).await?, &vid) {
        return Err(ProxmoxError::AlreadyExists {
            volid: vid,
            node: node.into(),
            size: t.size,
        });
    }
    Ok(Target {
        node: node.to_owned(),
        storage: info,
    })
}

fn find<'a>(list: &'a [RemoteTemplate], volid: &str) -> Option<&'a RemoteTemplate> {
    list.iter().find(|t| t.volid == volid)
}

/// Keeps one target per shared storage (the first node given); all local storages stay.
pub fn dedupe_shared(targets: Vec<Target>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for t in targets {
        if t.storage.shared
            && out
                .iter()
                .any(|o| o.storage.shared && o.storage.storage == t.storage.storage)
        {
            continue;
        }
        out.push(t);
    }
    out
}

/// What one upload shares with the others running at the same time.
pub struct Shared<'a> {
    pub client: &'a Client,
    pub local: &'a LocalTemplate,
    pub sha256: &'a str,
    pub source: ChecksumSource,
    pub progress: Progress,
    /// File bytes sent by all uploads' current attempts (drives the one progress bar).
    pub done: Arc<AtomicU64>,
    pub ui: &'a Ui,
    pub retries: u32,
    pub deadline: Duration,
}

/// Uploads to one target, follows the task, reads the result back.
pub async fn upload_one(sh: &Shared<'_>, target: &Target) -> Result<UploadReport, ProxmoxError> {
    let started = Instant::now();
    let deadline = started + sh.deadline;
    let node = target.node.as_str();
    let storage = target.storage.storage.as_str();
    let vid = volid(storage, &sh.local.remote_name);
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(15))
            .with_max_times(sh.retries as usize)
            .with_jitter(),
    );
    let mut attempt = 0u32;
    let upid = loop {
        attempt += 1;
        if attempt > 1
            && let Some(t) = find(&sh.client.list_templates(node, storage).await?, &vid)
        {
            return Err(ProxmoxError::AnswerLost {
                node: node.into(),
                detail: "an earlier attempt broke off".into(),
                state: format!(
                    "{vid} is now present ({} bytes) although no attempt got an answer; lxcforge cannot say it is intact",
                    t.size
                ),
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let body = MultipartBody::new(
            &fresh_boundary(&vid),
            &sh.local.remote_name,
            sh.sha256,
            sh.local.size,
        );
        let sent = Arc::new(AtomicU64::new(0));
        let this_attempt = Arc::new(AtomicU64::new(0));
        let (done, progress, mine) = (sh.done.clone(), sh.progress.clone(), this_attempt.clone());
        let result = sh
            .client
            .post_upload(
                node,
                storage,
                &body,
                &sh.local.path,
                sent.clone(),
                move |n| {
                    mine.fetch_add(n, Ordering::Relaxed);
                    progress.set(done.fetch_add(n, Ordering::Relaxed) + n);
                },
                remaining,
            )
            .await;
        match result {
            Ok(upid) => break upid,
            Err(PostError::Answered(e)) => return Err(map_upload_answer(e, node, storage, sh)),
            Err(PostError::NoAnswer { tls: Some(e), .. }) => return Err(e),
            Err(PostError::NoAnswer {
                detail, timed_out, ..
            }) => {
                let went_out = sent.load(Ordering::Relaxed);
                let total = body.content_length();
                sh.done
                    .fetch_sub(this_attempt.load(Ordering::Relaxed), Ordering::Relaxed);
                if timed_out && Instant::now() >= deadline {
                    return Err(ProxmoxError::Timeout {
                        what: format!(
                            "uploading {} to node '{node}' ({} of {} sent)",
                            sh.local.file_name,
                            human_bytes(went_out),
                            human_bytes(total)
                        ),
                        after: sh.deadline,
                        fix: "raise --upload-timeout (the default allows 5 minutes plus 1 MiB/s)"
                            .into(),
                    });
                }
                if went_out >= total {
                    // Every byte went out: a task may be running. Never send it twice.
                    let state = match sh.client.list_templates(node, storage).await {
                        Ok(l) => match find(&l, &vid) {
                            Some(t) => format!(
                                "{vid} is present ({} bytes), but its task was not seen",
                                t.size
                            ),
                            None => format!("{vid} is not on the storage (yet)"),
                        },
                        Err(e) => format!(
                            "the storage could not be read back: {}",
                            e.to_string().lines().next().unwrap_or("")
                        ),
                    };
                    return Err(ProxmoxError::AnswerLost {
                        node: node.into(),
                        detail,
                        state,
                    });
                }
                // The body did not get out in full, so Proxmox started nothing: safe to resend,
                // unless the cut was Proxmox refusing the token (it closes early on 401/403).
                if let Some(e) = diagnose_cut(sh.client, storage).await {
                    return Err(e);
                }
                let Some(delay) = delays.next() else {
                    return Err(ProxmoxError::ConnectionCut {
                        url: sh.client.base_url().to_string(),
                        node: node.into(),
                        storage: storage.into(),
                        sent: went_out,
                        total,
                        detail: format!("{detail}; tried {attempt} times"),
                    });
                };
                if Instant::now() + delay >= deadline {
                    return Err(ProxmoxError::ConnectionCut {
                        url: sh.client.base_url().to_string(),
                        node: node.into(),
                        storage: storage.into(),
                        sent: went_out,
                        total,
                        detail: format!("{detail}; no time left for another attempt"),
                    });
                }
                sh.ui.warn(format!(
                    "node '{node}': the upload broke off after {} of {} ({}); the task cannot have started, sending again in {delay:.1?}",
                    human_bytes(went_out),
                    human_bytes(total),
                    detail.lines().next().unwrap_or("")
                ));
                tokio::time::sleep(delay).await;
            }
        }
    };

    let task_node = upid_node(&upid).unwrap_or(node).to_owned();
    sh.ui.info(format!(
        "node '{node}': task {upid} started on '{task_node}'"
    ));
    let exit = follow_task(sh.client, &task_node, &upid, deadline, sh.deadline).await?;
    if exit != "OK" {
        return Err(task_failure(sh, node, storage, &task_node, &upid, &exit).await);
    }

    let list = sh.client.list_templates(node, storage).await?;
    let verify = |problem: String| ProxmoxError::VerifyFailed {
        volid: vid.clone(),
        node: node.into(),
        storage: storage.into(),
        problem,
    };
    match find(&list, &vid) {
        None => return Err(verify("not in the storage's content listing".into())),
        Some(t) if t.size != sh.local.size => {
            return Err(verify(format!(
                "{} bytes on the storage, but the local file has {}",
                t.size, sh.local.size
            )));
        }
        Some(_) => {}
    }
    Ok(UploadReport {
        node: node.into(),
        storage: storage.into(),
        volid: vid,
        size: sh.local.size,
        sha256: sh.sha256.to_owned(),
        upid,
        duration_secs: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        shared: target.storage.shared,
    })
}

/// After a cut mid-upload: is the token refused (Proxmox answers an early 401/403 on the
/// upload URL by closing the connection once its buffer is full)? `None` when nothing says so.
async fn diagnose_cut(client: &Client, storage: &str) -> Option<ProxmoxError> {
    if let Err(e @ ProxmoxError::Auth { .. }) = client.version().await {
        return Some(e);
    }
    let path = format!("/storage/{storage}");
    let privs = client.privileges(&path).await?;
    if privs.iter().any(|p| p == "Datastore.AllocateTemplate") {
        return None;
    }
    Some(ProxmoxError::Forbidden {
        action: "to upload".into(),
        reason: format!(
            "(the upload's connection was closed early; GET /access/permissions shows no Datastore.AllocateTemplate on {path})"
        ),
        token_id: client.token_id().to_string(),
        userid: client.token_id().userid(),
        storage: storage.into(),
    })
}

/// An answer to the POST other than a UPID, in the user's terms.
fn map_upload_answer(e: ProxmoxError, node: &str, storage: &str, sh: &Shared<'_>) -> ProxmoxError {
    match e {
        ProxmoxError::Api {
            status,
            ref reason,
            ref message,
            ..
        } => {
            let all = format!("{reason} {message}");
            if status == 400 && all.contains("wrong file extension") {
                return ProxmoxError::WrongExtension {
                    name: sh.local.remote_name.clone(),
                    server: format!(
                        " (node '{node}' refused it: {status} {reason}{message}; older Proxmox releases accept fewer extensions: .tar.bz2 from 8.2, .tar from 9.x)"
                    ),
                };
            }
            if mentions_disk_full(&all) {
                return ProxmoxError::DiskFull {
                    node: node.into(),
                    storage: storage.into(),
                    detail: format!("{status} {reason}{message}"),
                };
            }
            if all.contains("does not exist") && all.contains(storage) {
                return ProxmoxError::UnknownStorage {
                    storage: storage.into(),
                    node: node.into(),
                    available: format!(" (the upload was refused: {status} {reason})"),
                };
            }
            if all.contains("does not support 'vztmpl'") {
                return ProxmoxError::NoTemplateContent {
                    storage: storage.into(),
                    node: node.into(),
                    content: "without vztmpl".into(),
                    candidates: format!(" (the upload was refused: {status} {reason})"),
                };
            }
            ProxmoxError::Api {
                what: format!(
                    "uploading {} to storage '{storage}' of node '{node}'",
                    sh.local.file_name
                ),
                status,
                reason: reason.clone(),
                message: message.clone(),
                fix: format!(
                    "nothing was stored (Proxmox starts no task when it answers like this); {}",
                    if status >= 500 {
                        "the node's syslog (journalctl -u pveproxy -u pvedaemon) has the details"
                    } else {
                        "correct what the answer names"
                    }
                ),
            }
        }
        ProxmoxError::Forbidden {
            reason,
            token_id,
            userid,
            storage,
            ..
        } => ProxmoxError::Forbidden {
            action: "to upload".into(),
            reason,
            token_id,
            userid,
            storage,
        },
        other => other,
    }
}

/// Polls the task until it stops; returns its exit status. `no such task` right after the
/// upload means it is not registered yet and is retried for a while.
async fn follow_task(
    client: &Client,
    task_node: &str,
    upid: &str,
    deadline: Instant,
    budget: Duration,
) -> Result<String, ProxmoxError> {
    let mut delay = Duration::from_millis(100);
    let mut seen = false;
    let mut missing = 0u32;
    const MAX_MISSING: u32 = 20;
    loop {
        match client.task_status(task_node, upid).await {
            Ok(st) => {
                seen = true;
                if !st.running {
                    return Ok(st
                        .exitstatus
                        .unwrap_or_else(|| "stopped without an exit status".into()));
                }
            }
            Err(e) if is_no_such_task(&e) && !seen && missing < MAX_MISSING => missing += 1,
            Err(e) if is_no_such_task(&e) => {
                return Err(ProxmoxError::TaskFailed {
                    task_node: task_node.into(),
                    upid: upid.into(),
                    exitstatus: format!(
                        "node '{task_node}' does not know the task ({})",
                        if seen { "it vanished" } else { "asked for it repeatedly" }
                    ),
                    log: String::new(),
                    fix: "look at the node's task list (type imgcopy) and the storage's content; run the upload again, which refuses if the template arrived".into(),
                });
            }
            Err(e) => return Err(e),
        }
        if Instant::now() + delay >= deadline {
            return Err(ProxmoxError::Timeout {
                what: format!("waiting for task {upid} on node '{task_node}'"),
                after: budget,
                fix: "the task goes on running on the node: watch it there (Task History); raise --upload-timeout for large templates or slow storage".into(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(1));
    }
}

async fn task_failure(
    sh: &Shared<'_>,
    node: &str,
    storage: &str,
    task_node: &str,
    upid: &str,
    exit: &str,
) -> ProxmoxError {
    let tail = sh.client.task_log_tail(task_node, upid, 12).await;
    if exit.to_ascii_lowercase().contains("checksum mismatch") {
        let (diagnosis, fix) = match sha256_file(&sh.local.path, None).await {
            Ok(now) if now == sh.sha256 => (
                format!(
                    "the local file still has sha256 {now}, the checksum that was sent, so the bytes changed on the way (a proxy rewriting the body, a network or memory fault)"
                ),
                "run the upload again; if it happens again, bypass any proxy between here and the node".to_owned(),
            ),
            Ok(now) => match sh.source {
                ChecksumSource::Sidecar => (
                    format!(
                        "the local file's sha256 is {now}, but its .sha256 sidecar says {}: the file changed on disk after it was built",
                        sh.sha256
                    ),
                    "build it again (make image.build-next); never edit an artifact in place".to_owned(),
                ),
                ChecksumSource::Computed => (
                    format!("the local file changed while it was being uploaded (sha256 {} before, {now} now)", sh.sha256),
                    "do not modify the file during the upload; run it again".to_owned(),
                ),
            },
            Err(e) => (
                format!("the local file cannot be read again to compare ({e})"),
                "check the local file and run the upload again".to_owned(),
            ),
        };
        return ProxmoxError::ChecksumMismatch {
            node: node.into(),
            upid: upid.into(),
            exitstatus: exit.into(),
            diagnosis,
            fix,
        };
    }
    if mentions_disk_full(exit) || tail.iter().any(|l| mentions_disk_full(l)) {
        return ProxmoxError::DiskFull {
            node: node.into(),
            storage: storage.into(),
            detail: format!("task {upid} ended with: {exit}\n{}", format_log_tail(&tail)),
        };
    }
    ProxmoxError::TaskFailed {
        task_node: task_node.into(),
        upid: upid.into(),
        exitstatus: exit.into(),
        log: format_log_tail(&tail),
        fix: "the task log above says why; Proxmox removes what it copied when the task fails, so nothing was stored".into(),
    }
}

/// A failed node, for the summary.
#[derive(Debug)]
pub struct NodeFailure {
    pub node: String,
    pub error: ProxmoxError,
}

/// The result of a whole run: verified uploads and failures.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reports: Vec<UploadReport>,
    pub failures: Vec<NodeFailure>,
    pub sha256: Option<String>,
    pub sha256_source: Option<ChecksumSource>,
}

/// Checks everything, uploads to every node concurrently, verifies. An error before any
/// upload (settings, local file, authentication, any node's checks) stops all of them.
pub async fn run(
    settings: &Settings,
    client: &Client,
    local: &LocalTemplate,
    ui: &Ui,
) -> Result<Outcome, Vec<NodeFailure>> {
    let one = |e: ProxmoxError| {
        vec![NodeFailure {
            node: String::new(),
            error: e,
        }]
    };
    let version = client.version().await.map_err(one)?;
    ui.info(format!(
        "Proxmox VE {} at {} accepts token {}{}",
        version.version,
        client.base_url(),
        client.token_id(),
        client
            .server_fingerprint()
            .map(|f| format!(" (certificate {f})"))
            .unwrap_or_default()
    ));
    if let Some((major, minor)) = version.major_minor() {
        let lower = local.remote_name.to_ascii_lowercase();
        if lower.ends_with(".tar") && major < 9 {
            ui.warn(format!(
                "Proxmox VE {} may refuse a plain .tar template (accepted since libpve-storage-perl 9.0.15)",
                version.version
            ));
        }
        if lower.ends_with(".tar.bz2") && (major, minor) < (8, 2) {
            ui.warn(format!(
                "Proxmox VE {} may refuse a .tar.bz2 template (accepted since libpve-storage-perl 8.2.6)",
                version.version
            ));
        }
    }
    if local.remote_name != local.file_name {
        ui.info(format!(
            "Proxmox stores '{}' as '{}' (it replaces characters outside [A-Za-z0-9_.-])",
            local.file_name, local.remote_name
        ));
    }

    // The checksum (sidecar, or a streaming pass) while the nodes are checked.
    let checksum = async {
        match read_sidecar(&local.path, &local.file_name) {
            Some(Ok(h)) => Ok((h, ChecksumSource::Sidecar)),
            other => {
                if let Some(Err(e)) = other {
                    ui.warn(format!("ignoring the sidecar: {e}"));
                }
                let p = ui.bytes("sha256", Some(local.size));
                let r = sha256_file(&local.path, Some(p.clone())).await;
                p.finish();
                r.map(|h| (h, ChecksumSource::Computed))
                    .map_err(|e| ProxmoxError::LocalFile {
                        path: local.path.clone(),
                        detail: format!("cannot read it to hash it ({e})"),
                        fix: "check the file".into(),
                    })
            }
        }
    };
    let checks = futures_util::future::join_all(settings.nodes.iter().map(|n| async move {
        (
            n.clone(),
            preflight(client, n, &settings.storage, local).await,
        )
    }));
    let (checksum, checks) = tokio::join!(checksum, checks);
    let mut failures = Vec::new();
    let mut targets = Vec::new();
    for (node, r) in checks {
        match r {
            Ok(t) => targets.push(t),
            Err(error) => failures.push(NodeFailure { node, error }),
        }
    }
    let (sha256, source) = match checksum {
        Ok(c) => c,
        Err(e) => {
            failures.push(NodeFailure {
                node: String::new(),
                error: e,
            });
            return Err(failures);
        }
    };
    if !failures.is_empty() {
        return Err(failures);
    }
    for t in &targets {
        let s = &t.storage;
        ui.info(format!(
            "node '{}': storage '{}' ({}{}{}) is ready, {} is not there yet",
            t.node,
            s.storage,
            s.kind,
            if s.shared { ", shared" } else { "" },
            s.avail
                .map(|a| format!(", {} free", human_bytes(a)))
                .unwrap_or_default(),
            volid(&s.storage, &local.remote_name)
        ));
    }
    let targets = dedupe_shared(targets);
    if targets.iter().any(|t| t.storage.shared) && settings.nodes.len() > 1 {
        ui.info(format!(
            "storage '{}' is shared: one upload serves every node",
            settings.storage
        ));
    }
    ui.info(format!(
        "sha256 {sha256} ({})",
        match source {
            ChecksumSource::Sidecar => "from the .sha256 sidecar; Proxmox's task verifies it",
            ChecksumSource::Computed => "computed; Proxmox's task verifies it",
        }
    ));

    let progress = ui.bytes("upload", Some(local.size * targets.len() as u64));
    let shared = Shared {
        client,
        local,
        sha256: &sha256,
        source: source.clone(),
        progress: progress.clone(),
        done: Arc::new(AtomicU64::new(0)),
        ui,
        retries: settings.retries,
        deadline: settings.timeouts.upload_for(local.size),
    };
    let results = futures_util::future::join_all(targets.iter().map(|t| {
        let shared = &shared;
        async move { (t.node.clone(), upload_one(shared, t).await) }
    }))
    .await;
    progress.finish();
    let mut outcome = Outcome {
        sha256: Some(sha256.clone()),
        sha256_source: Some(source),
        ..Outcome::default()
    };
    for (node, r) in results {
        match r {
            Ok(rep) => outcome.reports.push(rep),
            Err(error) => outcome.failures.push(NodeFailure { node, error }),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_follow_proxmox() {
        for ok in [
            "a.tar.gz",
            "a.TAR.GZ",
            "debian-12-lxc-rootfs-v3.tar.zst",
            "a.tar.xz",
            "a.tar.bz2",
            "a.tar",
        ] {
            assert!(vztmpl_extension_ok(ok), "{ok}");
        }
        for bad in [
            ".tar.gz",
            "a.tgz",
            "a.tar.lzo",
            "a.tar.zstd",
            "a.txz",
            "a.gz",
            "a.tar.gz.part",
            "tar",
        ] {
            assert!(!vztmpl_extension_ok(bad), "{bad}");
        }
    }

    #[test]
    fn names_normalise_like_pve_storage() {
        assert_eq!(
            normalize_content_filename("my template+v1.tar.zst"),
            "my_template_v1.tar.zst"
        );
        assert_eq!(normalize_content_filename("C:\\x\\y.tar.gz"), "y.tar.gz");
        assert_eq!(normalize_content_filename("/a/b/c.tar.gz"), "c.tar.gz");
        assert_eq!(
            normalize_content_filename("debian-12_v1.tar.gz"),
            "debian-12_v1.tar.gz"
        );
        assert_eq!(volid("local", "x.tar.gz"), "local:vztmpl/x.tar.gz");
    }

    #[test]
    fn local_checks_refuse_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tgz");
        std::fs::write(&p, b"x").unwrap();
        let e = check_local(&p).unwrap_err();
        assert!(matches!(e, ProxmoxError::WrongExtension { .. }), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(".tar.zst"), "{e}");
        let p = dir.path().join("empty.tar.gz");
        std::fs::write(&p, b"").unwrap();
        assert!(check_local(&p).unwrap_err().to_string().contains("empty"));
        assert!(check_local(&dir.path().join("none.tar.gz")).is_err());
        let p = dir.path().join("my t.tar.gz");
        std::fs::write(&p, b"abc").unwrap();
        let l = check_local(&p).unwrap();
        assert_eq!((l.remote_name.as_str(), l.size), ("my_t.tar.gz", 3));
    }

    #[test]
    fn sidecars_must_name_the_file() {
        let h = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        assert_eq!(
            parse_sidecar(&format!("{h}  a.tar.gz\n"), "a.tar.gz").unwrap(),
            h.to_lowercase()
        );
        assert_eq!(
            parse_sidecar(&format!("{h} *a.tar.gz\n"), "a.tar.gz").unwrap(),
            h.to_lowercase()
        );
        assert_eq!(parse_sidecar(h, "a.tar.gz").unwrap(), h.to_lowercase());
        assert!(parse_sidecar(&format!("{h}  b.tar.gz"), "a.tar.gz").is_err());
        assert!(parse_sidecar("abc  a.tar.gz", "a.tar.gz").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar.gz");
        std::fs::write(&p, b"x").unwrap();
        assert!(read_sidecar(&p, "a.tar.gz").is_none());
        std::fs::write(
            dir.path().join("a.tar.gz.sha256"),
            crate::artifact::sha256_sidecar(&h.to_lowercase(), "a.tar.gz"),
        )
        .unwrap();
        assert_eq!(
            read_sidecar(&p, "a.tar.gz").unwrap().unwrap(),
            h.to_lowercase()
        );
    }

    #[test]
    fn hashing_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"test").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let h = rt.block_on(sha256_file(&p, None)).unwrap();
        assert_eq!(
            h,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_shared_storage_is_uploaded_once() {
        let st = |shared| StorageInfo {
            storage: "s".into(),
            kind: "nfs".into(),
            content: vec!["vztmpl".into()],
            shared,
            enabled: true,
            active: true,
            total: None,
            avail: None,
        };
        let t = |n: &str, shared| Target {
            node: n.into(),
            storage: st(shared),
        };
        let d = dedupe_shared(vec![t("a", true), t("b", true), t("c", true)]);
        assert_eq!(
            d.iter().map(|t| t.node.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        let d = dedupe_shared(vec![t("a", false), t("b", false)]);
        assert_eq!(d.len(), 2);
    }
}
