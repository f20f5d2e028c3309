//! A tar reader of our own, for control over hostile input: 512-byte ustar/GNU headers, PAX
//! (`x`, `g`) and GNU long-name (`L`, `K`) extended headers with a size cap, base-256 numbers.
//! Member data is streamed through [`Tree`], which keeps what the checks need.

use super::tree::{NodeKind, Tree};
use super::{Checks, Status};
use std::io::{self, Read};

/// Largest PAX / GNU long-name record accepted.
pub(crate) const MAX_EXTENDED: u64 = 1 << 20;
/// Extended headers in a row before a real member.
const MAX_EXTENDED_CHAIN: u32 = 16;
/// Members in one archive.
pub(crate) const MAX_MEMBERS: u64 = 5_000_000;
/// Longest member name kept (Linux PATH_MAX).
pub(crate) const MAX_NAME: usize = 4096;

#[derive(Default)]
pub(crate) struct State {
    /// The end-of-archive marker was read.
    pub end_seen: bool,
    /// The member being read, for error reports.
    pub current: Option<String>,
    offset: u64,
    /// The read buffer, allocated once (not once per member).
    buf: Vec<u8>,
}

#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    chain: u32,
}

/// Reads up to 512 bytes; returns how many were read (less only at EOF).
fn read_block(r: &mut dyn Read, buf: &mut [u8; 512]) -> io::Result<usize> {
    let mut n = 0;
    while n < 512 {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(crate) fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = parse_octal(&h[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += (b as i8) as i64;
    }
    stored == unsigned || stored as i64 == signed
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// Octal, or GNU base-256 (high bit of the first byte set; 0xff = negative, refused).
fn parse_num(f: &[u8]) -> Option<u64> {
    match f.first() {
        Some(0x80) => {
            let mut v: u64 = 0;
            for &b in &f[1..] {
                if v > (u64::MAX >> 8) {
                    return None;
                }
                v = (v << 8) | b as u64;
            }
            Some(v)
        }
        Some(b) if b & 0x80 != 0 => None,
        _ => parse_octal(f),
    }
}

fn cstr(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    &f[..end]
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Reads exactly `len` bytes plus padding to the next block into `sink`.
fn read_data(
    r: &mut dyn Read,
    len: u64,
    state: &mut State,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut buf = std::mem::take(&mut state.buf);
    buf.resize(64 * 1024, 0);
    let res = read_into(r, len, &mut buf, state, &mut sink);
    state.buf = buf;
    res
}

fn read_into(
    r: &mut dyn Read,
    len: u64,
    buf: &mut [u8],
    state: &mut State,
    sink: &mut impl FnMut(&[u8]),
) -> io::Result<()> {
    let padded = len.div_ceil(512) * 512;
    let mut left = padded;
    let mut data_left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "archive ends inside member data ({} of {padded} bytes missing)",
                        left
                    ),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let d = (n as u64).min(data_left) as usize;
        if d > 0 {
            sink(&buf[..d]);
        }
        data_left -= d as u64;
        left -= n as u64;
        state.offset += n as u64;
    }
    Ok(())
}

/// Parses PAX records `"<len> <key>=<value>\n"`.
fn parse_pax(data: &[u8], p: &mut Pending, global: bool) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("PAX record length does not match its content".into());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        if !global {
            let num = || -> Result<u64, String> {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("PAX {} is not a number", show(k)))
            };
            match k {
                b"path" => p.path = Some(v.to_vec()),
                b"linkpath" => p.linkpath = Some(v.to_vec()),
                b"size" => p.size = Some(num()?),
                b"uid" => p.uid = Some(num()?),
                b"gid" => p.gid = Some(num()?),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// Parses the whole stream. `Ok(true)`: stopped on a fatal archive problem (already noted).
/// `Err`: an I/O or decompression error, classified by the caller.
pub(crate) fn parse(
    r: &mut dyn Read,
    tree: &mut Tree,
    state: &mut State,
    checks: &mut Checks,
) -> io::Result<bool> {
    let mut h = [0u8; 512];
    let mut p = Pending::default();
    loop {
        let at = state.offset;
        let n = read_block(r, &mut h)?;
        state.offset += n as u64;
        if n == 0 {
            checks.fail(
                "archive.complete",
                "the archive ends without the end-of-archive marker (two zero blocks): truncated"
                    .into(),
                None,
            );
            return Ok(true);
        }
        if n < 512 {
            checks.fail(
                "archive.complete",
                format!("the archive ends inside a header at offset {at}: truncated"),
                None,
            );
            return Ok(true);
        }
        if h.iter().all(|b| *b == 0) {
            let n2 = read_block(r, &mut h)?;
            state.offset += n2 as u64;
            state.end_seen = true;
            if n2 == 512 && h.iter().all(|b| *b == 0) || n2 == 0 {
                if n2 == 0 {
                    checks.warn(
                        "archive.complete",
                        "a lone zero block ends the archive (tar warns; two are expected)".into(),
                        None,
                    );
                }
                drain(r, state, checks)?;
                return Ok(false);
            }
            checks.fail(
                "archive.trailing",
                format!(
                    "data after a lone zero block at offset {at}: tar stops there and never extracts what follows"
                ),
                None,
            );
            return Ok(false);
        }
        if !checksum_ok(&h) {
            checks.fail(
                "archive.header",
                format!(
                    "bad tar header checksum at offset {at}: not a tar header (corrupt or garbage)"
                ),
                None,
            );
            return Ok(true);
        }
        let typ = h[156];
        let Some(hsize) = parse_num(&h[124..136]) else {
            checks.fail(
                "archive.header",
                format!("invalid size field at offset {at}"),
                None,
            );
            return Ok(true);
        };
        if matches!(typ, b'x' | b'g' | b'L' | b'K') {
            p.chain += 1;
            if p.chain > MAX_EXTENDED_CHAIN {
                checks.fail(
                    "archive.header",
                    format!(
                        "more than {MAX_EXTENDED_CHAIN} extended headers in a row at offset {at}"
                    ),
                    None,
                );
                return Ok(true);
            }
            if hsize > MAX_EXTENDED {
                checks.fail(
                    "archive.header",
                    format!(
                        "extended header ('{}') of {hsize} bytes at offset {at}: more than the {} KiB accepted",
                        typ as char,
                        MAX_EXTENDED >> 10
                    ),
                    None,
                );
                return Ok(true);
            }
            let mut data = Vec::with_capacity(hsize as usize);
            read_data(r, hsize, state, |c| data.extend_from_slice(c))?;
            match typ {
                b'x' | b'g' => {
                    if let Err(e) = parse_pax(&data, &mut p, typ == b'g') {
                        checks.fail("archive.header", format!("{e} at offset {at}"), None);
                        return Ok(true);
                    }
                }
                b'L' => p.path = Some(cstr(&data).to_vec()),
                _ => p.linkpath = Some(cstr(&data).to_vec()),
            }
            continue;
        }

        // A member.
        let pend = std::mem::take(&mut p);
        let ustar = &h[257..263] == b"ustar\0";
        let name = match pend.path {
            Some(n) => n,
            None => {
                let base = cstr(&h[..100]);
                let prefix = if ustar { cstr(&h[345..500]) } else { b"" };
                if prefix.is_empty() {
                    base.to_vec()
                } else {
                    [prefix, b"/", base].concat()
                }
            }
        };
        let link = pend.linkpath.unwrap_or_else(|| cstr(&h[157..257]).to_vec());
        let nums = (
            parse_num(&h[100..108]),
            pend.uid.or_else(|| parse_num(&h[108..116])),
            pend.gid.or_else(|| parse_num(&h[116..124])),
        );
        let (Some(mode), Some(uid), Some(gid)) = nums else {
            checks.fail(
                "archive.header",
                format!("invalid mode/uid/gid field at offset {at}"),
                Some(show(&name)),
            );
            return Ok(true);
        };
        let size = pend.size.unwrap_or(hsize);
        state.current = Some(show(&name));
        let kind = match typ {
            b'0' | 0 | b'7' | b'S' => NodeKind::File { size },
            b'1' => NodeKind::HardLink(link),
            b'2' => NodeKind::Symlink(link),
            b'3' => NodeKind::Char,
            b'4' => NodeKind::Block,
            b'5' | b'D' => NodeKind::Dir,
            b'6' => NodeKind::Fifo,
            other => {
                checks.fail(
                    "archive.header",
                    format!("unsupported member type '{}'", other as char),
                    Some(show(&name)),
                );
                NodeKind::Other
            }
        };
        // Header-only types carry no data (Go's archive/tar does the same); GNU dumpdirs do.
        let data_len = match typ {
            b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
            _ => size,
        };
        tree.members += 1;
        if tree.members > MAX_MEMBERS {
            checks.fail(
                "archive.limits",
                format!("more than {MAX_MEMBERS} members"),
                None,
            );
            return Ok(true);
        }
        if name.len() > MAX_NAME {
            checks.fail(
                "archive.names",
                format!("member name of {} bytes, longer than PATH_MAX", name.len()),
                Some(show(&name)),
            );
            read_data(r, data_len, state, |_| {})?;
            continue;
        }
        let mut sink = tree.add(&name, kind, mode as u32, uid, gid, checks);
        read_data(r, data_len, state, |c| sink.feed(c))?;
        tree.finish(sink, checks);
    }
}

/// After the end-of-archive marker: only zero padding may follow.
fn drain(r: &mut dyn Read, state: &mut State, checks: &mut Checks) -> io::Result<()> {
    let mut buf = std::mem::take(&mut state.buf);
    buf.resize(64 * 1024, 0);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            checks.fail(
                "archive.trailing",
                format!(
                    "non-zero data at offset {} after the end-of-archive marker",
                    state.offset + i as u64
                ),
                None,
            );
            return Ok(());
        }
        state.offset += n as u64;
    }
}

/// Archive-level verdicts that need the whole member table.
pub(crate) fn archive_checks(tree: &Tree, checks: &mut Checks) {
    for id in [
        "archive.complete",
        "archive.trailing",
        "archive.header",
        "archive.names",
        "archive.ids",
        "archive.devices",
        "archive.duplicates",
        "archive.hardlinks",
        "archive.symlinks",
    ] {
        checks.evaluated(id, "ok");
    }
    // One naming convention.
    match (&tree.dot_example, &tree.plain_example) {
        (Some(d), Some(p)) => checks.fail(
            "archive.naming",
            format!(
                "mixed member names: {d} has the ./ prefix, {p} does not; Proxmox's --exclude ./dev/* is anchored, use one convention (./)"
            ),
            Some(p.clone()),
        ),
        (None, Some(_)) => checks.pass(
            "archive.naming",
            "names have no ./ prefix (Proxmox's anchored --exclude ./dev/* does not match them; ./ is preferred)".into(),
        ),
        _ => checks.pass("archive.naming", "all names carry the ./ prefix".into()),
    }
    // Root filesystem at the archive root.
    let tops: Vec<&Vec<u8>> = tree.top_level.iter().collect();
    if tree.top_level.contains(b"etc".as_slice()) {
        checks.pass("archive.root", "root filesystem at the archive root".into());
    } else if tops.len() == 1 {
        checks.fail(
            "archive.root",
            format!(
                "every member is inside {}/: a wrapper directory; pack the rootfs itself (tar -C rootfs -cf - .)",
                show(tops[0])
            ),
            Some(show(tops[0])),
        );
    } else {
        checks.fail(
            "archive.root",
            "no etc/ at the archive root: this is not a root filesystem".into(),
            None,
        );
    }
    let _ = Status::Pass;
}
