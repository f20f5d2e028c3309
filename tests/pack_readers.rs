//! Issue 3, item 6: the artifact is readable by the usual tools (`gzip -t`, `tar tzf`, Python's
//! `tarfile`, `zstd -t`, `tar --zstd -tf`), and every reader sees the same `./`-prefixed names,
//! long ones (GNU `L`/`K` records) included.

mod pack_common;

use std::io::Write;
use std::process::{Command, Stdio};

use lxcforge::pack::Compression;
use pack_common::*;

fn tree() -> Vec<Entry> {
    let d1 = format!("opt/{}", "d".repeat(120));
    let f1 = format!("{d1}/{}", "f".repeat(140)); // > 256 bytes: no ustar split possible
    let mut xf = Entry::file("opt/caf\u{e9}", b"non-ascii", 0o644);
    xf.xattrs = vec![("user.k".into(), b"v\nw".to_vec())];
    let mut e = vec![
        Entry::dir("opt"),
        Entry::new("opt/a-link", Node::HardLink(f1.clone().into_bytes()), 0o755),
        Entry::new(
            "opt/a-sym",
            Node::Symlink(format!("/{f1}").into_bytes()),
            0o777,
        ),
        xf,
        Entry::dir(&d1),
        Entry::file(&f1, b"long", 0o755),
        Entry::new("opt/fifo", Node::Fifo, 0o644),
        Entry::raw(b"opt/latin1-\xe9\xff", Node::File(b"bytes".to_vec()), 0o600),
        Entry::new("opt/z-exact-99", Node::File(vec![]), 0o644),
    ];
    // `a-link` comes before its target in walk order: in Docker's stream the first name
    // carries the data, so swap roles
    e[1] = Entry::file("opt/a-link", b"long", 0o755);
    e[5] = Entry::new(&f1, Node::HardLink(b"opt/a-link".to_vec()), 0o755);
    // names of exactly 99/100/101 bytes around the ustar limit
    for n in [99usize, 100, 101] {
        let name = format!("opt/z{}", "n".repeat(n - 5 - 2)); // "./" + name = n bytes
        assert_eq!(name.len() + 2, n);
        e.push(Entry::file(&name, b"", 0o644));
    }
    // a hard link whose (anchor) target is long: GNU `K` record
    let g1 = format!("{d1}/{}", "g".repeat(140));
    e.insert(6, Entry::file(&g1, b"g", 0o644));
    e.push(Entry::new(
        "opt/zzz-hl",
        Node::HardLink(g1.into_bytes()),
        0o644,
    ));
    e
}

fn expected_names() -> Vec<Vec<u8>> {
    let tmp = tempfile::tempdir().unwrap();
    let (gz, _) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    list(&gunzip(&gz)).into_iter().map(|m| m.name).collect()
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let t = std::thread::spawn(move || {
        let _ = i.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    t.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{cmd:?} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(out: &[u8]) -> Vec<Vec<u8>> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect()
}

#[test]
fn own_listing_has_dot_slash_names_and_gnu_long_records() {
    let names = expected_names();
    assert_eq!(names[0], b"./");
    for n in &names {
        assert!(n.starts_with(b"./"), "{}", String::from_utf8_lossy(n));
    }
    let long: Vec<&Vec<u8>> = names.iter().filter(|n| n.len() >= 100).collect();
    assert_eq!(long.len(), 5, "d1/, f1, g1, and the 100/101-byte names");
    // the raw tar really uses GNU `L` and `K` records for them
    let tmp = tempfile::tempdir().unwrap();
    let (gz, _) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    let tar = gunzip(&gz);
    let types: Vec<u8> = tar
        .chunks(512)
        .filter(|b| &b[..13] == b"././@LongLink")
        .map(|b| b[156])
        .collect();
    assert_eq!(types.iter().filter(|&&t| t == b'L').count(), 5, "{types:?}");
    assert_eq!(types.iter().filter(|&&t| t == b'K').count(), 2, "{types:?}"); // symlink + hard link to g1
    let l = list(&tar);
    let sym = find(&l, "./opt/a-sym").unwrap();
    assert_eq!(sym.link.len(), 1 + 4 + 121 + 140);
    let link = l.iter().find(|m| m.ty == b'1').unwrap();
    assert_eq!(
        link.link, b"./opt/a-link",
        "hard-link targets carry the ./ prefix too"
    );
    assert!(link.name.len() > 256);
}

#[test]
fn gzip_output_passes_gzip_tar_and_python() {
    let tmp = tempfile::tempdir().unwrap();
    let (gz, _) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    let want = expected_names();

    run(Command::new("gzip").arg("-t"), &gz);
    let tar_names = lines(&run(
        Command::new("tar").args(["--quoting-style=literal", "-tzf", "-"]),
        &gz,
    ));
    assert_eq!(tar_names, want, "GNU tar's names differ");

    let path = tmp.path().join("t.tar.gz");
    std::fs::write(&path, &gz).unwrap();
    let script = r#"
import os, sys, tarfile
out = []
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t:
        n = os.fsencode(m.name)
        assert n.startswith(b"./") or n == b".", n
        kind = "d" if m.isdir() else "l" if m.islnk() else "s" if m.issym() else "p" if m.isfifo() else "f" if m.isfile() else "?"
        if m.isfile():
            t.extractfile(m).read()
        x = sorted(k for k in m.pax_headers if k.startswith("SCHILY.xattr."))
        out.append(n + b"\t" + kind.encode() + b"\t" + ",".join(x).encode())
sys.stdout.buffer.write(b"\n".join(out) + b"\n")
"#;
    let out = run(
        Command::new("python3").arg("-c").arg(script).arg(&path),
        b"",
    );
    let rows = lines(&out);
    assert_eq!(rows.len(), want.len());
    let py_names: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| r.split(|&b| b == b'\t').next().unwrap().to_vec())
        .collect();
    // Python strips the trailing `/` of directory names (and keeps `./` for the root as ".")
    let norm = |n: &Vec<u8>| {
        let mut n = n.clone();
        while n.len() > 1 && n.ends_with(b"/") {
            n.pop();
        }
        if n == b"./" || n == b"." {
            b".".to_vec()
        } else {
            n
        }
    };
    assert_eq!(
        py_names.iter().map(norm).collect::<Vec<_>>(),
        want.iter().map(norm).collect::<Vec<_>>()
    );
    let row = |p: &str| {
        String::from_utf8_lossy(
            rows.iter()
                .find(|r| r.starts_with(format!("{p}\t").as_bytes()))
                .unwrap(),
        )
        .into_owned()
    };
    assert_eq!(row("./opt/café"), "./opt/café\tf\tSCHILY.xattr.user.k");
    assert_eq!(row("./opt/fifo"), "./opt/fifo\tp\t");
    assert!(
        rows.iter()
            .filter(|r| r.contains(&b'\t') && r.split(|&b| b == b'\t').nth(1) == Some(b"l"))
            .count()
            == 2
    );
}

#[test]
fn zstd_output_passes_zstd_and_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.compression = Compression::Zstd { level: 3 };
    let (zst, report) = pack_vec(&docker_tar(&tree()), &o);
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    assert_eq!(o.compression.extension(), "tar.zst");
    run(Command::new("zstd").args(["-t", "-q"]), &zst);
    let names = lines(&run(
        Command::new("tar").args(["--quoting-style=literal", "--zstd", "-tf", "-"]),
        &zst,
    ));
    assert_eq!(names, expected_names());
    // same tar inside as the gzip artifact
    let (_, gz_report) = pack_vec(&docker_tar(&tree()), &opts(tmp.path()));
    assert_eq!(report.tar_sha256, gz_report.tar_sha256);
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert_eq!(extract_like_proxmox(&zst, &o.compression, &root), "");
}
