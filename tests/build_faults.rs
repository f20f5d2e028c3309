//! The build half of the fault matrix (docs/reliability.md, `make reliability`): SIGINT and
//! SIGTERM during the base import, a script and the export; the Docker Engine gone, and gone
//! then back, mid-build; a full output disk; a hanging script; megabytes of non-UTF-8 output;
//! two builds at once.
//!
//! Every test builds a tiny static-busybox base whose content is unique to the test, so the
//! images it imports can be told apart from every other test's by their
//! `org.lxcforge.rootfs-sha256` label. The engine is reached through a unix-socket proxy in front
//! of /var/run/docker.sock (`DOCKER_HOST`) that can throttle traffic, to make a step slow enough
//! to be hit, and cut every connection, to take the engine away without touching the real
//! daemon. Each test records what it observed with `record_fault` before it asserts.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use support::*;

const AREA: &str = "Builds";

mod proxy {
    //! A byte pipe in front of a socket, for faults the real engine cannot be asked for: it
    //! throttles each direction and can cut every connection.
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
    use tokio::task::AbortHandle;

    #[derive(Default)]
    struct Shared {
        /// Bytes per second, client → server and server → client; 0 is unlimited.
        up_rate: AtomicU64,
        down_rate: AtomicU64,
        /// Bytes passed so far in each direction.
        up: AtomicU64,
        down: AtomicU64,
        /// Connections open now.
        open: AtomicU64,
        tasks: Mutex<Vec<AbortHandle>>,
    }

    enum Kind {
        /// Listens on the path, forwards to the real engine's socket.
        Unix { path: PathBuf, upstream: PathBuf },
        /// Listens on 127.0.0.1:port, forwards to 127.0.0.1:upstream.
        Tcp { port: u16, upstream: u16 },
    }

    pub struct Proxy {
        kind: Kind,
        shared: Arc<Shared>,
        rt: tokio::runtime::Runtime,
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    impl Proxy {
        /// In front of /var/run/docker.sock, listening on `path`.
        pub fn engine(path: &Path) -> Proxy {
            let p = Proxy {
                kind: Kind::Unix {
                    path: path.to_owned(),
                    upstream: PathBuf::from("/var/run/docker.sock"),
                },
                shared: Arc::default(),
                rt: runtime(),
            };
            p.restore();
            p
        }

        /// In front of 127.0.0.1:`upstream`, on a free loopback port.
        pub fn tcp(upstream: u16) -> Proxy {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let p = Proxy {
                kind: Kind::Tcp { port, upstream },
                shared: Arc::default(),
                rt: runtime(),
            };
            p.restore();
            p
        }

        pub fn docker_host(&self) -> String {
            match &self.kind {
                Kind::Unix { path, .. } => format!("unix://{}", path.display()),
                Kind::Tcp { port, .. } => format!("tcp://127.0.0.1:{port}"),
            }
        }

        pub fn port(&self) -> u16 {
            match self.kind {
                Kind::Tcp { port, .. } => port,
                Kind::Unix { .. } => panic!("a unix-socket proxy has no port"),
            }
        }

        pub fn throttle(&self, up: u64, down: u64) {
            self.shared.up_rate.store(up, Relaxed);
            self.shared.down_rate.store(down, Relaxed);
        }

        /// (client → server, server → client) bytes so far.
        pub fn bytes(&self) -> (u64, u64) {
            (self.shared.up.load(Relaxed), self.shared.down.load(Relaxed))
        }

        /// Connections open through the proxy right now.
        pub fn open(&self) -> u64 {
            self.shared.open.load(Relaxed)
        }

        /// The server goes away: every connection is closed and the socket disappears.
        pub fn cut(&self) {
            for t in self.shared.tasks.lock().unwrap().drain(..) {
                t.abort();
            }
            if let Kind::Unix { path, .. } = &self.kind {
                let _ = std::fs::remove_file(path);
            }
        }

        /// The server is back: the socket listens again.
        pub fn restore(&self) {
            let shared = self.shared.clone();
            let _guard = self.rt.enter();
            let accept = match &self.kind {
                Kind::Unix { path, upstream } => {
                    let _ = std::fs::remove_file(path);
                    let listener = UnixListener::bind(path).unwrap();
                    let upstream = upstream.clone();
                    self.rt.spawn(async move {
                        while let Ok((client, _)) = listener.accept().await {
                            if let Ok(server) = UnixStream::connect(&upstream).await {
                                let (cr, cw) = client.into_split();
                                let (sr, sw) = server.into_split();
                                spawn_pipe(&shared, cr, cw, sr, sw);
                            }
                        }
                    })
                }
                Kind::Tcp { port, upstream } => {
                    let listener = std::net::TcpListener::bind(("127.0.0.1", *port)).unwrap();
                    listener.set_nonblocking(true).unwrap();
                    let listener = TcpListener::from_std(listener).unwrap();
                    let upstream = *upstream;
                    self.rt.spawn(async move {
                        while let Ok((client, _)) = listener.accept().await {
                            if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                                let (cr, cw) = client.into_split();
                                let (sr, sw) = server.into_split();
                                spawn_pipe(&shared, cr, cw, sr, sw);
                            }
                        }
                    })
                }
            };
            self.shared
                .tasks
                .lock()
                .unwrap()
                .push(accept.abort_handle());
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.cut();
        }
    }

    fn spawn_pipe(
        shared: &Arc<Shared>,
        cr: impl AsyncRead + Unpin + Send + 'static,
        cw: impl AsyncWrite + Unpin + Send + 'static,
        sr: impl AsyncRead + Unpin + Send + 'static,
        sw: impl AsyncWrite + Unpin + Send + 'static,
    ) {
        let s = shared.clone();
        s.open.fetch_add(1, Relaxed);
        let t = tokio::spawn(async move {
            let _ = tokio::join!(
                pump(cr, sw, &s.up_rate, &s.up),
                pump(sr, cw, &s.down_rate, &s.down)
            );
            s.open.fetch_sub(1, Relaxed);
        });
        shared.tasks.lock().unwrap().push(t.abort_handle());
    }

    async fn pump(
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
        rate: &AtomicU64,
        count: &AtomicU64,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let limit = rate.load(Relaxed);
            let want = match limit {
                0 => buf.len(),
                l => (l / 20).clamp(512, buf.len() as u64) as usize,
            };
            let n = from.read(&mut buf[..want]).await?;
            if n == 0 {
                return to.shutdown().await;
            }
            to.write_all(&buf[..n]).await?;
            count.fetch_add(n as u64, Relaxed);
            if limit > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / limit as f64)).await;
            }
        }
    }
}

use proxy::Proxy;

/// A test project with a tiny base of its own (unique content, so a unique sha256).
struct Scene {
    p: Project,
    image: String,
    sha: String,
    proxy: Option<Proxy>,
}

impl Scene {
    fn new(tag: &str, scripts: &[(&str, &str)]) -> Scene {
        let p = Project::new();
        let image = format!("f-{tag}-{}", std::process::id());
        let base = p.path().join("bases/tiny.tar");
        unique_rootfs(&base, &image);
        for (name, body) in scripts {
            p.write(&format!("provision/{name}"), body);
        }
        let s = Scene {
            sha: sha256_file(&base),
            p,
            image,
            proxy: None,
        };
        s.define(scripts, &[]);
        s
    }

    /// (Re)writes the definition with these scripts and `[env]`.
    fn define(&self, scripts: &[(&str, &str)], env: &[(&str, &str)]) {
        let list: Vec<String> = scripts
            .iter()
            .map(|(n, _)| format!("\"provision/{n}\""))
            .collect();
        let mut def = format!(
            "prefix = \"{}-rootfs\"\nprovision = [{}]\n[base]\nrootfs = \"bases/tiny.tar\"\n",
            self.image,
            list.join(", ")
        );
        if !env.is_empty() {
            def.push_str("[env]\n");
            for (k, v) in env {
                def.push_str(&format!("{k} = \"{v}\"\n"));
            }
        }
        self.p.write(&format!("images/{}.toml", self.image), &def);
    }

    fn with_proxy(mut self) -> Scene {
        let sock = std::env::temp_dir().join(format!("lxcforge-engine-{}.sock", self.image));
        self.proxy = Some(Proxy::engine(&sock));
        self
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("scene has a proxy")
    }

    fn out(&self) -> PathBuf {
        self.p.artifacts()
    }

    fn prefix(&self) -> String {
        format!("{}-rootfs", self.image)
    }

    /// `lxcforge build IMAGE ARGS…`, through the proxy when there is one.
    fn build(&self, args: &[&str]) -> Command {
        let mut a = vec!["build", self.image.as_str()];
        a.extend_from_slice(args);
        let mut c = self.p.cmd(&a);
        if let Some(px) = &self.proxy {
            c.env("DOCKER_HOST", px.docker_host());
        }
        c
    }

    /// Build containers of this image on the engine (lxcforge's label and naming scheme).
    fn containers(&self) -> Vec<String> {
        let o = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
            .arg("label=org.lxcforge.build")
            .arg("--filter")
            .arg(format!("name=lxcforge-{}-", self.image))
            .output()
            .unwrap();
        stdout(&o).lines().map(str::to_owned).collect()
    }

    /// Images carrying this test's base content: `(id, repo:tag)`.
    fn base_images(&self) -> Vec<(String, String)> {
        let o = Command::new("docker")
            .args([
                "images",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
                "--filter",
            ])
            .arg(format!("label=org.lxcforge.rootfs-sha256={}", self.sha))
            .output()
            .unwrap();
        stdout(&o)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    fn base_tag(&self) -> String {
        format!("lxcforge-base/{}:{}", self.image, self.sha)
    }

    /// What a build left that it should not have. `imported`: whether a completed import of the
    /// base is expected (kept as the cache, by design); otherwise any image of it is a leak.
    fn leftovers(&self, imported: bool) -> Leftovers {
        let mut leaks = Vec::new();
        for c in self.containers() {
            leaks.push(format!("container {c}"));
        }
        let mut kept = Vec::new();
        for (id, tag) in self.base_images() {
            if imported && tag == self.base_tag() && kept.is_empty() {
                kept.push("the cached base image".to_owned());
            } else if tag.ends_with("<none>:<none>") {
                leaks.push(format!("untagged image {}", &id[..19.min(id.len())]));
            } else if imported {
                leaks.push(format!("extra image {}", short_tag(&tag)));
            } else {
                leaks.push(format!("half-imported image {}", short_tag(&tag)));
            }
        }
        leaks.extend(out_dir_leftovers(&self.out()));
        Leftovers { leaks, kept }
    }

    /// `lxcforge next-version` as the next build would see it.
    fn next_version(&self) -> String {
        let o = self.p.run(&["next-version", &self.image]);
        stdout(&o).trim().to_owned()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for c in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
        for (id, _) in self.base_images() {
            let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
        }
    }
}

fn short_tag(tag: &str) -> String {
    match tag.rsplit_once(':') {
        Some((repo, t)) if t.len() > 12 => format!("{repo}:{}…", &t[..12]),
        _ => tag.to_owned(),
    }
}

/// Anything in an output directory but lxcforge's own empty bookkeeping.
fn out_dir_leftovers(out: &Path) -> Vec<String> {
    let mut leaks = Vec::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".reserved" {
            for r in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                leaks.push(format!(
                    "reservation .reserved/{}",
                    r.file_name().to_string_lossy()
                ));
            }
        } else if name == "lost+found" {
        } else if name.starts_with(".staging-") {
            leaks.push(format!("staging dir {name}"));
        } else {
            leaks.push(format!("file {name}"));
        }
    }
    leaks.sort();
    leaks
}

struct Leftovers {
    leaks: Vec<String>,
    kept: Vec<String>,
}

impl Leftovers {
    fn render(&self) -> String {
        let mut s = if self.leaks.is_empty() {
            "nothing".to_owned()
        } else {
            self.leaks.join("; ")
        };
        if !self.kept.is_empty() {
            s.push_str(&format!(" (+ {}, by design)", self.kept.join(", ")));
        }
        s
    }
}

/// The tiny busybox base plus a file naming the test, so its sha256 is the test's own.
fn unique_rootfs(dest: &Path, marker: &str) {
    let tiny = dest.with_extension("common");
    tiny_rootfs(&tiny);
    let mut out = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let mut ar = tar::Archive::new(std::fs::File::open(&tiny).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        out.append(&h, &mut e).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(marker.len() as u64);
    h.set_mtime(1_700_000_000);
    out.append_data(&mut h, "etc/lxcforge-fault-test", marker.as_bytes())
        .unwrap();
    out.into_inner().unwrap();
    std::fs::remove_file(tiny).unwrap();
}

/// A running lxcforge whose stderr is collected line by line as it comes.
struct Running {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

struct Finished {
    status: ExitStatus,
    stderr: String,
    /// Seconds from `since` (the fault) to the exit.
    secs: f64,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        l2.0.lock().unwrap().push(line);
                        l2.1.notify_all();
                    }
                }
            }
            l2.0.lock().unwrap().push(String::new());
            l2.1.notify_all();
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn seen(&self, needle: &str) -> bool {
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits until a line contains `needle`; panics with the output if the build ends first or
    /// the wait runs out.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(needle)) {
                return;
            }
            let now = Instant::now();
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if now >= deadline || (exited && lines.last().is_some_and(String::is_empty)) {
                let _ = self.child.kill();
                panic!(
                    "never saw {needle:?} ({}):\n{}",
                    if exited {
                        "the build ended"
                    } else {
                        "timed out"
                    },
                    lines.join("\n")
                );
            }
            lines = cv
                .wait_timeout(lines, (deadline - now).min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig}");
    }

    /// Waits for the exit, at most `limit` (then kills it: a hang is a finding, not a wait).
    fn finish(mut self, since: Instant, limit: Duration) -> Finished {
        let deadline = since + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let secs = since.elapsed().as_secs_f64();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.lines.0.lock().unwrap().join("\n");
        Finished {
            status,
            stderr,
            secs,
        }
    }
}

impl Finished {
    /// The first line of the error lxcforge printed, if any.
    fn error_line(&self) -> String {
        self.stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("(no error line)")
            .to_owned()
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The same, with the test project's temporary path shown as `<project>`.
    fn outcome_in(&self, project: &Path) -> String {
        self.outcome()
            .replace(&project.display().to_string(), "<project>")
    }

    /// "exit 130 after 0.3 s: error: …": how the build ended, as measured.
    fn outcome(&self) -> String {
        let how = match self.status.code() {
            Some(c) => format!("exit {c}"),
            None => "killed by the test (it hung)".to_owned(),
        };
        format!("{how} after {:.1} s; {}", self.secs, self.error_line())
    }
}

/// Runs a build to completion (no fault) and returns its output.
fn run_build(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Point {
    Import,
    Script,
    Export,
}

/// SIGINT or SIGTERM at one stage of a build; then the same build again, which must get the
/// same version number and succeed.
fn signal_during(point: Point, sig: &str, code: i32) {
    if !docker_ok() {
        return;
    }
    let tag = format!("sig{}-{:?}", sig.to_lowercase(), point).to_lowercase();
    let script = "#!/bin/sh\nset -e\n\
                  if [ -n \"${BIG:-}\" ]; then dd if=/dev/urandom of=/big bs=1024 count=4096 2>/dev/null; fi\n\
                  echo started\nsleep \"${HANG:-0}\"\necho finished\n";
    let scripts = [("10-work.sh", script)];
    let s = Scene::new(&tag, &scripts).with_proxy();
    let base_size = std::fs::metadata(s.p.path().join("bases/tiny.tar"))
        .unwrap()
        .len();
    // Slow down exactly the step to be hit: the upload of the base, the script (it sleeps), or
    // the export stream (4 MiB of random data at 512 KiB/s).
    match point {
        Point::Import => s.proxy().throttle(256 * 1024, 0),
        Point::Script => s.define(&scripts, &[("HANG", "600")]),
        Point::Export => {
            s.define(&scripts, &[("BIG", "1")]);
            s.proxy().throttle(0, 512 * 1024);
        }
    }
    let mut run = Running::spawn(s.build(&["--next"]));
    let (marker, settle) = match point {
        Point::Import => ("    importing bases/tiny.tar", 1000),
        Point::Script => ("[10-work.sh] started", 0),
        Point::Export => ("==> export:", 1000),
    };
    run.wait_for(marker, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(settle));
    let (up, down) = s.proxy().bytes();
    // Where the build really was when the signal went out.
    let in_step = match point {
        Point::Import => up < base_size && !run.seen("==> container:"),
        Point::Script => !run.seen("finished"),
        Point::Export => !run.seen("==> validate:"),
    };
    let at = Instant::now();
    run.signal(sig);
    let f = run.finish(at, Duration::from_secs(60));
    let left = s.leftovers(point != Point::Import);
    let next_before = s.next_version();

    // The same build again, unhindered: it must take the same number and succeed.
    s.proxy().throttle(0, 0);
    s.define(&scripts, &[]);
    let again = run_build(&mut s.build(&["--next"]));
    let v1 = s.out().join(format!("{}-v1.tar.gz", s.prefix()));
    let rebuilt = again.status.success() && v1.is_file();
    let reimported = stderr(&again).contains("importing bases/tiny.tar");

    let step = match point {
        Point::Import => format!("signal with {} of {} uploaded", human(up), human(base_size)),
        Point::Script => "signal while the script sleeps".to_owned(),
        Point::Export => format!("signal with {} of the export streamed", human(down)),
    };
    record_fault(
        AREA,
        &format!("signal: SIG{sig} during {}", point_name(point)),
        &format!(
            "{step}; {}; next `--next` was v{next_before} and {}{}",
            f.outcome_in(s.p.path()),
            if rebuilt {
                "built v1"
            } else {
                "FAILED to build v1"
            },
            if point == Point::Import {
                if reimported {
                    " (re-importing the base)"
                } else {
                    " (WITHOUT re-importing the base)"
                }
            } else {
                ""
            }
        ),
        &left.render(),
    );
    assert!(
        in_step,
        "the signal missed the step ({step}):\n{}",
        f.stderr
    );
    assert_eq!(f.code(), Some(code), "{}", f.stderr);
    assert!(
        f.stderr.contains(&format!("interrupted by SIG{sig}")),
        "{}",
        f.stderr
    );
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
    if point != Point::Import {
        assert_eq!(left.kept.len(), 1, "the imported base is cached");
    }
    assert_eq!(next_before, "1", "the reserved version was not freed");
    assert!(rebuilt, "the next build failed:\n{}", stderr(&again));
    if point == Point::Import {
        assert!(
            reimported,
            "an interrupted import must not be taken for a cached base:\n{}",
            stderr(&again)
        );
    }
    let after = s.leftovers(true);
    assert_eq!(
        after.leaks,
        [
            format!("file {}-v1.json", s.prefix()),
            format!("file {}-v1.tar.gz", s.prefix()),
            format!("file {}-v1.tar.gz.sha256", s.prefix()),
        ],
        "only the artifact after the second build"
    );
}

fn point_name(p: Point) -> &'static str {
    match p {
        Point::Import => "the base import (upload at 256 KiB/s)",
        Point::Script => "a script",
        Point::Export => "the export (stream at 512 KiB/s)",
    }
}

fn code_of(s: &ExitStatus) -> String {
    s.code().map_or_else(|| format!("{s}"), |c| c.to_string())
}

fn human(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

#[test]
fn sigint_during_import() {
    signal_during(Point::Import, "INT", 130);
}

#[test]
fn sigterm_during_import() {
    signal_during(Point::Import, "TERM", 143);
}

#[test]
fn sigint_during_script() {
    signal_during(Point::Script, "INT", 130);
}

#[test]
fn sigterm_during_script() {
    signal_during(Point::Script, "TERM", 143);
}

#[test]
fn sigint_during_export() {
    signal_during(Point::Export, "INT", 130);
}

#[test]
fn sigterm_during_export() {
    signal_during(Point::Export, "TERM", 143);
}

/// SIGKILL: nothing can be cleaned up by the build itself, so the next build must: the
/// container (owner label), the staging dir (owner file), the reservation (its pid is gone).
fn sigkill_during(point: Point) {
    if !docker_ok() {
        return;
    }
    let script = "#!/bin/sh\nset -e\n\
                  if [ -n \"${BIG:-}\" ]; then dd if=/dev/urandom of=/big bs=1024 count=4096 2>/dev/null; fi\n\
                  echo started\nsleep \"${HANG:-0}\"\n";
    let scripts = [("10-work.sh", script)];
    let s = Scene::new(&format!("sigkill-{point:?}").to_lowercase(), &scripts).with_proxy();
    match point {
        Point::Export => {
            s.define(&scripts, &[("BIG", "1")]);
            s.proxy().throttle(0, 512 * 1024);
        }
        _ => s.define(&scripts, &[("HANG", "600")]),
    }
    let mut run = Running::spawn(s.build(&["--next"]));
    run.wait_for("[10-work.sh] started", Duration::from_secs(60));
    // A build in progress is never collected.
    let gc = s.p.run(&["gc"]);
    let live_kept = stderr(&gc).contains("kept build container lxcforge-")
        && stderr(&gc).contains("its build is running")
        && s.containers().len() == 1;
    if point == Point::Export {
        run.wait_for("==> export:", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1000));
    }
    let in_step = match point {
        Point::Export => !run.seen("==> validate:"),
        _ => true,
    };
    let at = Instant::now();
    run.signal("KILL");
    let f = run.finish(at, Duration::from_secs(30));
    let after_kill = s.leftovers(true);
    s.proxy().throttle(0, 0);
    s.define(&scripts, &[]);
    let next = run_build(&mut s.build(&["--next"]));
    let err = stderr(&next);
    let swept: Vec<String> = err
        .lines()
        .filter(|l| l.contains("removed leftover"))
        .map(|l| {
            l.trim()
                .replace(&s.p.path().display().to_string(), "<project>")
        })
        .collect();
    let v1 = s.out().join(format!("{}-v1.tar.gz", s.prefix()));
    let mut after = s.leftovers(true);
    after.leaks.retain(|l| !l.starts_with("file "));
    record_fault(
        AREA,
        &format!(
            "signal: SIGKILL during {} (no cleanup possible)",
            point_name(point)
        ),
        &format!(
            "`lxcforge gc` during the build {} its container; {}; the next build {}, and {}",
            if live_kept { "kept" } else { "did NOT keep" },
            match std::os::unix::process::ExitStatusExt::signal(&f.status) {
                Some(9) => "killed by SIGKILL".to_owned(),
                _ => format!("{:?}", f.status),
            },
            if swept.is_empty() {
                "removed no leftover".to_owned()
            } else {
                swept.join("; ")
            },
            if next.status.success() && v1.is_file() {
                "built v1"
            } else {
                "FAILED to build v1"
            }
        ),
        &format!(
            "after the kill: {}; after the next build: {}",
            after_kill.render(),
            after.render()
        ),
    );
    assert!(in_step, "the kill missed the export:\n{}", f.stderr);
    assert!(
        live_kept,
        "gc left the running build alone: {}",
        stderr(&gc)
    );
    assert_eq!(f.status.code(), None, "killed by a signal");
    let count = |p: &str| after_kill.leaks.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("container "), 1, "{:?}", after_kill.leaks);
    assert_eq!(count("reservation "), 1, "{:?}", after_kill.leaks);
    if point == Point::Export {
        assert_eq!(count("staging dir "), 1, "{:?}", after_kill.leaks);
    }
    assert!(next.status.success(), "{err}");
    assert!(v1.is_file(), "the dead build's v1 was freed: {err}");
    assert!(
        swept
            .iter()
            .any(|l| l.starts_with("removed leftover build container lxcforge-")),
        "{err}"
    );
    if point == Point::Export {
        assert!(
            swept
                .iter()
                .any(|l| l.starts_with("removed leftover staging dir")),
            "{err}"
        );
    }
    assert!(after.leaks.is_empty(), "{:?}", after.leaks);
}

#[test]
fn sigkill_during_a_script() {
    sigkill_during(Point::Script);
}

#[test]
fn sigkill_during_the_export() {
    sigkill_during(Point::Export);
}

#[test]
fn engine_gone_during_a_script() {
    if !docker_ok() {
        return;
    }
    let scripts = [("10-wait.sh", "#!/bin/sh\necho started\nsleep 600\n")];
    let s = Scene::new("gone", &scripts).with_proxy();
    let mut run = Running::spawn(s.build(&["--next"]));
    run.wait_for("[10-wait.sh] started", Duration::from_secs(60));
    let container = s.containers();
    let at = Instant::now();
    s.proxy().cut();
    let f = run.finish(at, Duration::from_secs(90));
    let after_build = s.leftovers(true);
    // The engine is back: `lxcforge gc` removes what the build could not.
    s.proxy().restore();
    let gc =
        s.p.cmd(&["gc"])
            .env("DOCKER_HOST", s.proxy().docker_host())
            .output()
            .unwrap();
    let gc_line = stderr(&gc)
        .lines()
        .find(|l| l.contains("removed"))
        .unwrap_or("(nothing removed)")
        .trim()
        .to_owned();
    let after_gc = s.leftovers(true);
    let named = container.len() == 1
        && f.stderr.contains(&format!("docker rm -f {}", container[0]))
        && f.stderr.contains("lxcforge gc");
    record_fault(
        AREA,
        "engine: the Docker Engine gone during a script (socket removed, every connection closed)",
        &format!(
            "{}; {}; then `lxcforge gc`: {gc_line}",
            f.outcome_in(s.p.path()),
            if named {
                "the warning names the container to remove"
            } else {
                "the container is NOT named"
            }
        ),
        &format!(
            "after the build: {}; after `lxcforge gc`: {}",
            after_build.render(),
            after_gc.render()
        ),
    );
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    let e = f.error_line();
    assert!(
        e.contains("lost the Docker Engine at")
            && e.contains(&s.proxy().docker_host())
            && e.contains("10-wait.sh"),
        "the error names the engine and what it was doing: {e}"
    );
    assert!(named, "the container to remove is named:\n{}", f.stderr);
    assert_eq!(
        after_build.leaks,
        [format!("container {}", container[0])],
        "only the container the gone engine could not remove"
    );
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(after_gc.leaks.is_empty(), "{:?}", after_gc.leaks);
}

#[test]
fn engine_restarted_during_a_script() {
    if !docker_ok() {
        return;
    }
    let scripts = [(
        "10-wait.sh",
        "#!/bin/sh\necho started\nsleep \"${HANG:-0}\"\n",
    )];
    let s = Scene::new("restart", &scripts).with_proxy();
    s.define(&scripts, &[("HANG", "600")]);
    let mut run = Running::spawn(s.build(&["--next"]));
    run.wait_for("[10-wait.sh] started", Duration::from_secs(60));
    let at = Instant::now();
    s.proxy().cut();
    std::thread::sleep(Duration::from_secs(1));
    s.proxy().restore();
    let f = run.finish(at, Duration::from_secs(90));
    let after_build = s.leftovers(true);
    // The next run cleans up whatever the first could not, and builds the same version.
    s.define(&scripts, &[]);
    let next = run_build(&mut s.build(&["--next"]));
    let v1 = s.out().join(format!("{}-v1.tar.gz", s.prefix()));
    let mut after = s.leftovers(true);
    after.leaks.retain(|l| !l.starts_with("file "));
    record_fault(
        AREA,
        "engine: the Docker Engine restarted during a script (gone for 1 s, then back)",
        &format!(
            "{}; the next build {}",
            f.outcome_in(s.p.path()),
            if next.status.success() && v1.is_file() {
                "built v1"
            } else {
                "FAILED to build v1"
            }
        ),
        &format!(
            "after the build: {}; after the next build: {}",
            after_build.render(),
            after.render()
        ),
    );
    assert_eq!(
        f.code(),
        Some(1),
        "fails cleanly, does not hang:\n{}",
        f.stderr
    );
    assert!(
        f.error_line().contains("lost the Docker Engine at"),
        "{}",
        f.stderr
    );
    assert!(next.status.success(), "{}", stderr(&next));
    assert!(v1.is_file());
    assert!(after.leaks.is_empty(), "{:?}", after.leaks);
}

#[test]
fn a_full_output_disk() {
    if !docker_ok() || !require("root (to mount a small tmpfs)", is_root()) {
        return;
    }
    // 2 MiB of random data cannot fit, compressed or not, in the 256 KiB tmpfs.
    let big =
        "#!/bin/sh\nset -e\ndd if=/dev/urandom of=/big bs=1024 count=2048 2>/dev/null\necho made\n";
    let s = Scene::new("full", &[("10-big.sh", big)]);
    let out_dir = s.p.path().join("small");
    std::fs::create_dir_all(&out_dir).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(m.status.success(), "mount tmpfs: {}", stderr(&m));
    let at = Instant::now();
    let run = Running::spawn(s.build(&["--next", "--out-dir", out_dir.to_str().unwrap()]));
    let f = run.finish(at, Duration::from_secs(120));
    let mut left = s.leftovers(true);
    left.leaks.extend(out_dir_leftovers(&out_dir));
    let used = Command::new("df")
        .args(["--output=used", "-B1"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let used = stdout(&used)
        .lines()
        .nth(1)
        .unwrap_or("?")
        .trim()
        .to_owned();
    let _ = Command::new("umount").arg(&out_dir).output();
    record_fault(
        AREA,
        "disk: the output disk full during the export (256 KiB tmpfs as --out-dir)",
        &f.outcome_in(s.p.path()),
        &format!("{} (tmpfs: {used} bytes in use)", left.render()),
    );
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    assert!(f.error_line().contains("the disk is full"), "{}", f.stderr);
    assert!(
        f.stderr.contains("--out-dir"),
        "the fix is named: {}",
        f.stderr
    );
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
}

#[test]
fn a_hanging_script_times_out() {
    if !docker_ok() {
        return;
    }
    let s = Scene::new(
        "hang",
        &[("10-hang.sh", "#!/bin/sh\necho waiting\nsleep 600\n")],
    );
    let at = Instant::now();
    let run = Running::spawn(s.build(&["--next", "--script-timeout", "3s"]));
    let f = run.finish(at, Duration::from_secs(120));
    let left = s.leftovers(true);
    let next = s.next_version();
    record_fault(
        AREA,
        "script: hangs (sleep 600, --script-timeout 3s)",
        &format!("{}; next `--next` is v{next}", f.outcome_in(s.p.path())),
        &left.render(),
    );
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    assert!(
        f.error_line()
            .contains("script 10-hang.sh did not finish within 3s"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("[10-hang.sh] waiting"), "{}", f.stderr);
    assert!(f.secs < 60.0, "{}", f.secs);
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
    assert_eq!(next, "1");
}

#[test]
fn megabytes_of_non_utf8_output() {
    if !docker_ok()
        || !require(
            "GNU time (/usr/bin/time, Debian package time)",
            Path::new("/usr/bin/time").exists(),
        )
    {
        return;
    }
    const MIB: u64 = 1024 * 1024;
    let flood = "#!/bin/sh\nset -e\n\
                 head -c 20971520 /dev/urandom\necho\n\
                 head -c 1048576 /dev/urandom >&2\necho >&2\n\
                 busybox tr '\\0' x < /dev/zero | head -c 1048576\necho\n\
                 echo flood-done\n";
    let s = Scene::new("flood", &[("10-flood.sh", flood)]);
    let log = s.p.path().join("stderr.log");
    let at = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "LXCFORGE_TEST_MAXRSS_KB=%M"])
        .arg(bin())
        .arg("--root")
        .arg(s.p.path())
        .args(["build", &s.image, "--next"])
        .env("CI", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let secs = at.elapsed().as_secs_f64();

    // Read the log back line by line: how much, how long, how decoded.
    let prefix = b"[10-flood.sh] ";
    let (mut lines, mut bytes, mut longest, mut invalid, mut replaced, mut cut_x) =
        (0u64, 0u64, 0usize, 0u64, 0u64, 0u64);
    let mut max_rss_kb = None;
    let mut done = false;
    let mut r = BufReader::new(std::fs::File::open(&log).unwrap());
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf).unwrap() > 0 {
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(body) = line.strip_prefix(prefix) {
            lines += 1;
            bytes += body.len() as u64;
            longest = longest.max(body.len());
            match std::str::from_utf8(body) {
                Ok(t) => replaced += t.matches('\u{fffd}').count() as u64,
                Err(_) => invalid += 1,
            }
            if body.len() == 8192 && body.iter().all(|&b| b == b'x') {
                cut_x += 1;
            }
            done |= body == b"flood-done";
        } else if let Some(kb) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("LXCFORGE_TEST_MAXRSS_KB="))
        {
            max_rss_kb = kb.trim().parse::<u64>().ok();
        }
        buf.clear();
    }
    let rss = max_rss_kb.unwrap_or(u64::MAX) * 1024;
    let mut left = s.leftovers(true);
    left.leaks
        .retain(|l| !l.starts_with(&format!("file {}-v1.", s.prefix())));
    let built = s.out().join(format!("{}-v1.tar.gz", s.prefix())).is_file();
    record_fault(
        AREA,
        "script: prints 22 MiB of random bytes (non-UTF-8) and a 1 MiB line",
        &format!(
            "exit {} after {secs:.1} s, {}; {lines} lines ({} MiB shown, longest {} KiB, \
             {invalid} not UTF-8, {replaced} bytes shown as U+FFFD); the 1 MiB line cut into \
             {cut_x} lines of 8 KiB; lxcforge peak RSS {} MiB",
            status.code().map_or("?".into(), |c| c.to_string()),
            if built {
                "artifact v1 built"
            } else {
                "NO artifact"
            },
            bytes / MIB,
            longest / 1024,
            rss / MIB
        ),
        &left.render(),
    );
    assert!(status.success(), "see {}", log.display());
    assert!(built);
    assert!(done, "the last line arrived");
    assert_eq!(invalid, 0, "every line is shown as valid UTF-8");
    assert!(
        replaced > 8 * MIB,
        "undecodable bytes are replaced, not dropped"
    );
    assert!(
        lines > 50_000,
        "{lines}: the output was streamed line by line"
    );
    assert!(longest <= 3 * 8192, "long lines are cut: {longest}");
    assert_eq!(cut_x, 128, "a 1 MiB line is 128 lines of 8 KiB");
    assert!(rss <= 128 * MIB, "peak RSS {} MiB", rss / MIB);
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
}

/// Version, artifact path and stderr of a finished `--json` build.
fn json_result(o: &std::process::Output) -> Option<(u64, PathBuf)> {
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some((
        j["version"].as_u64()?,
        PathBuf::from(j["artifact"].as_str()?),
    ))
}

/// `sha256sum -c` and `lxcforge validate` on a published artifact, and its manifest's version.
fn artifact_ok(path: &Path, version: u64) -> bool {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let sum = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(dir)
        .output()
        .unwrap();
    let valid = Command::new(bin())
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    let manifest = dir.join(name.replace(".tar.gz", ".json"));
    let m: Option<serde_json::Value> = std::fs::read(manifest)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    sum.status.success()
        && valid.status.success()
        && m.is_some_and(|m| m["version"] == version && m["artifact"]["file"] == name)
}

#[test]
fn two_builds_at_once_with_next() {
    if !docker_ok() {
        return;
    }
    let scripts = [(
        "10-work.sh",
        "#!/bin/sh\necho started\nsleep 2\necho done\n",
    )];
    let s = Scene::new("twonext", &scripts);
    let at = Instant::now();
    let a = s.build(&["--json", "--next"]).output_async();
    let b = s.build(&["--json", "--next"]).output_async();
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let secs = at.elapsed().as_secs_f64();
    let results: Vec<_> = [&a, &b].iter().filter_map(|o| json_result(o)).collect();
    let mut versions: Vec<u64> = results.iter().map(|r| r.0).collect();
    versions.sort();
    let valid = results.iter().filter(|(v, p)| artifact_ok(p, *v)).count();
    let mut left = s.leftovers(true);
    left.leaks.retain(|l| !l.starts_with("file "));
    record_fault(
        AREA,
        "concurrency: two builds of one image at once, both --next",
        &format!(
            "exit {} and {} after {secs:.1} s; versions {versions:?}; {valid} of 2 artifacts pass sha256sum -c and lxcforge validate",
            code_of(&a.status),
            code_of(&b.status)
        ),
        &left.render(),
    );
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(versions, [1, 2]);
    assert_eq!(valid, 2);
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
}

#[test]
fn two_builds_at_once_with_the_same_version() {
    if !docker_ok() {
        return;
    }
    let scripts = [(
        "10-work.sh",
        "#!/bin/sh\necho started\nsleep 2\necho done\n",
    )];
    let s = Scene::new("twosame", &scripts);
    let at = Instant::now();
    let a = s.build(&["--json", "--version", "1"]).output_async();
    let b = s.build(&["--json", "--version", "1"]).output_async();
    let outs = [a.join().unwrap(), b.join().unwrap()];
    let secs = at.elapsed().as_secs_f64();
    let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let lost: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    let refusal = lost
        .first()
        .and_then(|o| {
            stderr(o)
                .lines()
                .find(|l| l.starts_with("error: "))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let valid = won
        .iter()
        .filter_map(|o| json_result(o))
        .filter(|(v, p)| *v == 1 && artifact_ok(p, 1))
        .count();
    let mut left = s.leftovers(true);
    left.leaks.retain(|l| !l.starts_with("file "));
    record_fault(
        AREA,
        "concurrency: two builds of one image at once, both --version 1",
        &format!(
            "{} succeeded ({valid} valid v1), {} refused after {secs:.1} s with: {refusal}",
            won.len(),
            lost.len()
        ),
        &left.render(),
    );
    assert_eq!(won.len(), 1, "exactly one wins");
    assert_eq!(valid, 1);
    assert_eq!(lost[0].status.code(), Some(1));
    assert!(
        refusal.contains("v1") && refusal.contains("in progress"),
        "{refusal}"
    );
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
}

trait OutputAsync {
    fn output_async(self) -> std::thread::JoinHandle<std::process::Output>;
}

impl OutputAsync for Command {
    fn output_async(mut self) -> std::thread::JoinHandle<std::process::Output> {
        let child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// SIGINT or SIGTERM while the engine pulls the base from a slow registry (a local
/// docker-registry behind a proxy that passes 128 KiB/s); then the same build again.
fn signal_during_pull(sig: &str, code: i32) {
    if !docker_ok() {
        return;
    }
    let Some(reg) = start_registry() else { return };
    let scripts = [("10-work.sh", "#!/bin/sh\necho started\n")];
    let s = Scene::new(&format!("sig{}-pull", sig.to_lowercase()), &scripts);
    // Push the test's own base (labelled with its sha, so leftovers() sees any copy of it).
    let pushed = format!("127.0.0.1:{}/lxcforge-fault/{}:1", reg.port, s.image);
    docker(&[
        "import",
        "--change",
        &format!("LABEL org.lxcforge.rootfs-sha256={}", s.sha),
        s.p.path().join("bases/tiny.tar").to_str().unwrap(),
        &pushed,
    ]);
    let push = docker(&["push", &pushed]);
    let digest = push
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .expect("push prints the digest")
        .to_owned();
    docker(&["rmi", "-f", &pushed]);
    let slow = Proxy::tcp(reg.port);
    slow.throttle(0, 128 * 1024);
    let reference = format!(
        "127.0.0.1:{}/lxcforge-fault/{}@{digest}",
        slow.port(),
        s.image
    );
    s.p.write(
        &format!("images/{}.toml", s.image),
        &format!(
            "prefix = \"{}\"\nprovision = [\"provision/10-work.sh\"]\n[base]\nimage = \"{reference}\"\n",
            s.prefix()
        ),
    );

    let mut run = Running::spawn(s.build(&["--next"]));
    run.wait_for("    pulling ", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let in_step = !run.seen("base digest");
    let (_, pulled) = slow.bytes();
    let at = Instant::now();
    run.signal(sig);
    let f = run.finish(at, Duration::from_secs(60));
    let left = s.leftovers(false);
    // Does the engine go on pulling for nobody? It should drop its registry connections.
    let exited = Instant::now();
    while slow.open() > 0 && exited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped_after = exited.elapsed().as_secs_f64();
    let kept_pulling = slow.open() > 0;
    std::thread::sleep(Duration::from_secs(1));
    let left_later = s.leftovers(false);
    let next_before = s.next_version();

    slow.throttle(0, 0);
    let again = run_build(&mut s.build(&["--next"]));
    let rebuilt =
        again.status.success() && s.out().join(format!("{}-v1.tar.gz", s.prefix())).is_file();
    let repulled = stderr(&again).contains(&format!("pulling {reference}"));
    let _ = Command::new("docker")
        .args(["rmi", "-f", &reference])
        .output();
    record_fault(
        AREA,
        &format!("signal: SIG{sig} during the base pull (registry at 128 KiB/s)"),
        &format!(
            "signal after {} pulled; {}; the engine {}; next `--next` was v{next_before} and {}",
            human(pulled),
            f.outcome_in(s.p.path()),
            if kept_pulling {
                "was STILL pulling 20 s later".to_owned()
            } else {
                format!("dropped its registry connections {dropped_after:.1} s after the exit")
            },
            match (rebuilt, repulled) {
                (true, true) => "built v1 (pulling the base again)",
                (true, false) => "built v1 WITHOUT pulling again",
                _ => "FAILED to build v1",
            }
        ),
        &if left_later.leaks == left.leaks {
            left.render()
        } else {
            format!(
                "at exit: {}; once the engine stopped: {}",
                left.render(),
                left_later.render()
            )
        },
    );
    assert!(in_step, "the signal missed the pull:\n{}", f.stderr);
    assert_eq!(f.code(), Some(code), "{}", f.stderr);
    assert!(left.leaks.is_empty(), "left behind: {:?}", left.leaks);
    assert!(left_later.leaks.is_empty(), "{:?}", left_later.leaks);
    assert!(
        !kept_pulling,
        "the engine went on pulling after the build ended"
    );
    assert_eq!(next_before, "1");
    assert!(rebuilt && repulled, "{}", stderr(&again));
}

#[test]
fn sigint_during_pull() {
    signal_during_pull("INT", 130);
}

#[test]
fn sigterm_during_pull() {
    signal_during_pull("TERM", 143);
}

#[test]
fn sigint_while_cleanup_waits_for_a_gone_engine() {
    if !docker_ok() {
        return;
    }
    let scripts = [("10-wait.sh", "#!/bin/sh\necho started\nsleep 600\n")];
    let s = Scene::new("gonesig", &scripts).with_proxy();
    let mut run = Running::spawn(s.build(&["--next"]));
    run.wait_for("[10-wait.sh] started", Duration::from_secs(60));
    s.proxy().cut();
    run.wait_for("does not answer", Duration::from_secs(30));
    let at = Instant::now();
    run.signal("INT");
    let f = run.finish(at, Duration::from_secs(30));
    let after_build = s.leftovers(true);
    s.proxy().restore();
    let gc =
        s.p.cmd(&["gc"])
            .env("DOCKER_HOST", s.proxy().docker_host())
            .output()
            .unwrap();
    let after_gc = s.leftovers(true);
    record_fault(
        AREA,
        "engine: SIGINT while cleanup waits for the gone Docker Engine",
        &format!(
            "{}; {}; then `lxcforge gc` {}",
            f.outcome_in(s.p.path()),
            if f.stderr
                .contains("interrupted while waiting for the engine")
            {
                "the warning names the container left"
            } else {
                "NO warning about the container"
            },
            if gc.status.success() {
                "succeeded"
            } else {
                "FAILED"
            }
        ),
        &format!(
            "after the build: {}; after `lxcforge gc`: {}",
            after_build.render(),
            after_gc.render()
        ),
    );
    assert!(f.secs < 3.0, "the signal stops the wait: {} s", f.secs);
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    assert!(
        f.error_line().contains("lost the Docker Engine"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr
            .contains("interrupted while waiting for the engine")
            && f.stderr.contains("docker rm -f lxcforge-"),
        "{}",
        f.stderr
    );
    assert_eq!(after_build.leaks.len(), 1, "{:?}", after_build.leaks);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(after_gc.leaks.is_empty(), "{:?}", after_gc.leaks);
}
