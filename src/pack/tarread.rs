//! A small streaming tar reader (ustar, GNU `L`/`K`, PAX `x`).
//!
//! Why not `tar::Archive`: its PAX parser splits records at `\n` instead of using their length
//! prefix, so a record whose value contains a newline byte is "malformed" (binary xattr values
//! such as `security.capability` often contain 0x0a), and a PAX `path` with a newline silently
//! falls back to the truncated header name. Reading headers is simple enough to do right here;
//! `tar::Header` still decodes the numeric fields (octal and GNU base-256).

use std::io::{self, Read};

use tar::{EntryType, Header};

const BLOCK: u64 = 512;
/// Upper bound for one extension record's data (PAX `x`, GNU `L`/`K`): they are held in memory.
/// Linux caps a single xattr value at 64 KiB and a path at 4 KiB; 16 MiB leaves ample room.
const MAX_EXTENSION: u64 = 16 << 20;

/// One member header with its extensions applied. Its data is read with [`TarReader::data`].
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub header: Header,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
    /// PAX `mtime` as given (decimal seconds with optional fraction), if any.
    pub pax_mtime: Option<Vec<u8>>,
    /// All PAX records (local header), in order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(crate) struct TarReader<R> {
    r: R,
    /// Data bytes of the current member not read yet, plus its padding.
    left: u64,
    pad: u64,
    done: bool,
}

fn malformed(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    /// The next member, or `None` at the end-of-archive marker (or a clean EOF between members).
    pub fn next_entry(&mut self) -> io::Result<Option<RawEntry>> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        loop {
            let mut header = Header::new_old();
            if !self.read_block(header.as_mut_bytes())? {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(malformed("archive ends after an extension header"));
                }
                self.done = true;
                return Ok(None);
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                // End-of-archive marker. What follows (the second zero block, padding) is left to
                // the caller, who drains the stream.
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(malformed("archive ends after an extension header"));
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&header)?;
            let size = header.entry_size()?;
            let ty = header.entry_type();
            match ty {
                EntryType::XHeader | EntryType::XGlobalHeader => {
                    let data = self.read_extension(size)?;
                    if ty == EntryType::XHeader || header.as_bytes()[156] == b'X' {
                        pax.get_or_insert_default().extend(parse_pax(&data)?);
                    }
                    // A global header ('g') would apply to all following members; Docker never
                    // writes one and its usual content (charset, comment) is irrelevant here.
                }
                EntryType::GNULongName => {
                    long_name = Some(trim_nul(self.read_extension(size)?));
                }
                EntryType::GNULongLink => {
                    long_link = Some(trim_nul(self.read_extension(size)?));
                }
                _ if header.as_bytes()[156] == b'X' => {
                    // Solaris extended header: same records as PAX `x`.
                    let data = self.read_extension(size)?;
                    pax.get_or_insert_default().extend(parse_pax(&data)?);
                }
                _ => {
                    let pax = pax.unwrap_or_default();
                    let find = |k: &[u8]| {
                        pax.iter()
                            .rev()
                            .find(|(key, _)| key == k)
                            .map(|(_, v)| v.clone())
                    };
                    let num = |k: &[u8], dflt: u64| -> io::Result<u64> {
                        match find(k) {
                            Some(v) => std::str::from_utf8(&v)
                                .ok()
                                .and_then(|s| s.parse::<u64>().ok())
                                .ok_or_else(|| {
                                    malformed(format!(
                                        "bad PAX {} value",
                                        String::from_utf8_lossy(k)
                                    ))
                                }),
                            None => Ok(dflt),
                        }
                    };
                    let size = num(b"size", size)?;
                    let uid = num(b"uid", header.uid()?)?;
                    let gid = num(b"gid", header.gid()?)?;
                    let path = find(b"path")
                        .or(long_name)
                        .unwrap_or_else(|| header.path_bytes().into_owned());
                    let link = find(b"linkpath").or(long_link).unwrap_or_else(|| {
                        header
                            .link_name_bytes()
                            .map(|l| l.into_owned())
                            .unwrap_or_default()
                    });
                    let pax_mtime = find(b"mtime");
                    // No data follows symlinks, devices, directories and fifos whatever the
                    // size field says (POSIX ustar); everything else, hard links included (pax
                    // allows a hard link with data), is followed by `size` bytes.
                    let has_data = !matches!(
                        ty,
                        EntryType::Symlink
                            | EntryType::Char
                            | EntryType::Block
                            | EntryType::Directory
                            | EntryType::Fifo
                    );
                    let stored = if has_data { size } else { 0 };
                    self.left = stored;
                    self.pad = padding(stored);
                    return Ok(Some(RawEntry {
                        header,
                        path,
                        link,
                        size,
                        uid,
                        gid,
                        pax_mtime,
                        pax,
                    }));
                }
            }
        }
    }

    /// Reader over the current member's data (exactly `size` bytes unless the stream ends early).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { t: self }
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.left + self.pad;
        if n > 0 {
            let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
            if copied < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive ends inside a member",
                ));
            }
        }
        self.left = 0;
        self.pad = 0;
        Ok(())
    }

    /// Reads a whole block; `false` on EOF before its first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "archive ends inside a header",
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn read_extension(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            return Err(malformed(format!("extension header of {size} bytes")));
        }
        let mut data = vec![0; size as usize];
        self.r.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "archive ends inside an extension header")
            } else {
                e
            }
        })?;
        let pad = padding(size);
        if pad > 0 {
            let mut b = [0u8; BLOCK as usize];
            self.r.read_exact(&mut b[..pad as usize])?;
        }
        Ok(data)
    }
}

pub(crate) struct Data<'a, R> {
    t: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.t.left.min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.t.r.read(&mut buf[..want])?;
        self.t.left -= n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn verify_checksum(h: &Header) -> io::Result<()> {
    let b = h.as_bytes();
    let unsigned: u32 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|&x| x as u32)
        .sum::<u32>()
        + 8 * 32;
    // Some old writers summed signed chars; accept that too, like GNU tar.
    let signed: i32 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|&x| x as i8 as i32)
        .sum::<i32>()
        + 8 * 32;
    let stored = h
        .cksum()
        .map_err(|_| malformed("header checksum field is not a number"))?;
    if stored == unsigned || stored as i32 == signed {
        Ok(())
    } else {
        Err(malformed("header checksum mismatch"))
    }
}

/// Parses PAX records `"<len> <key>=<value>\n"` by their length prefix; values may contain any
/// byte, newlines included.
pub(crate) fn parse_pax(data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // GNU tar and others may pad the data with NULs
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("PAX record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("PAX record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed("PAX record length does not match its content"));
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("PAX record without '='"))?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tarwrite::pax_records;

    #[test]
    fn pax_values_may_contain_newlines() {
        let recs = vec![
            (
                b"SCHILY.xattr.security.capability".to_vec(),
                b"\x01\x00\x00\x02\x0a\x00\x00\x00".to_vec(),
            ),
            (b"path".to_vec(), b"a\nb=c".to_vec()),
        ];
        assert_eq!(parse_pax(&pax_records(&recs)).unwrap(), recs);
        assert!(parse_pax(b"5 a=b\n").is_err());
        assert!(parse_pax(b"x a=b\n").is_err());
        assert!(parse_pax(b"7 ab\n").is_err() || parse_pax(b"6 ab\n").is_err());
    }

    fn ustar(name: &[u8], ty: EntryType, size: u64) -> Header {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(ty);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn reads_pax_path_with_newline_and_data() {
        let recs = pax_records(&[
            (b"path".to_vec(), b"dir/new\nline".to_vec()),
            (b"uid".to_vec(), b"3000000".to_vec()),
        ]);
        let mut ar = Vec::new();
        ar.extend_from_slice(
            ustar(b"PaxHeaders/x", EntryType::XHeader, recs.len() as u64).as_bytes(),
        );
        ar.extend(padded(&recs));
        ar.extend_from_slice(ustar(b"dir/new", EntryType::Regular, 3).as_bytes());
        ar.extend(padded(b"abc"));
        ar.extend_from_slice(ustar(b"f2", EntryType::Regular, 600).as_bytes());
        ar.extend(padded(&[7u8; 600]));
        ar.extend([0u8; 1024]);

        let mut r = TarReader::new(&ar[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"dir/new\nline");
        assert_eq!(e.uid, 3_000_000);
        let mut d = Vec::new();
        r.data().read_to_end(&mut d).unwrap();
        assert_eq!(d, b"abc");
        // data of the second member is skipped when not read
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"f2");
        assert_eq!(e.size, 600);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn truncated_and_corrupt_archives_are_errors() {
        let mut ar = Vec::new();
        ar.extend_from_slice(ustar(b"f", EntryType::Regular, 1000).as_bytes());
        ar.extend([1u8; 100]);
        let mut r = TarReader::new(&ar[..]);
        r.next_entry().unwrap().unwrap();
        assert!(r.next_entry().is_err());

        let mut h = ustar(b"f", EntryType::Regular, 0);
        h.as_mut_bytes()[0] = b'g';
        let mut r = TarReader::new(h.as_bytes().as_slice());
        let err = r.next_entry().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        let half = &ustar(b"f", EntryType::Regular, 0).as_bytes()[..100].to_vec();
        assert!(TarReader::new(&half[..]).next_entry().is_err());
    }
}
