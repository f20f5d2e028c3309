//! Shared helpers for the integration tests: real components, a tiny base image, temp projects.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True under CI, where a missing real component is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns whether a real component is usable. Outside CI a missing one skips the test with a
/// message saying what is missing; under CI it fails the test.
pub fn require(component: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("required component missing under CI: {component}");
    }
    eprintln!("SKIP: {component} is not available here (install it, or run `make test` as root)");
    false
}

pub fn have_cmd(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn docker_ok() -> bool {
    require(
        "Docker Engine (docker info)",
        Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success()),
    )
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lxcforge"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A throw-away project directory: images/, provision/, cleanup/, artifacts/.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("lxcforge-test-")
            .tempdir()
            .unwrap();
        for d in ["images", "provision", "cleanup", "bases"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn artifacts(&self) -> PathBuf {
        self.path().join("artifacts")
    }

    /// Names in artifacts/, excluding the (empty) reservation directory.
    pub fn artifact_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.artifacts())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".reserved" || !dir_is_empty(&self.artifacts().join(n)))
            .collect();
        v.sort();
        v
    }

    /// Runs lxcforge with the project as root.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root")
            .arg(self.path())
            .args(args)
            .env("CI", "true");
        c
    }
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tiny root filesystem: static busybox and the few files a shell needs. Built as a tar
/// (uncompressed) so `docker import` takes it in well under a second.
pub fn tiny_rootfs(dest: &Path) {
    let busybox = std::fs::read("/bin/busybox")
        .expect("static busybox at /bin/busybox (Debian: busybox-static)");
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let dir = |b: &mut tar::Builder<std::fs::File>, p: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    };
    for d in [
        "bin", "etc", "tmp", "root", "usr", "usr/bin", "sbin", "var", "var/log",
    ] {
        dir(&mut b, d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    let file = |b: &mut tar::Builder<std::fs::File>, p: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, data).unwrap();
    };
    file(&mut b, "bin/busybox", 0o755, &busybox);
    file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    // Just enough of Debian for pve-container's detection, which the build's validator checks.
    file(
        &mut b,
        "etc/os-release",
        0o644,
        b"ID=debian\nNAME=\"busybox as Debian\"\nVERSION_ID=\"12\"\n",
    );
    file(&mut b, "etc/debian_version", 0o644, b"12.5\n");
    file(&mut b, "etc/machine-id", 0o444, b"");
    file(
        &mut b,
        "etc/shadow",
        0o640,
        b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    );
    for applet in [
        "sh", "sleep", "rm", "cat", "echo", "ls", "mkdir", "chmod", "chown", "ln", "touch",
        "printf", "head", "tail", "seq", "mkfifo", "env", "true", "false", "test", "[", "dd",
        "kill", "id", "sync", "stat",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    b.into_inner().unwrap();
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Member names of a (compressed) tar, as GNU tar lists them.
pub fn tar_list(archive: &Path) -> Vec<String> {
    let o = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -tf {}: {}",
        archive.display(),
        stderr(&o)
    );
    stdout(&o).lines().map(str::to_owned).collect()
}

/// Containers on the engine carrying lxcforge's build label.
pub fn leaked_containers(build_label_value: Option<&str>) -> Vec<String> {
    let filter = match build_label_value {
        Some(v) => format!("label=org.lxcforge.build={v}"),
        None => "label=org.lxcforge.build".to_owned(),
    };
    let o = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .unwrap();
    stdout(&o).lines().map(str::to_owned).collect()
}

/// Containers whose name starts with lxcforge-<image>- (the build's naming scheme).
pub fn containers_named(prefix: &str) -> Vec<String> {
    let o = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={prefix}"),
        ])
        .output()
        .unwrap();
    stdout(&o).lines().map(str::to_owned).collect()
}

/// Records one observed fault outcome for docs/reliability.md (`make reliability`): when
/// `LXCFORGE_FAULT_REPORT` names a file, appends one JSON line
/// `{"area","fault","outcome","left_behind"}` with a single write in append mode, so records
/// from tests running in parallel never interleave. Call it with what the test measured, before
/// asserting, so a failing check shows in the report too.
pub fn record_fault(area: &str, fault: &str, outcome: &str, left_behind: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("LXCFORGE_FAULT_REPORT").filter(|p| !p.is_empty()) else {
        return;
    };
    let mut line = serde_json::json!({
        "area": area,
        "fault": fault,
        "outcome": outcome,
        "left_behind": left_behind,
    })
    .to_string();
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the fault report {path:?}: {e}"));
    let n = f
        .write(line.as_bytes())
        .unwrap_or_else(|e| panic!("cannot append to the fault report {path:?}: {e}"));
    assert_eq!(n, line.len(), "short write to the fault report {path:?}");
}

/// A real registry (Debian's `docker-registry`) on 127.0.0.1 and a free port, killed on drop;
/// `None` (a SKIP outside CI) when it is not installed.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_registry() -> Option<Registry> {
    if !require(
        "docker-registry (Debian package docker-registry)",
        have_cmd("docker-registry"),
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let reg = Registry {
        child,
        port,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry did not start on 127.0.0.1:{port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(reg)
}
