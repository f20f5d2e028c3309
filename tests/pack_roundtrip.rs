//! Issue 3, items 2 and 9: generated trees (odd and long names, every member type, special mode
//! bits, owners, xattrs incl. a file capability, hard links) written as a Docker export, packed,
//! extracted with Proxmox's exact GNU tar command, and compared with the spec.

mod pack_common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use lxcforge::pack::Compression;
use pack_common::*;
use proptest::prelude::*;

/// cap_net_raw+ep as a VFS_CAP_REVISION_2 blob (magic 0x02000001 = v2 | effective, permitted
/// bit 13 = CAP_NET_RAW).
const CAP_NET_RAW_EP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[derive(Clone, Debug)]
enum GenKind {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(Vec<u8>),
    Fifo(u32),
    /// a hard link to the n-th (mod count) regular file generated so far
    Link(usize),
}

#[derive(Clone, Debug)]
struct GenNode {
    /// index (mod count) of the directory to put it in; 0 = root
    parent: usize,
    name: Vec<u8>,
    kind: GenKind,
    uid: u64,
    gid: u64,
    mtime: u64,
    user_xattrs: Vec<(String, Vec<u8>)>,
    cap: bool,
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z][a-z0-9._-]{0,11}".prop_map(|s| s.into_bytes()),
        // non-UTF-8 and non-ASCII bytes (no `/`, no NUL)
        2 => prop::collection::vec(1u8..=255, 1..16),
        // long components: paths beyond 100 bytes need GNU `L` records
        1 => (90usize..200, any::<u8>()).prop_map(|(n, c)| {
            (0..n).map(|i| b'a' + ((i as u8).wrapping_add(c)) % 26).collect()
        }),
    ]
    .prop_map(|n: Vec<u8>| {
        n.into_iter()
            .filter(|&b| b != b'/' && b != 0)
            .collect::<Vec<u8>>()
    })
    .prop_filter("reserved name", |n| {
        !n.is_empty()
            && n.as_slice() != b"."
            && n.as_slice() != b".."
            // names the policy treats specially are covered by pack_leftovers
            && n.as_slice() != b"dev"
            && n.as_slice() != b"etc"
            && n.as_slice() != b".dockerenv"
    })
}

fn mode_strategy(base: &'static [u32]) -> impl Strategy<Value = u32> {
    (
        prop::sample::select(base),
        prop::sample::select(&[0u32, 0o4000, 0o2000, 0o1000, 0o6000, 0o7000][..]),
    )
        .prop_map(|(b, s)| b | s)
}

fn node_strategy() -> impl Strategy<Value = GenNode> {
    let kind = prop_oneof![
        2 => mode_strategy(&[0o755, 0o700, 0o750, 0o555]).prop_map(GenKind::Dir),
        4 => (prop::collection::vec(any::<u8>(), 0..3000), mode_strategy(&[0o644, 0o755, 0o600, 0o400, 0o711, 0o000]))
            .prop_map(|(d, m)| GenKind::File(d, m)),
        2 => prop_oneof![
            prop::collection::vec(1u8..=255, 1..40),
            (100usize..300).prop_map(|n| (0..n).map(|i| b"abc/def/"[i % 8]).collect()),
            Just(b"/usr/bin/env".to_vec()),
        ].prop_map(GenKind::Symlink),
        1 => mode_strategy(&[0o644, 0o600, 0o666]).prop_map(GenKind::Fifo),
        2 => any::<usize>().prop_map(GenKind::Link),
    ];
    let ids = prop_oneof![
        Just(0u64),
        Just(1000u64),
        Just(65534),
        Just(65535),
        0u64..=65535
    ];
    let xattrs = prop::collection::vec(
        ("[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(k, v)| (format!("user.{k}"), v)),
        0..3,
    );
    (
        any::<usize>(),
        name_strategy(),
        kind,
        ids.clone(),
        ids,
        0u64..EPOCH + 100_000,
        xattrs,
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(parent, name, kind, uid, gid, mtime, user_xattrs, cap)| GenNode {
                parent,
                name,
                kind,
                uid,
                gid,
                mtime,
                user_xattrs,
                cap,
            },
        )
}

/// What the extracted tree must look like, by path.
#[derive(Debug, Clone)]
struct Want {
    node: Node,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// hard-link group id (shared inode)
    group: Option<usize>,
}

/// Builds the Docker stream (lexical depth-first order) and the expected tree from generated
/// nodes.
fn build(nodes: &[GenNode]) -> (Vec<Entry>, BTreeMap<Vec<u8>, Want>) {
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut paths: BTreeMap<Vec<u8>, usize> = BTreeMap::new(); // path -> node index
    let mut files: Vec<Vec<u8>> = vec![];
    // node index -> path, and link groups: path of the data member -> members
    let mut placed: Vec<(Vec<u8>, usize)> = vec![];
    let mut link_of: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new(); // link path -> file path
    for (i, n) in nodes.iter().enumerate() {
        let parent = &dirs[n.parent % dirs.len()];
        let mut path = parent.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&n.name);
        if paths.contains_key(&path) || path.len() > 3000 {
            continue;
        }
        match &n.kind {
            GenKind::Link(k) if files.is_empty() => {
                let _ = k;
                continue;
            }
            GenKind::Link(k) => {
                link_of.insert(path.clone(), files[k % files.len()].clone());
            }
            GenKind::Dir(_) => dirs.push(path.clone()),
            GenKind::File(..) => files.push(path.clone()),
            _ => {}
        }
        paths.insert(path.clone(), i);
        placed.push((path, i));
    }

    // Hard-link groups: file path -> all names. In Docker's stream the first name in walk order
    // carries the data; the others are links to it.
    let comps = |p: &[u8]| {
        p.split(|&b| b == b'/')
            .map(|c| c.to_vec())
            .collect::<Vec<_>>()
    };
    let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (link, file) in &link_of {
        groups
            .entry(file.clone())
            .or_insert_with(|| vec![file.clone()])
            .push(link.clone());
    }
    let mut anchor_of: BTreeMap<Vec<u8>, (Vec<u8>, Vec<u8>, usize)> = BTreeMap::new(); // name -> (anchor, file, gid)
    for (gi, (file, names)) in groups.iter().enumerate() {
        let anchor = names.iter().min_by_key(|p| comps(p)).unwrap().clone();
        for n in names {
            anchor_of.insert(n.clone(), (anchor.clone(), file.clone(), gi));
        }
    }

    let mut entries = vec![];
    let mut want = BTreeMap::new();
    for (path, i) in &placed {
        // a link's inode is the file's node
        let (src_idx, group, anchor) = match anchor_of.get(path) {
            Some((anchor, file, g)) => (paths[file], Some(*g), Some(anchor.clone())),
            None => (*i, None, None),
        };
        let n = &nodes[src_idx];
        let mut xattrs = BTreeMap::new();
        let (node, mode) = match &n.kind {
            GenKind::Dir(m) => (Node::Dir, *m),
            GenKind::File(d, m) => {
                for (k, v) in &n.user_xattrs {
                    xattrs.insert(k.clone(), v.clone());
                }
                if n.cap {
                    xattrs.insert("security.capability".to_string(), CAP_NET_RAW_EP.to_vec());
                }
                (Node::File(d.clone()), *m)
            }
            GenKind::Symlink(t) => (Node::Symlink(t.clone()), 0o777),
            GenKind::Fifo(m) => (Node::Fifo, *m),
            GenKind::Link(_) => unreachable!("links resolve to files"),
        };
        if let Node::Dir = node {
            for (k, v) in &n.user_xattrs {
                xattrs.insert(k.clone(), v.clone());
            }
        }
        let stream_node = match &anchor {
            Some(a) if a != path => Node::HardLink(a.clone()),
            _ => node.clone(),
        };
        let mut e = Entry::raw(path, stream_node, mode);
        e.uid = n.uid;
        e.gid = n.gid;
        e.mtime = n.mtime;
        if !matches!(e.node, Node::HardLink(_)) {
            e.xattrs = xattrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        entries.push(e);
        want.insert(
            path.clone(),
            Want {
                node,
                mode,
                uid: n.uid,
                gid: n.gid,
                mtime: n.mtime.min(EPOCH),
                xattrs,
                group,
            },
        );
    }
    entries.sort_by_key(|e| comps(&e.path));
    (entries, want)
}

fn check(want: &BTreeMap<Vec<u8>, Want>, root: &std::path::Path) {
    let found = scan(root);
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let extra: Vec<String> = found
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| show(k))
        .collect();
    assert!(extra.is_empty(), "extracted but not in the spec: {extra:?}");
    let mut inode_of_group: BTreeMap<usize, u64> = BTreeMap::new();
    for (path, w) in want {
        let p = show(path);
        let f = found
            .get(path)
            .unwrap_or_else(|| panic!("{p} missing after extraction"));
        let kind = match w.node {
            Node::Dir => "dir",
            Node::File(_) => "file",
            Node::Symlink(_) => "symlink",
            Node::Fifo => "fifo",
            _ => unreachable!(),
        };
        assert_eq!(file_kind(&f.meta), kind, "{p}: type");
        assert_eq!(
            (f.meta.uid() as u64, f.meta.gid() as u64),
            (w.uid, w.gid),
            "{p}: owner"
        );
        if kind != "symlink" {
            assert_eq!(
                mode_of(&f.meta),
                w.mode,
                "{p}: mode {:o} != {:o}",
                mode_of(&f.meta),
                w.mode
            );
            assert_eq!(f.meta.mtime() as u64, w.mtime, "{p}: mtime");
        }
        match &w.node {
            Node::File(d) => assert!(f.data.as_ref() == Some(d), "{p}: content differs"),
            Node::Symlink(t) => assert_eq!(f.link.as_ref(), Some(t), "{p}: symlink target"),
            _ => {}
        }
        if kind == "file" || kind == "dir" {
            assert_eq!(f.xattrs, w.xattrs, "{p}: xattrs");
        }
        if let Some(g) = w.group {
            let ino = *inode_of_group.entry(g).or_insert(f.meta.ino());
            assert_eq!(f.meta.ino(), ino, "{p}: hard link does not share the inode");
        } else if kind == "file" {
            assert_eq!(f.meta.nlink(), 1, "{p}: unexpected link count");
        }
    }
}

fn roundtrip(nodes: &[GenNode], zstd: bool) {
    roundtrip_shuffled(nodes, zstd, &[]);
}

/// `shuffle`: keys giving another stream order; the output must not change.
fn roundtrip_shuffled(nodes: &[GenNode], zstd: bool, shuffle: &[u64]) {
    let (entries, want) = build(nodes);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    if zstd {
        o.compression = Compression::Zstd { level: 3 };
    }
    let (art, report) = pack_vec(&docker_tar(&entries), &o);
    assert!(!report.spooled, "Docker-ordered input was spooled");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(
        report.members as usize,
        want.len() + 1,
        "members (root included)"
    );
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let err = extract_like_proxmox(&art, &o.compression, &root);
    assert_eq!(err, "", "GNU tar wrote errors");
    check(&want, &root);
    if entries.len() > 1 && !shuffle.is_empty() {
        // the same members in another order (links may now precede their targets) go through
        // the spool and must give the same bytes
        let mut keyed: Vec<(u64, Entry)> = entries
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, e)| (shuffle[i % shuffle.len()] ^ i as u64, e))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        let other: Vec<Entry> = keyed.into_iter().map(|(_, e)| e).collect();
        let (art2, report2) = pack_vec(&docker_tar(&other), &o);
        assert!(
            art2 == art,
            "stream order changed the output (spooled: {})",
            report2.spooled
        );
        assert_eq!(report2.dropped, report.dropped);
        assert_eq!(report2.members, report.members);
    }
    let meta = std::fs::metadata(&root).unwrap();
    assert_eq!(
        (mode_of(&meta), meta.uid(), meta.gid()),
        (0o755, 0, 0),
        "root entry"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn generated_trees_round_trip_through_gnu_tar(
        nodes in prop::collection::vec(node_strategy(), 1..40),
        zstd in prop::bool::weighted(0.25),
        shuffle in prop::collection::vec(any::<u64>(), 1..8),
    ) {
        roundtrip_shuffled(&nodes, zstd, &shuffle);
    }
}

/// A fixed tree hitting every feature at once (keeps the coverage if the generator drifts).
#[test]
fn fixed_tree_with_every_feature_round_trips() {
    let long = |c: u8, n: usize| vec![c; n];
    let mut nodes = vec![];
    let mk = |parent, name: Vec<u8>, kind, uid, cap, x: Vec<(String, Vec<u8>)>| GenNode {
        parent,
        name,
        kind,
        uid,
        gid: uid,
        mtime: EPOCH + 50,
        user_xattrs: x,
        cap,
    };
    nodes.push(mk(
        0,
        b"usr".to_vec(),
        GenKind::Dir(0o755),
        0,
        false,
        vec![],
    ));
    nodes.push(mk(
        1,
        long(b'd', 150),
        GenKind::Dir(0o2775),
        1000,
        false,
        vec![("user.dir".into(), b"v".to_vec())],
    ));
    nodes.push(mk(
        2,
        long(b'f', 120),
        GenKind::File(b"data".to_vec(), 0o4755),
        0,
        true,
        vec![("user.k".into(), b"a\nb\0c".to_vec())],
    ));
    nodes.push(mk(
        1,
        b"ping".to_vec(),
        GenKind::File(vec![7; 1000], 0o755),
        0,
        true,
        vec![],
    ));
    nodes.push(mk(
        1,
        b"caf\xc3\xa9-\xff\xfe".to_vec(),
        GenKind::File(b"x".to_vec(), 0o6711),
        65535,
        false,
        vec![],
    ));
    nodes.push(mk(
        0,
        b"tmp".to_vec(),
        GenKind::Dir(0o1777),
        0,
        false,
        vec![],
    ));
    nodes.push(mk(
        3,
        b"fifo".to_vec(),
        GenKind::Fifo(0o620),
        1000,
        false,
        vec![],
    ));
    nodes.push(mk(
        3,
        b"long-link".to_vec(),
        GenKind::Symlink(long(b'/', 1).into_iter().chain(long(b't', 230)).collect()),
        1000,
        false,
        vec![],
    ));
    nodes.push(mk(
        0,
        b"a-link".to_vec(),
        GenKind::Link(0),
        0,
        false,
        vec![],
    )); // -> the long file
    nodes.push(mk(3, long(b'h', 110), GenKind::Link(1), 0, false, vec![])); // -> ping
    nodes.push(mk(0, b"zz".to_vec(), GenKind::Link(1), 0, false, vec![])); // -> ping, 3rd name
    let (entries, want) = build(&nodes);
    assert_eq!(want.len(), nodes.len(), "all fixed nodes placed");
    assert!(
        entries
            .iter()
            .filter(|e| matches!(e.node, Node::HardLink(_)))
            .count()
            == 3
    );
    roundtrip(&nodes, false);
    roundtrip(&nodes, true);

    // the capability really is restored (checked on its own: `check` compares all xattrs)
    let tmp = tempfile::tempdir().unwrap();
    let (art, _) = pack_vec(&docker_tar(&entries), &opts(tmp.path()));
    let root = tmp.path().join("r");
    std::fs::create_dir(&root).unwrap();
    extract_like_proxmox(&art, &Compression::Gzip { level: 6 }, &root);
    let ping = root.join("usr/ping");
    assert_eq!(
        xattr::get(&ping, "security.capability").unwrap().as_deref(),
        Some(&CAP_NET_RAW_EP[..])
    );
    // and read independently of the xattr crate (getfattr when installed, else python3)
    let out = match std::process::Command::new("getfattr")
        .args(["-n", "security.capability", "-e", "hex"])
        .arg(&ping)
        .output()
    {
        Ok(o) => o,
        Err(_) => std::process::Command::new("python3")
            .args(["-c", "import os,sys; print('security.capability=0x' + os.getxattr(sys.argv[1], 'security.capability').hex())"])
            .arg(&ping)
            .output()
            .expect("python3"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("security.capability=0x0100000200200000000000000000000000000000"),
        "{text}"
    );
    let setuid_cap = root
        .join("usr")
        .join(String::from_utf8(vec![b'd'; 150]).unwrap())
        .join("f".repeat(120));
    let m = std::fs::metadata(&setuid_cap).unwrap();
    assert_eq!(mode_of(&m), 0o4755, "setuid cleared next to the capability");
    assert_eq!(
        xattr::get(&setuid_cap, "security.capability")
            .unwrap()
            .as_deref(),
        Some(&CAP_NET_RAW_EP[..])
    );
}

/// Device nodes are dropped, in `dev/` and elsewhere, and the rest extracts cleanly.
#[test]
fn device_nodes_are_dropped_and_the_rest_round_trips() {
    let entries = vec![
        Entry::dir("dev"),
        Entry::new("dev/null", Node::Char(1, 3), 0o666),
        Entry::new("dev/sda1", Node::Block(8, 1), 0o660),
        Entry::file("dev/keep-me", b"image content", 0o644),
        Entry::dir("opt"),
        Entry::new("opt/loop0", Node::Block(7, 0), 0o660),
        Entry::new("opt/ttyS0", Node::Char(4, 64), 0o620),
        Entry::file("opt/x", b"x", 0o644),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let (art, report) = pack_vec(&docker_tar(&entries), &opts(tmp.path()));
    let l = list(&gunzip(&art));
    let names: Vec<String> = l.iter().map(|m| m.name_str()).collect();
    assert_eq!(
        names,
        ["./", "./dev/", "./dev/keep-me", "./opt/", "./opt/x"]
    );
    assert_eq!(
        report.dropped,
        [
            "./dev/null (device node)",
            "./dev/sda1 (device node)",
            "./opt/loop0 (device node)",
            "./opt/ttyS0 (device node)"
        ]
    );
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert_eq!(
        extract_like_proxmox(&art, &Compression::Gzip { level: 6 }, &root),
        ""
    );
    let found = scan(&root);
    let got: Vec<String> = found
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // Proxmox's `--exclude ./dev/*` skips everything below dev/
    assert_eq!(got, ["dev", "opt", "opt/x"]);
}

/// POSIX ACLs given as GNU tar/star `SCHILY.acl.*` records are carried and restored by `--acls`.
#[test]
fn posix_acls_are_carried() {
    let mut f = Entry::file("srv/shared", b"acl", 0o750);
    f.pax_extra = vec![(
        b"SCHILY.acl.access".to_vec(),
        b"user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::---".to_vec(),
    )];
    let mut d = Entry::new("srv", Node::Dir, 0o770);
    d.pax_extra = vec![
        (
            b"SCHILY.acl.access".to_vec(),
            b"user::rwx,group::rwx,group:1000:rwx,mask::rwx,other::---".to_vec(),
        ),
        (
            b"SCHILY.acl.default".to_vec(),
            b"user::rwx,group::rwx,group:1000:rwx,mask::rwx,other::---".to_vec(),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let (art, _) = pack_vec(&docker_tar(&[d, f]), &opts(tmp.path()));
    let l = list(&gunzip(&art));
    let keys = |n: &str| {
        find(&l, n)
            .unwrap()
            .pax
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("./srv/"), ["SCHILY.acl.access", "SCHILY.acl.default"]);
    assert_eq!(keys("./srv/shared"), ["SCHILY.acl.access"]);
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert_eq!(
        extract_like_proxmox(&art, &Compression::Gzip { level: 6 }, &root),
        ""
    );
    // the kernel's binary ACL xattrs exist (more than the mode bits can express)
    let acl = xattr::get(root.join("srv/shared"), "system.posix_acl_access")
        .unwrap()
        .expect("access ACL");
    // header (4) + 5 entries of 8 bytes: user::, user:1000, group::, mask::, other::
    assert_eq!(acl.len(), 4 + 5 * 8, "{acl:02x?}");
    assert!(
        xattr::get(root.join("srv"), "system.posix_acl_default")
            .unwrap()
            .is_some(),
        "default ACL"
    );
}

/// Owner ids beyond the unprivileged map are kept (base-256 when they do not fit in octal),
/// restored by GNU tar as root, and reported as warnings.
#[test]
fn large_owner_ids_are_kept_and_reported() {
    let mut a = Entry::file("a", b"a", 0o644);
    a.uid = 70_000;
    let mut b = Entry::file("b", b"b", 0o644);
    b.uid = 3_000_000; // > 0o7777777: GNU base-256
    b.gid = 65_535;
    let c = Entry::file("c", b"c", 0o644);
    let tmp = tempfile::tempdir().unwrap();
    let (art, report) = pack_vec(&docker_tar(&[a, b, c]), &opts(tmp.path()));
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with("./a is owned by 70000:0"),
        "{:?}",
        report.warnings
    );
    assert!(
        report.warnings[1].starts_with("./b is owned by 3000000:65535"),
        "{:?}",
        report.warnings
    );
    let l = list(&gunzip(&art));
    assert_eq!(find(&l, "./b").unwrap().uid, 3_000_000);
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert_eq!(
        extract_like_proxmox(&art, &Compression::Gzip { level: 6 }, &root),
        ""
    );
    assert_eq!(std::fs::metadata(root.join("a")).unwrap().uid(), 70_000);
    let m = std::fs::metadata(root.join("b")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3_000_000, 65_535));
}

/// Input written by GNU tar itself (PAX format with atime/ctime and fractional mtimes, `./`
/// names, readdir order, so the spool path) round-trips to an identical tree.
#[test]
fn gnu_tar_created_input_round_trips() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let script = r#"
import os, sys
r = sys.argv[1]
os.makedirs(os.path.join(r, "usr/bin"))
os.makedirs(os.fsdecode(os.path.join(r.encode(), b"odd-\xff\n name/" + b"x" * 150)))
for i in range(30):
    p = os.path.join(r, "usr/bin", "f%02d" % ((i * 7) % 30))
    open(p, "wb").write(os.urandom(i * 100))
    os.chown(p, i * 1000, 65535 - i)
    os.chmod(p, [0o755, 0o4755, 0o2711, 0o600][i % 4])
os.link(os.path.join(r, "usr/bin/f03"), os.path.join(r, "usr/bin/hl"))
os.link(os.path.join(r, "usr/bin/f03"), os.path.join(r, "zz-hl"))
os.symlink("x" * 300, os.path.join(r, "usr/long-sym"))
os.mkfifo(os.path.join(r, "usr/fifo"))
os.setxattr(os.path.join(r, "usr/bin/f07"), "security.capability", bytes.fromhex("0100000200200000000000000000000000000000"))
os.setxattr(os.path.join(r, "usr/bin/f08"), "user.k", b"v\n=\x00")
os.chmod(os.path.join(r, "usr"), 0o1775)
os.utime(os.path.join(r, "usr/bin/f01"), (1, EPOCH_PLUS))
"#
    .replace("EPOCH_PLUS", &(EPOCH + 999).to_string());
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--format=posix",
            "-cf",
            "-",
            "-C",
        ])
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (art, report) = pack_vec(&out.stdout, &opts(tmp.path()));
    assert!(
        report.dropped.is_empty() && report.warnings.is_empty(),
        "{report:?}"
    );
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    assert_eq!(
        extract_like_proxmox(&art, &Compression::Gzip { level: 6 }, &dst),
        ""
    );
    let (a, b) = (scan(&src), scan(&dst));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.len() > 35);
    for (k, fa) in &a {
        let fb = &b[k];
        let p = String::from_utf8_lossy(k);
        assert_eq!(file_kind(&fa.meta), file_kind(&fb.meta), "{p}");
        assert_eq!(
            (fa.meta.uid(), fa.meta.gid()),
            (fb.meta.uid(), fb.meta.gid()),
            "{p}"
        );
        assert_eq!(
            (fa.link.as_ref(), fa.data.as_ref()),
            (fb.link.as_ref(), fb.data.as_ref()),
            "{p}"
        );
        assert_eq!(fa.xattrs, fb.xattrs, "{p}");
        assert_eq!(fa.meta.nlink(), fb.meta.nlink(), "{p}");
        if file_kind(&fa.meta) != "symlink" {
            assert_eq!(mode_of(&fa.meta), mode_of(&fb.meta), "{p}");
            let want = (fa.meta.mtime() as u64).min(EPOCH);
            if file_kind(&fa.meta) != "dir" {
                assert_eq!(fb.meta.mtime() as u64, want, "{p}");
            }
        }
    }
    assert_eq!(
        b[b"usr/bin/hl".as_slice()].meta.ino(),
        b[b"zz-hl".as_slice()].meta.ino()
    );
    let f01 = &b[std::path::Path::new("usr/bin/f01").as_os_str().as_bytes()];
    assert_eq!(f01.meta.mtime() as u64, EPOCH, "future mtime not clamped");
}
