//! Hostile image definitions, through the real command line (`lxcforge build NAME --next`):
//! every case must end quickly with a non-zero exit, a message naming the file, the cause and a
//! fix, no panic, no raw control characters on the terminal, and an unchanged project tree.
//! Definitions are loaded before Docker is touched, so no engine is needed.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Project, record_fault};

const GOOD: &str = "prefix = \"x-lxc-rootfs\"\nprovision = [\"provision/10-a.sh\"]\n[base]\nrootfs = \"bases/x.tar.gz\"\n";

/// A project with one good script and `images/x.toml` = `def`.
fn project(def: &str) -> Project {
    let p = Project::new();
    p.write("provision/10-a.sh", "#!/bin/sh\necho a\n");
    p.write("images/x.toml", def);
    p
}

fn def_with_script(path: &str) -> String {
    GOOD.replace("provision/10-a.sh", path)
}

/// Every path under `root` with its type and size (symlinks not followed).
fn snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                format!("file {}", m.len())
            } else {
                format!("{:?}", m.file_type())
            };
            (e.path().to_owned(), what)
        })
        .collect();
    v.sort();
    v
}

/// Runs `lxcforge --root P build NAME --next`, killing it (by its own pid) after 20 s.
fn build(p: &Project, name: &str) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = p
        .cmd(&["build", name, "--next"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lxcforge build {name} hung for 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().unwrap(), t.elapsed())
}

/// Runs the build, checks the common contract, returns the message. `expect` must appear in it.
#[track_caller]
fn refused(p: &Project, name: &str, fault: &str, expect: &[&str]) -> String {
    let before = snapshot(p.path());
    let (out, took) = build(p, name);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{fault}: accepted\n{err}");
    assert!(!err.contains("panicked"), "{fault}: panic\n{err}");
    assert!(
        !err.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{fault}: raw control characters on the terminal: {err:?}"
    );
    assert!(err.contains("fix:"), "{fault}: no fix\n{err}");
    assert!(
        err.contains("images/"),
        "{fault}: the file is not named\n{err}"
    );
    for e in expect {
        assert!(err.contains(e), "{fault}: expected {e:?} in\n{err}");
    }
    assert!(err.len() < 2000, "{fault}: {} bytes of message", err.len());
    assert!(took < Duration::from_secs(5), "{fault}: took {took:?}");
    assert_eq!(before, snapshot(p.path()), "{fault}: the project changed");
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("error: ");
    // the temporary project path is not worth keeping in the table
    let outcome = format!(
        "refused in {} ms, exit {}: {}",
        took.as_millis(),
        out.status.code().unwrap_or(-1),
        first.replace(&p.path().display().to_string(), "<project>")
    );
    record_fault("input", fault, &outcome, "nothing");
    err
}

#[test]
fn script_paths_leaving_the_project() {
    let p = project(&def_with_script("../../etc/passwd"));
    refused(
        &p,
        "x",
        "definition: script path ../../etc/passwd",
        &["provision script '../../etc/passwd' points outside the project"],
    );
    let p = project(&def_with_script("/etc/passwd"));
    refused(
        &p,
        "x",
        "definition: absolute script path /etc/passwd",
        &["points outside the project"],
    );
}

#[test]
fn symlinks_escaping_the_tree() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.sh"), "#!/bin/sh\nrm -rf /\n").unwrap();
    std::fs::create_dir(outside.path().join("lib")).unwrap();
    std::fs::write(outside.path().join("lib/y.sh"), "#!/bin/sh\n").unwrap();

    // a script that is a symlink out of the tree
    let p = project(&def_with_script("provision/evil.sh"));
    symlink(
        outside.path().join("x.sh"),
        p.path().join("provision/evil.sh"),
    )
    .unwrap();
    refused(
        &p,
        "x",
        "definition: script is a symlink to a file outside the project",
        &["outside the project (through a symlink)"],
    );

    // the whole provision/ directory is a symlink out of the tree
    let p = project(&def_with_script("provision/x.sh"));
    std::fs::remove_dir_all(p.path().join("provision")).unwrap();
    symlink(outside.path(), p.path().join("provision")).unwrap();
    refused(
        &p,
        "x",
        "definition: provision/ is a symlink to a directory outside the project",
        &[
            "'provision/x.sh'",
            "outside the project (through a symlink)",
        ],
    );

    // a script path through a symlinked parent directory
    let p = project(&def_with_script("provision/lib/y.sh"));
    symlink(outside.path().join("lib"), p.path().join("provision/lib")).unwrap();
    refused(
        &p,
        "x",
        "definition: script path through a symlinked parent directory pointing outside",
        &[
            "'provision/lib/y.sh'",
            "outside the project (through a symlink)",
        ],
    );

    // a symlink to a device: outside the tree, never opened
    let p = project(&def_with_script("provision/zero.sh"));
    symlink("/dev/zero", p.path().join("provision/zero.sh")).unwrap();
    refused(
        &p,
        "x",
        "definition: script is a symlink to /dev/zero",
        &["outside the project"],
    );

    // near miss: a symlinked parent that stays inside the project is fine
    let p = project(&def_with_script("provision/shared/10-a.sh"));
    std::fs::create_dir(p.path().join("common")).unwrap();
    std::fs::write(p.path().join("common/10-a.sh"), "#!/bin/sh\n").unwrap();
    symlink(p.path().join("common"), p.path().join("provision/shared")).unwrap();
    let d = lxcforge::definition::load(p.path(), "x", Default::default()).unwrap();
    assert!(d.provision[0].abs.ends_with("common/10-a.sh"));
}

#[test]
fn scripts_that_are_not_small_regular_files() {
    // 1 GiB, sparse: refused from its size, never read
    let p = project(&def_with_script("provision/huge.sh"));
    let f = std::fs::File::create(p.path().join("provision/huge.sh")).unwrap();
    f.set_len(1 << 30).unwrap();
    refused(
        &p,
        "x",
        "definition: 1 GiB script file",
        &["is 1073741824 bytes, over the 4194304-byte limit for scripts"],
    );

    // a FIFO: opening it would block until someone writes
    let p = project(&def_with_script("provision/fifo.sh"));
    let ok = Command::new("mkfifo")
        .arg(p.path().join("provision/fifo.sh"))
        .status()
        .is_ok_and(|s| s.success());
    if support::require("mkfifo (coreutils)", ok) {
        refused(
            &p,
            "x",
            "definition: script is a FIFO",
            &["'provision/fifo.sh' is not a regular file"],
        );
    }

    let p = project(&def_with_script("provision"));
    refused(
        &p,
        "x",
        "definition: script path is a directory",
        &["'provision' is not a regular file"],
    );

    let p = project(&def_with_script(""));
    refused(
        &p,
        "x",
        "definition: empty script path",
        &["provision script '' is an empty path"],
    );

    let p = project(&def_with_script("provision/a\\u0000.sh"));
    refused(
        &p,
        "x",
        "definition: NUL byte in a script path (TOML \\u0000 escape)",
        &["contains a NUL byte"],
    );
}

#[test]
fn definition_files_that_are_not_small_utf8_toml() {
    // raw NUL bytes: a parse error naming the line, with the NUL escaped
    let p = project(&format!("{GOOD}# note\0\0\n"));
    refused(
        &p,
        "x",
        "definition: NUL bytes in the TOML",
        &["is invalid: TOML parse error at line 5", "\\u{0}"],
    );

    // Latin-1
    let p = project(GOOD);
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes.extend_from_slice(b"description = \"caf\xe9\"\n");
    std::fs::write(p.path().join("images/x.toml"), bytes).unwrap();
    let at = format!(
        "is not UTF-8 text (invalid byte at offset {}, line 5)",
        GOOD.len() + "description = \"caf".len()
    );
    refused(&p, "x", "definition: not UTF-8 (Latin-1 byte)", &[&at]);

    // 100 MB (sparse): refused from its size, never read
    let p = project(GOOD);
    let f = std::fs::File::create(p.path().join("images/big.toml")).unwrap();
    f.set_len(100_000_000).unwrap();
    refused(
        &p,
        "big",
        "definition: 100 MB definition file",
        &["is 100000000 bytes; a definition is a few lines of TOML"],
    );

    // not regular files: a FIFO (would block), a symlink to /dev/zero (never ends), a directory
    let p = project(GOOD);
    let ok = Command::new("mkfifo")
        .arg(p.path().join("images/fifo.toml"))
        .status()
        .is_ok_and(|s| s.success());
    if support::require("mkfifo (coreutils)", ok) {
        refused(
            &p,
            "fifo",
            "definition: images/<name>.toml is a FIFO",
            &["images/fifo.toml is not a regular file"],
        );
    }
    let p = project(GOOD);
    symlink("/dev/zero", p.path().join("images/zero.toml")).unwrap();
    refused(
        &p,
        "zero",
        "definition: images/<name>.toml is a symlink to /dev/zero",
        &["images/zero.toml is not a regular file"],
    );
    let p = project(GOOD);
    std::fs::create_dir(p.path().join("images/dir.toml")).unwrap();
    refused(
        &p,
        "dir",
        "definition: images/<name>.toml is a directory",
        &["images/dir.toml is not a regular file"],
    );
}

#[test]
fn hostile_toml_content() {
    // nesting deep enough to overflow a naive recursive parser
    let p = project(&format!("x = {}\n", "[".repeat(200_000)));
    refused(
        &p,
        "x",
        "definition: 200 000 nested arrays",
        &["is invalid: TOML parse error"],
    );
    let p = project(&format!("x = {}\n", "{a=".repeat(60_000)));
    refused(
        &p,
        "x",
        "definition: 60 000 nested inline tables",
        &["is invalid: TOML parse error"],
    );
    // a terminal escape in a value: shown escaped
    let p = project(&GOOD.replace("x-lxc-rootfs", "\\u001b[2J\\u001b]0;pwned\\u0007"));
    refused(
        &p,
        "x",
        "definition: terminal escape sequences in a value",
        &["`prefix` '\\u{1b}[2J\\u{1b}]0;pwned\\u{7}'"],
    );
    // a 200 KB value: shown shortened
    let p = project(&GOOD.replace("x-lxc-rootfs", &"a".repeat(200_000)));
    refused(
        &p,
        "x",
        "definition: 200 KB prefix value",
        &["… (200000 bytes)' must be 1 to 100 characters"],
    );
    // one 250 KB line of garbage: the quoted line is cut
    let p = project(&format!("{GOOD}{}\n", "z".repeat(250_000)));
    refused(
        &p,
        "x",
        "definition: one 250 KB line of garbage",
        &["is invalid: TOML parse error at line 5"],
    );
}
