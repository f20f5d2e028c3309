//! Issue 3, item 5: the same content gives byte-identical output whatever the stream order, the
//! thread count or the output kind; gzip header and member metadata are fixed.

mod pack_common;

use lxcforge::pack::Compression;
use pack_common::*;

/// Pseudo-random but compressible data (a few MiB makes several 1 MiB gzip members).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                (x % 7) as u8 + b'a'
            } else {
                b"the lazy dog "[i % 13]
            }
        })
        .collect()
}

/// A tree in Docker's order (depth-first, entries sorted by name bytes).
fn tree() -> Vec<Entry> {
    let long_dir = format!("usr/{}", "long-directory-name-".repeat(6));
    let long_file = format!("{long_dir}/{}", "f".repeat(90));
    let mut cap = Entry::file("bin/ping", &data(9, 5000), 0o4755);
    cap.xattrs = vec![
        (
            "security.capability".into(),
            hex::decode("0100000200200000000000000000000000000000").unwrap(),
        ),
        ("user.a".into(), b"1\n2".to_vec()),
    ];
    let mut root = Entry::raw(b"", Node::Dir, 0o700);
    root.uid = 1000;
    let mut future = Entry::file("etc/new", b"touched by the build", 0o600);
    future.mtime = EPOCH + 12345;
    let mut e = vec![
        root,
        Entry::dir("bin"),
        Entry::new("bin/bash", Node::File(data(1, 3 << 20)), 0o755),
        cap,
        Entry::new("bin/rbash", Node::HardLink(b"bin/bash".to_vec()), 0o755),
        Entry::new("bin/sh", Node::Symlink(b"bash".to_vec()), 0o777),
        Entry::dir("etc"),
        future,
        Entry::file("etc/old", b"x", 0o644),
        Entry::new("tmp", Node::Dir, 0o1777),
        Entry::dir("usr"),
        Entry::new(
            "usr/lib",
            Node::Symlink(long_file.clone().into_bytes()),
            0o777,
        ),
        Entry::dir(&long_dir),
        Entry::file(&long_file, &data(2, 70_000), 0o2755),
        Entry::new("usr/pipe", Node::Fifo, 0o600),
        Entry::new("usr/z-link", Node::HardLink(long_file.into_bytes()), 0o2755),
        Entry::new("usr-x", Node::File(data(3, 1_500_000)), 0o644),
    ];
    e[2].uid = 7;
    e[4].uid = 7;
    // the order really is a lexical depth-first walk (component-wise byte order)
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

fn gz_opts(dir: &std::path::Path, threads: usize) -> lxcforge::pack::PackOptions {
    let mut o = opts(dir);
    o.threads = threads;
    o
}

#[test]
fn stream_order_threads_and_output_kind_do_not_change_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let canonical = tree();
    let mut reversed = canonical.clone();
    reversed.reverse();
    // a fixed shuffle: every third member first
    let mut shuffled: Vec<Entry> = canonical.iter().skip(2).step_by(3).cloned().collect();
    shuffled.extend(
        canonical
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 2 || (i - 2) % 3 != 0)
            .map(|(_, e)| e.clone()),
    );
    assert_eq!(shuffled.len(), canonical.len());

    let (reference, rep) = pack_vec(&docker_tar(&canonical), &gz_opts(tmp.path(), 1));
    assert!(!rep.spooled, "Docker's order must stream straight through");
    assert_eq!(rep.sha256, sha256_hex(&reference));
    assert_eq!(rep.compressed_bytes as usize, reference.len());
    let tar = gunzip(&reference);
    assert_eq!(rep.tar_sha256, sha256_hex(&tar));
    assert_eq!(rep.tar_bytes as usize, tar.len());
    assert!(reference.len() > 100_000, "several gzip members expected");

    let mut n = 0;
    for (label, order, want_spooled) in [
        ("canonical", &canonical, false),
        ("reversed", &reversed, true),
        ("shuffled", &shuffled, true),
    ] {
        let input = docker_tar(order);
        for threads in [1, 2] {
            let o = gz_opts(tmp.path(), threads);
            let (v, r) = pack_vec(&input, &o);
            assert!(
                v == reference,
                "{label}, {threads} threads, Vec output differs"
            );
            assert_eq!(r.sha256, rep.sha256, "{label} {threads}");
            assert_eq!(r.tar_sha256, rep.tar_sha256, "{label} {threads}");
            assert_eq!(r.spooled, want_spooled, "{label} {threads}");
            assert_eq!(r.members, rep.members);
            let path = tmp.path().join(format!("out-{label}-{threads}.tar.gz"));
            let (f, r) = pack_file(&input, &o, &path);
            assert!(
                f == reference,
                "{label}, {threads} threads, File output differs"
            );
            assert_eq!(r.sha256, rep.sha256);
            assert_eq!(r.spooled, want_spooled);
            n += 2;
        }
    }
    assert_eq!(n, 12);
}

#[test]
fn zstd_output_is_deterministic_too() {
    let tmp = tempfile::tempdir().unwrap();
    let mut canonical = tree();
    let mut o = opts(tmp.path());
    o.compression = Compression::Zstd { level: 3 };
    o.threads = 1;
    let (a, ra) = pack_vec(&docker_tar(&canonical), &o);
    canonical.reverse();
    o.threads = 2;
    let (b, rb) = pack_vec(&docker_tar(&canonical), &o);
    assert!(rb.spooled && !ra.spooled);
    assert!(a == b, "zstd output depends on order or threads");
    assert_eq!(ra.sha256, sha256_hex(&b));
    let (f, _) = pack_file(&docker_tar(&canonical), &o, &tmp.path().join("x.tar.zst"));
    assert!(f == a);
}

#[test]
fn gzip_header_has_no_name_and_mtime_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (gz, _) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    // walk every gzip member via flate2's header parsing
    let mut members = 0;
    let mut rest: &[u8] = &gz;
    while !rest.is_empty() {
        assert_eq!(
            &rest[..3],
            &[0x1f, 0x8b, 8],
            "member {members}: gzip magic + deflate"
        );
        let flags = rest[3];
        assert_eq!(flags & 0x08, 0, "member {members}: FNAME set");
        assert_eq!(flags & 0x10, 0, "member {members}: FCOMMENT set");
        assert_eq!(&rest[4..8], &[0, 0, 0, 0], "member {members}: mtime not 0");
        let mut d = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        let hdr = d.header().unwrap();
        assert!(hdr.filename().is_none());
        assert_eq!(hdr.mtime(), 0);
        // consumed input = what the decoder's reader has advanced over
        let consumed = rest.len() - d.into_inner().len();
        rest = &rest[consumed..];
        members += 1;
    }
    assert!(
        members >= 3,
        "only {members} gzip members for >4 MiB of tar"
    );
}

#[test]
fn mtimes_are_clamped_and_root_is_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let (gz, _) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    let l = list(&gunzip(&gz));
    let root = &l[0];
    assert_eq!(root.name, b"./");
    assert_eq!(root.ty, b'5');
    assert_eq!(
        (root.mode, root.uid, root.gid, root.mtime),
        (0o755, 0, 0, EPOCH)
    );
    assert_eq!(l.iter().filter(|m| m.name == b"./").count(), 1);
    assert_eq!(
        find(&l, "./etc/new").unwrap().mtime,
        EPOCH,
        "future mtime not clamped"
    );
    assert_eq!(
        find(&l, "./etc/old").unwrap().mtime,
        EPOCH - 1000,
        "past mtime changed"
    );
    for m in &l {
        assert!(m.mtime <= EPOCH, "{}", m.name_str());
        assert!(m.name.starts_with(b"./"), "{}", m.name_str());
        assert!(m.uname.is_empty(), "uname kept on {}", m.name_str());
    }
    // members sorted in canonical order, hard links after their anchors
    let got: Vec<String> = l.iter().map(|m| m.name_str()).collect();
    let bash = got.iter().position(|n| n == "./bin/bash").unwrap();
    let rbash = got.iter().position(|n| n == "./bin/rbash").unwrap();
    assert!(bash < rbash);
    assert_eq!(find(&l, "./bin/rbash").unwrap().link, b"./bin/bash");
    assert_eq!(got.last().unwrap(), "./usr-x");
}

/// A `File` output that already holds bytes (e.g. a header written by the caller) gets the
/// artifact after them, also when the spool path rewinds and rewrites it; the report counts the
/// whole input stream.
#[test]
fn file_output_at_an_offset_and_input_byte_count() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let canonical = tree();
    let (reference, _) = pack_vec(&docker_tar(&canonical), &opts(tmp.path()));
    let mut reversed = canonical.clone();
    reversed.reverse();
    for (label, entries) in [("canonical", &canonical), ("reversed", &reversed)] {
        let mut input = docker_tar(entries);
        input.extend_from_slice(&[0u8; 10 * 512]); // Docker pads the stream; it must be drained
        let path = tmp.path().join(format!("prefixed-{label}"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"PREFIX").unwrap();
        let report = lxcforge::pack::pack(&input[..], f, &opts(tmp.path()), &|_| {}).expect("pack");
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..6], b"PREFIX", "{label}");
        assert!(
            got[6..] == reference[..],
            "{label}: artifact after the prefix differs"
        );
        assert_eq!(report.sha256, sha256_hex(&reference), "{label}");
        assert_eq!(report.input_bytes as usize, input.len(), "{label}");
    }
}
