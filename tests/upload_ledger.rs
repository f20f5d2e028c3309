//! The upload, the ledger and the resolver together, against the Proxmox emulator: a verified
//! upload is recorded in `versions/<image>.json`, `promote` then pins it, and versions that
//! exist only on the storage are never handed out again.

mod upload_common;

use lxcforge::ledger;
use upload_common::*;

/// The image is named after its prefix, as `Fixture::record_built` records it.
const PREFIX: &str = "img";

/// A project in the fixture's directory: one definition and its v1 artifact in the ledger.
fn project(fx: &Fixture) -> std::path::PathBuf {
    let root = fx.dir.path();
    std::fs::create_dir_all(root.join("provision")).unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    std::fs::write(root.join("provision/10.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        root.join("images/img.toml"),
        format!(
            "prefix = \"{PREFIX}\"\nprovision = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n"
        ),
    )
    .unwrap();
    let file = root.join(format!("artifacts/{PREFIX}-v1.tar.gz"));
    write_random(&file, 600 << 10, 7);
    fx.record_built(&file);
    file
}

#[test]
fn a_verified_upload_is_recorded_and_can_be_promoted() {
    let fx = Fixture::start(config());
    let file = project(&fx);

    // Not uploaded yet: promote refuses, naming the storage.
    run(
        fx.command("promote")
            .args(["img", "v1", "--storage", "local"]),
        &[],
    )
    .assert_code(1)
    .assert_stderr("local:vztmpl/img-v1.tar.gz");

    let r = run(fx.cmd().arg("--json").arg("--image").arg("img"), &[]);
    r.assert_code(0);
    assert_eq!(r.json()["ledger"]["version"], 1, "{}", r.json());
    let l = ledger::load(fx.dir.path(), "img").unwrap().unwrap();
    let ups = &l.entry(1).unwrap().uploads;
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].volid, "local:vztmpl/img-v1.tar.gz");
    assert_eq!(ups[0].node, "pve");
    assert_eq!(ups[0].size, 600 << 10);
    assert_eq!(ups[0].sha256, sha256_of(&file));
    assert_eq!(ups[0].upid, fx.emu.tasks()[0].upid);
    let ledger_text = std::fs::read_to_string(ledger::path(fx.dir.path(), "img")).unwrap();
    assert!(
        !ledger_text.contains(SECRET),
        "the secret reached the ledger"
    );

    // Now on the storage with the recorded size and sha256: promote pins it.
    let r = run(
        fx.command("promote")
            .args(["--json", "img", "v1", "--storage", "local"]),
        &[],
    );
    r.assert_code(0);
    let tfvars =
        std::fs::read_to_string(fx.dir.path().join("versions/img.auto.tfvars.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&tfvars).unwrap();
    assert_eq!(
        v["lxc_template_img"], "local:vztmpl/img-v1.tar.gz",
        "{tfvars}"
    );
    assert_eq!(v["lxc_template_img_sha256"], sha256_of(&file).as_str());
}

#[test]
fn versions_present_only_on_the_storage_stay_taken() {
    let fx = Fixture::start(config());
    project(&fx);
    fx.emu.put_file(
        "pve",
        "local",
        &format!("{PREFIX}-v7.tar.gz"),
        b"from elsewhere",
    );
    fx.emu.put_file(
        "pve",
        "local",
        &format!("{PREFIX}-v70.tar.xz.bak"),
        b"ignored",
    );
    let r = run(fx.command("next-version").args(["--json", "img"]), &[]);
    r.assert_code(0);
    let j = r.json();
    assert_eq!(j["next"], 8, "{j}");
    assert_eq!(j["highest"]["remote"], 7, "{j}");
    assert_eq!(j["highest"]["ledger"], 1, "{j}");

    // Without any Proxmox settings, --remote is refused instead of silently ignored.
    let mut c = fx.command("next-version");
    for k in [
        "PM_API_URL",
        "PM_API_TOKEN_ID",
        "PM_API_TOKEN_SECRET",
        "PM_NODE",
    ] {
        c.env_remove(k);
    }
    run(c.args(["--remote", "img"]), &[])
        .assert_code(1)
        .assert_stderr("Proxmox settings are not configured");
}

#[test]
fn a_file_no_ledger_knows_uploads_with_a_warning() {
    let fx = Fixture::start(config());
    project(&fx);
    let other = fx.template("foreign-v3.tar.gz", 100 << 10);
    let r = run(fx.cmd().arg("--json").arg(&other), &[]);
    r.assert_code(0)
        .assert_stderr("no ledger entry was written");
    assert!(r.json()["ledger"].is_null());
    let l = ledger::load(fx.dir.path(), "img").unwrap().unwrap();
    assert!(l.entry(1).unwrap().uploads.is_empty());
}
