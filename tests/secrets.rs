//! The token secret goes into the `Authorization` header and nowhere else. A distinctive
//! secret is given (through `PM_API_TOKEN_SECRET`, and once through `--token-secret-file`) to
//! real builds of a tiny busybox image and to uploads to the Proxmox emulator, including a 401
//! and a TLS failure, each run under `strace -f -e trace=execve`. Then every byte the runs
//! produced is searched for it: stdout, stderr (`--json` is stdout), every file under the
//! project (artifacts decompressed, manifests, sidecars, the ledger, anything else), what the
//! emulator received and stored (the `Authorization` header aside, which the emulator redacts
//! itself) and the argv of every process any run started. A provision script writes its whole
//! environment into the image, so a secret passed into the build container would be found in
//! the artifact. Zero hits is the only pass.

mod support;
mod upload_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{docker_ok, have_cmd, record_fault, require};
use upload_common::{Config, Emulator, Fixture, TOKEN_ID, TokenConfig};

/// Shaped like a Proxmox token secret (a UUID), and found nowhere else.
const SECRET: &str = "5ec7e7a1-9b3d-4c2e-8f61-d0a4b7c9e2f3";

/// The needles: the secret and its halves (in case it were split or reformatted).
fn needles() -> [&'static str; 3] {
    [SECRET, &SECRET[..18], &SECRET[18..]]
}

fn hits_in(bytes: &[u8]) -> usize {
    needles()
        .iter()
        .map(|n| {
            bytes
                .windows(n.len())
                .filter(|w| *w == n.as_bytes())
                .count()
        })
        .sum()
}

#[derive(Default)]
struct Scan {
    bytes: u64,
    sources: usize,
    processes: usize,
    hits: Vec<String>,
}

impl Scan {
    fn add(&mut self, what: &str, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.sources += 1;
        let n = hits_in(bytes);
        if n > 0 {
            self.hits.push(format!("{n} in {what}"));
        }
    }

    /// A file as it is and, for a gzip (an artifact), its decompressed content too.
    fn add_file(&mut self, path: &Path, label: &str) {
        let raw = std::fs::read(path).unwrap();
        self.add(label, &raw);
        if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{label}: not gzip: {e}"));
            self.add(&format!("{label} (decompressed)"), &out);
        }
    }

    fn add_tree(&mut self, root: &Path, label: &str) {
        for e in walkdir::WalkDir::new(root).into_iter().flatten() {
            if e.file_type().is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                self.add_file(e.path(), &format!("{label}/{rel}"));
            }
        }
    }

    /// The execve lines of an strace log: every argv of every process started. (Without
    /// `-v`, strace prints the environment as a count only; the environment is where the
    /// secret is given, so it is not searched.)
    fn add_strace(&mut self, log: &Path, run: &str) {
        let text = std::fs::read_to_string(log).unwrap();
        let execs: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("execve(") && !l.contains("resumed>"))
            .collect();
        assert!(!execs.is_empty(), "strace saw no execve in {run}:\n{text}");
        self.processes += execs.len();
        self.add(&format!("argv of {run}"), execs.join("\n").as_bytes());
    }
}

struct Runner<'a> {
    fx: &'a Fixture,
    root: PathBuf,
    traces: PathBuf,
    n: usize,
}

struct Ran {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    trace: PathBuf,
}

impl Runner<'_> {
    /// `strace … lxcforge --root ROOT ARGS` with the fixture's PM_* settings, the secret in
    /// the environment unless `env` says otherwise (`(k, None)` removes a variable).
    fn run(&mut self, args: &[&str], env: &[(&str, Option<&str>)]) -> Ran {
        self.n += 1;
        let trace = self.traces.join(format!("run-{}.strace", self.n));
        let mut c = Command::new("strace");
        c.args(["-f", "-e", "trace=execve", "-s", "65535", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_lxcforge"))
            .arg("--root")
            .arg(&self.root)
            .args(args);
        for k in upload_common::SETTINGS_ENV {
            c.env_remove(k);
        }
        c.env("CI", "true")
            .env("PM_API_URL", self.fx.emu.api_url())
            .env("PM_API_TOKEN_ID", TOKEN_ID)
            .env("PM_API_TOKEN_SECRET", SECRET)
            .env("PM_NODE", "pve")
            .env("PM_TLS_CA_CERT", &self.fx.ca_file);
        for (k, v) in env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let o = c.output().unwrap();
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            trace,
        }
    }
}

fn emulator_requests(scan: &mut Scan, emu: &Emulator, label: &str) {
    let mut text = String::new();
    for r in emu.requests() {
        text.push_str(&format!("{} {} {:?}\n", r.method, r.path, r.part_names));
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("authorization") {
                // The emulator keeps only the token id of it; check it did.
                assert!(
                    v.ends_with("=<redacted>") || v == "<redacted>",
                    "unredacted Authorization recorded: {v}"
                );
                continue;
            }
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str(&format!("{:?} {:?}\n", r.status, r.reason));
    }
    for t in emu.tasks() {
        text.push_str(&format!("{} {}\n{}\n", t.upid, t.kind, t.log.join("\n")));
    }
    scan.add(&format!("{label} requests and task logs"), text.as_bytes());
    scan.add_tree(&emu.data_dir(), &format!("{label} storage"));
}

#[test]
fn the_token_secret_appears_nowhere() {
    if !docker_ok()
        || !require("strace (Debian package strace)", have_cmd("strace"))
        || !require(
            "static busybox at /bin/busybox (Debian: busybox-static)",
            Path::new("/bin/busybox").exists(),
        )
    {
        return;
    }
    let fx = Fixture::start(Config {
        tokens: vec![TokenConfig::full("automation@pve", "ci", SECRET)],
        auth_failure_delay: Duration::from_millis(300),
        task_duration: Duration::from_millis(100),
        ..Config::default()
    });
    let project = support::Project::new();
    let root = project.path().to_owned();
    let image = format!("sec-{}", std::process::id());
    let base = root.join("bases/tiny.tar");
    support::tiny_rootfs(&base);
    let base_sha = support::sha256_file(&base);
    // The build container's whole environment goes into the image.
    project.write(
        "provision/10-env.sh",
        "#!/bin/sh\nenv | sort > /etc/lxcforge-build-env\necho \"environment: $(env | wc -l) variables\"\n",
    );
    project.write(
        &format!("images/{image}.toml"),
        &format!(
            "prefix = \"{image}-rootfs\"\nprovision = [\"provision/10-env.sh\"]\n[base]\nrootfs = \"bases/tiny.tar\"\n"
        ),
    );
    let traces = tempfile::tempdir().unwrap();
    let mut runner = Runner {
        fx: &fx,
        root: root.clone(),
        traces: traces.path().to_owned(),
        n: 0,
    };
    let secret_file = fx.dir.path().join("token-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let secret_file = secret_file.display().to_string();
    // (what, args, env, the exit code it must have)
    type Run<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, Option<&'a str>)>, i32);
    let runs: Vec<Run> = vec![
        (
            "build v1",
            vec!["build", &image, "--next", "--json"],
            vec![],
            0,
        ),
        (
            "upload v1",
            vec!["upload", "--image", &image, "--json"],
            vec![],
            0,
        ),
        (
            "build v2",
            vec!["build", &image, "--next", "--json"],
            vec![],
            0,
        ),
        (
            "upload v2, TLS refused (system roots)",
            vec!["upload", "--image", &image, "--json"],
            vec![("PM_TLS_CA_CERT", None)],
            1,
        ),
        (
            "upload v2 with --token-secret-file",
            vec![
                "upload",
                "--image",
                &image,
                "--json",
                "--token-secret-file",
                &secret_file,
            ],
            vec![("PM_API_TOKEN_SECRET", None)],
            0,
        ),
        ("list", vec!["list", &image, "--json"], vec![], 0),
    ];
    let mut scan = Scan::default();
    let mut codes = Vec::new();
    for (what, args, env, want) in &runs {
        let r = runner.run(args, env);
        scan.add(&format!("stdout of {what}"), &r.stdout);
        scan.add(&format!("stderr of {what}"), r.stderr.as_bytes());
        scan.add_strace(&r.trace, what);
        codes.push((what.to_string(), r.code, *want, r.stderr.clone()));
    }
    // A 401: a node that does not know the token (the same secret, another cluster).
    let other = Fixture::start(upload_common::config());
    let mut runner401 = Runner {
        fx: &other,
        root: root.clone(),
        traces: traces.path().to_owned(),
        n: 100,
    };
    let r = runner401.run(&["upload", "--image", &image, "--json"], &[]);
    scan.add("stdout of upload, 401", &r.stdout);
    scan.add("stderr of upload, 401", r.stderr.as_bytes());
    scan.add_strace(&r.trace, "upload, 401");
    codes.push(("upload, 401".into(), r.code, 1, r.stderr.clone()));
    let said_401 = r.stderr.contains("401");

    scan.add_tree(&root, "<project>");
    emulator_requests(&mut scan, &fx.emu, "emulator");
    emulator_requests(&mut scan, &other.emu, "401 emulator");

    // The environment dump made it into the artifacts (so the search above could have hit).
    let mut dumps = 0;
    for e in std::fs::read_dir(project.artifacts()).unwrap().flatten() {
        let p = e.path();
        if p.to_string_lossy().ends_with(".tar.gz") {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            if out.windows(15).any(|w| w == b"LXCFORGE_IMAGE=") {
                dumps += 1;
            }
        }
    }
    let stored = fx
        .emu
        .stored_file("pve", "local", &format!("{image}-rootfs-v2.tar.gz"));

    let hits = scan.hits.len();
    record_fault(
        "Secrets",
        "a known token secret through 2 builds, 2 uploads (env, --token-secret-file), list, a 401 and a TLS failure, all under strace -f",
        &format!(
            "exit codes {:?}; {} bytes scanned in {} streams and files ({} artifacts with the build environment dumped in them); {} processes' argv seen (execve); {} hit(s)",
            codes.iter().map(|c| c.1).collect::<Vec<_>>(),
            scan.bytes,
            scan.sources,
            dumps,
            scan.processes,
            scan.hits
                .iter()
                .map(|h| h.split(' ').next().unwrap().parse::<usize>().unwrap())
                .sum::<usize>()
        ),
        &if hits == 0 {
            "nothing: the secret is in no output, file, request or argv".to_owned()
        } else {
            format!("the secret in: {}", scan.hits.join("; "))
        },
    );
    // Clean up the base image this test imported.
    let imgs = Command::new("docker")
        .args(["images", "-q", "--filter"])
        .arg(format!("label=org.lxcforge.rootfs-sha256={base_sha}"))
        .output()
        .unwrap();
    for id in support::stdout(&imgs).split_whitespace() {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }

    for (what, code, want, stderr) in &codes {
        assert_eq!(code, want, "{what}: exit code\n{stderr}");
    }
    assert!(said_401, "the 401 run did not get a 401");
    assert_eq!(dumps, 2, "the build environment is in both artifacts");
    assert!(stored.is_some(), "v2 was uploaded with the secret file");
    assert!(scan.processes > 0);
    assert!(scan.hits.is_empty(), "the secret leaked: {:?}", scan.hits);
}
