//! The packer: Docker's export stream → normalized, deterministic, compressed rootfs template.
//!
//! One pass: the input tar is parsed entry by entry ([`member`]), each member is judged by the
//! rules in [`policy`], written as GNU tar ([`tarwrite`]) into a 1 MiB buffer in front of a
//! parallel compressor ([`sink`]), and both the tar and the compressed bytes are hashed on the
//! way. Memory is bounded: file data is never held in memory, only one map of non-directory
//! paths (for hard links) grows with the number of members.
//!
//! Order: the output lists members in canonical order ([`canonical_cmp`]). Docker's export
//! already arrives in that order and is streamed straight through. If a member arrives out of
//! order (another engine, a hand-made tar), the packer switches to the spool path
//! ([`spool`]): it finishes and re-reads the part it already wrote, spools all file data to an
//! unnamed file in `spool_dir`, sorts, and rewrites the output from its start. When `output`
//! is a regular [`File`] it is rewound and truncated in place; for any other writer the
//! compressed stream is staged in `spool_dir` and copied to `output` at the end.

pub mod member;
pub mod policy;
mod sink;
mod spool;
pub(crate) mod tarread;
mod tarwrite;

use std::any::Any;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

pub use member::{NameError, archive_name, canonical_cmp, canonical_sort, normalize_path};

use member::{Kind, Member, Meta, ParseError};
use sink::TarSink;
use spool::{AddError, Spooler};
use tarread::TarReader;
use tarwrite::{TarWriter, WriteError};

/// Read buffer on the export stream: the tar parser reads 512-byte headers.
const INPUT_BUFFER: usize = 1 << 20;
/// Progress is reported at most once per this many input bytes (and at the end).
const PROGRESS_STEP: u64 = 1 << 20;

/// Output compression. Bytes depend on the algorithm, level and library version only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Multi-member gzip (1 MiB members, libdeflate); level 0–12, [`DEFAULT_GZIP_LEVEL`] by default.
    Gzip { level: u32 },
    /// zstd (multi-threaded mode, checksum); level per `zstd::compression_level_range()`.
    Zstd { level: i32 },
}

impl Compression {
    /// File name extension Proxmox derives the decompressor from (proxmox-api.md §8.1).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "tar.gz",
            Compression::Zstd { .. } => "tar.zst",
        }
    }

    /// `gzip` / `zstd`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }
}

/// The default gzip level. Measured with bench/pack.sh on a provisioned Debian 12 container
/// (2 cores): libdeflate level 4 came out 0.6% larger than `gzip -9` and ran at 1.2–1.4× the
/// bare `docker export`; level 6 was 1.2% smaller but 1.6× slower than the export.
pub const DEFAULT_GZIP_LEVEL: u32 = 4;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Modification times are clamped to this (`min(mtime, epoch)`); root entry and replaced
    /// stubs get it.
    pub source_date_epoch: u64,
    pub compression: Compression,
    /// Compression threads; 0 = all cores. The output bytes do not depend on it.
    pub threads: usize,
    /// Where the spool (out-of-order input) or the staged output (non-`File` output) is written.
    pub spool_dir: PathBuf,
}

impl PackOptions {
    /// gzip at the default level on all cores.
    pub fn new(source_date_epoch: u64, spool_dir: impl Into<PathBuf>) -> Self {
        PackOptions {
            source_date_epoch,
            compression: Compression::default(),
            threads: 0,
            spool_dir: spool_dir.into(),
        }
    }

    fn validate(&self) -> Result<(), PackError> {
        match self.compression {
            Compression::Gzip { level } if level > 12 => Err(PackError::Options(format!(
                "gzip level {level} is out of range 0–12"
            ))),
            Compression::Zstd { level } if !zstd::compression_level_range().contains(&level) => {
                let r = zstd::compression_level_range();
                Err(PackError::Options(format!(
                    "zstd level {level} is out of range {}–{}",
                    r.start(),
                    r.end()
                )))
            }
            _ => Ok(()),
        }
    }

    fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// Members written to the output tar, the root entry included.
    pub members: u64,
    /// Uncompressed tar size.
    pub tar_bytes: u64,
    pub compressed_bytes: u64,
    /// Hex sha256 of the compressed output (the `.sha256` sidecar).
    pub sha256: String,
    /// Hex sha256 of the uncompressed normalized tar (content identity).
    pub tar_sha256: String,
    /// Members left out or replaced, e.g. `./.dockerenv (docker marker)`, sorted.
    pub dropped: Vec<String>,
    /// Things that will likely break on Proxmox but were kept (owner ids above 65535), sorted.
    pub warnings: Vec<String>,
    /// Input bytes read (the whole export stream).
    pub input_bytes: u64,
    /// The input was not in canonical order and went through the spool.
    pub spooled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("invalid pack options: {0}")]
    Options(String),
    #[error("reading the export stream failed")]
    Input(#[source] io::Error),
    #[error("the export stream is not a valid tar archive: {0}")]
    Malformed(String),
    #[error("member {name:?} would be extracted outside the root (`..` in its name)")]
    UnsafeName { name: String },
    #[error("member {name:?}: {what} is not supported")]
    Unsupported { name: String, what: String },
    #[error("no space left on device (ENOSPC) while writing the {what}")]
    DiskFull {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("writing the compressed output failed")]
    Output(#[source] io::Error),
    #[error("temporary spool in {} failed", dir.display())]
    Spool {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn output_error(e: io::Error) -> PackError {
    if e.kind() == io::ErrorKind::StorageFull {
        PackError::DiskFull {
            what: "compressed output",
            source: e,
        }
    } else {
        PackError::Output(e)
    }
}

fn spool_error(dir: &std::path::Path, e: io::Error) -> PackError {
    if e.kind() == io::ErrorKind::StorageFull {
        PackError::DiskFull {
            what: "spool",
            source: e,
        }
    } else {
        PackError::Spool {
            dir: dir.to_path_buf(),
            source: e,
        }
    }
}

/// Packs a `docker export` tar stream into `output`; see the module docs.
///
/// `progress` is called on the calling thread with the number of input bytes read so far.
/// `output` is not synced to disk. On error, `output` holds a partial artifact to discard.
pub fn pack<R: Read, W: Write + Send + 'static>(
    input: R,
    output: W,
    opts: &PackOptions,
    progress: &dyn Fn(u64),
) -> Result<PackReport, PackError> {
    opts.validate()?;
    let threads = opts.effective_threads();
    let epoch = opts.source_date_epoch;
    let mut out = Output::open(output, opts)?;
    let mut ctx = Ctx::new(opts)?;

    let input_failed = Rc::new(Cell::new(false));
    let counting = Counting {
        inner: input,
        count: 0,
        reported: 0,
        progress,
        failed: input_failed.clone(),
    };
    let mut reader = TarReader::new(BufReader::with_capacity(INPUT_BUFFER, counting));
    let input_err = |e: io::Error| {
        if input_failed.get() {
            PackError::Input(e)
        } else {
            PackError::Malformed(e.to_string())
        }
    };
    let data_err = |e: WriteError| match e {
        WriteError::Read(e) => input_err(e),
        WriteError::Short {
            name,
            expected,
            got,
        } => PackError::Malformed(format!(
            "{} ends after {got} of its {expected} bytes (truncated stream)",
            policy::display(&name)
        )),
        WriteError::Write(e) => output_error(e),
    };

    let mut tar = Some(new_tar(opts, threads, out.take_file())?);
    tar.as_mut()
        .expect("set")
        .write_root(epoch)
        .map_err(data_err)?;
    let mut streamer = Some(Streamer::default());
    let mut spooler: Option<Spooler> = None;

    while let Some(raw) = reader.next_entry().map_err(input_err)? {
        let m = member::parse_entry(raw, epoch).map_err(|e| parse_error(e, &input_err))?;
        let Some((m, replacement)) = ctx.admit(m) else {
            continue;
        };
        let mut fixed: &[u8] = replacement.unwrap_or_default();
        let mut entry = reader.data();
        let data: &mut dyn Read = if replacement.is_some() {
            &mut fixed
        } else {
            &mut entry
        };

        if let Some(s) = streamer.as_mut() {
            let t = tar.as_mut().expect("streaming");
            match s.offer(m, data, t, &mut ctx).map_err(data_err)? {
                Offer::Written => continue,
                Offer::Rejected(m) => {
                    // Out of canonical order: take back what was written and spool from here on.
                    streamer = None;
                    let mut sp = Spooler::new(&opts.spool_dir)
                        .map_err(|e| spool_error(&opts.spool_dir, e))?;
                    let written = tar.take().expect("streaming").into_inner();
                    replay_prefix(written, &mut out, &mut sp, &mut ctx, opts)?;
                    add(&mut sp, m, data, &data_err, opts)?;
                    spooler = Some(sp);
                }
            }
        } else {
            add(
                spooler.as_mut().expect("spooling"),
                m,
                data,
                &data_err,
                opts,
            )?;
        }
    }

    // Drain whatever follows the end-of-archive marker so the engine's stream completes and the
    // byte count is the stream's.
    let mut rest = reader.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(PackError::Input)?;
    let input_bytes = rest.get_ref().count;
    progress(input_bytes);

    let spooled = spooler.is_some();
    let tar = match (tar, spooler) {
        (Some(t), None) => t,
        (None, Some(sp)) => {
            let mut t = new_tar(opts, threads, out.take_file())?;
            t.write_root(epoch).map_err(data_err)?;
            sp.emit(&mut ctx, &mut t, data_err)?;
            t
        }
        _ => unreachable!("exactly one of streaming or spooling"),
    };
    let members = tar.members();
    let sinked = tar.finish().map_err(output_error)?;
    let fin = sink::finish_sink(sinked).map_err(output_error)?;
    out.complete(fin.file)?;

    let mut dropped = ctx.dropped;
    dropped.sort();
    let mut warnings = ctx.warnings;
    warnings.sort();
    Ok(PackReport {
        members,
        tar_bytes: fin.tar_bytes,
        compressed_bytes: fin.compressed_bytes,
        sha256: fin.sha256,
        tar_sha256: fin.tar_sha256,
        dropped,
        warnings,
        input_bytes,
        spooled,
    })
}

fn new_tar(
    opts: &PackOptions,
    threads: usize,
    file: File,
) -> Result<TarWriter<TarSink>, PackError> {
    let s = sink::tar_sink(&opts.compression, threads, file).map_err(output_error)?;
    Ok(TarWriter::new(s))
}

fn add(
    sp: &mut Spooler,
    m: Member,
    data: &mut dyn Read,
    data_err: &impl Fn(WriteError) -> PackError,
    opts: &PackOptions,
) -> Result<(), PackError> {
    sp.add(m, data).map_err(|e| match e {
        AddError::Data(e) => data_err(e),
        AddError::Spool(e) => spool_error(&opts.spool_dir, e),
    })
}

fn parse_error(e: ParseError, input_err: &impl Fn(io::Error) -> PackError) -> PackError {
    match e {
        ParseError::Io(e) => input_err(e),
        ParseError::Name {
            raw,
            err: NameError::Escapes,
        } => PackError::UnsafeName {
            name: policy::display(&raw),
        },
        ParseError::Unsupported { name, what } => PackError::Unsupported {
            name: policy::display(&name),
            what,
        },
    }
}

/// Finishes the partial output, reads it back into the spool, and rewinds the output.
fn replay_prefix(
    written: TarSink,
    out: &mut Output,
    sp: &mut Spooler,
    ctx: &mut Ctx,
    opts: &PackOptions,
) -> Result<(), PackError> {
    let fin = sink::finish_sink(written).map_err(output_error)?;
    let reread = |e: io::Error| {
        PackError::Output(io::Error::new(
            e.kind(),
            format!("re-reading the partial output: {e}"),
        ))
    };
    let reader = out.reader(&fin.file).map_err(reread)?;
    let dec = sink::decoder(
        &opts.compression,
        BufReader::with_capacity(INPUT_BUFFER, reader),
    )
    .map_err(reread)?;
    let mut ar = TarReader::new(BufReader::with_capacity(INPUT_BUFFER, dec));
    ctx.replaying = true;
    while let Some(raw) = ar.next_entry().map_err(reread)? {
        let m = member::parse_entry(raw, opts.source_date_epoch)
            .map_err(|e| parse_error(e, &reread))?;
        // `admit` skips the root entry we wrote; it is written again.
        let Some((m, replacement)) = ctx.admit(m) else {
            continue;
        };
        let mut fixed: &[u8] = replacement.unwrap_or_default();
        let mut entry = ar.data();
        let data: &mut dyn Read = if replacement.is_some() {
            &mut fixed
        } else {
            &mut entry
        };
        add(
            sp,
            m,
            data,
            &|e| match e {
                WriteError::Read(e) | WriteError::Write(e) => reread(e),
                WriteError::Short { .. } => reread(io::ErrorKind::UnexpectedEof.into()),
            },
            opts,
        )?;
    }
    ctx.replaying = false;
    let mut file = fin.file;
    out.rewind(&mut file).map_err(output_error)?;
    out.put_file(file);
    Ok(())
}

/// Policy state and the report being built.
pub(crate) struct Ctx {
    epoch: u64,
    mount_points: Vec<Vec<u8>>,
    spool_dir: PathBuf,
    dropped: Vec<String>,
    warnings: Vec<String>,
    /// Non-directory paths left out, so that hard links to them can be left out too.
    dropped_paths: HashSet<Vec<u8>>,
    /// Re-reading our own partial output: every rule was applied already, report nothing twice.
    replaying: bool,
}

impl Ctx {
    fn new(opts: &PackOptions) -> Result<Ctx, PackError> {
        Self::with_mount_points(opts, &[])
    }

    /// `mount_points`: absolute paths the build itself mounted into the container (see
    /// `policy::judge`). Nothing passes any today: the build mounts nothing.
    fn with_mount_points(opts: &PackOptions, mps: &[&str]) -> Result<Ctx, PackError> {
        let mut mount_points = Vec::new();
        for mp in mps {
            let p = normalize_path(mp.as_bytes())
                .map_err(|_| PackError::Options(format!("mount point {mp:?} contains `..`")))?;
            if p.is_empty() {
                return Err(PackError::Options(format!(
                    "mount point {mp:?} is the root"
                )));
            }
            mount_points.push(p);
        }
        Ok(Ctx {
            epoch: opts.source_date_epoch,
            mount_points,
            spool_dir: opts.spool_dir.clone(),
            dropped: Vec::new(),
            warnings: Vec::new(),
            dropped_paths: HashSet::new(),
            replaying: false,
        })
    }

    /// Applies the policy to one member: `None` if it is left out, else the member to write and,
    /// for a replaced stub, the content to write instead of the input's data.
    fn admit(&mut self, m: Member) -> Option<(Member, Option<&'static [u8]>)> {
        if m.path.is_empty() {
            // The input's root entry: the packer writes its own (policy::root_meta).
            return None;
        }
        match policy::judge(&m, &self.mount_points) {
            policy::Verdict::Keep => {
                if !self.replaying
                    && let Some(w) = policy::id_warning(&m)
                {
                    self.warnings.push(w);
                }
                Some((m, None))
            }
            policy::Verdict::Drop(why) => {
                self.drop_member(&m, why);
                None
            }
            policy::Verdict::Replace(content) => {
                if !self.replaying {
                    self.dropped.push(format!(
                        "{} (docker init-layer stub, replaced by a 0644 default)",
                        policy::display(&m.archive_name())
                    ));
                }
                Some((
                    policy::replacement(m.path, content, self.epoch),
                    Some(content),
                ))
            }
        }
    }

    fn drop_member(&mut self, m: &Member, why: &str) {
        if !self.replaying {
            self.dropped
                .push(format!("{} ({why})", policy::display(&m.archive_name())));
        }
        if !matches!(m.kind, Kind::Dir) {
            self.dropped_paths.insert(m.path.clone());
        }
    }

    fn is_dropped(&self, path: &[u8]) -> bool {
        self.dropped_paths.contains(path)
    }
}

/// The fast path: members arriving in canonical order are written immediately.
#[derive(Default)]
struct Streamer {
    last: Vec<u8>,
    /// Written non-directory members (possible hard-link targets) → their inode.
    inodes: HashMap<Box<[u8]>, Inode>,
}

enum Inode {
    /// This member carries the data; the key is the anchor.
    Own(Meta),
    /// A hard link to this anchor.
    Linked(Rc<[u8]>, Meta),
}

enum Offer {
    Written,
    /// Cannot be written in order (out of order, or a hard link to a member not seen yet).
    Rejected(Member),
}

impl Streamer {
    fn offer<W: Write>(
        &mut self,
        m: Member,
        data: &mut dyn Read,
        tar: &mut TarWriter<W>,
        ctx: &mut Ctx,
    ) -> Result<Offer, WriteError> {
        if canonical_cmp(&m.path, &self.last) != std::cmp::Ordering::Greater {
            return Ok(Offer::Rejected(m));
        }
        match &m.kind {
            Kind::HardLink { target } => {
                let (anchor, meta) = match self.inodes.get(target.as_slice()) {
                    Some(Inode::Own(meta)) => (Rc::<[u8]>::from(target.as_slice()), *meta),
                    Some(Inode::Linked(a, meta)) => (a.clone(), *meta),
                    None if ctx.is_dropped(target) => {
                        ctx.drop_member(&m, policy::LINK_TO_DROPPED);
                        return Ok(Offer::Written);
                    }
                    None => return Ok(Offer::Rejected(m)),
                };
                tar.write_link(m.path.clone(), &anchor, meta)?;
                self.inodes.insert(
                    m.path.clone().into_boxed_slice(),
                    Inode::Linked(anchor, meta),
                );
            }
            Kind::Dir => tar.write_member(&m, data)?,
            _ => {
                tar.write_member(&m, data)?;
                self.inodes
                    .insert(m.path.clone().into_boxed_slice(), Inode::Own(m.meta));
            }
        }
        self.last = m.path;
        Ok(Offer::Written)
    }
}

/// Counts input bytes, reports progress, and remembers whether the input itself failed (as
/// opposed to the tar parser finding garbage).
struct Counting<'p, R> {
    inner: R,
    count: u64,
    reported: u64,
    progress: &'p dyn Fn(u64),
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                if self.count - self.reported >= PROGRESS_STEP {
                    self.reported = self.count;
                    (self.progress)(self.count);
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Where the compressed bytes go. A regular `File` is written in place (and can be rewound);
/// anything else gets the bytes from a staging file at the end.
struct Output {
    file: Option<File>,
    /// Offset in `file` where the artifact starts.
    start: u64,
    staged_into: Option<Box<dyn Write + Send>>,
    /// A readable handle on a direct output file (opened when a replay needs it).
    direct: bool,
}

impl Output {
    fn open<W: Write + Send + 'static>(output: W, opts: &PackOptions) -> Result<Output, PackError> {
        let boxed: Box<dyn Any> = Box::new(output);
        let staged = match boxed.downcast::<File>() {
            Ok(f) => {
                let mut f = *f;
                let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
                if regular {
                    let start = f.stream_position().map_err(output_error)?;
                    return Ok(Output {
                        file: Some(f),
                        start,
                        staged_into: None,
                        direct: true,
                    });
                }
                Box::new(f) as Box<dyn Write + Send>
            }
            Err(other) => {
                let w: W = *other.downcast::<W>().expect("the type it was boxed as");
                Box::new(w) as Box<dyn Write + Send>
            }
        };
        let tmp =
            tempfile::tempfile_in(&opts.spool_dir).map_err(|e| spool_error(&opts.spool_dir, e))?;
        Ok(Output {
            file: Some(tmp),
            start: 0,
            staged_into: Some(staged),
            direct: false,
        })
    }

    fn take_file(&mut self) -> File {
        self.file.take().expect("output file present")
    }

    fn put_file(&mut self, f: File) {
        self.file = Some(f);
    }

    /// A reader over what was written so far.
    fn reader(&self, f: &File) -> io::Result<RangeReader> {
        let end = f.metadata()?.len();
        let readable = if self.direct {
            // The caller's file may be write-only; open it again for reading.
            File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))?
        } else {
            f.try_clone()?
        };
        Ok(RangeReader {
            f: readable,
            pos: self.start,
            end,
        })
    }

    /// Truncates the output back to its start, ready to be written again.
    fn rewind(&self, f: &mut File) -> io::Result<()> {
        f.set_len(self.start)?;
        f.seek(SeekFrom::Start(self.start))?;
        Ok(())
    }

    /// Direct: nothing left to do. Staged: copy the staging file to the real output.
    fn complete(mut self, f: File) -> Result<(), PackError> {
        let Some(mut dest) = self.staged_into.take() else {
            return Ok(());
        };
        let mut r = RangeReader {
            end: f.metadata().map_err(output_error)?.len(),
            f,
            pos: 0,
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(spool_error(&PathBuf::from("(staging file)"), e)),
            };
            dest.write_all(&buf[..n]).map_err(output_error)?;
        }
        dest.flush().map_err(output_error)
    }
}

/// Positional reader over `[pos, end)` of a file.
struct RangeReader {
    f: File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
