//! Issue 5: versions, the ledger, promotion to a Terraform pin, list and diff. Proxmox storage
//! is an in-memory `TemplateStore` here (its listing is all these commands read); the CLI is
//! exercised through assert_cmd on generated projects and artifacts.

mod pack_common;
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use lxcforge::ledger::{self, Entry, UploadRecord, ValidationSummary};
use lxcforge::promote::{self, PromoteError};
use lxcforge::remote::{self, RemoteTemplate, TemplateStore};
use pack_common::{Entry as TarEntry, Node};

/// A storage listing held in memory; `put` adds a template as an upload would.
#[derive(Clone)]
struct FakeStore {
    node: String,
    storage: String,
    items: Arc<Mutex<Vec<RemoteTemplate>>>,
}

impl FakeStore {
    fn new(node: &str, storage: &str) -> FakeStore {
        FakeStore {
            node: node.into(),
            storage: storage.into(),
            items: Arc::default(),
        }
    }
    fn put(&self, file: &str, size: u64) -> &Self {
        self.items.lock().unwrap().push(RemoteTemplate {
            volid: remote::volid(&self.storage, file),
            size,
            ctime: 1_700_000_000,
            format: "tgz".into(),
        });
        self
    }
}

impl TemplateStore for FakeStore {
    fn node(&self) -> String {
        self.node.clone()
    }
    fn storage(&self) -> String {
        self.storage.clone()
    }
    fn list_templates(
        &self,
    ) -> futures_util::future::BoxFuture<'_, anyhow::Result<Vec<RemoteTemplate>>> {
        let items = self.items.lock().unwrap().clone();
        Box::pin(async move { Ok(items) })
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn entry(prefix: &str, v: u64, passed: bool) -> Entry {
    Entry {
        version: v,
        file: format!("{prefix}-v{v}.tar.gz"),
        sha256: format!("{:064x}", v * 0x1111),
        size: 1000 + v,
        built_at: format!("2024-01-0{}T00:00:00Z", v % 9 + 1),
        base_reference: "bases/tiny.tar".into(),
        base_digest: "sha256:abcd".into(),
        git_commit: "0123456789abcdef".into(),
        validation: ValidationSummary {
            passed,
            pve_version: "8.4".into(),
            pass: 25,
            warn: 0,
            fail: if passed { 0 } else { 1 },
        },
        uploads: vec![],
    }
}

fn upload(node: &str, storage: &str, file: &str, e: &Entry) -> UploadRecord {
    UploadRecord {
        node: node.into(),
        storage: storage.into(),
        volid: remote::volid(storage, file),
        size: e.size,
        sha256: e.sha256.clone(),
        upid: format!("UPID:{node}:0012ABCD:0A1B2C3D:66F0A1B2:imgcopy::ci@pve!lxcforge:"),
        uploaded_at: "2024-01-02T00:00:00Z".into(),
    }
}

#[test]
fn ledger_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let (img, prefix) = ("debian-12", "debian-12-lxc-rootfs");
    let e2 = entry(prefix, 2, true);
    let e1 = entry(prefix, 1, true);
    ledger::record_build(d.path(), img, prefix, e2.clone()).unwrap();
    ledger::record_build(d.path(), img, prefix, e1.clone()).unwrap();
    let up_b = upload("pve2", "local", &e2.file, &e2);
    let up_a = upload("pve1", "local", &e2.file, &e2);
    ledger::record_upload(d.path(), img, 2, up_b.clone()).unwrap();
    ledger::record_upload(d.path(), img, 2, up_a.clone()).unwrap();
    // the same upload reported twice is one record
    ledger::record_upload(d.path(), img, 2, up_a.clone()).unwrap();

    let l = ledger::load(d.path(), img).unwrap().unwrap();
    assert_eq!(l.image, img);
    assert_eq!(l.prefix, prefix);
    assert_eq!(l.versions.len(), 2);
    assert_eq!(l.versions[0], e1);
    assert_eq!(
        l.entry(2).unwrap().uploads,
        vec![up_a, up_b],
        "sorted by node"
    );
    let mut e2_uploaded = e2.clone();
    e2_uploaded.uploads = l.entry(2).unwrap().uploads.clone();
    assert_eq!(l.entry(2).unwrap(), &e2_uploaded);
    // the bytes on disk are what serializing the loaded ledger gives (stable for Git)
    let on_disk = std::fs::read(ledger::path(d.path(), img)).unwrap();
    assert_eq!(l.to_json(), on_disk);
    let v: serde_json::Value = serde_json::from_slice(&on_disk).unwrap();
    assert_eq!(
        v["versions"][1]["uploads"][0]["volid"],
        "local:vztmpl/debian-12-lxc-rootfs-v2.tar.gz"
    );

    // an upload of an unrecorded version is refused, naming it
    let e = ledger::record_upload(d.path(), img, 9, up_a_for(&e1)).unwrap_err();
    assert!(
        e.to_string().contains("v9 of debian-12 is not recorded"),
        "{e}"
    );
    let e = ledger::record_upload(d.path(), "nothing", 1, up_a_for(&e1)).unwrap_err();
    assert!(e.to_string().contains("not recorded"), "{e}");
}

fn up_a_for(e: &Entry) -> UploadRecord {
    upload("pve1", "local", &e.file, e)
}

#[test]
fn concurrent_ledger_writes_lose_no_entry() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_owned();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in 0..8u64 {
                    let v = t * 8 + i + 1;
                    let e = entry("img", v, true);
                    ledger::record_build(&root, "img", "img", e.clone()).unwrap();
                    ledger::record_upload(&root, "img", v, up_a_for(&e)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let l = ledger::load(&root, "img").unwrap().unwrap();
    let versions: Vec<u64> = l.versions.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=64).collect::<Vec<_>>());
    assert!(l.versions.iter().all(|e| e.uploads.len() == 1));
    // no temporary file is left beside the ledger
    let names: Vec<String> = std::fs::read_dir(root.join("versions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
}

/// Child side of the process tests (run by them with `--ignored`): reserve (or record) as told
/// by the environment, print the version, and hold the reservation until the parent says so.
#[test]
#[ignore = "a helper the process tests run in child processes"]
fn child_process_helper() {
    let dir = std::env::var("LXCFORGE_TEST_CHILD_DIR").expect("run by the process tests");
    let dir = Path::new(&dir);
    let go = dir.join("go");
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    match std::env::var("LXCFORGE_TEST_CHILD_ROLE").as_deref() {
        Ok("reserve") => {
            let r = lxcforge::version::Reservation::acquire(&dir.join("artifacts"), "img", None)
                .unwrap();
            println!("\nRESERVED {}", r.version);
            let release = dir.join("release");
            while !release.exists() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(role) => {
            let base: u64 = role.strip_prefix("record-").unwrap().parse().unwrap();
            for i in 0..10 {
                ledger::record_build(dir, "img", "img", entry("img", base * 100 + i, true))
                    .unwrap();
            }
            println!("RECORDED");
        }
        Err(_) => panic!("LXCFORGE_TEST_CHILD_ROLE unset"),
    }
}

fn spawn_children(dir: &Path, roles: &[String]) -> Vec<std::process::Child> {
    let exe = std::env::current_exe().unwrap();
    roles
        .iter()
        .map(|role| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_helper",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("LXCFORGE_TEST_CHILD_DIR", dir)
                .env("LXCFORGE_TEST_CHILD_ROLE", role)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

#[test]
fn processes_reserving_at_once_get_different_versions() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("artifacts")).unwrap();
    std::fs::write(d.path().join("artifacts/img-v4.tar.gz"), b"").unwrap();
    let children = spawn_children(d.path(), &vec!["reserve".to_owned(); 4]);
    std::fs::write(d.path().join("go"), b"").unwrap();
    // Each child holds its reservation until all have printed theirs.
    let reserved = d.path().join("artifacts/.reserved");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&reserved).map_or(0, |r| r.count()) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "children did not reserve"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(d.path().join("release"), b"").unwrap();
    let mut versions: Vec<u64> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.lines()
                .find_map(|l| l.split_once("RESERVED ").map(|(_, v)| v))
                .unwrap_or_else(|| panic!("no reservation in {out}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, [5, 6, 7, 8]);
    // all released when the builds ended
    assert_eq!(std::fs::read_dir(&reserved).unwrap().count(), 0);
}

#[test]
fn processes_writing_the_ledger_at_once_lose_no_entry() {
    let d = tempfile::tempdir().unwrap();
    let roles: Vec<String> = (1..=4).map(|i| format!("record-{i}")).collect();
    let children = spawn_children(d.path(), &roles);
    std::fs::write(d.path().join("go"), b"").unwrap();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let l = ledger::load(d.path(), "img").unwrap().unwrap();
    let mut want: Vec<u64> = (1..=4u64)
        .flat_map(|b| (0..10).map(move |i| b * 100 + i))
        .collect();
    want.sort();
    assert_eq!(
        l.versions.iter().map(|e| e.version).collect::<Vec<_>>(),
        want
    );
}

/// A project root with a ledger for `img` (prefix `img-rootfs`): v1 (passed), v2 (failed
/// validation), v3 (passed).
fn promoted_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (v, ok) in [(1, true), (2, false), (3, true)] {
        ledger::record_build(d.path(), "img", "img-rootfs", entry("img-rootfs", v, ok)).unwrap();
    }
    d
}

fn tfvars(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("versions/img.auto.tfvars.json")).ok()
}

#[test]
fn promote_writes_a_terraform_pin() {
    let d = promoted_root();
    let e1 = entry("img-rootfs", 1, true);
    let e3 = entry("img-rootfs", 3, true);
    let pve1 = FakeStore::new("pve1", "local");
    pve1.put(&e1.file, e1.size)
        .put(&e3.file, e3.size)
        .put("other-v9.tar.gz", 5);
    let pve2 = FakeStore::new("pve2", "local");
    pve2.put(&e1.file, e1.size).put(&e3.file, e3.size);
    let nas = FakeStore::new("pve1", "nas");
    let stores = [pve1, pve2, nas];
    let re = regex::Regex::new(promote::TERRAFORM_PATTERN).unwrap();

    let p = block_on(promote::promote(d.path(), "img", 1, "local", &stores)).unwrap();
    // the result as the CLI prints it with --json
    let j: serde_json::Value = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(j["volid"], "local:vztmpl/img-rootfs-v1.tar.gz");
    assert!(re.is_match(j["volid"].as_str().unwrap()));
    assert_eq!(j["variable"], "lxc_template_img");
    assert_eq!(
        j["verified_on"],
        serde_json::json!(["pve1/local", "pve2/local"])
    );
    assert_eq!(j["previous"], serde_json::Value::Null);
    assert_eq!(j["changed"], true);
    // the file is a valid Terraform variables file (JSON object of variables)
    let text = tfvars(d.path()).unwrap();
    let vars: serde_json::Value = serde_json::from_str(&text).unwrap();
    let value = vars["lxc_template_img"].as_str().unwrap();
    assert!(re.is_match(value), "{value}");
    assert_eq!(value, "local:vztmpl/img-rootfs-v1.tar.gz");
    assert_eq!(vars["lxc_template_img_sha256"], e1.sha256.as_str());
    assert_eq!(vars.as_object().unwrap().len(), 2);
    assert!(
        p.diff
            .starts_with("--- /dev/null\n+++ b/versions/img.auto.tfvars.json\n"),
        "{}",
        p.diff
    );
    assert!(
        p.diff
            .contains("+  \"lxc_template_img\": \"local:vztmpl/img-rootfs-v1.tar.gz\""),
        "{}",
        p.diff
    );
    assert_eq!(
        p.git,
        [
            format!(
                "git -C {} add versions/img.auto.tfvars.json versions/img.json",
                d.path().display()
            ),
            format!(
                "git -C {} commit -m 'Promote img v1: local:vztmpl/img-rootfs-v1.tar.gz'",
                d.path().display()
            ),
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    // a variable someone added to the file survives a promotion
    let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    obj.insert("other".into(), "kept".into());
    std::fs::write(
        d.path().join("versions/img.auto.tfvars.json"),
        serde_json::to_string_pretty(&obj).unwrap() + "\n",
    )
    .unwrap();
    let p = block_on(promote::promote(d.path(), "img", 3, "local", &stores)).unwrap();
    assert_eq!(
        p.previous.as_deref(),
        Some("local:vztmpl/img-rootfs-v1.tar.gz")
    );
    assert!(
        p.diff
            .contains("-  \"lxc_template_img\": \"local:vztmpl/img-rootfs-v1.tar.gz\""),
        "{}",
        p.diff
    );
    assert!(
        p.diff
            .contains("+  \"lxc_template_img\": \"local:vztmpl/img-rootfs-v3.tar.gz\""),
        "{}",
        p.diff
    );
    let vars: serde_json::Value = serde_json::from_str(&tfvars(d.path()).unwrap()).unwrap();
    assert_eq!(vars["other"], "kept");
    assert_eq!(vars["lxc_template_img_sha256"], e3.sha256.as_str());
    let pin = promote::read_pin(d.path(), "img", "img-rootfs")
        .unwrap()
        .unwrap();
    assert_eq!(pin.version, Some(3));

    // promoting what is pinned changes nothing
    let before = tfvars(d.path());
    let p = block_on(promote::promote(d.path(), "img", 3, "local", &stores)).unwrap();
    assert!(!p.changed && p.diff.is_empty());
    assert_eq!(tfvars(d.path()), before);
}

#[test]
fn promote_refuses_what_fails_its_checks() {
    let d = promoted_root();
    let e1 = entry("img-rootfs", 1, true);
    let e3 = entry("img-rootfs", 3, true);
    let local = FakeStore::new("pve1", "local");
    local.put(&e1.file, e1.size).put(&e3.file, e3.size + 1);
    let other_node = FakeStore::new("pve2", "local");
    other_node.put(&e3.file, e3.size);
    let nas = FakeStore::new("pve1", "nas");
    let run = |v: u64, storage: &str, stores: &[FakeStore]| {
        block_on(promote::promote(d.path(), "img", v, storage, stores)).unwrap_err()
    };
    let stores = [local.clone(), nas.clone()];

    let e = run(7, "local", &stores);
    assert!(matches!(e, PromoteError::Unknown { .. }), "{e}");
    assert!(e.to_string().contains("(recorded: v1, v2, v3)"), "{e}");
    let e = run(2, "local", &stores);
    assert!(matches!(e, PromoteError::FailedValidation { .. }), "{e}");
    assert!(e.to_string().contains("failed validation"), "{e}");
    // not on that storage
    let e = run(1, "nas", &stores);
    assert!(matches!(e, PromoteError::Absent { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("nas:vztmpl/img-rootfs-v1.tar.gz is not on pve1/nas"),
        "{e}"
    );
    // on one node of the storage but not the other
    let e = run(1, "local", &[local.clone(), other_node.clone()]);
    assert!(e.to_string().contains("is not on pve2/local"), "{e}");
    // a file of another size under that name is not this build
    let e = run(3, "local", &stores);
    assert!(
        matches!(
            e,
            PromoteError::SizeMismatch {
                remote: 1004,
                recorded: 1003,
                ..
            }
        ),
        "{e}"
    );
    // no store configured for the storage named
    let e = run(1, "ceph", &stores);
    assert!(matches!(e, PromoteError::NoStore { .. }), "{e}");
    assert!(e.to_string().contains("pve1/local, pve1/nas"), "{e}");
    // an upload whose verified sha256 differs from the build's
    let mut bad = up_a_for(&e1);
    bad.sha256 = "ee".repeat(32);
    ledger::record_upload(d.path(), "img", 1, bad).unwrap();
    let e = run(1, "local", &stores);
    assert!(matches!(e, PromoteError::ShaMismatch { .. }), "{e}");
    // nothing was written by any refusal
    assert_eq!(tfvars(d.path()), None);
}

#[test]
fn the_resolver_reads_boxed_stores_as_the_cli_holds_them() {
    // (the volid check right before an upload is the upload client's, tested in
    // tests/upload_flow.rs against the emulator)
    let s = FakeStore::new("pve1", "local");
    s.put("img-v1.tar.gz", 10);
    let boxed: Vec<Box<dyn TemplateStore>> = vec![Box::new(s)];
    let seen = block_on(lxcforge::version::resolve(
        Path::new("/nonexistent"),
        "img",
        "img",
        Path::new("/nonexistent"),
        &boxed,
    ))
    .unwrap();
    assert_eq!(seen.next(), 2);
}

#[test]
fn list_shows_versions_uploads_and_the_pin() {
    let d = promoted_root();
    let e1 = entry("img-rootfs", 1, true);
    let local = FakeStore::new("pve1", "local");
    local.put(&e1.file, e1.size).put("img-rootfs-v5.tar.gz", 77);
    ledger::record_upload(d.path(), "img", 1, up_a_for(&e1)).unwrap();
    block_on(promote::promote(
        d.path(),
        "img",
        1,
        "local",
        std::slice::from_ref(&local),
    ))
    .unwrap();
    let out = d.path().join("artifacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("img-rootfs-v3.tar.gz"), b"x").unwrap();
    std::fs::write(out.join("img-rootfs-v4.tar.gz"), b"four").unwrap();
    let l = block_on(lxcforge::listing::list(
        d.path(),
        "img",
        "img-rootfs",
        &out,
        &[local],
    ))
    .unwrap();
    let v: Vec<u64> = l.versions.iter().map(|r| r.version).collect();
    assert_eq!(v, [1, 2, 3, 4, 5]);
    let r = |n: u64| &l.versions[(n - 1) as usize];
    assert!(r(1).pinned && !r(3).pinned);
    assert_eq!(
        r(1).uploads,
        ["pve1/local local:vztmpl/img-rootfs-v1.tar.gz"]
    );
    assert_eq!(
        r(1).on_storage,
        ["pve1/local local:vztmpl/img-rootfs-v1.tar.gz"]
    );
    assert_eq!(r(2).validation, "failed");
    assert!(r(3).recorded && r(3).local.is_some());
    assert!(!r(4).recorded && r(4).size == Some(4) && r(4).validation == "unknown");
    assert!(!r(5).recorded && r(5).local.is_none() && r(5).size == Some(77));
    let table = l.render();
    assert!(
        table.contains("pinned: local:vztmpl/img-rootfs-v1.tar.gz"),
        "{table}"
    );
    let line = |v: &str| table.lines().find(|l| l.contains(v)).unwrap().to_owned();
    assert!(line(" v1 ").trim_start().starts_with('*'), "{table}");
    assert!(line(" v2 ").contains("failed"), "{table}");
    assert!(line(" v4 ").contains("(not in ledger)"), "{table}");
    assert!(line(" v5 ").contains("on storage, not recorded"), "{table}");
}

// ---- diff, and the CLI on generated artifacts ----

/// Packs `entries` (Docker-export-like) into `<dir>/<name>` and writes a manifest beside it.
fn artifact(dir: &Path, prefix: &str, v: u64, entries: &[TarEntry], packages: &[(&str, &str)]) {
    let name = format!("{prefix}-v{v}.tar.gz");
    let spool = tempfile::tempdir().unwrap();
    let (_, report) = pack_common::pack_file(
        &pack_common::docker_tar(entries),
        &pack_common::opts(spool.path()),
        &dir.join(&name),
    );
    let manifest = serde_json::json!({
        "schema": 1,
        "version": v,
        "built_at": "2024-05-01T00:00:00Z",
        "artifact": { "file": name, "sha256": report.sha256, "size": report.compressed_bytes },
        "packages": packages.iter().map(|(n, ver)| serde_json::json!({"name": n, "version": ver, "architecture": "amd64"})).collect::<Vec<_>>(),
        "validation": { "passed": true, "pve_version": "8.4", "pass": 1, "warn": 0, "fail": 0, "findings": [] },
    });
    std::fs::write(
        dir.join(format!("{prefix}-v{v}.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn tree_a() -> Vec<TarEntry> {
    let mut owned = TarEntry::file("srv/owned", b"same", 0o644);
    owned.uid = 0;
    vec![
        TarEntry::dir("etc"),
        TarEntry::file("etc/hostname", b"one\n", 0o644),
        TarEntry::file("etc/motd", b"hello", 0o644),
        TarEntry::file("etc/removed.conf", b"bye", 0o644),
        TarEntry::new("etc/link", Node::Symlink(b"motd".to_vec()), 0o777),
        TarEntry::dir("srv"),
        owned,
        TarEntry::file("srv/tool", b"#!/bin/sh\n", 0o755),
    ]
}

fn tree_b() -> Vec<TarEntry> {
    let mut owned = TarEntry::file("srv/owned", b"same", 0o644);
    owned.uid = 1000;
    owned.gid = 1000;
    let mut many = vec![
        TarEntry::dir("etc"),
        TarEntry::file("etc/hostname", b"two\n", 0o644),
        TarEntry::file("etc/motd", b"hello, world", 0o644),
        TarEntry::new("etc/link", Node::Symlink(b"hostname".to_vec()), 0o777),
        TarEntry::file("etc/new.conf", b"hi", 0o600),
        TarEntry::dir("srv"),
        owned,
        TarEntry::file("srv/tool", b"#!/bin/sh\n", 0o700),
        TarEntry::dir("usr"),
    ];
    for i in 0..12 {
        many.push(TarEntry::file(&format!("usr/f{i:02}"), b"x", 0o644));
    }
    many
}

fn diff_project() -> support::Project {
    let p = support::Project::new();
    p.write("provision/10.sh", "#!/bin/sh\n");
    p.write(
        "images/img.toml",
        "prefix = \"img-rootfs\"\nprovision = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n",
    );
    std::fs::create_dir_all(p.artifacts()).unwrap();
    artifact(
        &p.artifacts(),
        "img-rootfs",
        1,
        &tree_a(),
        &[("bash", "5.2.15-2"), ("libc6", "2.36-9"), ("gone", "1.0")],
    );
    artifact(
        &p.artifacts(),
        "img-rootfs",
        2,
        &tree_b(),
        &[
            ("bash", "5.2.15-2"),
            ("libc6", "2.36-9+deb12u7"),
            ("jq", "1.6-2"),
        ],
    );
    p
}

#[test]
fn diff_reports_members_and_packages() {
    let p = diff_project();
    let r = lxcforge::diff::diff(
        &p.artifacts().join("img-rootfs-v1.tar.gz"),
        &p.artifacts().join("img-rootfs-v2.tar.gz"),
    )
    .unwrap();
    let added: Vec<&str> = r.added.iter().map(|m| m.path.as_str()).collect();
    let mut want_added = vec!["/etc/new.conf", "/usr"];
    let fs: Vec<String> = (0..12).map(|i| format!("/usr/f{i:02}")).collect();
    want_added.extend(fs.iter().map(String::as_str));
    assert_eq!(added, want_added);
    assert_eq!(r.removed.len(), 1);
    assert_eq!(r.removed[0].path, "/etc/removed.conf");
    let changes: std::collections::BTreeMap<&str, Vec<String>> = r
        .changed
        .iter()
        .map(|c| (c.path.as_str(), c.changes.clone()))
        .collect();
    assert_eq!(changes["/etc/hostname"], ["content"]);
    assert_eq!(changes["/etc/motd"], ["size 5 → 12"]);
    assert_eq!(changes["/etc/link"], ["target motd → hostname"]);
    assert_eq!(changes["/srv/owned"], ["owner 0:0 → 1000:1000"]);
    assert_eq!(changes["/srv/tool"], ["mode 0755 → 0700"]);
    assert_eq!(changes.len(), 5, "{changes:?}");
    // "/", /etc and /srv are the same
    assert_eq!(r.summary.unchanged, 3);
    let pk = r.packages.as_ref().unwrap();
    assert_eq!(
        pk.added.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["jq"]
    );
    assert_eq!(
        pk.removed
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["gone"]
    );
    assert_eq!(pk.changed.len(), 1);
    assert_eq!(
        (
            pk.changed[0].name.as_str(),
            pk.changed[0].from.as_str(),
            pk.changed[0].to.as_str()
        ),
        ("libc6", "2.36-9", "2.36-9+deb12u7")
    );
    // an archive against itself: nothing changes
    let same = lxcforge::diff::diff(
        &p.artifacts().join("img-rootfs-v1.tar.gz"),
        &p.artifacts().join("img-rootfs-v1.tar.gz"),
    )
    .unwrap();
    assert_eq!(
        (
            same.summary.added,
            same.summary.removed,
            same.summary.changed
        ),
        (0, 0, 0)
    );
}

fn cli(p: &support::Project) -> Command {
    let mut c = Command::new(support::bin());
    c.arg("--root").arg(p.path()).env("CI", "true");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PM_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn cli_diff_truncates_in_human_mode_only() {
    let p = diff_project();
    let o = cli(&p)
        .args(["diff", "img", "v1", "2", "--limit", "5"])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&o.get_output().stdout).into_owned();
    assert!(
        out.contains("files: 14 added, 1 removed, 5 changed, 3 unchanged"),
        "{out}"
    );
    assert!(
        out.contains("packages: 1 added, 1 removed, 1 changed"),
        "{out}"
    );
    assert!(
        out.contains("~ libc6:amd64 2.36-9 → 2.36-9+deb12u7"),
        "{out}"
    );
    assert!(out.contains("… and 9 more (--json lists all)"), "{out}");
    assert!(out.contains("~ /srv/tool: mode 0755 → 0700"), "{out}");
    let o = cli(&p)
        .args(["--json", "diff", "img", "v1", "v2", "--limit", "5"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(j["added"].as_array().unwrap().len(), 14);
    assert_eq!(j["summary"]["changed"], 5);
    // two file paths work too; a missing version is named
    let a = p.artifacts().join("img-rootfs-v1.tar.gz");
    let b = p.artifacts().join("img-rootfs-v2.tar.gz");
    cli(&p).arg("diff").arg(&a).arg(&b).assert().success();
    let o = cli(&p).args(["diff", "img", "v1", "v9"]).assert().failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(err.contains("v9 of img is not in"), "{err}");
}

#[test]
fn cli_next_version_list_and_promote() {
    let p = diff_project();
    // the ledger counts even when its artifact is gone locally
    ledger::record_build(p.path(), "img", "img-rootfs", entry("img-rootfs", 6, true)).unwrap();
    let o = cli(&p).args(["next-version", "img"]).assert().success();
    assert_eq!(String::from_utf8_lossy(&o.get_output().stdout).trim(), "7");
    let o = cli(&p)
        .args(["--json", "next-version", "img"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(j["next"], 7);
    assert_eq!(j["highest"]["local"], 2);
    assert_eq!(j["highest"]["ledger"], 6);

    // --remote without settings, and incomplete settings: clear errors
    let o = cli(&p)
        .args(["next-version", "img", "--remote"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(
        err.contains("Proxmox settings are not configured (PM_API_URL"),
        "{err}"
    );
    let o = cli(&p)
        .env("PM_API_TOKEN_SECRET", "do-not-print-me")
        .args(["next-version", "img"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(
        err.contains("no Proxmox API URL") && err.contains("fix: set PM_API_URL"),
        "{err}"
    );
    assert!(!err.contains("do-not-print-me"), "{err}");
    assert!(
        !err.contains("do-not-print-me"),
        "a secret was printed: {err}"
    );

    // build --version of a number only the ledger holds is refused before Docker is touched
    let o = cli(&p)
        .args(["build", "img", "--version", "6"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(
        err.contains("v6 of img-rootfs already exists") && err.contains("would be v7"),
        "{err}"
    );

    // list: the ledger version and the two local ones (not in the ledger)
    let o = cli(&p).args(["--json", "list", "img"]).assert().success();
    let j: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    let vs: Vec<u64> = j["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(vs, [1, 2, 6]);
    assert_eq!(
        j["versions"][0]["validation"], "passed",
        "from the manifest"
    );
    assert_eq!(j["versions"][2]["recorded"], true);
    let o = cli(&p).arg("list").assert().success();
    let out = String::from_utf8_lossy(&o.get_output().stdout).into_owned();
    assert!(
        out.contains("img (img-rootfs-v<N>)") && out.contains(" v6 "),
        "{out}"
    );

    // promote: local checks first, then the missing Proxmox settings
    let o = cli(&p)
        .args(["promote", "img", "v9", "--storage", "local"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(err.contains("v9 of img is not recorded"), "{err}");
    let o = cli(&p)
        .args(["--json", "promote", "img", "v6", "--storage", "local"])
        .assert()
        .failure();
    let j: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("Proxmox settings are not configured"),
        "{j}"
    );
    assert!(!p.path().join("versions/img.auto.tfvars.json").exists());
    let o = cli(&p)
        .args(["promote", "img", "vx", "--storage", "local"])
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&o.get_output().stderr).contains("'vx' is not a version"));
}
