//! Issue 3, item 3: the artifact extracts cleanly with the exact command Proxmox runs for an
//! unprivileged container (pve-container `restore_tar_archive` under `lxc-usernsexec` with the
//! default 100000 id map, proxmox-api.md §8.2), and the tree lands with shifted owners and intact
//! modes. A raw `docker export` fails this (bare `dev/…` names escape `--exclude ./dev/*`).

mod pack_common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use lxcforge::pack::Compression;

use pack_common::*;

const CAP_NET_RAW_EP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const MAP: &str = "root:100000:65536";

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Makes sure root has the default Proxmox map in /etc/subuid and /etc/subgid (tests run as
/// root). Returns false (skip) when the prerequisites are missing outside CI.
fn prerequisites() -> bool {
    if !which("lxc-usernsexec") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("lxc missing");
        }
        eprintln!("SKIP: lxc-usernsexec not installed");
        return false;
    }
    for f in ["/etc/subuid", "/etc/subgid"] {
        let cur = std::fs::read_to_string(f).unwrap_or_default();
        if !cur.lines().any(|l| l.trim() == MAP) {
            let mut h = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .unwrap();
            let sep = if cur.is_empty() || cur.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            writeln!(h, "{sep}{MAP}").unwrap();
        }
    }
    true
}

/// Proxmox's exact command for an unprivileged CT; returns (status, stderr).
fn extract_unprivileged(artifact: &[u8], root: &Path) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new("lxc-usernsexec");
    cmd.args([
        "-m",
        "u:0:100000:65536",
        "-m",
        "g:0:100000:65536",
        "--",
        "tar",
    ])
    .args(proxmox_tar_args(&Compression::Gzip { level: 4 }, root));
    let out = run_with_stdin(cmd, artifact);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn container_root(tmp: &Path) -> std::path::PathBuf {
    let root = tmp.join("rootfs");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(100000), Some(100000)).unwrap();
    // the mapped root must be able to reach it
    let mut p = std::fs::metadata(tmp).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(tmp, p).unwrap();
    root
}

fn tree() -> Vec<Entry> {
    let mut ping = Entry::file("bin/ping", &[0x7f, b'E', b'L', b'F', 1, 2, 3], 0o755);
    ping.xattrs = vec![("security.capability".into(), CAP_NET_RAW_EP.to_vec())];
    let mut su = Entry::file("bin/su", b"su binary", 0o4755);
    su.xattrs = vec![("user.origin".into(), b"shadow".to_vec())];
    let mut home = Entry::dir("home/user");
    home.uid = 1000;
    home.gid = 1000;
    home.mode = 0o700;
    let mut dotfile = Entry::file("home/user/.profile", b"export A=1\n", 0o644);
    dotfile.uid = 1000;
    dotfile.gid = 1000;
    let mut mail = Entry::new("var/mail", Node::Dir, 0o2775);
    mail.gid = 8;
    let long = format!(
        "usr/share/{}",
        "very-long-directory-name/".repeat(5).trim_end_matches('/')
    );
    let mut nobody = Entry::file("usr/share/nobody", b"n", 0o640);
    nobody.uid = 65534;
    nobody.gid = 65534;
    let e = vec![
        Entry::file(".dockerenv", b"", 0o755),
        Entry::dir("bin"),
        Entry::new("bin/bash", Node::File(b"bash".to_vec()), 0o755),
        ping,
        Entry::new("bin/rbash", Node::HardLink(b"bin/bash".to_vec()), 0o755),
        Entry::new("bin/sh", Node::Symlink(b"bash".to_vec()), 0o777),
        su,
        Entry::dir("dev"),
        Entry::file("dev/console", b"", 0o755),
        Entry::new("dev/null", Node::Char(1, 3), 0o666),
        Entry::dir("dev/pts"),
        Entry::new("dev/pts/ptmx", Node::Char(5, 2), 0o666),
        Entry::new("dev/sda", Node::Block(8, 0), 0o660),
        Entry::new("dev/shm", Node::Dir, 0o1777),
        Entry::dir("etc"),
        Entry::file("etc/hostname", b"", 0o755),
        Entry::file("etc/hosts", b"", 0o755),
        Entry::file("etc/resolv.conf", b"", 0o755),
        Entry::dir("home"),
        home,
        dotfile,
        Entry::dir("lib"),
        Entry::new("lib/loop0", Node::Block(7, 0), 0o660),
        Entry::new("run", Node::Dir, 0o755),
        Entry::new("run/initctl", Node::Fifo, 0o600),
        Entry::new("tmp", Node::Dir, 0o1777),
        Entry::dir("usr"),
        Entry::dir("usr/share"),
        nobody,
        Entry::dir("usr/share/very-long-directory-name"),
        Entry::dir("usr/share/very-long-directory-name/very-long-directory-name"),
        Entry::dir(
            "usr/share/very-long-directory-name/very-long-directory-name/very-long-directory-name",
        ),
        Entry::dir(
            "usr/share/very-long-directory-name/very-long-directory-name/very-long-directory-name/very-long-directory-name",
        ),
        Entry::dir(&long),
        Entry::file(&format!("{long}/file"), b"deep", 0o644),
        Entry::dir("var"),
        mail,
    ];
    // Docker's order (lexical depth-first walk), so the packer streams it straight through
    let key = |e: &Entry| {
        e.path
            .split(|&b| b == b'/')
            .map(|c| c.to_vec())
            .collect::<Vec<_>>()
    };
    assert!(
        e.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "tree() not in Docker's order"
    );
    e
}

#[test]
fn unprivileged_proxmox_extraction_succeeds_with_shifted_owners() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (gz, report) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    assert!(!report.spooled);
    let root = container_root(tmp.path());
    let (status, stderr) = extract_unprivileged(&gz, &root);
    let noise: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Total bytes read"))
        .collect();
    assert!(
        status.success(),
        "tar under lxc-usernsexec failed ({status}):\n{stderr}"
    );
    assert!(noise.is_empty(), "unexpected stderr:\n{stderr}");
    assert!(
        stderr.contains("Total bytes read"),
        "--totals line missing: {stderr}"
    );

    let found = scan(&root);
    let get = |p: &str| {
        found
            .get(p.as_bytes())
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    let owner = |p: &str| (get(p).meta.uid(), get(p).meta.gid());
    let mode = |p: &str| mode_of(&get(p).meta);

    let root_meta = std::fs::metadata(&root).unwrap();
    assert_eq!(
        (root_meta.uid(), root_meta.gid(), mode_of(&root_meta)),
        (100000, 100000, 0o755)
    );
    for (p, m) in [
        ("bin/bash", 0o755),
        ("bin/su", 0o4755),
        ("bin/ping", 0o755),
        ("tmp", 0o1777),
        ("etc/hosts", 0o644),
    ] {
        assert_eq!(owner(p), (100000, 100000), "{p}");
        assert_eq!(mode(p), m, "{p}");
    }
    assert_eq!(owner("home/user"), (101000, 101000));
    assert_eq!(mode("home/user"), 0o700);
    assert_eq!(owner("home/user/.profile"), (101000, 101000));
    assert_eq!(owner("usr/share/nobody"), (165534, 165534));
    assert_eq!(mode("usr/share/nobody"), 0o640);
    assert_eq!(owner("var/mail"), (100000, 100008));
    assert_eq!(mode("var/mail"), 0o2775);
    assert_eq!(file_kind(&get("run/initctl").meta), "fifo");
    assert_eq!(get("bin/sh").link.as_deref(), Some(b"bash".as_slice()));
    assert_eq!(
        get("bin/rbash").meta.ino(),
        get("bin/bash").meta.ino(),
        "hard link became a copy"
    );
    let long = format!(
        "usr/share/{}/file",
        "very-long-directory-name/".repeat(5).trim_end_matches('/')
    );
    assert_eq!(get(&long).data.as_deref(), Some(b"deep".as_slice()));
    assert_eq!(
        get("bin/su")
            .xattrs
            .get("user.origin")
            .map(|v| v.as_slice()),
        Some(b"shadow".as_slice())
    );
    assert_eq!(
        get("etc/hosts")
            .data
            .as_deref()
            .map(|d| d.starts_with(b"127.0.0.1\tlocalhost")),
        Some(true)
    );
    assert!(!found.contains_key(b".dockerenv".as_slice()));
    assert!(!found.contains_key(b"lib/loop0".as_slice()));

    // The capability: written from inside the user namespace, the kernel stores it as a v3
    // capability bound to the namespace's root (uid 100000), which `getxattr` from the host
    // shows as v3 with rootid 100000; the permitted/effective bits must be cap_net_raw+ep.
    let cap = get("bin/ping")
        .xattrs
        .get("security.capability")
        .expect("capability lost");
    assert!(
        cap.len() == 20 || cap.len() == 24,
        "capability blob {cap:02x?}"
    );
    assert_eq!(cap[0] & 1, 1, "effective flag lost: {cap:02x?}");
    assert_eq!(
        &cap[4..8],
        &[0, 0x20, 0, 0],
        "permitted set is not cap_net_raw: {cap:02x?}"
    );
    if cap.len() == 24 {
        assert_eq!(&cap[..4], &[1, 0, 0, 3]);
        assert_eq!(
            u32::from_le_bytes(cap[20..24].try_into().unwrap()),
            100000,
            "rootid"
        );
    }

    // dev/ exists (Proxmox skips everything below it), nothing below it was created
    assert_eq!(file_kind(&get("dev").meta), "dir");
    assert!(found.keys().all(|k| !k.starts_with(b"dev/")));
}

/// The negative control: the raw Docker-style stream itself, fed to the same command, fails
/// (bare `dev/null` escapes the anchored `./dev/*` exclude, mknod is refused). If this ever
/// passes, the positive test above proves less than it claims.
#[test]
fn raw_docker_stream_fails_the_same_extraction() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut gz = Vec::new();
    {
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&docker_tar(&tree())).unwrap();
        enc.finish().unwrap();
    }
    let root = container_root(tmp.path());
    let (status, stderr) = extract_unprivileged(&gz, &root);
    assert!(!status.success(), "raw stream extracted cleanly:\n{stderr}");
    assert!(
        stderr.contains("dev/null") || stderr.contains("mknod") || stderr.contains("Cannot"),
        "{stderr}"
    );
}
