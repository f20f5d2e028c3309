//! Pull by digest against a real registry (Debian's `docker-registry`) on 127.0.0.1.

mod support;

use std::process::Command;

use support::*;

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn pulls_a_pinned_base_by_digest_from_a_local_registry() {
    if !docker_ok() {
        return;
    }
    let Some(reg) = start_registry() else { return };
    let p = Project::new();
    tiny_rootfs(&p.path().join("bases/tiny.tar"));
    let repo = format!("127.0.0.1:{}/lxcforge-test/tiny", reg.port);
    let tagged = format!("{repo}:1");
    docker(&[
        "import",
        p.path().join("bases/tiny.tar").to_str().unwrap(),
        &tagged,
    ]);
    let push = docker(&["push", &tagged]);
    let digest = push
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .expect("push prints the digest")
        .to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // Make sure the engine does not have it any more: the build must pull it.
    docker(&["rmi", "-f", &tagged]);

    p.write("provision/10.sh", "#!/bin/sh\necho pulled-base-ok\n");
    let image = format!("t-pull-{}", std::process::id());
    let def = |base: &str| {
        format!(
            "prefix = \"{image}-rootfs\"\nprovision = [\"provision/10.sh\"]\n[base]\nimage = \"{base}\"\n"
        )
    };
    p.write(
        &format!("images/{image}.toml"),
        &def(&format!("{tagged}@{digest}")),
    );

    let out = p.run(&["--json", "build", &image, "--next"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("pulling {tagged}@{digest}")), "{err}");
    assert!(err.contains("[10.sh] pulled-base-ok"));
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.artifacts().join(format!("{image}-rootfs-v1.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(m["base"]["kind"], "image");
    assert_eq!(m["base"]["digest"], digest.as_str());
    assert_eq!(m["base"]["reference"], format!("{tagged}@{digest}"));

    // present now: no second pull
    let out = p.run(&["build", &image, "--next"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already on the engine"),
        "{}",
        stderr(&out)
    );

    // an unpinned tag is refused, unless asked for; then the digest is still recorded
    p.write(&format!("images/{image}.toml"), &def(&tagged));
    let out = p.run(&["build", &image, "--next"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not pinned by digest"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--allow-unpinned"));
    let out = p.run(&["build", &image, "--next", "--allow-unpinned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.artifacts().join(format!("{image}-rootfs-v3.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(m["base"]["digest"], digest.as_str());

    // a digest the registry does not have: a clear pull error, nothing left behind
    let wrong = format!("sha256:{}", "0".repeat(64));
    p.write(
        &format!("images/{image}.toml"),
        &def(&format!("{repo}@{wrong}")),
    );
    let out = p.run(&["build", &image, "--next"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot pull base image {repo}@{wrong}")),
        "{err}"
    );
    assert!(containers_named(&format!("lxcforge-{image}-")).is_empty());
    assert!(
        !p.artifacts()
            .join(format!("{image}-rootfs-v4.tar.gz"))
            .exists()
    );

    let _ = Command::new("docker")
        .args(["rmi", "-f", &format!("{repo}@{digest}"), &tagged])
        .output();
}
