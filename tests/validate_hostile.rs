//! Hostile input: every case must end in a FAIL (or an `Err`, exit 2) within a couple of
//! seconds and bounded memory. Nothing is ever written: the validator has no output path.

mod support;
mod validate_common;
use lxcforge::validate::Status::Fail;
use lxcforge::validate::{Report, ValidateError, ValidateOptions, validate_reader};
use std::io::{Cursor, Read};
use std::time::{Duration, Instant};
use support::record_fault;
use validate_common::*;

/// One record for the reliability table; the validator never writes anything.
fn record(fault: &str, outcome: &str) {
    record_fault("input", fault, outcome, "nothing");
}

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
    record(
        "archive: absolute member names, ../ traversal, symlink climbing out of the root",
        "FAIL archive.names naming each member (exit 1); climbing symlink WARN archive.symlinks",
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
    record(
        "archive: gzip/zstd/xz stream truncated (last bytes, half, first 20 bytes)",
        "FAIL archive.complete (exit 1)",
    );
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
    record(
        "archive: 16 corrupted bytes in the middle of the gzip stream",
        "FAIL archive.complete (CRC/inflate error) or archive.header (exit 1)",
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
    record(
        "archive: gzip bomb (4 GiB of zeros in 4 MiB, member claiming 1 TiB)",
        "FAIL archive.limits \"compression bomb\" after 8 MiB decompressed (exit 1)",
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
    record(
        "archive: zstd bomb (256 MiB of zeros in < 1 MiB)",
        "FAIL archive.limits (exit 1)",
    );
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
    record(
        "archive: 128 MiB of zero padding after the end-of-archive marker (zstd)",
        "FAIL archive.limits (exit 1)",
    );
}

#[test]
fn huge_pax_header() {
    let mut out = Vec::new();
    out.extend_from_slice(&header(b"./PaxHeaders/x", b'x', 1 << 40, b"", 0o644, 0, 0));
    out.extend(vec![b'9'; 4096]);
    let rep = fails(timed("t.tar", out), "archive.header");
    assert!(rep.render_table().contains("extended header"));
    record(
        "archive: PAX header claiming 1 TiB",
        "FAIL archive.header \"extended header … more than the 1024 KiB accepted\" (exit 1), nothing buffered",
    );
}

#[test]
fn huge_gnu_long_name() {
    let mut out = Vec::new();
    out.extend_from_slice(&header(b"././@LongLink", b'L', 8 << 30, b"", 0o644, 0, 0));
    out.extend(vec![b'a'; 1 << 16]);
    fails(timed("t.tar", out), "archive.header");
    record(
        "archive: GNU long-name record of 8 GiB",
        "FAIL archive.header (exit 1), nothing buffered",
    );
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
    record(
        "archive: endless chain of GNU long-name headers (generated stream)",
        "FAIL archive.header \"more than 16 extended headers in a row\" (exit 1)",
    );
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
    record(
        "archive: malformed PAX records (bad length, no length, non-numeric uid)",
        "FAIL archive.header (exit 1)",
    );
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
    record(
        "archive: PAX path escaping with ../ on an otherwise clean archive",
        "FAIL archive.names naming the PAX path (exit 1)",
    );
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
    record(
        "archive: bad header checksum; not an archive; empty file; bzip2",
        "FAIL archive.header (exit 1); NotAnArchive / UnsupportedCompression errors with a fix (exit 2)",
    );
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
    record(
        "archive: read error from the source mid-stream; missing file",
        "error \"cannot read …\" / \"cannot open …\" naming the file (exit 2)",
    );
}

#[test]
fn symlink_loops_do_not_hang() {
    let mut r = deb();
    r.symlink("./usr/bin/sh", "sh2");
    r.symlink("./usr/bin/sh2", "sh");
    r.symlink("./etc/os-release", "os-release");
    let rep = timed("t.tar.gz", r.tar_gz()).unwrap();
    expect(&rep, "pve.arch", Fail, None);
    record(
        "archive: symlink loops on /bin/sh and /etc/os-release",
        "FAIL pve.arch, no hang (exit 1)",
    );
}

/// A stream that starts with `head` and then yields `fill` bytes forever, `chunk` at a time,
/// sleeping `pause` before each read.
struct Endless {
    head: Cursor<Vec<u8>>,
    fill: u8,
    chunk: usize,
    pause: Duration,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk);
        buf[..n].fill(self.fill);
        Ok(n)
    }
}

fn with_budget(budget: Duration) -> ValidateOptions {
    ValidateOptions {
        time_budget: budget,
        ..Default::default()
    }
}

/// A member claiming 1 TiB, so whatever follows is read as its data.
fn huge_member_head() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&header(b"./", b'5', 0, b"", 0o755, 0, 0));
    h.extend_from_slice(&header(b"./etc/big", b'0', 1 << 40, b"", 0o644, 0, 0));
    h
}

#[track_caller]
fn over_budget(res: Result<Report, ValidateError>, started: Instant, budget: Duration) {
    let took = started.elapsed();
    let e = res.expect_err("the time budget must end the read");
    assert!(matches!(e, ValidateError::TimeBudget { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("time budget") && msg.contains("--time-budget"),
        "{msg}"
    );
    assert!(
        took >= budget && took < budget + Duration::from_secs(3),
        "took {took:?} for a {budget:?} budget"
    );
}

#[test]
fn trickling_endless_input_hits_the_time_budget() {
    let budget = Duration::from_millis(300);
    let r = Endless {
        head: Cursor::new(huge_member_head()),
        fill: b'a',
        chunk: 512,
        pause: Duration::from_millis(2),
    };
    let t = Instant::now();
    over_budget(validate_reader("t.tar", r, &with_budget(budget)), t, budget);
    record(
        "archive: endless input trickling 512 bytes every 2 ms (plain tar, 1 TiB member)",
        "error \"reading … took longer than the 300ms time budget … raise --time-budget\" (exit 2) right after the budget",
    );
}

#[test]
fn fast_endless_plain_tar_hits_the_time_budget() {
    // no compression, so no ratio cap: before the budget only the 64 GiB cap ended this
    let budget = Duration::from_millis(300);
    let r = Endless {
        head: Cursor::new(huge_member_head()),
        fill: 0,
        chunk: 1 << 20,
        pause: Duration::ZERO,
    };
    let t = Instant::now();
    over_budget(validate_reader("t.tar", r, &with_budget(budget)), t, budget);
    record(
        "archive: endless fast stream of zeros inside a 1 TiB member (plain tar)",
        "time budget error (exit 2) right after the budget",
    );
}

#[test]
fn endless_zstd_skippable_frames_hit_the_time_budget() {
    // a real first frame, then skippable frames forever: the decoder eats input and produces
    // nothing, so only a check on the raw reads can end it
    let mut head = zstd(&huge_member_head());
    let mut frame = vec![0x50, 0x2a, 0x4d, 0x18];
    frame.extend_from_slice(&(65536u32 - 8).to_le_bytes());
    frame.resize(65536, 0);
    head.extend_from_slice(&frame);
    struct Frames(Vec<u8>, usize);
    impl Read for Frames {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            if self.1 == self.0.len() {
                // repeat the skippable frame forever
                self.0.drain(..self.0.len() - 65536);
                self.1 = 0;
            }
            Ok(n)
        }
    }
    let budget = Duration::from_millis(300);
    let t = Instant::now();
    over_budget(
        validate_reader("t.tar.zst", Frames(head, 0), &with_budget(budget)),
        t,
        budget,
    );
    record(
        "archive: endless zstd skippable frames (input consumed, no output)",
        "time budget error (exit 2) right after the budget",
    );
}

#[test]
fn cli_time_budget_on_a_trickling_pipe_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("slow.tar.gz");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !support::require("mkfifo (coreutils)", ok) {
        return;
    }
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let mut data = gzip(&huge_member_head());
            data.truncate(data.len() - 8); // no gzip trailer: the stream goes on
            let _ = f.write_all(&data[..data.len() / 2]);
            // then a trickle until the reader goes away (EPIPE)
            for b in data[data.len() / 2..].iter().cycle() {
                if f.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let out = std::process::Command::new(support::bin())
        .args(["validate", "--time-budget", "500ms"])
        .arg(&fifo)
        .output()
        .unwrap();
    let took = t.elapsed();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("500ms time budget"), "{err}");
    assert!(err.contains("slow.tar.gz"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    record(
        "archive: `lxcforge validate --time-budget 500ms` on a pipe that trickles forever",
        "exit 2, \"reading …/slow.tar.gz took longer than the 500ms time budget …\"",
    );
}

#[test]
fn default_time_budget_is_generous() {
    assert_eq!(
        ValidateOptions::default().time_budget,
        lxcforge::validate::DEFAULT_TIME_BUDGET
    );
    assert!(lxcforge::validate::DEFAULT_TIME_BUDGET >= Duration::from_secs(300));
}
