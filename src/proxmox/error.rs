//! Errors of the Proxmox client. Each message says what failed, why, and how to fix it. They
//! name the token id where it helps; no variant holds the secret, so none can print it.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// A setting is missing or malformed (the message carries its own fix).
    #[error("{0}")]
    Settings(String),

    #[error("{path}: {detail}\n  fix: {fix}")]
    LocalFile {
        path: PathBuf,
        detail: String,
        fix: String,
    },

    #[error(
        "{name}: Proxmox accepts container templates only as .tar.gz, .tar.zst, .tar.xz, .tar.bz2 or .tar (it picks the decompressor by the name){server}\n  fix: give the file the extension of its real compression (`lxcforge validate FILE` tells which); .tgz and .tar.lzo are never accepted"
    )]
    WrongExtension { name: String, server: String },

    #[error(
        "TLS: the certificate of {host} is not accepted: {reason}\n  the server presented a certificate with SHA-256 fingerprint {fingerprint}\n  fix: {fix}"
    )]
    Tls {
        host: String,
        reason: String,
        fingerprint: String,
        fix: String,
    },

    #[error("cannot connect to {url}: {detail}\n  fix: {fix}")]
    Connect {
        url: String,
        detail: String,
        fix: String,
    },

    #[error("{what} timed out after {}\n  fix: {fix}", humantime::format_duration(*.after))]
    Timeout {
        what: String,
        after: Duration,
        fix: String,
    },

    #[error(
        "authentication failed: {url} answered 401 {reason} (Proxmox gives no details: the body of a 401 is empty)\n  sent: {sent}\n  cause: the token id or secret is wrong, the token or its user does not exist, is disabled or expired, or token id and secret were swapped or mixed up\n  fix: the token is written user@realm!tokenid (e.g. automation@pve!ci), and its secret is the UUID shown once when the token was made: PM_API_TOKEN_ID='user@realm!tokenid' and PM_API_TOKEN_SECRET=<uuid> (or --token-secret-file), or PROXMOX_VE_API_TOKEN='user@realm!tokenid=<uuid>'; `pveum user token list {userid}` lists the user's tokens"
    )]
    Auth {
        url: String,
        reason: String,
        token_id: String,
        userid: String,
        /// What was sent, the secret replaced by its length and shape.
        sent: String,
    },

    #[error(
        "permission denied {action}: Proxmox answered 403 {reason} to token '{token_id}'\n  cause: API tokens have privilege separation on by default: a token holds only the privileges granted to the token itself, and of those only the ones its user {userid} also holds; lxcforge needs Datastore.AllocateTemplate (to upload) and Datastore.Audit (to check the storage and read the upload back) on /storage/{storage}\n  fix: grant both the user and the token a role with these, e.g. PVEDatastoreAdmin: `pveum acl modify /storage/{storage} --users {userid} --roles PVEDatastoreAdmin` and `pveum acl modify /storage/{storage} --tokens '{token_id}' --roles PVEDatastoreAdmin` (or make the token without privilege separation: --privsep 0)"
    )]
    Forbidden {
        action: String,
        reason: String,
        token_id: String,
        userid: String,
        storage: String,
    },

    #[error(
        "storage '{storage}' does not exist on node '{node}'{available}\n  fix: pass --storage (or PM_STORAGE) naming a storage with container templates on that node"
    )]
    UnknownStorage {
        storage: String,
        node: String,
        available: String,
    },

    #[error(
        "storage '{storage}' on node '{node}' is not listed for token '{token_id}': it may exist, but the token cannot see it\n  fix: grant the token and its user Datastore.Audit on /storage/{storage} (PVEDatastoreAdmin holds it with Datastore.AllocateTemplate): `pveum acl modify /storage/{storage} --tokens '{token_id}' --roles PVEDatastoreAdmin`"
    )]
    StorageInvisible {
        storage: String,
        node: String,
        token_id: String,
    },

    #[error(
        "storage '{storage}' on node '{node}' does not hold container templates (its content types: {content}){candidates}\n  fix: add 'Container template' to its content (Datacenter → Storage → {storage} → Content, or `pvesm set {storage} --content {content},vztmpl`), or choose a storage that holds vztmpl"
    )]
    NoTemplateContent {
        storage: String,
        node: String,
        content: String,
        candidates: String,
    },

    #[error(
        "node '{node}' is not known to the cluster behind the API URL ({detail})\n  fix: pass --node (or PM_NODE) with node names as the GUI's tree or `pvecm nodes` shows them"
    )]
    UnknownNode { node: String, detail: String },

    #[error("storage '{storage}' on node '{node}' is {state}\n  fix: {fix}")]
    StorageUnusable {
        storage: String,
        node: String,
        state: String,
        fix: String,
    },

    #[error(
        "{volid} already exists on node '{node}' ({size} bytes); lxcforge never replaces a template (Proxmox's upload would overwrite it silently)\n  fix: upload the next version (make image.build-next), or remove the old one first if that is really meant: `pvesm free {volid}`"
    )]
    AlreadyExists {
        volid: String,
        node: String,
        size: u64,
    },

    #[error(
        "the connection to {url} was cut while uploading to node '{node}', after {sent} of {total} bytes ({detail})\n  cause: Proxmox closes the connection without an answer when it refuses an upload early (a bad token, or a token without Datastore.AllocateTemplate on /storage/{storage}), when its upload buffer /var/tmp fills up, or the network or a proxy broke off\n  fix: check the token's privileges on /storage/{storage} and the free space in /var/tmp on the node serving the API; nothing was stored"
    )]
    ConnectionCut {
        url: String,
        node: String,
        storage: String,
        sent: u64,
        total: u64,
        detail: String,
    },

    #[error(
        "the whole upload went out to node '{node}', but the connection closed before it answered ({detail})\n  cause: Proxmox may have started the copy anyway; lxcforge does not send the file again in that case\n  state: {state}\n  fix: check the node's task list (Datacenter → node → Task History, type imgcopy) and the storage's content, then run the upload again: it refuses if the template arrived"
    )]
    AnswerLost {
        node: String,
        detail: String,
        state: String,
    },

    #[error(
        "node '{node}' ran out of disk space during the upload: {detail}\n  fix: free space in /var/tmp on the node serving the API (Proxmox buffers the whole upload there first) and on storage '{storage}'; nothing was stored"
    )]
    DiskFull {
        node: String,
        storage: String,
        detail: String,
    },

    #[error("{what}: {status} {reason}{message}\n  fix: {fix}")]
    Api {
        what: String,
        status: u16,
        reason: String,
        /// The JSON `message`/`errors`, if any, as `: …`.
        message: String,
        fix: String,
    },

    #[error(
        "the upload task on node '{task_node}' failed: {exitstatus}\n  task: {upid}\n  task log (last lines):\n{log}\n  fix: {fix}"
    )]
    TaskFailed {
        task_node: String,
        upid: String,
        exitstatus: String,
        log: String,
        fix: String,
    },

    #[error(
        "the template arrived corrupted on node '{node}': {exitstatus}\n  {diagnosis}\n  Proxmox discarded it: nothing was stored\n  task: {upid}\n  fix: {fix}"
    )]
    ChecksumMismatch {
        node: String,
        upid: String,
        exitstatus: String,
        diagnosis: String,
        fix: String,
    },

    #[error(
        "{volid}: {problem} on node '{node}' after the task reported OK\n  fix: look at the storage (`pvesm list {storage} --content vztmpl` on the node); lxcforge recorded no upload"
    )]
    VerifyFailed {
        volid: String,
        node: String,
        storage: String,
        problem: String,
    },

    #[error("{what}: unexpected answer from Proxmox: {detail}")]
    Protocol { what: String, detail: String },
}

impl ProxmoxError {
    /// Exit code: 2 for settings and local input (nothing was tried), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProxmoxError::Settings(_)
            | ProxmoxError::LocalFile { .. }
            | ProxmoxError::WrongExtension { .. } => 2,
            _ => 1,
        }
    }

    /// Worth trying again (idempotent calls only): connection trouble other than TLS, timeouts,
    /// 5xx from a proxy or an overloaded daemon.
    pub fn is_transient(&self) -> bool {
        match self {
            ProxmoxError::Connect { .. } | ProxmoxError::Timeout { .. } => true,
            ProxmoxError::Api { status, reason, .. } => {
                *status >= 500 && !reason.contains("hostname lookup")
            }
            _ => false,
        }
    }
}

/// Indents the last lines of a task log for an error message.
pub fn format_log_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return "    (the task log is empty)".to_owned();
    }
    lines
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a message from Proxmox (HTTP reason, JSON message, task status) means a full disk.
pub fn mentions_disk_full(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("no space left on device")
        || l.contains("enospc")
        || l.contains("disk quota exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_why_and_fix() {
        let e = ProxmoxError::Auth {
            url: "https://pve:8006/api2/json/version".into(),
            reason: "Authentication failed!".into(),
            token_id: "automation@pve!ci".into(),
            userid: "automation@pve".into(),
            sent: "Authorization: PVEAPIToken=automation@pve!ci=<secret: 36 characters, shaped like the UUID Proxmox issues> (the token id from PM_API_TOKEN_ID, the secret from PM_API_TOKEN_SECRET)".into(),
        };
        let m = e.to_string();
        assert!(m.contains("401 Authentication failed!"), "{m}");
        assert!(
            m.contains("PVEAPIToken=automation@pve!ci=<secret: 36"),
            "{m}"
        );
        assert!(m.contains("user@realm!tokenid"), "{m}");
        assert!(m.contains("\n  fix: "), "{m}");

        let e = ProxmoxError::Forbidden {
            action: "uploading".into(),
            reason: "Permission check failed (/storage/local, Datastore.AllocateTemplate)".into(),
            token_id: "automation@pve!ci".into(),
            userid: "automation@pve".into(),
            storage: "local".into(),
        };
        let m = e.to_string();
        assert!(m.contains("privilege separation") && m.contains("Datastore.AllocateTemplate"));
        assert!(m.contains("/storage/local"));
        assert!(m.contains("--tokens 'automation@pve!ci'"), "{m}");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn transient_errors_are_only_the_retryable_ones() {
        let api = |status| ProxmoxError::Api {
            what: "x".into(),
            status,
            reason: "r".into(),
            message: String::new(),
            fix: "f".into(),
        };
        assert!(api(503).is_transient());
        assert!(api(596).is_transient());
        assert!(!api(400).is_transient());
        assert!(!api(401).is_transient());
        assert!(
            !ProxmoxError::Tls {
                host: "h".into(),
                reason: "r".into(),
                fingerprint: "f".into(),
                fix: "f".into()
            }
            .is_transient()
        );
    }

    #[test]
    fn disk_full_is_recognised() {
        assert!(mentions_disk_full(
            "write to temporary file failed - No space left on device"
        ));
        assert!(mentions_disk_full(
            "import failed: cp: error writing: ENOSPC"
        ));
        assert!(!mentions_disk_full("checksum mismatch"));
    }

    #[test]
    fn log_tails_are_indented() {
        let t = format_log_tail(&["a".into(), "TASK ERROR: b".into()]);
        assert_eq!(t, "    | a\n    | TASK ERROR: b");
    }
}
