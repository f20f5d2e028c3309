//! End to end: build the shipped `debian-12` definition from its debootstrap base through the real
//! engine, check facts about the artifact, then boot it under real LXC the way Proxmox would
//! (unprivileged extraction with Proxmox's tar flags) and check systemd, sshd and the machine-id.

mod support;

use std::process::Command;

use support::*;

#[test]
fn debian_12_builds_and_boots_under_lxc() {
    if !docker_ok() {
        return;
    }
    let root = repo_root();
    let base = root.join("bases/debian-12-minbase.tar.gz");
    if !require(
        "the debian-12 base (bases/debian-12-minbase.tar.gz: run `make base.debian-12`)",
        base.is_file(),
    ) {
        return;
    }
    if !require(
        "LXC (Debian package lxc: lxc-start, lxc-usernsexec)",
        have_cmd("lxc-start") && have_cmd("lxc-usernsexec"),
    ) {
        return;
    }
    if !require(
        "root (LXC and the unprivileged extraction need it)",
        is_root(),
    ) {
        return;
    }
    // The build imports the base as lxcforge-base/debian-12:<sha256>, the engine-side cache a
    // later `make image.build-next` reuses; a test that imported it removes it again, so each
    // fresh debootstrap does not leave another image behind.
    let _base_image = ImportedBase::track(&base);
    // The build records itself in the project's ledger (versions/debian-12.json); the test's
    // v1 must neither land in a developer's ledger nor see their versions.
    let _ledger = LedgerAside::new(&root.join("versions/debian-12.json"));
    let out_dir = tempfile::Builder::new()
        .prefix("lxcforge-e2e-")
        .tempdir()
        .unwrap();
    let o = Command::new(bin())
        .arg("--root")
        .arg(&root)
        .args(["--json", "build", "debian-12", "--next", "--out-dir"])
        .arg(out_dir.path())
        .env("CI", "true")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "debian-12 build failed:\n{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["version"], 1);
    let artifact = out_dir.path().join("debian-12-lxc-rootfs-v1.tar.gz");
    assert!(artifact.is_file());
    assert!(
        containers_named("lxcforge-debian-12-").is_empty(),
        "build container leaked"
    );

    // Facts about the archive, as GNU tar reads it.
    let listing = {
        let o = Command::new("tar")
            .arg("-tvf")
            .arg(&artifact)
            .arg("--numeric-owner")
            .output()
            .unwrap();
        assert!(o.status.success());
        stdout(&o)
    };
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap_or(""))
        .collect();
    assert_eq!(names[0], "./");
    assert!(
        listing
            .lines()
            .next()
            .unwrap()
            .starts_with("drwxr-xr-x 0/0"),
        "{}",
        listing.lines().next().unwrap()
    );
    assert!(names.iter().all(|n| n.starts_with("./")));
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with('c') || l.starts_with('b')),
        "no device nodes"
    );
    for gone in ["./.dockerenv", "./.lxcforge/"] {
        assert!(!names.contains(&gone), "{gone} must not be in the template");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("./etc/ssh/ssh_host_")),
        "no SSH host keys"
    );
    // Debian 12's debootstrap merges /usr: ./sbin is a symlink and init lives in ./usr/sbin.
    assert!(
        names.contains(&"./sbin/init") || names.contains(&"./usr/sbin/init"),
        "no sbin/init"
    );
    for needed in [
        "./etc/os-release",
        "./etc/debian_version",
        "./etc/lxcforge-release",
        "./usr/sbin/sshd",
    ] {
        assert!(names.contains(&needed), "{needed} missing");
    }
    let machine_id = listing
        .lines()
        .find(|l| l.ends_with(" ./etc/machine-id"))
        .expect("etc/machine-id kept");
    assert!(
        machine_id.split_whitespace().nth(2) == Some("0"),
        "machine-id is empty: {machine_id}"
    );

    // The manifest knows the packages and the base.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.path().join("debian-12-lxc-rootfs-v1.json")).unwrap(),
    )
    .unwrap();
    let pkgs: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["systemd", "systemd-sysv", "openssh-server", "dbus"] {
        assert!(pkgs.contains(&p), "{p} not in the package list");
    }
    assert_eq!(
        m["base"]["digest"],
        format!("sha256:{}", sha256_file(&base))
    );

    // Boot it under LXC the way Proxmox extracts it.
    let boot = Command::new("bash")
        .arg(root.join("tests/support/lxc-boot.sh"))
        .arg(&artifact)
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&boot), stderr(&boot));
    assert!(boot.status.success(), "LXC boot checks failed:\n{report}");
    for check in [
        "extract",
        "systemd",
        "failed-units",
        "sshd-config",
        "ssh-listen",
        "machine-id",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "no PASS line for {check}:\n{report}"
        );
    }
}

/// Removes the base image on drop (also when the test fails) if it was not there before.
struct ImportedBase(Option<String>);

impl ImportedBase {
    fn track(tarball: &std::path::Path) -> ImportedBase {
        let sidecar = tarball.with_extension("gz.sha256");
        let sha = std::fs::read_to_string(&sidecar)
            .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
        let tag = format!(
            "lxcforge-base/debian-12:{}",
            sha.split_whitespace().next().unwrap_or_default()
        );
        let present = Command::new("docker")
            .args(["image", "inspect", &tag])
            .output()
            .is_ok_and(|o| o.status.success());
        ImportedBase((!present).then_some(tag))
    }
}

impl Drop for ImportedBase {
    fn drop(&mut self) {
        if let Some(tag) = &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
    }
}

/// Moves an existing ledger aside for the test and puts it back on drop (removing the one the
/// test's build wrote), so the project's `versions/` is as it was.
struct LedgerAside {
    path: std::path::PathBuf,
    saved: Option<std::path::PathBuf>,
    dir_existed: bool,
}

impl LedgerAside {
    fn new(path: &std::path::Path) -> LedgerAside {
        let dir_existed = path.parent().is_some_and(|d| d.is_dir());
        let saved = path.is_file().then(|| {
            let to = path.with_extension("json.e2e-saved");
            std::fs::rename(path, &to).unwrap();
            to
        });
        LedgerAside {
            path: path.to_owned(),
            saved,
            dir_existed,
        }
    }
}

impl Drop for LedgerAside {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(saved) = &self.saved {
            let _ = std::fs::rename(saved, &self.path);
        }
        if !self.dir_existed
            && let Some(dir) = self.path.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
