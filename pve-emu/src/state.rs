//! The emulated cluster's state: storages on disk, tasks, faults, the request log.

use crate::config::{Config, StorageConfig};
use crate::upid::Upid;
use crate::version::Behaviour;
use crate::{Fault, RecordedRequest, TaskRecord};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub log: Vec<String>,
    /// Whether the last log line is still open (printed without "\n").
    pub open_line: bool,
    pub done: bool,
    pub not_before: Instant,
    pub no_such_polls: u32,
}

impl Task {
    pub fn running(&self) -> bool {
        !self.done || Instant::now() < self.not_before
    }

    /// `upid_read_status`: from the last line of the log (ref §4.1).
    pub fn exitstatus(&self) -> String {
        let last = self.log.last().map(String::as_str).unwrap_or("");
        if last == "TASK OK" {
            "OK".into()
        } else if let Some(e) = last.strip_prefix("TASK ERROR: ") {
            e.into()
        } else if let Some(w) = last.strip_prefix("TASK WARNINGS: ") {
            format!("WARNINGS: {w}")
        } else {
            "unexpected status".into()
        }
    }
}

pub struct Shared {
    pub cfg: Config,
    pub beh: Behaviour,
    pub data_dir: PathBuf,
    pub fingerprint: String,
    faults: Mutex<Vec<(u64, Fault)>>,
    next_fault_id: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
    pub tasks: Mutex<Vec<Task>>,
    rng: Mutex<fastrand::Rng>,
    next_pid: AtomicU32,
    tmp_seq: AtomicU64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Perl's `$!` text for an I/O error.
pub fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl Shared {
    pub fn new(cfg: Config, data_dir: PathBuf, fingerprint: String) -> std::io::Result<Shared> {
        let beh = Behaviour::new(&cfg.pve_version, &cfg.http_server_version, cfg.auth_reason);
        let rng = match cfg.seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        };
        let first_pid = 100_000 + rng.clone().u32(0..800_000);
        let shared = Shared {
            cfg,
            beh,
            data_dir,
            fingerprint,
            faults: Mutex::new(Vec::new()),
            next_fault_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            rng: Mutex::new(rng),
            next_pid: AtomicU32::new(first_pid),
            tmp_seq: AtomicU64::new(0),
        };
        for node in shared.cfg.nodes.clone() {
            std::fs::create_dir_all(shared.tmp_dir(&node))?;
            for s in shared.cfg.storages.clone() {
                if s.on_node(&node) && s.has_path() {
                    std::fs::create_dir_all(shared.content_dir(&node, &s, "vztmpl"))?;
                }
            }
        }
        Ok(shared)
    }

    pub fn with_rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        f(&mut self.rng.lock().unwrap())
    }

    pub fn is_member(&self, node: &str) -> bool {
        self.cfg.nodes.iter().any(|n| n == node)
    }

    /// `localhost` means the node that received the request.
    pub fn resolve_node<'a>(&'a self, node: &'a str) -> &'a str {
        if node == "localhost" {
            &self.cfg.entry_node
        } else {
            node
        }
    }

    /// A made-up address for a cluster node, only ever printed (task logs), never contacted.
    pub fn node_ip(&self, node: &str) -> String {
        let i = self.cfg.nodes.iter().position(|n| n == node).unwrap_or(0);
        format!("192.0.2.{}", 10 + i)
    }

    pub fn storage(&self, id: &str) -> Option<&StorageConfig> {
        self.cfg.storages.iter().find(|s| s.id == id)
    }

    // ---- paths ----

    fn node_dir(&self, node: &str) -> PathBuf {
        self.data_dir.join("nodes").join(node)
    }

    pub fn tmp_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("var-tmp")
    }

    /// The storage's directory as seen from `node` (shared storages are one directory).
    pub fn storage_dir(&self, node: &str, s: &StorageConfig) -> PathBuf {
        if s.shared {
            self.data_dir.join("shared").join(&s.id)
        } else {
            self.node_dir(node).join("storage").join(&s.id)
        }
    }

    /// `$vtype_subdirs` (pve-storage Plugin.pm).
    pub fn subdir(content: &str) -> &'static str {
        match content {
            "vztmpl" => "template/cache",
            "iso" => "template/iso",
            "import" => "import",
            "backup" => "dump",
            "snippets" => "snippets",
            "images" => "images",
            _ => "private",
        }
    }

    pub fn content_dir(&self, node: &str, s: &StorageConfig, content: &str) -> PathBuf {
        self.storage_dir(node, s).join(Self::subdir(content))
    }

    /// The Proxmox path of a file (for task logs).
    pub fn pve_content_path(s: &StorageConfig, content: &str, name: &str) -> String {
        format!("{}/{}/{}", s.pve_path(), Self::subdir(content), name)
    }

    /// A new temp file name: `pveupload-` + md5_hex($seq . time() . $$) (ref §2.12).
    pub fn new_tmp_name(&self) -> String {
        use md5::{Digest, Md5};
        let seq = self.tmp_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let input = format!("{seq}{}{}", unix_now(), std::process::id());
        format!("pveupload-{}", hex::encode(Md5::digest(input.as_bytes())))
    }

    /// Maps `/var/tmp/pveupload-…` of `node` to the emulator's file.
    pub fn real_tmp_path(&self, node: &str, virt: &str) -> Option<PathBuf> {
        let name = virt.strip_prefix("/var/tmp/")?;
        (!name.contains('/')).then(|| self.tmp_dir(node).join(name))
    }

    /// Bytes used by files under the storage directory.
    pub fn storage_used(&self, node: &str, s: &StorageConfig) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        if !s.has_path() {
            return 0;
        }
        walk(&self.storage_dir(node, s))
    }

    // ---- public accessors ----

    pub fn stored_file(&self, node: &str, storage: &str, name: &str) -> Option<PathBuf> {
        let s = self.storage(storage)?;
        let p = self.content_dir(node, s, "vztmpl").join(name);
        p.is_file().then_some(p)
    }

    pub fn put_file(&self, node: &str, storage: &str, name: &str, bytes: &[u8]) {
        let s = self
            .storage(storage)
            .unwrap_or_else(|| panic!("put_file: no storage '{storage}' in the emulator config"));
        let dir = self.content_dir(node, s, "vztmpl");
        std::fs::create_dir_all(&dir).expect("put_file: create template/cache");
        std::fs::write(dir.join(name), bytes).expect("put_file: write");
    }

    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for node in &self.cfg.nodes {
            if let Ok(rd) = std::fs::read_dir(self.tmp_dir(node)) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with("pveupload-") {
                        out.push(e.path());
                    }
                }
            }
        }
        out.sort();
        out
    }

    // ---- faults ----

    pub fn inject(&self, f: Fault) {
        let id = self.next_fault_id.fetch_add(1, Ordering::SeqCst);
        self.faults.lock().unwrap().push((id, f));
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// Removes and returns the first queued fault `pick` accepts.
    pub fn take_fault<T>(&self, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let mut q = self.faults.lock().unwrap();
        let i = q.iter().position(|(_, f)| pick(f).is_some())?;
        let (_, f) = q.remove(i);
        pick(&f)
    }

    /// The first queued fault `pick` accepts, left in the queue, with its id.
    pub fn peek_fault<T>(&self, pick: impl Fn(&Fault) -> Option<T>) -> Option<(u64, T)> {
        let q = self.faults.lock().unwrap();
        q.iter().find_map(|(id, f)| pick(f).map(|t| (*id, t)))
    }

    /// Consumes fault `id`; false if someone else consumed it first.
    pub fn consume_fault(&self, id: u64) -> bool {
        let mut q = self.faults.lock().unwrap();
        match q.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }

    // ---- requests ----

    pub fn record(&self, r: RecordedRequest) -> usize {
        let mut v = self.requests.lock().unwrap();
        v.push(r);
        v.len() - 1
    }

    pub fn update_request(&self, i: usize, f: impl FnOnce(&mut RecordedRequest)) {
        if let Some(r) = self.requests.lock().unwrap().get_mut(i) {
            f(r);
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }

    // ---- tasks ----

    /// Creates a task on `node` (the node that received the request) and returns its UPID.
    pub fn new_task(&self, node: &str, kind: &str, id: &str, user: &str) -> String {
        let pid = self
            .next_pid
            .fetch_add(self.with_rng(|r| r.u32(1..40)), Ordering::SeqCst);
        // pstart: clock ticks (100 Hz) since boot.
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(1000.0);
        let pstart = (uptime * 100.0) as u64;
        let upid = Upid {
            node: node.into(),
            pid,
            pstart,
            starttime: unix_now(),
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
        }
        .encode();
        let slow = self.take_fault(|f| match f {
            Fault::SlowTask(d) => Some(*d),
            _ => None,
        });
        let no_such = self
            .take_fault(|f| match f {
                Fault::NoSuchTaskFor(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0);
        let task = Task {
            upid: upid.clone(),
            node: node.into(),
            kind: kind.into(),
            log: Vec::new(),
            open_line: false,
            done: false,
            not_before: Instant::now() + slow.unwrap_or(self.cfg.task_duration),
            no_such_polls: no_such,
        };
        self.tasks.lock().unwrap().push(task);
        upid
    }

    pub fn with_task<T>(&self, upid: &str, f: impl FnOnce(&mut Task) -> T) -> Option<T> {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.iter_mut().find(|t| t.upid == upid).map(f)
    }

    /// `print "…\n"` in the worker.
    pub fn task_println(&self, upid: &str, line: &str) {
        self.with_task(upid, |t| {
            if t.open_line {
                t.log.last_mut().unwrap().push_str(line);
                t.open_line = false;
            } else {
                t.log.push(line.to_string());
            }
        });
    }

    /// `print "…"` without a newline.
    pub fn task_print(&self, upid: &str, text: &str) {
        self.with_task(upid, |t| {
            if t.open_line {
                t.log.last_mut().unwrap().push_str(text);
            } else {
                t.log.push(text.to_string());
                t.open_line = true;
            }
        });
    }

    pub fn not_before(&self, upid: &str) -> Option<Instant> {
        self.with_task(upid, |t| t.not_before)
    }

    /// The final line (`TASK OK` / `TASK ERROR: …`), then the task is stopped.
    pub fn task_finish(&self, upid: &str, result: Result<(), String>) {
        let line = match result {
            Ok(()) => "TASK OK".to_string(),
            Err(e) => {
                let e = e.strip_suffix('\n').unwrap_or(&e).replace('\n', " ");
                format!("TASK ERROR: {e}")
            }
        };
        self.with_task(upid, |t| {
            t.open_line = false;
            t.log.push(line);
            t.done = true;
        });
    }

    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.tasks
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                let running = t.running();
                TaskRecord {
                    upid: t.upid.clone(),
                    node: t.node.clone(),
                    kind: t.kind.clone(),
                    status: if running { "running" } else { "stopped" }.into(),
                    exitstatus: (!running).then(|| t.exitstatus()),
                    log: t.log.clone(),
                }
            })
            .collect()
    }
}
