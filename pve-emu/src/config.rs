//! Emulator configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The four storage privileges of the built-in role `PVEDatastoreAdmin` (ref §1.3).
pub const ALL_DATASTORE_PRIVS: [&str; 4] = [
    "Datastore.Allocate",
    "Datastore.AllocateTemplate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
];

/// Which reason phrase a bad or unknown token gets (ref §1.2, §0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthReason {
    /// `401 Authentication failed!` (pve-manager ≥ 9.1.5 and 8.4.17+ on the 8.x branch; the
    /// newest behaviour, the default).
    #[default]
    Unified,
    /// The detailed `verify_token` message, e.g. `401 invalid token value!` (older releases).
    Detailed,
    /// Whichever of the two `pve_version` had.
    ByVersion,
}

/// The emulated cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node that receives requests (UPIDs name it); default "pve".
    pub entry_node: String,
    /// Cluster nodes; default ["pve"]. The entry node is added if missing.
    pub nodes: Vec<String>,
    /// Default: one "local" dir storage, content vztmpl,iso,backup, not shared, on every node.
    pub storages: Vec<StorageConfig>,
    /// Default: one token "automation@pve!ci" with secret
    /// "00000000-0000-4000-8000-000000000001", all privileges on all storages.
    pub tokens: Vec<TokenConfig>,
    /// "8.2.4" default; drives /version and version-dependent behaviour (extension regex,
    /// upload content enum, reason phrases with [`AuthReason::ByVersion`]).
    pub pve_version: String,
    /// Delay of every authentication/upload-privilege failure; default 3 s (ref §2.11).
    pub auth_failure_delay: Duration,
    /// How long an imgcopy/imgdel task stays "running"; default 200 ms.
    pub task_duration: Duration,
    /// Where storages live on disk; None = a tempdir owned by the emulator.
    pub data_dir: Option<PathBuf>,

    // ---- additions ----
    /// Listen address; only 127.0.0.0/8 is accepted. Default 127.0.0.1:0 (ephemeral port).
    pub listen: SocketAddr,
    /// libpve-http-server-perl version whose error shapes and buffer limits are emulated
    /// (ref §0.2, §7). Default "6.0.5" (≥ 5.2.0 shapes, rbuf_max 520 KiB).
    pub http_server_version: String,
    /// Reason phrase of token failures.
    pub auth_reason: AuthReason,
    /// pveproxy's client inactivity timeout (ref §2.11: 5 s).
    pub client_timeout: Duration,
    /// Time between the end of an upload body and the answer from "pvedaemon" (the proxied
    /// call of ref §0.3 step 2). Bytes that arrive in this window after the closing boundary
    /// start another task, as on real Proxmox (ref §11). Default 20 ms.
    pub proxy_latency: Duration,
    /// Seed for the random JSON key / array / content-string orders; None = random.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entry_node: "pve".into(),
            nodes: vec!["pve".into()],
            storages: vec![StorageConfig::dir("local", &["vztmpl", "iso", "backup"])],
            tokens: vec![TokenConfig::full(
                "automation@pve",
                "ci",
                "00000000-0000-4000-8000-000000000001",
            )],
            pve_version: "8.2.4".into(),
            auth_failure_delay: Duration::from_secs(3),
            task_duration: Duration::from_millis(200),
            data_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_server_version: "6.0.5".into(),
            auth_reason: AuthReason::Unified,
            client_timeout: Duration::from_secs(5),
            proxy_latency: Duration::from_millis(20),
            seed: None,
        }
    }
}

/// One storage of `storage.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub id: String,
    /// "dir", "nfs", "cifs", "cephfs", "btrfs" have a path (uploads work); "lvmthin", "lvm",
    /// "zfspool", "rbd", … have none (`can't upload to storage type`).
    pub kind: String,
    pub content: Vec<String>,
    pub shared: bool,
    pub enabled: bool,
    /// None = every node.
    pub nodes: Option<Vec<String>>,
    /// Bytes; reported by the storage listing, and a copy that does not fit fails the task
    /// (`No space left on device`). 0 = report zeros and do not limit.
    pub total: u64,
}

impl StorageConfig {
    /// A directory storage with this content, not shared, enabled, on every node, 100 GiB.
    pub fn dir(id: &str, content: &[&str]) -> StorageConfig {
        StorageConfig {
            id: id.into(),
            kind: "dir".into(),
            content: content.iter().map(|c| c.to_string()).collect(),
            shared: false,
            enabled: true,
            nodes: None,
            total: 100 << 30,
        }
    }

    /// Whether the storage type has a path (ref §2.5 step 3).
    pub fn has_path(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "dir" | "nfs" | "cifs" | "cephfs" | "glusterfs" | "btrfs"
        )
    }

    /// The path Proxmox would use for it (shown in task logs).
    pub fn pve_path(&self) -> String {
        if self.id == "local" && self.kind == "dir" {
            "/var/lib/vz".into()
        } else {
            format!("/mnt/pve/{}", self.id)
        }
    }

    /// Whether the storage is configured for `node` (ref §2.5 step 2).
    pub fn on_node(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == node))
    }
}

/// An API token and its ACLs (privilege separation on: only these privileges count, ref §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// "automation@pve".
    pub user: String,
    /// "ci".
    pub token: String,
    pub secret: String,
    /// (storage id or "*", privilege names). "*" also covers non-storage paths such as
    /// `/nodes/<node>` (for `Sys.Audit`).
    pub privs: Vec<(String, Vec<String>)>,
}

impl TokenConfig {
    /// A token with all four datastore privileges on every storage.
    pub fn full(user: &str, token: &str, secret: &str) -> TokenConfig {
        TokenConfig::with_privs(user, token, secret, "*", &ALL_DATASTORE_PRIVS)
    }

    /// A token with these privileges on `storage` ("*" for all).
    pub fn with_privs(
        user: &str,
        token: &str,
        secret: &str,
        storage: &str,
        privs: &[&str],
    ) -> TokenConfig {
        TokenConfig {
            user: user.into(),
            token: token.into(),
            secret: secret.into(),
            privs: vec![(
                storage.to_string(),
                privs.iter().map(|p| p.to_string()).collect(),
            )],
        }
    }

    /// `user@realm!token`.
    pub fn token_id(&self) -> String {
        format!("{}!{}", self.user, self.token)
    }

    /// Whether the token holds `privilege` on ACL path `path` (`/storage/<id>`, `/nodes/<n>`).
    pub fn has_priv(&self, path: &str, privilege: &str) -> bool {
        let storage = path.strip_prefix("/storage/");
        self.privs.iter().any(|(target, privs)| {
            let applies = target == "*" || storage == Some(target.as_str());
            applies && privs.iter().any(|p| p == privilege)
        })
    }
}
