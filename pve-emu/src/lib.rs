//! A Proxmox VE API emulator for tests and benchmarks.
//!
//! It speaks real TLS on 127.0.0.1 and follows `shared/reference/proxmox-api.md` (cited as
//! "ref §N" in comments) for the calls lxcforge makes: token authentication, the multipart
//! upload of templates, storage and content listings, tasks and content deletion. See the
//! README beside this crate for what is and is not emulated.
//!
//! The emulator runs on its own thread with its own tokio runtime, so a test may block (run a
//! CLI with `std::process::Command`, use a blocking HTTP client) while the emulator serves.

mod api;
mod auth;
mod config;
mod http;
mod json;
pub mod multipart;
mod server;
mod state;
mod tls;
mod upid;
mod version;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{ALL_DATASTORE_PRIVS, AuthReason, Config, StorageConfig, TokenConfig};
pub use upid::{UPID_REGEX, Upid};

/// Faults injected with [`Emulator::inject`]. Each is one-shot: it is consumed when it fires.
/// Several may be queued; they fire in the order they were injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the TCP connection once this many body bytes of an upload were read, no response.
    DropConnectionAfterBodyBytes(u64),
    /// The upload request ends with `500 <msg>` (after reading the body).
    UploadStatus500(String),
    /// The imgcopy task ends `TASK ERROR: <msg>`, nothing stored.
    TaskFails(String),
    /// Flip a byte of the received file, so the in-task checksum fails (or, without checksum,
    /// the stored content differs; an empty upload gets one byte appended).
    CorruptUpload,
    /// The next task stays running this long.
    SlowTask(std::time::Duration),
    /// The first N status polls of the next new task answer 400 `{"upid":"no such task"}`.
    NoSuchTaskFor(u32),
    /// Writing the temp file fails: `500 write to temporary file failed - No space left on device`.
    DiskFull,
    /// The next request whose path contains this string answers 500 once.
    Status500On(String),
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (not unescaped).
    pub path: String,
    /// Header lines in arrival order. The `Authorization` value is redacted to the token id
    /// (`PVEAPIToken=user@realm!id=<redacted>`), anything else in it to `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// Names of the multipart parts in the order they arrived (uploads only).
    pub part_names: Vec<String>,
    /// Body bytes received after the header (may exceed Content-Length; may be short when the
    /// connection dropped).
    pub body_len: u64,
    /// Status code sent, `None` when the connection was closed without a response.
    pub status: Option<u16>,
    /// The reason phrase sent with the status.
    pub reason: Option<String>,
    /// How often pveproxy handed the request to the API handler: 1 normally, 0 when it never
    /// got that far, more when bytes after an upload's closing boundary arrived in a later
    /// read (each run can start another task, ref §11).
    pub handler_runs: u32,
}

impl RecordedRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A task (worker) as the emulated cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub upid: String,
    /// The node that ran the task (the node in the UPID).
    pub node: String,
    /// `imgcopy`, `imgdel`.
    pub kind: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Only when stopped: `OK`, or the error text after `TASK ERROR: `.
    pub exitstatus: Option<String>,
    /// Log lines, without newlines; the last one of a stopped task is `TASK OK`/`TASK ERROR: …`.
    pub log: Vec<String>,
}

/// A running emulator. Dropping it stops the server (like [`Emulator::shutdown`], without
/// waiting).
pub struct Emulator {
    addr: SocketAddr,
    cert_pem: String,
    cert_der: Vec<u8>,
    fingerprint: String,
    shared: Arc<state::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Starts the emulator on its own thread and runtime; returns once it is listening.
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pve-emu".into())
            .spawn(move || server::run_thread(config, tx))?;
        match rx.await {
            Ok(Ok(mut started)) => {
                started.emulator.thread = Some(thread);
                Ok(started.emulator)
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(std::io::Error::other(
                    "pve-emu server thread died while starting",
                ))
            }
        }
    }

    /// Like [`Emulator::start`], for code without an async runtime.
    pub fn start_blocking(config: Config) -> std::io::Result<Emulator> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(Self::start(config))
    }

    /// `https://127.0.0.1:PORT` (no `/api2/json`).
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT/api2/json`, what `PM_API_URL` usually holds.
    pub fn api_url(&self) -> String {
        format!("{}/api2/json", self.base_url())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The self-signed certificate (SAN IP 127.0.0.1, DNS localhost), PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// SHA-256 of the certificate's DER, as Proxmox shows it: `AB:CD:…` (upper-case hex).
    pub fn fingerprint_sha256(&self) -> String {
        self.fingerprint.clone()
    }

    /// Queues a one-shot fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    /// Removes all queued faults.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// On-disk path of a stored vztmpl (`<storage>:vztmpl/<name>` on `node`), if it exists.
    pub fn stored_file(&self, node: &str, storage: &str, name: &str) -> Option<PathBuf> {
        self.shared.stored_file(node, storage, name)
    }

    /// Pre-seeds storage content: writes `template/cache/<name>` of `storage` on `node`.
    pub fn put_file(&self, node: &str, storage: &str, name: &str, bytes: &[u8]) {
        self.shared.put_file(node, storage, name, bytes)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Every task started so far, in order of creation.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.shared.tasks()
    }

    /// Leftover `/var/tmp/pveupload-*` equivalents on every node.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        self.shared.temp_files()
    }

    /// The directory that holds the nodes' storages and temp dirs.
    pub fn data_dir(&self) -> PathBuf {
        self.shared.data_dir.clone()
    }

    /// Waits until no task is running (or the timeout passes); returns whether all stopped.
    pub async fn wait_tasks_idle(&self, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.shared.tasks().iter().all(|t| t.status == "stopped") {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and waits for its thread to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Joining from inside a runtime would block it; the thread ends on its own.
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = thread.join();
            }
        }
    }
}
