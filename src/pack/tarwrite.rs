//! Writes normalized members as a GNU tar stream: GNU headers, `././@LongLink` `L`/`K` records
//! for names and link targets of 100 bytes or more, and a PAX `x` record before members that
//! carry xattrs or ACLs. Every header field is written from the member, never from the clock or
//! the host, so equal members give equal bytes.
//!
//! The names are written byte for byte: the tar crate's `set_path`/`append_data` would strip the
//! `./` prefix Proxmox's anchored excludes rely on (crates.md §3.2, pitfall 1).

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use super::member::{Kind, Member, Meta};
use super::policy;

const BLOCK: usize = 512;
/// GNU tar moves a name to an `L` record when it does not fit with a terminating NUL
/// (`strlen(name) >= NAME_FIELD_SIZE`); doing the same keeps every reader on its common path.
const NAME_FIELD: usize = 100;
const COPY_BUF: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) enum WriteError {
    /// Reading the member's data failed.
    Read(io::Error),
    /// The member's data ended before its declared size.
    Short {
        name: Vec<u8>,
        expected: u64,
        got: u64,
    },
    /// Writing the tar stream failed.
    Write(io::Error),
}

pub(crate) struct TarWriter<W: Write> {
    w: W,
    members: u64,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter {
            w,
            members: 0,
            buf: vec![0; COPY_BUF],
        }
    }

    pub fn members(&self) -> u64 {
        self.members
    }

    /// The root entry `./`.
    pub fn write_root(&mut self, epoch: u64) -> Result<(), WriteError> {
        let root = Member {
            path: Vec::new(),
            kind: Kind::Dir,
            meta: policy::root_meta(epoch),
            pax: Vec::new(),
        };
        self.write_member(&root, &mut io::empty())
    }

    /// A hard link `path` → `anchor`, with the inode's metadata. Link headers never carry data or
    /// PAX records: the inode's are on the anchor.
    pub fn write_link(
        &mut self,
        path: Vec<u8>,
        anchor: &[u8],
        meta: Meta,
    ) -> Result<(), WriteError> {
        let m = Member {
            path,
            kind: Kind::HardLink {
                target: anchor.to_vec(),
            },
            meta,
            pax: Vec::new(),
        };
        self.write_member(&m, &mut io::empty())
    }

    /// Writes one member; `data` must yield exactly the member's size for regular files.
    pub fn write_member(&mut self, m: &Member, data: &mut dyn Read) -> Result<(), WriteError> {
        let name = m.archive_name();
        let link: Option<Vec<u8>> = match &m.kind {
            Kind::Symlink { target } => Some(target.clone()),
            // hard-link targets are member names and get the same `./` spelling
            Kind::HardLink { target } => Some(super::member::archive_name(target, false)),
            _ => None,
        };
        if !m.pax.is_empty() {
            self.write_pax(&m.pax).map_err(WriteError::Write)?;
        }
        if let Some(link) = &link
            && link.len() >= NAME_FIELD
        {
            self.write_gnu_long(EntryType::GNULongLink, link)
                .map_err(WriteError::Write)?;
        }
        if name.len() >= NAME_FIELD {
            self.write_gnu_long(EntryType::GNULongName, &name)
                .map_err(WriteError::Write)?;
        }

        let mut h = Header::new_gnu();
        let (ty, size) = match &m.kind {
            Kind::File { size } => (EntryType::Regular, *size),
            Kind::Dir => (EntryType::Directory, 0),
            Kind::Symlink { .. } => (EntryType::Symlink, 0),
            Kind::HardLink { .. } => (EntryType::Link, 0),
            Kind::Fifo => (EntryType::Fifo, 0),
            Kind::Char { .. } => (EntryType::Char, 0),
            Kind::Block { .. } => (EntryType::Block, 0),
        };
        h.set_entry_type(ty);
        h.set_mode(m.meta.mode & policy::MODE_MASK);
        h.set_uid(m.meta.uid);
        h.set_gid(m.meta.gid);
        h.set_mtime(m.meta.mtime);
        h.set_size(size);
        if let Kind::Char { major, minor } | Kind::Block { major, minor } = m.kind {
            h.set_device_major(major).map_err(WriteError::Write)?;
            h.set_device_minor(minor).map_err(WriteError::Write)?;
        }
        {
            let old = h.as_old_mut();
            copy_truncated(&mut old.name, &name);
            if let Some(link) = &link {
                copy_truncated(&mut old.linkname, link);
            }
        }
        if let Some(gnu) = h.as_gnu_mut() {
            copy_truncated(&mut gnu.uname, policy::OWNER_NAME);
            copy_truncated(&mut gnu.gname, policy::OWNER_NAME);
        }
        h.set_cksum();
        self.w.write_all(h.as_bytes()).map_err(WriteError::Write)?;

        if size > 0 {
            self.copy_data(data, size, &name)?;
        }
        self.members += 1;
        Ok(())
    }

    fn copy_data(&mut self, data: &mut dyn Read, size: u64, name: &[u8]) -> Result<(), WriteError> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(WriteError::Short {
                        name: name.to_vec(),
                        expected: size,
                        got: size - left,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WriteError::Read(e)),
            };
            self.w
                .write_all(&self.buf[..n])
                .map_err(WriteError::Write)?;
            left -= n as u64;
        }
        self.pad(size).map_err(WriteError::Write)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// A `././@LongLink` record (`L` for the name, `K` for the link target), NUL-terminated, as
    /// GNU tar writes it; uid/gid/mtime 0.
    fn write_gnu_long(&mut self, ty: EntryType, value: &[u8]) -> io::Result<()> {
        let mut h = Header::new_gnu();
        copy_truncated(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_entry_type(ty);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let size = value.len() as u64 + 1;
        h.set_size(size);
        h.set_cksum();
        self.w.write_all(h.as_bytes())?;
        self.w.write_all(value)?;
        self.w.write_all(&[0])?;
        self.pad(size)
    }

    /// A PAX extended header (`x`) with the member's records, keys already sorted.
    fn write_pax(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let data = pax_records(records);
        let mut h = Header::new_ustar();
        copy_truncated(&mut h.as_old_mut().name, b"././@PaxHeader");
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.w.write_all(h.as_bytes())?;
        self.w.write_all(&data)?;
        self.pad(data.len() as u64)
    }

    /// End of archive (two zero blocks) and the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.w)
    }

    /// The inner writer, without an end-of-archive marker (used before a restart).
    pub fn into_inner(self) -> W {
        self.w
    }
}

fn copy_truncated(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(0);
}

/// Encodes PAX records: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record,
/// its own digits included.
pub(crate) fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1; // ' ' key '=' value '\n'
        let mut len = body + 1;
        loop {
            let total = body + len.to_string().len();
            if total == len {
                break;
            }
            len = total;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &[u8], kind: Kind) -> Member {
        Member {
            path: path.to_vec(),
            kind,
            meta: Meta {
                mode: 0o4755,
                uid: 3_000_000,
                gid: 100,
                mtime: 1_700_000_000,
            },
            pax: vec![],
        }
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let recs = pax_records(&[(b"a".to_vec(), b"b".to_vec())]);
        assert_eq!(recs, b"6 a=b\n");
        // body of 8 bytes: "9 " would make 10, so the length must be two digits: "10 "
        let recs = pax_records(&[(b"ab".to_vec(), b"cdef".to_vec())]);
        assert_eq!(recs, b"11 ab=cdef\n");
        for n in 0..300 {
            let v = vec![b'x'; n];
            let r = pax_records(&[(b"k".to_vec(), v)]);
            let sp = r.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&r[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "value length {n}");
        }
    }

    #[test]
    fn long_names_and_targets_keep_dot_slash_and_read_back() {
        let long: Vec<u8> = [b"d/".as_slice(), &[b'n'; 150], b"\xff"].concat();
        let target: Vec<u8> = vec![b't'; 130];
        let mut w = TarWriter::new(Vec::new());
        w.write_root(5).unwrap();
        let mut f = member(&long, Kind::File { size: 3 });
        f.pax = vec![(b"SCHILY.xattr.user.k".to_vec(), b"v\0\n".to_vec())];
        w.write_member(&f, &mut &b"abc"[..]).unwrap();
        w.write_member(
            &member(
                b"s",
                Kind::Symlink {
                    target: target.clone(),
                },
            ),
            &mut io::empty(),
        )
        .unwrap();
        w.write_link(b"h".to_vec(), &long, f.meta).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 512, 0);

        let mut r = crate::pack::tarread::TarReader::new(&out[..]);
        let root = r.next_entry().unwrap().unwrap();
        assert_eq!(root.path, b"./");
        assert_eq!(root.header.as_bytes()[257..265], *b"ustar  \0");
        assert_eq!(root.header.mode().unwrap(), 0o755);
        assert_eq!(root.header.mtime().unwrap(), 5);

        let e = r.next_entry().unwrap().unwrap();
        let mut want = b"./".to_vec();
        want.extend_from_slice(&long);
        assert_eq!(e.path, want);
        assert_eq!(e.uid, 3_000_000);
        assert_eq!(e.header.mode().unwrap(), 0o4755);
        assert_eq!(e.pax, f.pax);
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");

        let s = r.next_entry().unwrap().unwrap();
        assert_eq!(s.path, b"./s");
        assert_eq!(s.link, target);

        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.header.entry_type(), EntryType::Link);
        assert_eq!(h.link, want);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let err = w.write_member(&member(b"f", Kind::File { size: 10 }), &mut &b"abc"[..]);
        assert!(matches!(
            err,
            Err(WriteError::Short {
                expected: 10,
                got: 3,
                ..
            })
        ));
    }
}
