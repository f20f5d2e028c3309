//! `lxcforge upload` against the Proxmox emulator: the normal flow, what is refused before
//! any upload, and every server-side fault. Each test checks the final state on the emulated
//! storage (byte-identical or absent, no temp files), the exit code and the message, and
//! (through `run`) that the token secret never appears.

mod support;
mod upload_common;

use std::time::Duration;

use support::record_fault;
use upload_common::*;

const AREA: &str = "Uploads";

#[test]
fn happy_path_json_and_the_request_proxmox_needs() {
    let fx = Fixture::start(config());
    let file = fx.template("debian-12-lxc-rootfs-v1.tar.gz", 3 << 20);
    let r = run(fx.cmd().arg("--json").arg(&file), &[]);
    r.assert_code(0);
    let j = r.json();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["sha256_source"], "computed");
    let up = &j["uploads"][0];
    assert_eq!(j["uploads"].as_array().unwrap().len(), 1);
    assert_eq!(up["node"], "pve");
    assert_eq!(up["storage"], "local");
    assert_eq!(up["volid"], "local:vztmpl/debian-12-lxc-rootfs-v1.tar.gz");
    assert_eq!(up["size"], 3 << 20);
    assert_eq!(up["sha256"], sha256_of(&file));
    assert_eq!(up["shared"], false);
    assert!(
        up["upid"].as_str().unwrap().starts_with("UPID:pve:"),
        "{up}"
    );
    assert!(up["duration_secs"].as_f64().unwrap() > 0.0);
    fx.assert_stored_identical("pve", "local", &file);

    // Exactly one POST, shaped as pveproxy's parser needs it.
    let posts = fx.uploads();
    assert_eq!(posts.len(), 1);
    let p = &posts[0];
    assert_eq!(p.path, "/api2/json/nodes/pve/storage/local/upload");
    assert_eq!(
        p.part_names,
        ["content", "checksum-algorithm", "checksum", "filename"]
    );
    let len: u64 = p
        .header("Content-Length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(p.body_len, len, "nothing sent after the closing boundary");
    assert!(
        p.header("Transfer-Encoding").is_none(),
        "no chunked encoding"
    );
    let ct = p.header("Content-Type").unwrap();
    assert!(
        ct.starts_with("multipart/form-data; boundary=") && !ct.contains('"'),
        "{ct}"
    );
    assert_eq!(p.status, Some(200));
    // The token went only into the header, where the emulator redacts it.
    assert_eq!(
        p.header("Authorization"),
        Some(format!("PVEAPIToken={TOKEN_ID}=<redacted>").as_str())
    );
    // Checked before: /version, the storage, the listing; read back after.
    let paths: Vec<String> = fx.emu.requests().iter().map(|r| r.path.clone()).collect();
    let pos = |needle: &str| paths.iter().position(|p| p.contains(needle));
    assert!(pos("/version") < pos("/upload"), "{paths:?}");
    assert!(pos("/storage/local/content") < pos("/upload"), "{paths:?}");
    assert!(
        paths.iter().rposition(|p| p.contains("/content")) > pos("/upload"),
        "read back after the upload: {paths:?}"
    );
}

#[test]
fn the_checksum_is_sent_and_verified_by_the_task() {
    let fx = Fixture::start(config());
    let file = fx.template("t-v1.tar.zst", 700 << 10);
    run(fx.cmd().arg(&file), &[]).assert_code(0);
    let tasks = fx.emu.tasks();
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(
        (t.kind.as_str(), t.exitstatus.as_deref()),
        ("imgcopy", Some("OK"))
    );
    assert!(
        t.log
            .iter()
            .any(|l| l == "calculating checksum...OK, checksum verified"),
        "{:?}",
        t.log
    );
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn a_sidecar_checksum_is_used_and_a_stale_one_stores_nothing() {
    let fx = Fixture::start(config());
    let file = fx.template("img-v2.tar.gz", 1 << 20);
    let name = "img-v2.tar.gz";
    let side = fx.dir.path().join(format!("{name}.sha256"));
    std::fs::write(&side, format!("{}  {name}\n", sha256_of(&file))).unwrap();
    let r = run(fx.cmd().arg("--json").arg(&file), &[]);
    r.assert_code(0);
    assert_eq!(r.json()["sha256_source"], "sidecar");
    fx.assert_stored_identical("pve", "local", &file);

    // The file changed after its sidecar was written: Proxmox's task refuses it.
    let file = fx.template("img-v3.tar.gz", 1 << 20);
    std::fs::write(
        fx.dir.path().join("img-v3.tar.gz.sha256"),
        format!("{}  img-v3.tar.gz\n", "ab".repeat(32)),
    )
    .unwrap();
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "checksum mismatch: a stale .sha256 sidecar (the file changed after it)",
        &r.outcome_in(&fx),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("arrived corrupted")
        .assert_stderr("checksum mismatch")
        .assert_stderr("sidecar says")
        .assert_stderr("nothing was stored");
    fx.assert_nothing_stored("pve", "local", "img-v3.tar.gz");
}

#[test]
fn an_existing_volid_is_refused_before_any_upload() {
    let fx = Fixture::start(config());
    let file = fx.template("web-v4.tar.gz", 200 << 10);
    fx.emu
        .put_file("pve", "local", "web-v4.tar.gz", b"the old one");
    fx.record_built(&file);
    let r = run(fx.cmd().arg("--json").arg(&file), &[]);
    let old = fx.stored("pve", "local", "web-v4.tar.gz");
    record_fault(
        AREA,
        "an existing volid (local:vztmpl/web-v4.tar.gz already on the storage)",
        &format!(
            "{}; {} upload request(s) sent; the stored file {}",
            r.outcome_in(&fx),
            fx.uploads().len(),
            match &old {
                Some(b) if b == b"the old one" => "is the old one, unchanged".to_owned(),
                Some(b) => format!("CHANGED ({} bytes)", b.len()),
                None => "is GONE".to_owned(),
            }
        ),
        &format!(
            "{} (+ the old file, by design)",
            match fx.ledger_uploads(&file).len() {
                0 => "nothing; 0 ledger upload records".to_owned(),
                n => format!("{n} ledger upload record(s)"),
            }
        ),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("local:vztmpl/web-v4.tar.gz already exists on node 'pve' (11 bytes)")
        .assert_stderr("never replaces");
    assert_eq!(r.json()["ok"], false);
    assert!(fx.uploads().is_empty(), "an upload was sent");
    assert_eq!(
        fx.stored("pve", "local", "web-v4.tar.gz").unwrap(),
        b"the old one"
    );
}

#[test]
fn a_wrong_extension_is_refused_locally() {
    let fx = Fixture::start(config());
    for name in ["t-v1.tgz", "t-v1.tar.lzo", "t-v1.img"] {
        let file = fx.template(name, 1000);
        let r = run(fx.cmd().arg(&file), &[]);
        r.assert_code(2)
            .assert_stderr(name)
            .assert_stderr(".tar.gz, .tar.zst, .tar.xz, .tar.bz2 or .tar");
    }
    assert!(fx.emu.requests().is_empty(), "nothing may reach Proxmox");
}

#[test]
fn an_unknown_storage_is_refused_with_the_ones_there_are() {
    let fx = Fixture::start(config());
    let file = fx.template("t-v1.tar.gz", 1000);
    let r = run(fx.cmd().args(["--storage", "nosuch"]).arg(&file), &[]);
    r.assert_code(1)
        .assert_stderr("storage 'nosuch' does not exist on node 'pve'")
        .assert_stderr("storages with container templates there: local");
    assert!(fx.uploads().is_empty());
}

#[test]
fn a_storage_without_vztmpl_is_refused() {
    let mut cfg = config();
    cfg.storages
        .push(StorageConfig::dir("isos", &["iso", "backup"]));
    let fx = Fixture::start(cfg);
    let file = fx.template("t-v1.tar.gz", 1000);
    let r = run(fx.cmd().env("PM_STORAGE", "isos").arg(&file), &[]);
    r.assert_code(1)
        .assert_stderr("storage 'isos' on node 'pve' does not hold container templates (its content types: backup,iso)")
        .assert_stderr("pvesm set isos --content backup,iso,vztmpl")
        .assert_stderr("storages with container templates there: local");
    assert!(fx.uploads().is_empty());
}

#[test]
fn a_connection_cut_mid_upload_is_sent_again_and_verified() {
    let fx = Fixture::start(config());
    // Larger than the socket buffers, so the cut is seen while the body is still going out
    // (what tells lxcforge that Proxmox cannot have started a task).
    let file = fx.template("cut-v1.tar.gz", 48 << 20);
    fx.emu.inject(Fault::DropConnectionAfterBodyBytes(1 << 20));
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "connection dropped mid-body (after 1 MiB of 48 MiB), once",
        &format!(
            "{}; {} upload request(s), {} task(s)",
            r.outcome_in(&fx),
            fx.uploads().len(),
            fx.emu.tasks().len()
        ),
        &fx.left_behind("pve", "local", &file, true),
    );
    assert_eq!(fx.ledger_uploads(&file).len(), 1, "one ledger record");
    r.assert_code(0)
        .assert_stderr("the upload broke off")
        .assert_stderr("the task cannot have started");
    assert_eq!(fx.uploads().len(), 2);
    assert_eq!(fx.emu.tasks().len(), 1, "one task only");
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn a_connection_cut_every_time_fails_and_stores_nothing() {
    let fx = Fixture::start(config());
    let file = fx.template("cut-v2.tar.gz", 48 << 20);
    for _ in 0..3 {
        fx.emu.inject(Fault::DropConnectionAfterBodyBytes(1 << 20));
    }
    fx.record_built(&file);
    let r = run(fx.cmd().args(["--retries", "2"]).arg(&file), &[]);
    record_fault(
        AREA,
        "connection dropped mid-body on every attempt (--retries 2)",
        &format!(
            "{}; {} upload request(s), {} task(s)",
            r.outcome_in(&fx),
            fx.uploads().len(),
            fx.emu.tasks().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("was cut while uploading to node 'pve'")
        .assert_stderr("tried 3 times")
        .assert_stderr("Datastore.AllocateTemplate")
        .assert_stderr("/var/tmp");
    assert_eq!(fx.uploads().len(), 3);
    assert!(fx.emu.tasks().is_empty());
    fx.assert_nothing_stored("pve", "local", "cut-v2.tar.gz");
}

#[test]
fn a_body_that_went_out_whole_is_never_sent_twice() {
    let fx = Fixture::start(config());
    let file = fx.template("lost-v1.tar.gz", 200 << 10);
    // The emulator drops the connection once it has the body (minus the closing bytes): for
    // the client every byte went out, and no answer came.
    fx.emu
        .inject(Fault::DropConnectionAfterBodyBytes((200 << 10) - 100));
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "connection dropped after the whole body went out, no answer",
        &format!(
            "{}; {} upload request(s)",
            r.outcome_in(&fx),
            fx.uploads().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr(
            "the whole upload went out to node 'pve', but the connection closed before it answered",
        )
        .assert_stderr("does not send the file again")
        .assert_stderr("not on the storage");
    assert_eq!(fx.uploads().len(), 1, "sent once only");
    fx.assert_nothing_stored("pve", "local", "lost-v1.tar.gz");
}

#[test]
fn a_500_on_the_upload_is_reported_and_not_resent() {
    let fx = Fixture::start(config());
    let file = fx.template("e500-v1.tar.gz", 256 << 10);
    fx.emu
        .inject(Fault::UploadStatus500("pvedaemon proxy failed".into()));
    fx.record_built(&file);
    let r = run(fx.cmd().arg("--json").arg(&file), &[]);
    record_fault(
        AREA,
        "HTTP 500 on the upload",
        &format!(
            "{}; {} upload request(s)",
            r.outcome_in(&fx),
            fx.uploads().len()
        ),
        // pveproxy itself leaves its temp file behind on an error before the task (ref §2.12):
        // the server's leak, listed as measured.
        &format!(
            "{} (a temp file here is pveproxy's own, left on an error before the task, ref §2.12)",
            fx.left_behind("pve", "local", &file, false)
        ),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("500 pvedaemon proxy failed")
        .assert_stderr("nothing was stored");
    assert_eq!(r.json()["exit_code"], 1);
    assert_eq!(fx.uploads().len(), 1, "Proxmox answered: never resent");
    assert!(
        fx.emu
            .stored_file("pve", "local", "e500-v1.tar.gz")
            .is_none()
    );
    // pveproxy itself leaves its temp file behind on an error before the task (ref §2.12);
    // that is the server's, not the client's.
    assert!(fx.emu.temp_files().len() <= 1);
}

#[test]
fn a_failed_task_shows_its_log() {
    let fx = Fixture::start(config());
    let file = fx.template("tf-v1.tar.gz", 300 << 10);
    fx.emu.inject(Fault::TaskFails(
        "import failed: cp: cannot create regular file".into(),
    ));
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "the upload task fails (TASK ERROR)",
        &r.outcome_in(&fx),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr(
            "the upload task on node 'pve' failed: import failed: cp: cannot create regular file",
        )
        .assert_stderr("task log (last lines):")
        .assert_stderr("| starting file import from: /var/tmp/pveupload-")
        .assert_stderr("| TASK ERROR: import failed: cp: cannot create regular file");
    fx.assert_nothing_stored("pve", "local", "tf-v1.tar.gz");
}

#[test]
fn a_corrupted_upload_is_a_checksum_mismatch() {
    let fx = Fixture::start(config());
    let file = fx.template("bad-v1.tar.xz", 900 << 10);
    fx.emu.inject(Fault::CorruptUpload);
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "checksum mismatch: a byte flipped on the way",
        &r.outcome_in(&fx),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("the template arrived corrupted on node 'pve': checksum mismatch")
        .assert_stderr("changed on the way")
        .assert_stderr(&sha256_of(&file));
    fx.assert_nothing_stored("pve", "local", "bad-v1.tar.xz");
}

#[test]
fn an_early_no_such_task_is_waited_out() {
    let fx = Fixture::start(config());
    let file = fx.template("nst-v1.tar.gz", 100 << 10);
    fx.emu.inject(Fault::NoSuchTaskFor(3));
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    let polls = fx
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/status"))
        .collect::<Vec<_>>();
    record_fault(
        AREA,
        "`no such task` for the first 3 status polls",
        &format!(
            "{}; {} status polls, {} answered 400",
            r.outcome_in(&fx),
            polls.len(),
            polls.iter().filter(|p| p.status == Some(400)).count()
        ),
        &fx.left_behind("pve", "local", &file, true),
    );
    assert_eq!(fx.ledger_uploads(&file).len(), 1, "one ledger record");
    r.assert_code(0);
    assert!(polls.len() >= 4, "{}", polls.len());
    assert_eq!(polls[0].status, Some(400));
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn a_slow_task_is_followed_to_its_end() {
    let fx = Fixture::start(config());
    let file = fx.template("slow-v1.tar.gz", 100 << 10);
    fx.emu.inject(Fault::SlowTask(Duration::from_secs(3)));
    fx.record_built(&file);
    let r = run(fx.cmd().arg("--json").arg(&file), &[]);
    let secs = r.json()["uploads"][0]["duration_secs"].as_f64();
    record_fault(
        AREA,
        "a slow task (3 s)",
        &format!(
            "{}; upload took {}",
            r.outcome_in(&fx),
            secs.map_or("(no duration)".into(), |s| format!("{s:.1} s"))
        ),
        &fx.left_behind("pve", "local", &file, true),
    );
    assert_eq!(fx.ledger_uploads(&file).len(), 1, "one ledger record");
    r.assert_code(0);
    assert!(secs.unwrap() >= 3.0);
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn a_task_outliving_the_deadline_is_a_timeout_that_says_so() {
    let fx = Fixture::start(config());
    let file = fx.template("late-v1.tar.gz", 100 << 10);
    fx.emu.inject(Fault::SlowTask(Duration::from_secs(6)));
    fx.record_built(&file);
    let r = run(fx.cmd().args(["--upload-timeout", "2s"]).arg(&file), &[]);
    // The task goes on on the node: whatever it stores later is Proxmox's, and the client
    // said so; what counts here is that the ledger recorded nothing it had not verified.
    record_fault(
        AREA,
        "a slow task (6 s) past --upload-timeout 2s",
        &r.outcome_in(&fx),
        &format!(
            "{} ledger upload record(s) (the task goes on on the node; the client says so)",
            fx.ledger_uploads(&file).len()
        ),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("timed out after 2s")
        .assert_stderr("goes on running");
}

#[test]
fn a_full_disk_is_named() {
    let fx = Fixture::start(config());
    let file = fx.template("full-v1.tar.gz", 200 << 10);
    fx.emu.inject(Fault::DiskFull);
    fx.record_built(&file);
    let r = run(fx.cmd().arg(&file), &[]);
    record_fault(
        AREA,
        "the node's /var/tmp full (ENOSPC writing the upload)",
        &r.outcome_in(&fx),
        &format!(
            "{} (a temp file here is pveproxy's own, left on an error before the task, ref §2.12)",
            fx.left_behind("pve", "local", &file, false)
        ),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("node 'pve' ran out of disk space")
        .assert_stderr("No space left on device")
        .assert_stderr("/var/tmp");
    assert!(
        fx.emu
            .stored_file("pve", "local", "full-v1.tar.gz")
            .is_none()
    );
}

#[test]
fn a_storage_too_small_is_refused_before_uploading() {
    let mut cfg = config();
    cfg.storages[0].total = 1 << 20;
    let fx = Fixture::start(cfg);
    let file = fx.template("big-v1.tar.gz", 2 << 20);
    let r = run(fx.cmd().arg(&file), &[]);
    r.assert_code(1)
        .assert_stderr("ran out of disk space")
        .assert_stderr("checked before uploading");
    assert!(fx.uploads().is_empty());
}

#[test]
fn make_style_newest_artifact_of_an_image() {
    let fx = Fixture::start(config());
    let root = fx.dir.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("provision")).unwrap();
    std::fs::write(root.join("provision/10.sh"), "#!/bin/sh\ntrue\n").unwrap();
    std::fs::write(
        root.join("images/tiny.toml"),
        "prefix = \"tiny-lxc\"\nprovision = [\"provision/10.sh\"]\n[base]\nimage = \"busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    for v in [1, 3, 2] {
        write_random(
            &root.join(format!("artifacts/tiny-lxc-v{v}.tar.gz")),
            5000 + v,
            v,
        );
    }
    let r = run(fx.cmd().args(["--json", "--image", "tiny"]), &[]);
    r.assert_code(0);
    assert_eq!(
        r.json()["uploads"][0]["volid"],
        "local:vztmpl/tiny-lxc-v3.tar.gz"
    );
    fx.assert_stored_identical("pve", "local", &root.join("artifacts/tiny-lxc-v3.tar.gz"));
}

#[test]
fn make_image_upload_takes_its_settings_from_the_environment() {
    let fx = Fixture::start(config());
    let file = fx.template("mk-v1.tar.gz", 300 << 10);
    let bin = env!("CARGO_BIN_EXE_lxcforge");
    let cmd = fx.cmd();
    // Same environment as fx.cmd(), but through make; the make line is echoed to stdout.
    let mut make = assert_cmd::Command::new("make");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => make.env(k, v),
            None => make.env_remove(k),
        };
    }
    make.arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("image.upload")
        .arg(format!("FILE={}", file.display()))
        .arg(format!("LXCFORGE={bin}"));
    let r = run(&mut make, &[]);
    r.assert_code(0);
    assert!(
        r.stdout.contains(" upload ") && r.stdout.contains("mk-v1.tar.gz"),
        "{}",
        r.stdout
    );
    fx.assert_stored_identical("pve", "local", &file);
}
