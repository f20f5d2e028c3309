//! One test per Docker leftover the packer removes or replaces (issue 3, item 4), checked both in
//! the archive (independent reader) and after extraction with Proxmox's exact GNU tar command.

mod pack_common;

use lxcforge::pack::policy::{HOSTNAME_DEFAULT, HOSTS_DEFAULT, RESOLV_CONF_DEFAULT};
use pack_common::*;
use std::os::unix::fs::MetadataExt;

/// A minimal Docker-like export around `extra` (which must be in canonical order relative to
/// the skeleton: callers pass members under `dev/` and `etc/`).
fn stream(extra: Vec<Entry>) -> Vec<Entry> {
    let mut all = vec![Entry::dir("bin"), Entry::file("bin/sh", b"#!sh\n", 0o755)];
    all.extend(extra);
    all.push(Entry::dir("usr"));
    all
}

fn pack_and_list(entries: &[Entry]) -> (Vec<Listed>, lxcforge::pack::PackReport, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let (gz, report) = pack_vec(&docker_tar(entries), &opts(tmp.path()));
    (list(&gunzip(&gz)), report, gz)
}

fn names(l: &[Listed]) -> Vec<String> {
    l.iter().map(|m| m.name_str()).collect()
}

fn extract(
    gz: &[u8],
) -> (
    tempfile::TempDir,
    std::collections::BTreeMap<Vec<u8>, Found>,
) {
    let root = tempfile::tempdir().unwrap();
    let err = extract_like_proxmox(
        gz,
        &lxcforge::pack::Compression::Gzip { level: 6 },
        root.path(),
    );
    assert_eq!(err, "", "GNU tar complained");
    let found = scan(root.path());
    (root, found)
}

#[test]
fn dockerenv_is_dropped() {
    let mut e = vec![Entry::file(".dockerenv", b"", 0o755)];
    e.extend(stream(vec![]));
    let (l, report, gz) = pack_and_list(&e);
    assert!(find(&l, "./.dockerenv").is_none(), "{:?}", names(&l));
    assert!(find(&l, "./bin/sh").is_some());
    assert_eq!(
        report.dropped,
        vec!["./.dockerenv (docker marker)".to_string()]
    );
    let (_root, found) = extract(&gz);
    assert!(!found.contains_key(b".dockerenv".as_slice()));
    assert!(found.contains_key(b"bin/sh".as_slice()));
}

#[test]
fn init_stubs_are_replaced_by_root_owned_0644_defaults() {
    let mut stubs = vec![Entry::dir("etc")];
    for n in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        let mut s = Entry::file(n, b"", 0o755);
        s.mtime = EPOCH + 99_999; // the engine creates them at run time
        stubs.push(s);
    }
    let (l, report, gz) = pack_and_list(&stream(stubs));
    for (n, want) in [
        ("./etc/hosts", HOSTS_DEFAULT),
        ("./etc/hostname", HOSTNAME_DEFAULT),
        ("./etc/resolv.conf", RESOLV_CONF_DEFAULT),
    ] {
        let m = find(&l, n).unwrap_or_else(|| panic!("{n} missing: {:?}", names(&l)));
        assert_eq!(m.ty, b'0', "{n}");
        assert_eq!(m.mode, 0o644, "{n}");
        assert_eq!((m.uid, m.gid), (0, 0), "{n}");
        assert_eq!(m.mtime, EPOCH, "{n}");
        assert_eq!(m.data, want, "{n}");
        assert!(
            report
                .dropped
                .iter()
                .any(|d| d.starts_with(&format!("{n} ")) && d.contains("replaced")),
            "{n} not reported: {:?}",
            report.dropped
        );
    }
    assert!(HOSTS_DEFAULT.starts_with(b"127.0.0.1\tlocalhost\n"));
    assert!(String::from_utf8_lossy(HOSTS_DEFAULT).contains("::1\tlocalhost"));
    assert_eq!(report.dropped.len(), 3, "{:?}", report.dropped);

    let (_root, found) = extract(&gz);
    let hosts = &found[b"etc/hosts".as_slice()];
    assert_eq!(hosts.data.as_deref(), Some(HOSTS_DEFAULT));
    assert_eq!(mode_of(&hosts.meta), 0o644);
    assert_eq!(hosts.meta.uid(), 0);
    assert_eq!(
        file_kind(&found[b"etc/resolv.conf".as_slice()].meta),
        "file"
    );
}

#[test]
fn real_files_shipped_by_the_image_are_kept_byte_for_byte() {
    let hosts = b"127.0.0.1 localhost myimage\n".to_vec();
    let resolv = b"nameserver 9.9.9.9\n".to_vec();
    let mut hostname = Entry::file("etc/hostname", b"", 0o644); // empty but 0644: real
    hostname.uid = 0;
    let mut h = Entry::file("etc/hosts", &hosts, 0o755); // non-empty 0755: real
    h.uid = 12;
    h.gid = 34;
    let r = Entry::file("etc/resolv.conf", &resolv, 0o644);
    let (l, report, gz) = pack_and_list(&stream(vec![Entry::dir("etc"), hostname, h, r]));
    let m = find(&l, "./etc/hosts").unwrap();
    assert_eq!((m.mode, m.uid, m.gid, &m.data), (0o755, 12, 34, &hosts));
    let m = find(&l, "./etc/hostname").unwrap();
    assert_eq!((m.mode, m.data.len()), (0o644, 0));
    let m = find(&l, "./etc/resolv.conf").unwrap();
    assert_eq!((m.mode, &m.data), (0o644, &resolv));
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (_root, found) = extract(&gz);
    assert_eq!(found[b"etc/hosts".as_slice()].data.as_ref(), Some(&hosts));
    assert_eq!(
        found[b"etc/resolv.conf".as_slice()].data.as_ref(),
        Some(&resolv)
    );
}

#[test]
fn resolv_conf_symlink_is_kept() {
    let target = b"../run/systemd/resolve/stub-resolv.conf";
    let link = Entry::new("etc/resolv.conf", Node::Symlink(target.to_vec()), 0o777);
    let (l, report, gz) = pack_and_list(&stream(vec![Entry::dir("etc"), link]));
    let m = find(&l, "./etc/resolv.conf").unwrap();
    assert_eq!(m.ty, b'2');
    assert_eq!(m.link, target);
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (_root, found) = extract(&gz);
    assert_eq!(
        found[b"etc/resolv.conf".as_slice()].link.as_deref(),
        Some(target.as_slice())
    );
}

#[test]
fn dev_console_stub_is_dropped() {
    let (l, report, gz) = pack_and_list(&stream(vec![
        Entry::dir("dev"),
        Entry::file("dev/console", b"", 0o755),
    ]));
    assert!(find(&l, "./dev/console").is_none(), "{:?}", names(&l));
    assert!(find(&l, "./dev/").is_some(), "dev/ itself is kept");
    assert_eq!(
        report.dropped,
        vec!["./dev/console (docker init-layer stub)".to_string()]
    );
    extract(&gz);
}

#[test]
fn device_nodes_are_dropped_everywhere() {
    let devs = vec![
        Entry::dir("dev"),
        Entry::new("dev/null", Node::Char(1, 3), 0o666),
        Entry::new("dev/sda", Node::Block(8, 0), 0o660),
        Entry::new("dev/zero", Node::Char(1, 5), 0o666),
        Entry::dir("lib"),
        Entry::dir("lib/udev"),
        Entry::new("lib/udev/loop0", Node::Block(7, 0), 0o660),
        Entry::new("lib/udev/tty", Node::Char(5, 0), 0o666),
        // a hard link to a dropped device goes too (it would re-create the node)
        Entry::new(
            "lib/udev/tty2",
            Node::HardLink(b"lib/udev/tty".to_vec()),
            0o666,
        ),
        Entry::new("lib/udev/zfifo", Node::Fifo, 0o600),
    ];
    let (l, report, gz) = pack_and_list(&stream(devs));
    for m in &l {
        assert!(m.ty != b'3' && m.ty != b'4', "device {} kept", m.name_str());
    }
    assert!(find(&l, "./dev/").is_some());
    assert_eq!(find(&l, "./lib/udev/zfifo").map(|m| m.ty), Some(b'6'));
    let mut want: Vec<String> = [
        "./dev/null (device node)",
        "./dev/sda (device node)",
        "./dev/zero (device node)",
        "./lib/udev/loop0 (device node)",
        "./lib/udev/tty (device node)",
        "./lib/udev/tty2 (hard link to a dropped member)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(report.dropped, want);
    let (_root, found) = extract(&gz);
    assert!(!found.contains_key(b"lib/udev/loop0".as_slice()));
    assert!(!found.contains_key(b"lib/udev/tty2".as_slice()));
    assert_eq!(file_kind(&found[b"lib/udev/zfifo".as_slice()].meta), "fifo");
}

#[test]
fn runtime_mount_contents_are_dropped_but_dirs_kept() {
    let e = vec![
        Entry::dir("dev"),
        Entry::dir("dev/pts"),
        Entry::new("dev/pts/ptmx", Node::Symlink(b"pts/ptmx".to_vec()), 0o777),
        Entry::new("dev/pts/0", Node::Char(136, 0), 0o620),
        Entry::new("dev/shm", Node::Dir, 0o1777),
        Entry::dir("dev/shm/sem"),
        Entry::file("dev/shm/sem/x", b"leftover", 0o600),
        Entry::file("dev/shmx", b"image content", 0o644),
    ];
    let (l, report, gz) = pack_and_list(&stream(e));
    assert_eq!(find(&l, "./dev/pts/").map(|m| m.ty), Some(b'5'));
    let shm = find(&l, "./dev/shm/").unwrap();
    assert_eq!(shm.mode, 0o1777);
    for gone in [
        "./dev/pts/ptmx",
        "./dev/pts/0",
        "./dev/shm/sem/",
        "./dev/shm/sem/x",
    ] {
        assert!(find(&l, gone).is_none(), "{gone} kept");
    }
    assert!(find(&l, "./dev/shmx").is_some());
    let mut want: Vec<String> = [
        "./dev/pts/0 (device node)",
        "./dev/pts/ptmx (runtime mount contents)",
        "./dev/shm/sem/ (runtime mount contents)",
        "./dev/shm/sem/x (runtime mount contents)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(report.dropped, want);
    // Proxmox excludes ./dev/* but creates ./dev itself
    let (_root, found) = extract(&gz);
    assert_eq!(file_kind(&found[b"dev".as_slice()].meta), "dir");
    assert!(!found.contains_key(b"dev/pts".as_slice()));
}

#[test]
fn all_leftovers_together_are_each_named_in_the_report() {
    let mut e = vec![Entry::file(".dockerenv", b"", 0o755)];
    e.extend(stream(vec![
        Entry::dir("dev"),
        Entry::file("dev/console", b"", 0o755),
        Entry::new("dev/null", Node::Char(1, 3), 0o666),
        Entry::dir("dev/pts"),
        Entry::new("dev/pts/ptmx", Node::Char(5, 2), 0o666),
        Entry::dir("dev/shm"),
        Entry::dir("etc"),
        Entry::file("etc/hostname", b"", 0o755),
        Entry::file("etc/hosts", b"", 0o755),
        Entry::file("etc/resolv.conf", b"", 0o755),
    ]));
    let (l, report, gz) = pack_and_list(&e);
    assert_eq!(report.dropped.len(), 7, "{:#?}", report.dropped);
    for n in [
        "./.dockerenv",
        "./dev/console",
        "./dev/null",
        "./dev/pts/ptmx",
        "./etc/hostname",
        "./etc/hosts",
        "./etc/resolv.conf",
    ] {
        assert!(
            report
                .dropped
                .iter()
                .any(|d| d.starts_with(&format!("{n} "))),
            "{n}: {:?}",
            report.dropped
        );
    }
    assert_eq!(report.members as usize, l.len());
    let got = names(&l);
    assert_eq!(
        got,
        [
            "./",
            "./bin/",
            "./bin/sh",
            "./dev/",
            "./dev/pts/",
            "./dev/shm/",
            "./etc/",
            "./etc/hostname",
            "./etc/hosts",
            "./etc/resolv.conf",
            "./usr/"
        ]
    );
    extract(&gz);
}

/// The rules give the same output and the same report when the leftovers arrive out of order
/// (spool path, including the replay of the part already streamed).
#[test]
fn leftovers_out_of_order_give_the_same_bytes_and_report() {
    let mut e = vec![Entry::file(".dockerenv", b"", 0o755)];
    e.extend(stream(vec![
        Entry::dir("dev"),
        Entry::file("dev/console", b"", 0o755),
        Entry::new("dev/null", Node::Char(1, 3), 0o666),
        Entry::dir("dev/shm"),
        Entry::file("dev/shm/x", b"x", 0o600),
        Entry::dir("etc"),
        Entry::file("etc/hostname", b"", 0o755),
        Entry::file("etc/hosts", b"", 0o755),
        Entry::new("etc/null-link", Node::HardLink(b"dev/null".to_vec()), 0o666),
        Entry::file("etc/resolv.conf", b"", 0o755),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let (a, ra) = pack_vec(&docker_tar(&e), &opts(tmp.path()));
    assert!(!ra.spooled);
    assert_eq!(ra.dropped.len(), 8, "{:#?}", ra.dropped);
    // move the middle to the end: the first part streams, then the rest spools
    let mut late = e.clone();
    let mid: Vec<Entry> = late.drain(3..7).collect();
    late.extend(mid);
    let mut reversed = e.clone();
    reversed.reverse();
    for (label, order) in [("late", late), ("reversed", reversed)] {
        let (b, rb) = pack_vec(&docker_tar(&order), &opts(tmp.path()));
        assert!(rb.spooled, "{label}");
        assert_eq!(rb.dropped, ra.dropped, "{label}: report differs");
        assert!(a == b, "{label}: bytes differ");
        assert_eq!(rb.sha256, ra.sha256);
    }
}
