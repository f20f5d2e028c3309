//! Hostile input: every case must end in a FAIL (or an `Err`, exit 2) within a couple of
//! seconds and bounded memory. Nothing is ever written: the validator has no output path.

mod validate_common;
use lxcforge::validate::Status::Fail;
use lxcforge::validate::{Report, ValidateError, validate_reader};
use std::io::{Cursor, Read};
use std::time::{Duration, Instant};
use validate_common::*;

/// Generous for debug builds on a shared CI core (zlib-rs unoptimized inflates ~10 MB/s);
/// a release build takes milliseconds.
const BUDGET: Duration = Duration::from_secs(5);

fn timed(name: &str, bytes: Vec<u8>) -> Result<Report, ValidateError> {
    timed_reader(name, Cursor::new(bytes))
}

fn timed_reader(name: &str, r: impl Read) -> Result<Report, ValidateError> {
    let t = Instant::now();
    let res = validate_reader(name, r, &opts(None));
    assert!(t.elapsed() < BUDGET, "{name} took {:?}", t.elapsed());
    res
}

#[track_caller]
fn fails(rep: Result<Report, ValidateError>, id: &str) -> Report {
    let rep = rep.expect("a report");
    expect(&rep, id, Fail, None);
    assert_eq!(rep.exit_code(), 1);
    rep
}

fn deb() -> Rootfs {
    Rootfs::debian("12.7")
}

#[test]
fn absolute_names_and_traversal() {
    let mut r = deb();
    r.file("/etc/cron.d/evil", b"* * * * * root sh\n");
    r.file("../../../../tmp/evil", b"x");
    r.symlink("./etc/escape", "../../../../../../etc/shadow");
    let rep = fails(timed("t.tar.gz", r.tar_gz()), "archive.names");
    expect(&rep, "archive.names", Fail, Some("/etc/cron.d/evil"));
    expect(&rep, "archive.names", Fail, Some("../../../../tmp/evil"));
    expect(
        &rep,
        "archive.symlinks",
        lxcforge::validate::Status::Warn,
        Some("./etc/escape"),
    );
}

#[test]
fn truncated_gzip_zstd_xz() {
    let tar = deb().tar();
    for (name, c) in [
        ("t.tar.gz", gzip(&tar)),
        ("t.tar.zst", zstd(&tar)),
        ("t.tar.xz", xz(&tar)),
    ] {
        for cut in [c.len() - 4, c.len() / 2, 20] {
            fails(timed(name, c[..cut].to_vec()), "archive.complete");
        }
    }
}

#[test]
fn corrupt_gzip() {
    let mut gz = deb().tar_gz();
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 16] {
        *b ^= 0x55;
    }
    // the CRC catches it at the end of the member, unless the garbage already broke a header
    let rep = timed("t.tar.gz", gz).unwrap();
    assert!(
        rep.status_of("archive.complete") == Some(Fail)
            || rep.status_of("archive.header") == Some(Fail),
        "{}",
        rep.render_table()
    );
}

/// Many gzip members of zeros: 1 MiB each compresses to about 1 KiB.
#[test]
fn gzip_bomb() {
    let mut tar = Vec::new();
    tar.extend_from_slice(&header(b"./", b'5', 0, b"", 0o755, 0, 0));
    tar.extend_from_slice(&header(b"./zeros", b'0', 1 << 40, b"", 0o644, 0, 0));
    let mut bomb = gzip(&tar);
    let member = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 1 << 20]).unwrap();
        e.finish().unwrap()
    };
    assert!(member.len() < 2048, "{}", member.len());
    for _ in 0..4096 {
        bomb.extend_from_slice(&member); // 4 GiB decompressed, ~4 MiB compressed
    }
    let rep = fails(timed("t.tar.gz", bomb), "archive.limits");
    assert!(
        rep.render_table().contains("bomb"),
        "{}",
        rep.render_table()
    );
}

#[test]
fn zstd_bomb() {
    let mut tar = Vec::new();
    tar.extend_from_slice(&header(b"./zeros", b'0', 1 << 40, b"", 0o644, 0, 0));
    tar.extend(vec![0u8; 256 << 20]);
    let z = zstd::encode_all(&tar[..], 19).unwrap();
    assert!(z.len() < 1 << 20);
    fails(timed("t.tar.zst", z), "archive.limits");
}

#[test]
fn endless_zero_padding_is_a_bomb_too() {
    // after a valid archive, an endless (lazily generated) run of zeros in a plain tar must
    // hit the absolute cap; with compression the ratio cap triggers long before
    let mut tar = deb().tar();
    let z = {
        tar.extend(vec![0u8; 128 << 20]);
        zstd::encode_all(&tar[..], 3).unwrap()
    };
    let rep = timed("t.tar.zst", z).unwrap();
    expect(&rep, "archive.limits", Fail, None);
}

#[test]
fn huge_pax_header() {
    let mut out = Vec::new();
    out.extend_from_slice(&header(b"./PaxHeaders/x", b'x', 1 << 40, b"", 0o644, 0, 0));
    out.extend(vec![b'9'; 4096]);
    let rep = fails(timed("t.tar", out), "archive.header");
    assert!(rep.render_table().contains("extended header"));
}

#[test]
fn huge_gnu_long_name() {
    let mut out = Vec::new();
    out.extend_from_slice(&header(b"././@LongLink", b'L', 8 << 30, b"", 0o644, 0, 0));
    out.extend(vec![b'a'; 1 << 16]);
    fails(timed("t.tar", out), "archive.header");
}

#[test]
fn endless_chain_of_extended_headers() {
    // a generator, never materialised: L header + 512 bytes of name, forever
    struct Endless(Vec<u8>, usize);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 = (self.1 + n) % self.0.len();
            Ok(n)
        }
    }
    let mut unit = header(b"././@LongLink", b'L', 512, b"", 0o644, 0, 0).to_vec();
    unit.extend(vec![b'a'; 512]);
    // pre-pad so the sniffer sees a tar header first
    fails(timed_reader("t.tar", Endless(unit, 0)), "archive.header");
}

#[test]
fn malformed_pax_records() {
    for rec in [
        &b"99999 path=x\n"[..],
        b"5 path=x\n",
        b"abc path=x\n",
        b"12 uid=abc\n",
    ] {
        let mut out = Vec::new();
        out.extend_from_slice(&header(
            b"./PaxHeaders/x",
            b'x',
            rec.len() as u64,
            b"",
            0o644,
            0,
            0,
        ));
        out.extend_from_slice(rec);
        pad(&mut out);
        out.extend(deb().tar());
        fails(timed("t.tar", out), "archive.header");
    }
}

#[test]
fn pax_path_and_base256_are_honoured() {
    // a PAX path that climbs out, on an otherwise clean archive
    let rec = b"23 path=../../etc/evil\n";
    let mut out = Vec::new();
    for e in &deb().entries {
        write_entry(&mut out, e);
    }
    out.extend_from_slice(&header(
        b"./PaxHeaders/x",
        b'x',
        rec.len() as u64,
        b"",
        0o644,
        0,
        0,
    ));
    out.extend_from_slice(rec);
    pad(&mut out);
    out.extend_from_slice(&header(b"./harmless", b'0', 0, b"", 0o644, 0, 0));
    out.extend(vec![0u8; 1024]);
    let rep = fails(timed("t.tar", out), "archive.names");
    expect(&rep, "archive.names", Fail, Some("../../etc/evil"));
}

#[test]
fn bad_checksum_and_garbage() {
    let mut tar = deb().tar();
    tar[1024 + 10] ^= 0xff; // third header's name
    fails(timed("t.tar", tar), "archive.header");
    // not an archive at all
    assert!(matches!(
        timed("t.tar.gz", b"hello, this is not an archive".to_vec()),
        Err(ValidateError::NotAnArchive { .. })
    ));
    assert!(matches!(
        timed("t.tar.gz", Vec::new()),
        Err(ValidateError::NotAnArchive { .. })
    ));
    // bzip2 is valid for Proxmox but not decodable here: exit 2 with a fix
    let e = timed("t.tar.bz2", b"BZh91AY&SY".to_vec()).unwrap_err();
    assert!(e.to_string().contains("recompress"), "{e}");
}

#[test]
fn unreadable_source_is_an_error() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let tar = Rootfs::debian("12").tar_gz();
            let n = buf.len().min(self.0).min(tar.len());
            buf[..n].copy_from_slice(&tar[..n]);
            self.0 = 0;
            Ok(n)
        }
    }
    let e = timed_reader("t.tar.gz", Broken(1000)).unwrap_err();
    assert!(matches!(e, ValidateError::Read { .. }), "{e}");
    assert!(e.to_string().contains("t.tar.gz"));
    let e = lxcforge::validate::validate_file(
        std::path::Path::new("/nonexistent/t.tar.gz"),
        &opts(None),
    )
    .unwrap_err();
    assert!(matches!(e, ValidateError::Open { .. }));
}

#[test]
fn symlink_loops_do_not_hang() {
    let mut r = deb();
    r.symlink("./usr/bin/sh", "sh2");
    r.symlink("./usr/bin/sh2", "sh");
    r.symlink("./etc/os-release", "os-release");
    let rep = timed("t.tar.gz", r.tar_gz()).unwrap();
    expect(&rep, "pve.arch", Fail, None);
}
