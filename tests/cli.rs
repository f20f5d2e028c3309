//! The command line without an engine: help, completions, and definition errors.

mod support;

use support::*;

#[test]
fn help_lists_every_command() {
    let o = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let h = stdout(&o);
    for cmd in [
        "build",
        "export",
        "validate",
        "next-version",
        "list",
        "promote",
        "diff",
        "images",
        "gc",
        "completions",
    ] {
        assert!(h.contains(cmd), "{cmd} missing from help:\n{h}");
    }
    let o = std::process::Command::new(bin())
        .args(["build", "--help"])
        .output()
        .unwrap();
    let h = stdout(&o);
    for flag in [
        "--next",
        "--version",
        "--allow-unpinned",
        "--script-timeout",
        "--compress",
        "--json",
    ] {
        assert!(h.contains(flag), "{flag} missing from build help:\n{h}");
    }
}

#[test]
fn bash_completions_are_generated() {
    let o = std::process::Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("_lxcforge()") && s.contains("next-version"),
        "{s}"
    );
    // the script is valid bash
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &s])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn a_misspelled_definition_gets_suggestions() {
    let p = Project::new();
    p.write("provision/10.sh", "#!/bin/sh\n");
    let def =
        "prefix = \"d\"\nprovision = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n";
    p.write("images/debian-12.toml", def);
    p.write("images/ubuntu-24.04.toml", def);
    let o = p.run(&["build", "debain-12", "--next"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("image definition 'debain-12' not found"), "{e}");
    assert!(e.contains("did you mean 'debian-12'?"), "{e}");
    assert!(e.contains("ubuntu-24.04"), "{e}");
}

#[test]
fn definition_errors_name_the_key_and_file() {
    let p = Project::new();
    p.write("provision/10.sh", "#!/bin/sh\n");
    p.write(
        "images/x.toml",
        "prefix = \"d\"\nprovison = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n",
    );
    let o = p.run(&["--json", "build", "x", "--next"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("images/x.toml"), "{e}");
    assert!(e.contains("provison"), "{e}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json error object");
    assert_eq!(j["ok"], false);
    assert!(j["error"].as_str().unwrap().contains("provison"));
}

#[test]
fn build_requires_a_version_choice() {
    let p = Project::new();
    p.write("provision/10.sh", "#!/bin/sh\n");
    p.write(
        "images/x.toml",
        "prefix = \"d\"\nprovision = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n",
    );
    let o = p.run(&["build", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--next"), "{}", stderr(&o));
    let o = p.run(&["build", "x", "--next", "--version", "3"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects the conflict");
}

#[test]
fn next_version_reads_local_artifacts() {
    let p = Project::new();
    p.write("provision/10.sh", "#!/bin/sh\n");
    p.write("images/x.toml", "prefix = \"x-rootfs\"\nprovision = [\"provision/10.sh\"]\n[base]\nrootfs = \"bases/x.tar\"\n");
    let o = p.run(&["next-version", "x"]);
    assert_eq!(stdout(&o).trim(), "1");
    for v in [
        "x-rootfs-v1.tar.gz",
        "x-rootfs-v2.tar.gz",
        "x-rootfs-v10.tar.gz",
        "x-rootfs-v11.json",
        "other-v40.tar.gz",
    ] {
        p.write(&format!("artifacts/{v}"), "");
    }
    let o = p.run(&["next-version", "x"]);
    assert_eq!(stdout(&o).trim(), "11", "{}", stderr(&o));
    let o = p.run(&["--json", "next-version", "x"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["next"], 11);
}

#[test]
fn the_shipped_definitions_load() {
    let o = std::process::Command::new(bin())
        .arg("--root")
        .arg(repo_root())
        .args(["--json", "images"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debian-12", "ubuntu-24.04"]);
    for d in j.as_array().unwrap() {
        assert!(d.get("error").is_none(), "{d}");
    }
    assert_eq!(j[1]["prefix"], "ubuntu-24.04-lxc-rootfs");
    assert!(
        j[1]["base"]
            .as_str()
            .unwrap()
            .starts_with("ubuntu:24.04@sha256:")
    );
}

#[test]
fn validate_exit_codes() {
    let p = Project::new();
    // 2: unreadable input
    let o = p.run(&[
        "validate",
        p.path().join("missing.tar.gz").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.tar.gz"));
    // 2: an unknown target release
    let f = p.write("x.tar", "");
    let o = p.run(&["validate", "--pve-version", "1.0", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // 1: a readable template with failing checks; --json still reports them
    let tree = p.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("etc/shadow"),
        "root:$6$salt$hash:19000:0:99999:7:::\n",
    )
    .unwrap();
    let t = p.path().join("bad.tar");
    let mk = std::process::Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&t)
        .arg(".")
        .output()
        .unwrap();
    assert!(mk.status.success());
    let o = p.run(&["--json", "validate", t.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shadow = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "secrets.shadow")
        .unwrap();
    assert_eq!(shadow["status"], "fail", "{shadow}");
}
