//! Slow path for input that does not arrive in canonical order: file data is spooled to an
//! unnamed temporary file, the metadata stays in memory, and at the end the members are sorted,
//! hard-link groups re-anchored and everything is written in canonical order.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::member::{Kind, Member, canonical_cmp};
use super::tarwrite::{TarWriter, WriteError};
use super::{Ctx, PackError, policy};

const SPOOL_BUFFER: usize = 1 << 20;

struct Item {
    m: Member,
    /// Offset of the data in the spool file (regular files only).
    offset: u64,
}

pub(crate) struct Spooler {
    file: BufWriter<File>,
    pos: u64,
    items: Vec<Item>,
    buf: Vec<u8>,
}

/// Errors while adding a member: reading its data, or writing the spool.
pub(crate) enum AddError {
    Data(WriteError),
    Spool(io::Error),
}

impl Spooler {
    pub fn new(dir: &Path) -> io::Result<Spooler> {
        let f = tempfile::tempfile_in(dir)?;
        Ok(Spooler {
            file: BufWriter::with_capacity(SPOOL_BUFFER, f),
            pos: 0,
            items: Vec::new(),
            buf: vec![0; 256 * 1024],
        })
    }

    pub fn add(&mut self, m: Member, data: &mut dyn Read) -> Result<(), AddError> {
        let offset = self.pos;
        let size = m.size();
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(AddError::Data(WriteError::Short {
                        name: m.archive_name(),
                        expected: size,
                        got: size - left,
                    }));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(AddError::Data(WriteError::Read(e))),
            };
            self.file
                .write_all(&self.buf[..n])
                .map_err(AddError::Spool)?;
            left -= n as u64;
        }
        self.pos += size;
        self.items.push(Item { m, offset });
        Ok(())
    }

    /// Sorts, resolves hard links and writes every member (the root must already be written).
    pub fn emit<W: Write>(
        self,
        ctx: &mut Ctx,
        tar: &mut TarWriter<W>,
        map_write: impl Fn(WriteError) -> PackError,
    ) -> Result<(), PackError> {
        let spool_err = |e: io::Error| PackError::Spool {
            dir: ctx.spool_dir.clone(),
            source: e,
        };
        let file = self
            .file
            .into_inner()
            .map_err(|e| spool_err(e.into_error()))?;
        let mut items = self.items;

        // Canonical order; the sort is stable, so among members with the same path the last one
        // in the stream comes last, and wins, as in tar extraction.
        items.sort_by(|a, b| canonical_cmp(&a.m.path, &b.m.path));
        let mut deduped: Vec<Item> = Vec::with_capacity(items.len());
        for it in items {
            if let Some(prev) = deduped.last_mut()
                && prev.m.path == it.m.path
            {
                *prev = it;
                continue;
            }
            deduped.push(it);
        }
        let items = deduped;

        let roles = resolve_links(&items, ctx)?;

        for (i, it) in items.iter().enumerate() {
            match roles[i] {
                Role::Plain => {
                    let mut r = SpoolReader::new(&file, it.offset, it.m.size());
                    tar.write_member(&it.m, &mut r)
                        .map_err(|e| spool_read(e, ctx, &map_write))?;
                }
                Role::Anchor { inode } => {
                    let src = &items[inode];
                    let m = Member {
                        path: it.m.path.clone(),
                        ..src.m.clone()
                    };
                    let mut r = SpoolReader::new(&file, src.offset, src.m.size());
                    tar.write_member(&m, &mut r)
                        .map_err(|e| spool_read(e, ctx, &map_write))?;
                }
                Role::Link { anchor, inode } => {
                    tar.write_link(
                        it.m.path.clone(),
                        &items[anchor].m.path,
                        items[inode].m.meta,
                    )
                    .map_err(&map_write)?;
                }
                Role::Dropped => {}
            }
        }
        Ok(())
    }
}

/// Reading the spool back is a spool error; a short read means the spool lost data.
fn spool_read(e: WriteError, ctx: &Ctx, map_write: &impl Fn(WriteError) -> PackError) -> PackError {
    match e {
        WriteError::Read(e) => PackError::Spool {
            dir: ctx.spool_dir.clone(),
            source: e,
        },
        WriteError::Short { .. } => PackError::Spool {
            dir: ctx.spool_dir.clone(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file shorter than written",
            ),
        },
        e => map_write(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    /// Carries the data and metadata of `inode` under its own name (first of its link group).
    Anchor {
        inode: usize,
    },
    /// Hard link to `anchor`, metadata of `inode`.
    Link {
        anchor: usize,
        inode: usize,
    },
    Dropped,
}

/// Hard-link groups: every member of a group (the data member plus the links to it) names one
/// inode. Whatever the input order, the first member of the group in canonical order carries
/// the data and the others link to it, which is what the streaming path produces for input in
/// canonical order, so both paths give the same bytes.
fn resolve_links(items: &[Item], ctx: &mut Ctx) -> Result<Vec<Role>, PackError> {
    let index: HashMap<&[u8], usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.m.path.as_slice(), i))
        .collect();
    let mut roles = vec![Role::Plain; items.len()];
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();

    for (i, it) in items.iter().enumerate() {
        let Kind::HardLink { target } = &it.m.kind else {
            continue;
        };
        // follow link → link chains to the member holding the data
        let mut cur: &[u8] = target;
        let mut steps = 0;
        let inode = loop {
            match index.get(cur) {
                Some(&j) => match &items[j].m.kind {
                    Kind::HardLink { target } => {
                        steps += 1;
                        if steps > items.len() || j == i {
                            return Err(PackError::Malformed(format!(
                                "hard link {} is part of a link cycle",
                                policy::display(&it.m.archive_name())
                            )));
                        }
                        cur = target;
                    }
                    Kind::Dir => {
                        return Err(PackError::Malformed(format!(
                            "hard link {} points to the directory {}",
                            policy::display(&it.m.archive_name()),
                            policy::display(&items[j].m.archive_name())
                        )));
                    }
                    _ => break Some(j),
                },
                None if ctx.is_dropped(cur) => break None,
                None => {
                    return Err(PackError::Malformed(format!(
                        "hard link {} points to {}, which is not in the archive",
                        policy::display(&it.m.archive_name()),
                        policy::display(&super::member::archive_name(cur, false))
                    )));
                }
            }
        };
        match inode {
            Some(k) => groups.entry(k).or_default().push(i),
            None => {
                roles[i] = Role::Dropped;
                ctx.drop_member(&it.m, policy::LINK_TO_DROPPED);
            }
        }
    }

    for (inode, links) in groups {
        let anchor = links
            .iter()
            .copied()
            .chain([inode])
            .min()
            .expect("non-empty");
        for member in links.into_iter().chain([inode]) {
            roles[member] = if member == anchor {
                Role::Anchor { inode }
            } else {
                Role::Link { anchor, inode }
            };
        }
    }
    Ok(roles)
}

/// Positional reader over a range of the spool file.
struct SpoolReader<'a> {
    f: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> SpoolReader<'a> {
    fn new(f: &'a File, offset: u64, len: u64) -> Self {
        SpoolReader {
            f,
            pos: offset,
            end: offset + len,
        }
    }
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
