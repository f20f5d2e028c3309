//! Shared helpers for the upload tests: an emulated Proxmox VE (crate `pve_emu`), template
//! files, and runs of the real `lxcforge upload` binary with `PM_*` settings.
#![allow(dead_code, unused_imports)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pve_emu::{Config, Emulator, Fault, RecordedRequest, StorageConfig, TokenConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const TOKEN_ID: &str = "automation@pve!ci";
pub const SECRET: &str = "00000000-0000-4000-8000-000000000001";

/// Every variable lxcforge reads for an upload; cleared from each run so the machine's own
/// settings never leak into a test.
pub const SETTINGS_ENV: [&str; 10] = [
    "PM_API_URL",
    "PM_API_TOKEN_ID",
    "PM_API_TOKEN_SECRET",
    "PM_NODE",
    "PM_STORAGE",
    "PROXMOX_VE_ENDPOINT",
    "PROXMOX_VE_API_TOKEN",
    "PM_TLS_CA_CERT",
    "PM_TLS_FINGERPRINT",
    "PM_TLS_INSECURE",
];

/// The default emulated cluster with a short authentication-failure delay (one test keeps
/// Proxmox's 3 s).
pub fn config() -> Config {
    Config {
        auth_failure_delay: Duration::from_millis(300),
        task_duration: Duration::from_millis(100),
        ..Config::default()
    }
}

pub struct Fixture {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl Fixture {
    pub fn start(cfg: Config) -> Fixture {
        let emu = Emulator::start_blocking(cfg).expect("start the Proxmox emulator");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("pve-root-ca.pem");
        std::fs::write(&ca_file, emu.cert_pem()).unwrap();
        Fixture { emu, dir, ca_file }
    }

    /// A template-named file of `size` pseudo-random bytes (deterministic per name).
    pub fn template(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        write_random(&p, size, name.len() as u64 + size);
        p
    }

    /// `lxcforge upload` against the emulator: PM_* settings, its certificate as the CA.
    pub fn cmd(&self) -> assert_cmd::Command {
        self.command("upload")
    }

    /// Any `lxcforge` subcommand with the same settings and working directory.
    pub fn command(&self, subcommand: &str) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("lxcforge").unwrap();
        for k in SETTINGS_ENV {
            c.env_remove(k);
        }
        c.env_remove("CI")
            .current_dir(self.dir.path())
            .env("PM_API_URL", self.emu.api_url())
            .env("PM_API_TOKEN_ID", TOKEN_ID)
            .env("PM_API_TOKEN_SECRET", SECRET)
            .env("PM_NODE", "pve")
            .env("PM_TLS_CA_CERT", &self.ca_file)
            .arg(subcommand)
            .timeout(Duration::from_secs(300));
        c
    }

    pub fn stored(&self, node: &str, storage: &str, name: &str) -> Option<Vec<u8>> {
        self.emu
            .stored_file(node, storage, name)
            .map(|p| std::fs::read(p).unwrap())
    }

    pub fn uploads(&self) -> Vec<RecordedRequest> {
        self.emu
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/upload"))
            .collect()
    }

    /// Asserts nothing of the upload is left anywhere: no stored file, no temp file.
    pub fn assert_nothing_stored(&self, node: &str, storage: &str, name: &str) {
        assert!(
            self.emu.stored_file(node, storage, name).is_none(),
            "{storage}:vztmpl/{name} exists on {node}"
        );
        assert_eq!(
            self.emu.temp_files(),
            Vec::<PathBuf>::new(),
            "temp files left"
        );
    }

    /// Asserts the template is on the storage byte for byte, and no temp file is left.
    pub fn assert_stored_identical(&self, node: &str, storage: &str, local: &Path) {
        let name = local.file_name().unwrap().to_str().unwrap();
        let got = self
            .stored(node, storage, name)
            .unwrap_or_else(|| panic!("{storage}:vztmpl/{name} missing on {node}"));
        let want = std::fs::read(local).unwrap();
        assert!(got == want, "{name} on {node} differs from the local file");
        assert_eq!(
            self.emu.temp_files(),
            Vec::<PathBuf>::new(),
            "temp files left"
        );
    }
}

pub fn write_random(p: &Path, size: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = size;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

pub fn sha256_of(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// One finished run. Constructing it asserts that no token secret appears in its output.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", self.stdout))
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stderr:\n{}\n--- stdout:\n{}",
            self.stderr, self.stdout
        );
        self
    }
    pub fn assert_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs the command; fails the test if the secret (or any of `also_secret`) shows anywhere.
pub fn run(cmd: &mut assert_cmd::Command, also_secret: &[&str]) -> Run {
    let out = cmd.output().expect("run lxcforge");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for s in std::iter::once(SECRET).chain(also_secret.iter().copied()) {
        // Also the secret's distinctive halves, in case it were split or reformatted.
        for needle in [s, &s[..s.len() / 2], &s[s.len() / 2..]] {
            assert!(
                !r.stdout.contains(needle),
                "secret in stdout:\n{}",
                r.stdout
            );
            assert!(
                !r.stderr.contains(needle),
                "secret in stderr:\n{}",
                r.stderr
            );
        }
    }
    r
}

impl Fixture {
    /// Records `file` (`<prefix>-v<N>.<ext>`) in the ledger `versions/<prefix>.json` of the
    /// fixture's directory (the project root of every run) as a build would, so an upload of
    /// it is recorded there too.
    pub fn record_built(&self, file: &Path) {
        use lxcforge::ledger::{Entry, ValidationSummary};
        let (prefix, version) = split_versioned(file);
        lxcforge::ledger::record_build(
            self.dir.path(),
            &prefix,
            &prefix,
            Entry {
                version,
                file: file.file_name().unwrap().to_str().unwrap().to_owned(),
                sha256: sha256_of(file),
                size: std::fs::metadata(file).unwrap().len(),
                built_at: "2026-12-01T00:00:00Z".into(),
                base_reference: "bases/x.tar".into(),
                base_digest: "sha256:00".into(),
                git_commit: "0".into(),
                validation: ValidationSummary {
                    passed: true,
                    pve_version: "9.2".into(),
                    pass: 30,
                    warn: 0,
                    fail: 0,
                },
                uploads: vec![],
            },
        )
        .unwrap();
    }

    /// The upload records the ledger holds for `file`'s version (the ledger must parse and
    /// still hold the version).
    pub fn ledger_uploads(&self, file: &Path) -> Vec<lxcforge::ledger::UploadRecord> {
        let (prefix, version) = split_versioned(file);
        let l = lxcforge::ledger::load(self.dir.path(), &prefix)
            .unwrap_or_else(|e| panic!("the ledger of {prefix} does not parse: {e}"))
            .unwrap_or_else(|| panic!("the ledger of {prefix} is gone"));
        l.entry(version)
            .unwrap_or_else(|| panic!("v{version} is gone from the ledger of {prefix}"))
            .uploads
            .clone()
    }

    /// What an upload of `local` left on `node`/`storage`, measured: the stored file compared
    /// with the local one (`expected`: whether a stored identical copy is the right end state),
    /// the emulator's temp files and, when `file` is in a ledger, its upload records.
    pub fn left_behind(&self, node: &str, storage: &str, local: &Path, expected: bool) -> String {
        let name = local.file_name().unwrap().to_str().unwrap();
        let mut leaks = Vec::new();
        let mut kept = Vec::new();
        match self.stored(node, storage, name) {
            Some(got) if got == std::fs::read(local).unwrap() && expected => {
                kept.push(format!("{storage}:vztmpl/{name}, byte-identical"))
            }
            Some(got) if got == std::fs::read(local).unwrap() => {
                leaks.push(format!("{storage}:vztmpl/{name} stored"))
            }
            Some(got) => leaks.push(format!(
                "{storage}:vztmpl/{name} stored with different content ({} bytes)",
                got.len()
            )),
            None if expected => leaks.push(format!("{storage}:vztmpl/{name} MISSING")),
            None => {}
        }
        let temps = self.emu.temp_files();
        if !temps.is_empty() {
            leaks.push(format!("{} emulator temp file(s)", temps.len()));
        }
        let (prefix, _) = split_versioned(local);
        if lxcforge::ledger::path(self.dir.path(), &prefix).exists() {
            let n = self
                .ledger_uploads(local)
                .iter()
                .filter(|u| u.node == node)
                .count();
            if expected && n == 1 {
                kept.push("1 ledger upload record".into());
            } else if n > 0 || expected {
                leaks.push(format!("{n} ledger upload record(s)"));
            } else {
                kept.push("the ledger unchanged (0 upload records)".into());
            }
        }
        let mut s = if leaks.is_empty() {
            "nothing".to_owned()
        } else {
            leaks.join("; ")
        };
        if !kept.is_empty() {
            s.push_str(&format!(" (+ {}, as intended)", kept.join(", ")));
        }
        s
    }
}

/// (`prefix`, N) of a `<prefix>-v<N>.<ext>` file.
pub fn split_versioned(file: &Path) -> (String, u64) {
    let name = file.file_name().unwrap().to_str().unwrap();
    let at = name.rfind("-v").expect("a <prefix>-v<N> name");
    let digits: String = name[at + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (name[..at].to_owned(), digits.parse().unwrap())
}

impl Run {
    /// "exit N; error: …" (the first error line), as observed.
    pub fn outcome(&self) -> String {
        let first = self
            .stderr
            .lines()
            .find(|l| l.starts_with("error: ") || l.starts_with("error:"))
            .unwrap_or("(no error line)");
        format!("exit {}; {first}", self.code)
    }

    /// The outcome with the fixture's temporary paths and the emulator's port generalised.
    pub fn outcome_in(&self, fx: &Fixture) -> String {
        self.outcome()
            .replace(&fx.dir.path().display().to_string(), "<dir>")
            .replace(
                &format!("127.0.0.1:{}", fx.emu.addr().port()),
                "127.0.0.1:<port>",
            )
    }
}
