//! Soak: N consecutive build+upload cycles of a tiny busybox image, a fault injected at a
//! random point in most of them, then the whole state is checked: no containers, no images but
//! the cached base, no staging dirs or reservations, no emulator temp files, every artifact
//! valid, versions unique and increasing, the ledger whole and matching both the artifacts and
//! the emulated storage.
//!
//! `LXCFORGE_SOAK_CYCLES` (default 12; `make soak` runs 50), `LXCFORGE_SOAK_SEED` replays a
//! run (the seed is printed and recorded).

mod support;
mod upload_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{docker_ok, record_fault, require};
use upload_common::{Fault, Fixture, TOKEN_ID};

/// xorshift64*: enough for choosing faults, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BUILD_FAULTS: [&str; 5] = [
    "none",
    "SIGINT",
    "SIGTERM",
    "script fails",
    "script timeout",
];
const UPLOAD_FAULTS: [&str; 7] = [
    "none",
    "DropConnectionAfterBodyBytes",
    "UploadStatus500",
    "TaskFails",
    "CorruptUpload",
    "NoSuchTaskFor(2)",
    "SlowTask",
];

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn first_error(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("(no error line)")
        .to_owned()
}

fn wait(mut child: std::process::Child, out: &Path, err: &Path, limit: Duration) -> Out {
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&std::fs::read(err).unwrap_or_default()).into_owned(),
    }
}

#[test]
fn soak_build_and_upload_cycles_with_random_faults() {
    if !docker_ok()
        || !require(
            "static busybox at /bin/busybox (Debian: busybox-static)",
            Path::new("/bin/busybox").exists(),
        )
    {
        return;
    }
    let cycles: usize = std::env::var("LXCFORGE_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("LXCFORGE_SOAK_CYCLES: a number"))
        .unwrap_or(12);
    let seed: u64 = std::env::var("LXCFORGE_SOAK_SEED")
        .ok()
        .map(|v| v.parse().expect("LXCFORGE_SOAK_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: {cycles} cycles, seed {seed} (LXCFORGE_SOAK_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let fx = Fixture::start(upload_common::config());
    let project = support::Project::new();
    let root = project.path().to_owned();
    let image = format!("soak-{}", std::process::id());
    let prefix = format!("{image}-rootfs");
    let base = root.join("bases/tiny.tar");
    support::tiny_rootfs(&base);
    let base_sha = support::sha256_file(&base);
    project.write(
        "provision/10-work.sh",
        "#!/bin/sh\ncase \"$MODE\" in\n  fail) echo failing on purpose; exit 3 ;;\n  hang) sleep 600 ;;\n  *) sleep \"$NAP\"; echo \"cycle $CYCLE\" > /etc/soak-cycle ;;\nesac\n",
    );
    let scratch = tempfile::tempdir().unwrap();
    let out_f = scratch.path().join("stdout");
    let err_f = scratch.path().join("stderr");
    let lxcforge = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lxcforge"));
        c.arg("--root").arg(&root).args(args);
        for k in upload_common::SETTINGS_ENV {
            c.env_remove(k);
        }
        c.env("CI", "true")
            .env("PM_API_URL", fx.emu.api_url())
            .env("PM_API_TOKEN_ID", TOKEN_ID)
            .env("PM_API_TOKEN_SECRET", upload_common::SECRET)
            .env("PM_NODE", "pve")
            .env("PM_TLS_CA_CERT", &fx.ca_file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_f).unwrap())
            .stderr(std::fs::File::create(&err_f).unwrap());
        c
    };

    let started = Instant::now();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut published: Vec<u64> = Vec::new();
    // volid file name → whether the client said the state is unknown after a failure.
    let mut unknown_state: Vec<String> = Vec::new();
    let mut uploads_ok = 0usize;
    let mut status500 = 0usize;
    for cycle in 1..=cycles {
        let bf = BUILD_FAULTS[rng.below(BUILD_FAULTS.len() as u64) as usize];
        let nap = format!("0.{}", rng.below(8) + 1);
        let mode = match bf {
            "script fails" => "fail",
            "script timeout" => "hang",
            _ => "ok",
        };
        project.write(
            &format!("images/{image}.toml"),
            &format!(
                "prefix = \"{prefix}\"\nprovision = [\"provision/10-work.sh\"]\n[base]\nrootfs = \"bases/tiny.tar\"\n[env]\nMODE = \"{mode}\"\nNAP = \"{nap}\"\nCYCLE = \"{cycle}\"\n"
            ),
        );
        let mut args = vec!["build", image.as_str(), "--next", "--json"];
        if bf == "script timeout" {
            args.extend(["--script-timeout", "1s"]);
        }
        let child = lxcforge(&args).spawn().unwrap();
        let mut delay_ms = 0;
        if bf == "SIGINT" || bf == "SIGTERM" {
            delay_ms = rng.below(1200);
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = Command::new("kill")
                .arg(format!("-{}", if bf == "SIGINT" { "INT" } else { "TERM" }))
                .arg(child.id().to_string())
                .status();
        }
        let b = wait(child, &out_f, &err_f, Duration::from_secs(120));
        let expected_code = match bf {
            "none" => vec![Some(0)],
            "SIGINT" => vec![Some(130), Some(0)],
            "SIGTERM" => vec![Some(143), Some(0)],
            _ => vec![Some(1)],
        };
        let build_label = match b.code {
            Some(0) if bf.starts_with("SIG") => format!("{bf} after the end: built"),
            Some(0) => "built".to_owned(),
            Some(c) => format!("{bf}: exit {c}"),
            None => format!("{bf}: killed (hung)"),
        };
        *outcomes.entry(format!("build {build_label}")).or_default() += 1;
        if !expected_code.contains(&b.code) {
            problems.push(format!(
                "cycle {cycle}: build with {bf}: exit {:?}, {}",
                b.code,
                first_error(&b.stderr)
            ));
        }
        eprintln!(
            "soak: cycle {cycle}: build fault {bf}{}: exit {:?} {}",
            if delay_ms > 0 {
                format!(" at {delay_ms} ms")
            } else {
                String::new()
            },
            b.code,
            first_error(&b.stderr)
        );
        if b.code != Some(0) {
            continue;
        }
        let j: serde_json::Value = serde_json::from_str(&b.stdout).unwrap_or_default();
        let Some(version) = j["version"].as_u64() else {
            problems.push(format!(
                "cycle {cycle}: build exit 0 without a --json version"
            ));
            continue;
        };
        published.push(version);
        let file = format!("{prefix}-v{version}.tar.gz");
        let size = std::fs::metadata(root.join("artifacts").join(&file))
            .map(|m| m.len())
            .unwrap_or(0);

        let uf = UPLOAD_FAULTS[rng.below(UPLOAD_FAULTS.len() as u64) as usize];
        fx.emu.clear_faults();
        match uf {
            "DropConnectionAfterBodyBytes" => fx
                .emu
                .inject(Fault::DropConnectionAfterBodyBytes(rng.below(size.max(1)))),
            "UploadStatus500" => {
                status500 += 1;
                fx.emu.inject(Fault::UploadStatus500("soak".into()))
            }
            "TaskFails" => fx.emu.inject(Fault::TaskFails("soak: injected".into())),
            "CorruptUpload" => fx.emu.inject(Fault::CorruptUpload),
            "NoSuchTaskFor(2)" => fx.emu.inject(Fault::NoSuchTaskFor(2)),
            "SlowTask" => fx.emu.inject(Fault::SlowTask(Duration::from_millis(
                500 + rng.below(1500),
            ))),
            _ => {}
        }
        let u = wait(
            lxcforge(&["upload", "--image", &image, "--json"])
                .spawn()
                .unwrap(),
            &out_f,
            &err_f,
            Duration::from_secs(120),
        );
        fx.emu.clear_faults();
        let must_succeed = matches!(uf, "none" | "NoSuchTaskFor(2)" | "SlowTask");
        let must_fail = matches!(uf, "UploadStatus500" | "TaskFails" | "CorruptUpload");
        let label = match u.code {
            Some(0) => "uploaded".to_owned(),
            Some(c) => format!("exit {c}"),
            None => "killed (hung)".to_owned(),
        };
        *outcomes.entry(format!("upload {uf}: {label}")).or_default() += 1;
        if (must_succeed && u.code != Some(0))
            || (must_fail && u.code != Some(1))
            || !matches!(u.code, Some(0) | Some(1))
        {
            problems.push(format!(
                "cycle {cycle}: upload with {uf}: exit {:?}, {}",
                u.code,
                first_error(&u.stderr)
            ));
        }
        if u.code == Some(0) {
            uploads_ok += 1;
        } else if u.stderr.contains("goes on running") {
            unknown_state.push(file.clone());
        }
        eprintln!(
            "soak: cycle {cycle}: v{version}, upload fault {uf}: exit {:?} {}",
            u.code,
            first_error(&u.stderr)
        );
    }
    let secs = started.elapsed().as_secs_f64();

    // ---- the state after all cycles ----
    let mut leftovers: Vec<String> = Vec::new();
    let containers = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg("label=org.lxcforge.build")
        .arg("--filter")
        .arg(format!("name=lxcforge-{image}-"))
        .output()
        .unwrap();
    for c in support::stdout(&containers).lines() {
        leftovers.push(format!("container {c}"));
    }
    let imgs = Command::new("docker")
        .args([
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
            "--filter",
        ])
        .arg(format!("label=org.lxcforge.rootfs-sha256={base_sha}"))
        .output()
        .unwrap();
    let base_tag = format!("lxcforge-base/{image}:{base_sha}");
    let image_lines: Vec<(String, String)> = support::stdout(&imgs)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    for (id, tag) in &image_lines {
        if *tag != base_tag {
            leftovers.push(format!("image {tag} ({})", &id[..19.min(id.len())]));
        }
    }
    let artifacts = project.artifacts();
    let mut local_versions: Vec<u64> = Vec::new();
    for e in std::fs::read_dir(&artifacts)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".reserved" {
            for r in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                leftovers.push(format!(
                    "reservation .reserved/{}",
                    r.file_name().to_string_lossy()
                ));
            }
        } else if name.starts_with(".staging-") {
            leftovers.push(format!("staging dir {name}"));
        } else if let Some(v) = lxcforge::version::parse_version(&prefix, &name)
            && name.ends_with(".tar.gz")
        {
            local_versions.push(v);
            let sum = Command::new("sha256sum")
                .arg("-c")
                .arg(format!("{name}.sha256"))
                .current_dir(&artifacts)
                .output()
                .unwrap();
            let valid = Command::new(env!("CARGO_BIN_EXE_lxcforge"))
                .arg("validate")
                .arg(e.path())
                .output()
                .unwrap();
            if !sum.status.success() || !valid.status.success() {
                problems.push(format!(
                    "{name}: sha256sum -c {}, validate {}",
                    sum.status, valid.status
                ));
            }
        } else if !(name.ends_with(".sha256") || name.ends_with(".json")) {
            leftovers.push(format!("file {name}"));
        }
    }
    local_versions.sort();
    let temps = fx.emu.temp_files();
    // pveproxy leaves its temp file on a 500 before the task (ref §2.12): the server's own.
    if temps.len() > status500 {
        leftovers.push(format!(
            "{} emulator temp file(s) ({} from 500s)",
            temps.len(),
            status500
        ));
    }

    // Versions: unique and strictly increasing, in order of building.
    if !published.windows(2).all(|w| w[0] < w[1]) {
        problems.push(format!("versions not strictly increasing: {published:?}"));
    }
    if local_versions != published {
        problems.push(format!(
            "local artifacts {local_versions:?} != builds that succeeded {published:?}"
        ));
    }
    // The ledger: parses, one entry per published artifact, every upload record matches the
    // storage, nothing on the storage that is not recorded.
    let ledger = match lxcforge::ledger::load(&root, &image) {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("the ledger does not parse: {e}"));
            None
        }
    };
    let mut recorded_uploads = 0;
    let mut recorded_files: Vec<String> = Vec::new();
    if let Some(l) = &ledger {
        let versions: Vec<u64> = l.versions.iter().map(|e| e.version).collect();
        if versions != published {
            problems.push(format!(
                "ledger versions {versions:?} != published {published:?}"
            ));
        }
        for e in &l.versions {
            for u in &e.uploads {
                recorded_uploads += 1;
                let name = u.volid.rsplit('/').next().unwrap().to_owned();
                match fx.emu.stored_file(&u.node, &u.storage, &name) {
                    Some(p) => {
                        let size = std::fs::metadata(&p).unwrap().len();
                        let sha = support::sha256_file(&p);
                        if size != u.size || sha != u.sha256 || sha != e.sha256 {
                            problems.push(format!(
                                "{}: stored {size} bytes sha256 {sha}, recorded {} bytes {}",
                                u.volid, u.size, u.sha256
                            ));
                        }
                    }
                    None => problems.push(format!("{} recorded but not stored", u.volid)),
                }
                recorded_files.push(name);
            }
        }
    } else if !published.is_empty() {
        problems.push("no ledger".into());
    }
    if recorded_uploads != uploads_ok {
        problems.push(format!(
            "{recorded_uploads} upload records, {uploads_ok} uploads succeeded"
        ));
    }
    let mut unrecorded = Vec::new();
    for v in &published {
        let name = format!("{prefix}-v{v}.tar.gz");
        if fx.emu.stored_file("pve", "local", &name).is_some()
            && !recorded_files.contains(&name)
            && !unknown_state.contains(&name)
        {
            unrecorded.push(name);
        }
    }
    for n in &unrecorded {
        leftovers.push(format!("{n} on the storage, not in the ledger"));
    }

    let counts = outcomes
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let figures = format!(
        "{counts}; {} published (v{}), {uploads_ok} uploaded and recorded, {} state unknown; {:.0} s ({:.1} s per cycle)",
        published.len(),
        published
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", v"),
        unknown_state.len(),
        secs,
        secs / cycles.max(1) as f64
    );
    let left = if leftovers.is_empty() && problems.is_empty() {
        format!(
            "nothing (+ the cached base image, by design{})",
            if temps.is_empty() {
                String::new()
            } else {
                format!("; {} pveproxy temp file(s) after 500s", temps.len())
            }
        )
    } else {
        leftovers
            .iter()
            .chain(problems.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    };
    eprintln!("soak: {figures}\nsoak: left behind: {left}");
    record_fault(
        "Soak",
        &format!("{cycles} build+upload cycles with random faults, seed {seed}"),
        &figures,
        &left,
    );

    // Clean up what a passing run keeps by design.
    for (id, _) in &image_lines {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(problems.is_empty(), "problems: {problems:#?}");
}
