//! Integration tests against the real Docker Engine: a tiny busybox base imported through the
//! API, scripts copied in through the archive API, failures and cleanup. Signals, timeouts, a
//! full disk and the engine going away are in build_faults.rs.

mod support;

use std::process::Command;

use support::*;

/// A project whose base is the tiny busybox rootfs, with the given scripts.
fn tiny_project(image: &str, provision: &[(&str, &str)], cleanup: &[(&str, &str)]) -> Project {
    let p = Project::new();
    tiny_rootfs(&p.path().join("bases/tiny.tar"));
    let mut prov = Vec::new();
    for (name, body) in provision {
        p.write(&format!("provision/{name}"), body);
        prov.push(format!("\"provision/{name}\""));
    }
    let mut clean = Vec::new();
    for (name, body) in cleanup {
        p.write(&format!("cleanup/{name}"), body);
        clean.push(format!("\"cleanup/{name}\""));
    }
    p.write(
        &format!("images/{image}.toml"),
        &format!(
            "prefix = \"{image}-rootfs\"\nprovision = [{}]\ncleanup = [{}]\n[base]\nrootfs = \"bases/tiny.tar\"\n",
            prov.join(", "),
            clean.join(", ")
        ),
    );
    p
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

const PROVISION: &str = r#"#!/bin/sh
set -eu
echo "provisioning $LXCFORGE_IMAGE v$LXCFORGE_VERSION from $LXCFORGE_BASE_DIGEST"
echo "epoch=$SOURCE_DATE_EPOCH frontend=$DEBIAN_FRONTEND" >&2
mkdir -p /opt/demo
printf 'hello\n' > /opt/demo/file
ln /opt/demo/file /opt/demo/hardlink
ln -s file /opt/demo/symlink
chmod 4755 /opt/demo/file
mkfifo /opt/demo/fifo
chown 1000:1000 /opt/demo
printf 'IMAGE=%s\nVERSION=%s\nCOMMIT=%s\n' "$LXCFORGE_IMAGE" "$LXCFORGE_VERSION" "$LXCFORGE_GIT_COMMIT" > /etc/lxcforge-release
"#;

const CLEANUP: &str = "#!/bin/sh\nset -eu\nrm -rf /tmp/* /var/log/*\necho cleaned\n";

#[test]
fn builds_a_tiny_image_into_a_complete_artifact() {
    if !docker_ok() {
        return;
    }
    let image = unique("t-ok");
    let p = tiny_project(
        &image,
        &[("10-demo.sh", PROVISION)],
        &[("90-clean.sh", CLEANUP)],
    );
    let out = p.run(&[
        "--json",
        "build",
        &image,
        "--next",
        "--source-date-epoch",
        "1700000000",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "build failed:\n{err}");
    // streamed, prefixed output from each script, in order
    let prov = err
        .find("[10-demo.sh] provisioning")
        .expect("provision output streamed");
    let clean = err
        .find("[90-clean.sh] cleaned")
        .expect("cleanup output streamed");
    assert!(prov < clean);
    assert!(
        err.contains("[10-demo.sh] epoch=1700000000 frontend=noninteractive"),
        "{err}"
    );

    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json result on stdout");
    assert_eq!(result["version"], 1);
    let name = format!("{image}-rootfs-v1.tar.gz");
    assert_eq!(
        p.artifact_names(),
        vec![
            format!("{image}-rootfs-v1.json"),
            name.clone(),
            format!("{name}.sha256")
        ]
    );
    let artifact = p.artifacts().join(&name);
    // the sidecar is what sha256sum -c accepts
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(p.artifacts())
        .output()
        .unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", stderr(&check));
    assert_eq!(result["sha256"], sha256_file(&artifact));

    let members = tar_list(&artifact);
    assert_eq!(members[0], "./", "root entry first");
    assert!(
        members.iter().all(|m| m.starts_with("./")),
        "all names ./-prefixed"
    );
    assert!(members.contains(&"./opt/demo/file".to_owned()));
    assert!(
        !members.iter().any(|m| m.contains(".lxcforge")),
        "scripts removed: {members:?}"
    );
    assert!(!members.iter().any(|m| m == "./.dockerenv"));

    // owners, modes, hard link, symlink, fifo, as GNU tar sees them
    let o = Command::new("tar")
        .args(["-tvf"])
        .arg(&artifact)
        .arg("--numeric-owner")
        .output()
        .unwrap();
    let listing = stdout(&o);
    let line = |m: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(m))
            .unwrap_or_else(|| panic!("{m} in\n{listing}"))
            .to_owned()
    };
    assert!(
        line("./opt/demo/file").starts_with("-rwsr-xr-x 0/0"),
        "{}",
        line("./opt/demo/file")
    );
    assert!(line("./opt/demo/").starts_with("drwxr-xr-x 1000/1000"));
    assert!(
        listing.contains("./opt/demo/hardlink link to ./opt/demo/file"),
        "{listing}"
    );
    assert!(line("./opt/demo/symlink -> file").starts_with("lrwxrwxrwx"));
    assert!(line("./opt/demo/fifo").starts_with("p"));

    // the manifest
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.artifacts().join(format!("{image}-rootfs-v1.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(m["version"], 1);
    assert_eq!(m["image"]["name"], image.as_str());
    assert_eq!(m["image"]["definition"], format!("images/{image}.toml"));
    assert_eq!(m["artifact"]["sha256"], result["sha256"]);
    assert_eq!(
        m["artifact"]["size"],
        std::fs::metadata(&artifact).unwrap().len()
    );
    assert_eq!(m["artifact"]["members"], members.len() as u64);
    assert_eq!(m["base"]["kind"], "rootfs");
    assert_eq!(
        m["base"]["digest"],
        format!("sha256:{}", sha256_file(&p.path().join("bases/tiny.tar")))
    );
    assert_eq!(m["scripts"][0]["path"], "provision/10-demo.sh");
    assert_eq!(m["scripts"][0]["stage"], "provision");
    assert_eq!(m["scripts"][1]["stage"], "cleanup");
    assert_eq!(m["source_date_epoch"], 1_700_000_000);
    assert!(
        m["timings"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("export"))
    );
    assert_eq!(m["tool"]["version"], env!("CARGO_PKG_VERSION"));

    // the ledger records the published version (versions/<image>.json under the root)
    let ledger_file = p.path().join(format!("versions/{image}.json"));
    let ledger = |f: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(f).expect("ledger written")).unwrap()
    };
    let l = ledger(&ledger_file);
    assert_eq!(l["image"], image.as_str());
    assert_eq!(l["versions"][0]["version"], 1);
    assert_eq!(l["versions"][0]["file"], name.as_str());
    assert_eq!(l["versions"][0]["sha256"], result["sha256"]);
    assert_eq!(l["versions"][0]["size"], m["artifact"]["size"]);
    assert_eq!(l["versions"][0]["base_digest"], m["base"]["digest"]);
    assert_eq!(l["versions"][0]["validation"]["passed"], true);

    // nothing left on the engine or on disk
    assert!(containers_named(&format!("lxcforge-{image}-")).is_empty());
    assert!(
        !p.artifacts()
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging"))
    );

    // the next build is v2, and the base is not imported again
    let out = p.run(&["build", &image, "--next"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already imported"),
        "{}",
        stderr(&out)
    );
    assert!(
        p.artifacts()
            .join(format!("{image}-rootfs-v2.tar.gz"))
            .is_file()
    );
    let l = ledger(&ledger_file);
    assert_eq!(l["versions"].as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l["versions"][1]["version"], 2);

    // an explicit existing version is refused, and nothing is overwritten
    let before = sha256_file(&artifact);
    let out = p.run(&["build", &image, "--version", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(sha256_file(&artifact), before);
    cleanup_images(&p);
}

#[test]
fn a_failing_script_stops_the_build_and_leaves_nothing() {
    if !docker_ok() {
        return;
    }
    let image = unique("t-fail");
    let fail = "#!/bin/sh\necho step one\necho 'something broke' >&2\nexit 3\n";
    let never = "#!/bin/sh\necho SHOULD-NOT-RUN\n";
    let p = tiny_project(&image, &[("10-fail.sh", fail), ("20-never.sh", never)], &[]);
    let out = p.run(&["build", &image, "--next"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("script 10-fail.sh failed with exit code 3"),
        "{err}"
    );
    assert!(err.contains("something broke"), "last lines shown: {err}");
    assert!(!err.contains("SHOULD-NOT-RUN"));
    assert!(
        containers_named(&format!("lxcforge-{image}-")).is_empty(),
        "container leaked"
    );
    assert!(
        p.artifact_names().is_empty(),
        "files left: {:?}",
        p.artifact_names()
    );
    assert!(
        !p.path().join(format!("versions/{image}.json")).exists(),
        "a failed build was recorded"
    );
    cleanup_images(&p);
}

#[test]
fn a_template_failing_validation_is_not_published() {
    if !docker_ok() {
        return;
    }
    let image = unique("t-invalid");
    // An unlocked root password is exactly what a golden image must never ship.
    let bad = "#!/bin/sh\nset -e\necho 'root:$6$salt$hash:19000:0:99999:7:::' > /etc/shadow\n";
    let p = tiny_project(&image, &[("10-bad.sh", bad)], &[]);
    let out = p.run(&["build", &image, "--next"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed validation, so it was not published"),
        "{err}"
    );
    assert!(err.contains("secrets.shadow"), "{err}");
    assert!(err.contains("root"), "{err}");
    assert!(p.artifact_names().is_empty(), "{:?}", p.artifact_names());
    assert!(containers_named(&format!("lxcforge-{image}-")).is_empty());
    cleanup_images(&p);
}

#[test]
fn rootfs_sha256_mismatch_is_refused_before_import() {
    if !docker_ok() {
        return;
    }
    let image = unique("t-sha");
    let p = tiny_project(&image, &[("10-demo.sh", "#!/bin/sh\ntrue\n")], &[]);
    let def = p.path().join(format!("images/{image}.toml"));
    let text = std::fs::read_to_string(&def).unwrap();
    std::fs::write(&def, format!("{text}sha256 = \"{}\"\n", "0".repeat(64))).unwrap();
    let out = p.run(&["build", &image, "--next"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("bases/tiny.tar has sha256"), "{err}");
    assert!(err.contains(&"0".repeat(64)), "{err}");
    let images = Command::new("docker")
        .args(["images", "-q", &format!("lxcforge-base/{image}")])
        .output()
        .unwrap();
    assert!(stdout(&images).trim().is_empty(), "nothing imported");
    assert!(p.artifact_names().is_empty());
}

#[test]
fn unreachable_docker_says_where_it_looked() {
    let image = unique("t-nodocker");
    let p = tiny_project(&image, &[("10-demo.sh", "#!/bin/sh\ntrue\n")], &[]);
    let out = p
        .cmd(&["build", &image, "--next"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "cannot reach the Docker Engine at unix:///nonexistent/docker.sock (from DOCKER_HOST)"
        ),
        "{err}"
    );
    assert!(err.contains("DOCKER_HOST"), "{err}");
    assert!(p.artifact_names().is_empty(), "{:?}", p.artifact_names());
}

#[test]
fn an_unpullable_base_explains_the_offline_path() {
    if !docker_ok() {
        return;
    }
    let image = unique("t-nopull");
    let p = Project::new();
    p.write("provision/10.sh", "#!/bin/sh\ntrue\n");
    // Port 9 on loopback: nothing listens, so the engine cannot pull.
    p.write(
        &format!("images/{image}.toml"),
        &format!(
            "prefix = \"x\"\nprovision = [\"provision/10.sh\"]\n[base]\nimage = \"127.0.0.1:9/lxcforge/none:1@sha256:{}\"\n",
            "ab".repeat(32)
        ),
    );
    let out = p.run(&["build", &image, "--next"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot pull base image 127.0.0.1:9/lxcforge/none:1@sha256:"),
        "{err}"
    );
    assert!(err.contains("rootfs = "), "offline path explained: {err}");
    assert!(err.contains("make base.debian-12"), "{err}");
    assert!(containers_named(&format!("lxcforge-{image}-")).is_empty());
}

#[test]
fn export_packs_an_existing_container() {
    if !docker_ok() {
        return;
    }
    let p = Project::new();
    tiny_rootfs(&p.path().join("bases/tiny.tar"));
    let tag = format!("lxcforge-test/export:{}", std::process::id());
    let imp = Command::new("docker")
        .args([
            "import",
            p.path().join("bases/tiny.tar").to_str().unwrap(),
            &tag,
        ])
        .output()
        .unwrap();
    assert!(imp.status.success(), "{}", stderr(&imp));
    let name = format!("lxcforge-test-export-{}", std::process::id());
    let c = Command::new("docker")
        .args(["create", "--name", &name, &tag, "/bin/sh"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", stderr(&c));
    let out_file = p.path().join("out.tar.gz");
    let out = p.run(&["--json", "export", &name, out_file.to_str().unwrap()]);
    let wrong = p.run(&[
        "export",
        &name,
        p.path().join("out.tar.zst").to_str().unwrap(),
    ]);
    let again = p.run(&["export", &name, out_file.to_str().unwrap()]);
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["sha256"], sha256_file(&out_file));
    let members = tar_list(&out_file);
    assert_eq!(members[0], "./");
    assert!(members.contains(&"./bin/busybox".to_owned()));
    assert!(!members.contains(&"./.dockerenv".to_owned()));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("must end in .tar.gz"),
        "{}",
        stderr(&wrong)
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("never overwrites"),
        "{}",
        stderr(&again)
    );
}

/// Removes the base images a test project imported (the build keeps them as a cache).
fn cleanup_images(p: &Project) {
    // Only this project's images: tests running in parallel share the process id, so a pid
    // match alone would remove another test's base between its two builds.
    let names: Vec<String> = std::fs::read_dir(p.path().join("images"))
        .unwrap()
        .flatten()
        .filter_map(|e| Some(e.path().file_stem()?.to_str()?.to_owned()))
        .collect();
    let o = Command::new("docker")
        .args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            "reference=lxcforge-base/t-*",
        ])
        .output()
        .unwrap();
    for img in stdout(&o).lines() {
        if names
            .iter()
            .any(|n| img.starts_with(&format!("lxcforge-base/{}:", n.to_ascii_lowercase())))
        {
            let _ = Command::new("docker").args(["rmi", "-f", img]).output();
        }
    }
    // An image untagged while another test's container still used it stays dangling; prune
    // only removes dangling images no container uses, so this is safe next to running tests.
    let _ = Command::new("docker")
        .args([
            "image",
            "prune",
            "-f",
            "--filter",
            "label=org.lxcforge.rootfs-sha256",
        ])
        .output();
}
