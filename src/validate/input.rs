//! Compression: what the extension promises (Proxmox picks the decompressor by name only,
//! §8.1), what the content is (sniffed), and a decompressing reader with hard limits so a
//! compression bomb fails fast.

use super::tar;
use super::tree::Tree;
use super::{Checks, ValidateError};
use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Above this many decompressed bytes the ratio check applies.
pub(crate) const RATIO_CHECK_AFTER: u64 = 8 << 20;
/// Decompressed/compressed ratio above which the stream is treated as a bomb. Real root
/// filesystems compress 2–6×; gzip cannot exceed ~1032×, zstd/xz go far beyond.
pub(crate) const MAX_RATIO: u64 = 200;
/// Absolute cap on decompressed bytes (a template is a few hundred MiB to a few GiB).
pub(crate) const MAX_DECOMPRESSED: u64 = 64 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    Lzop,
}

impl Compression {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Lzop => "lzop",
        }
    }
    fn tar_flag(self) -> &'static str {
        match self {
            Compression::None => "tar without a decompression flag",
            Compression::Gzip => "tar -z",
            Compression::Zstd => "tar --zstd",
            Compression::Xz => "tar -J",
            Compression::Bzip2 => "tar -j",
            Compression::Lzop => "tar --lzop",
        }
    }
}

/// pve-container `tar_compression_option`: `/\.tar(\.[^.]+)?$/`, then the map of known
/// suffixes. `Err` carries the FAIL message.
pub(crate) fn expected_compression(file_name: &str) -> Result<Compression, String> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let not_template = || {
        format!(
            "file does not look like a template archive: {base} (Proxmox needs .tar, .tar.gz, .tar.xz or .tar.zst)"
        )
    };
    let Some(i) = base.rfind(".tar") else {
        return Err(not_template());
    };
    let ext = &base[i + 4..];
    Ok(match ext {
        "" => Compression::None,
        ".gz" => Compression::Gzip,
        ".zst" => Compression::Zstd,
        ".xz" => Compression::Xz,
        ".bz2" => Compression::Bzip2,
        ".lzo" => Compression::Lzop,
        e if e.len() > 1 && e.starts_with('.') && !e[1..].contains('.') => {
            return Err(format!("unrecognized compression format: {e}"));
        }
        _ => return Err(not_template()),
    })
}

fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if head.starts_with(&[0x89, b'L', b'Z', b'O']) {
        Some(Compression::Lzop)
    } else if head.len() >= 512 && (&head[257..262] == b"ustar" || tar::checksum_ok(&head[..512])) {
        Some(Compression::None)
    } else {
        None
    }
}

/// The wall-clock budget of one validation, shared by the raw and the decompressed reader.
#[derive(Clone)]
struct Deadline {
    at: Instant,
    /// Set when the budget ran out (the error may reach the caller wrapped by a decoder).
    hit: Rc<Cell<bool>>,
}

impl Deadline {
    /// `budget` from now; a budget too large to add (Duration::MAX) means none worth checking.
    fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now()
                .checked_add(budget)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400)),
            hit: Rc::new(Cell::new(false)),
        }
    }

    fn check(&self) -> io::Result<()> {
        if Instant::now() >= self.at {
            self.hit.set(true);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "time budget exceeded",
            ));
        }
        Ok(())
    }
}

/// The raw input, counting bytes and remembering whether the underlying read failed (that is
/// an unreadable file, exit 2, not a damaged archive).
struct Raw<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    failed: Rc<Cell<bool>>,
    deadline: Deadline,
}

impl<R: Read> Read for Raw<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.deadline.check()?;
        match self.inner.read(buf) {
            Ok(n) => {
                self.count.set(self.count.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed.set(true);
                Err(e)
            }
        }
    }
}

/// Marker error for a decompression limit.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub String);
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LimitExceeded {}

struct Limited<R> {
    inner: R,
    produced: Rc<Cell<u64>>,
    compressed: Rc<Cell<u64>>,
    check_ratio: bool,
    deadline: Deadline,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.deadline.check()?;
        let n = self.inner.read(buf)?;
        self.produced.set(self.produced.get() + n as u64);
        let produced = self.produced.get();
        if produced > MAX_DECOMPRESSED {
            return Err(io::Error::other(LimitExceeded(format!(
                "more than {} GiB of decompressed data",
                MAX_DECOMPRESSED >> 30
            ))));
        }
        if self.check_ratio && produced > RATIO_CHECK_AFTER {
            let c = self.compressed.get().max(1);
            if produced / c > MAX_RATIO {
                return Err(io::Error::other(LimitExceeded(format!(
                    "compression bomb: {produced} bytes decompressed from {c} (ratio above {MAX_RATIO}:1)"
                ))));
            }
        }
        Ok(n)
    }
}

/// The decompressing reader for `actual` (bzip2 and lzop are not decoded: an `Unsupported`
/// error).
fn decoder<'a, R: Read + 'a>(actual: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match actual {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(r)?;
            // At most a 128 MiB window (zstd's own default limit; be explicit).
            d.window_log_max(27)?;
            Box::new(d)
        }
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Compression::Bzip2 | Compression::Lzop => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}-compressed input is not decoded", actual.name()),
            ));
        }
    })
}

/// The uncompressed tar stream of a template, whatever its compression (sniffed from the
/// content, as `scan` does), with the same decompression limits. For readers other than the
/// validator (`lxcforge diff`); returns the compression's name too.
pub(crate) fn decompressed<'a, R: Read + 'a>(
    file_name: &str,
    r: R,
) -> Result<(Box<dyn Read + 'a>, &'static str), ValidateError> {
    let count = Rc::new(Cell::new(0u64));
    // `diff` reads what the user named, with no time budget: only the byte and ratio caps.
    let deadline = Deadline::after(Duration::MAX);
    let mut raw = Raw {
        inner: r,
        count: count.clone(),
        failed: Rc::new(Cell::new(false)),
        deadline: deadline.clone(),
    };
    let read_err = |source| ValidateError::Read {
        file: file_name.to_string(),
        source,
    };
    let mut head = Vec::with_capacity(512);
    (&mut raw)
        .take(512)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let Some(actual) = sniff(&head) else {
        return Err(ValidateError::NotAnArchive {
            file: file_name.to_string(),
            magic: head
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        });
    };
    if matches!(actual, Compression::Bzip2 | Compression::Lzop) {
        return Err(ValidateError::UnsupportedCompression {
            file: file_name.to_string(),
            compression: actual.name(),
        });
    }
    let inner = decoder(actual, io::Cursor::new(head).chain(raw)).map_err(read_err)?;
    Ok((
        Box::new(Limited {
            inner,
            produced: Rc::new(Cell::new(0)),
            compressed: count,
            check_ratio: actual != Compression::None,
            deadline,
        }),
        actual.name(),
    ))
}

pub(crate) struct Scan {
    pub tree: Tree,
    /// The archive could not be read to its end; content checks would be meaningless.
    pub fatal: bool,
    pub compression: &'static str,
}

pub(crate) fn scan<R: Read>(
    file_name: &str,
    r: R,
    budget: Duration,
    checks: &mut Checks,
) -> Result<Scan, ValidateError> {
    let count = Rc::new(Cell::new(0u64));
    let produced = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(false));
    let deadline = Deadline::after(budget);
    let timed_out = deadline.hit.clone();
    let mut raw = Raw {
        inner: r,
        count: count.clone(),
        failed: failed.clone(),
        deadline: deadline.clone(),
    };
    let over_budget = || ValidateError::TimeBudget {
        file: file_name.to_string(),
        budget,
        read: count.get(),
        decompressed: produced.get(),
    };
    let read_err = |source| {
        if timed_out.get() {
            over_budget()
        } else {
            ValidateError::Read {
                file: file_name.to_string(),
                source,
            }
        }
    };
    let mut head = Vec::with_capacity(512);
    (&mut raw)
        .take(512)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let Some(actual) = sniff(&head) else {
        let magic = if head.is_empty() {
            "(empty file)".to_string()
        } else {
            head.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Err(ValidateError::NotAnArchive {
            file: file_name.to_string(),
            magic,
        });
    };

    match expected_compression(file_name) {
        Err(msg) => checks.fail("archive.extension", msg, None),
        Ok(e) => {
            checks.pass("archive.extension", "template extension recognised".into());
            if e == actual {
                checks.pass(
                    "archive.compression",
                    format!("content is {} as the extension says", actual.name()),
                );
            } else {
                checks.fail(
                    "archive.compression",
                    format!(
                        "content is {} but the extension makes Proxmox run {} ({}): rename or recompress",
                        actual.name(),
                        e.tar_flag(),
                        e.name()
                    ),
                    None,
                );
            }
        }
    }
    if matches!(actual, Compression::Bzip2 | Compression::Lzop) {
        return Err(ValidateError::UnsupportedCompression {
            file: file_name.to_string(),
            compression: actual.name(),
        });
    }

    let joined = io::Cursor::new(head).chain(raw);
    let decoder = decoder(actual, joined).map_err(read_err)?;
    let mut limited = Limited {
        inner: decoder,
        produced: produced.clone(),
        compressed: count.clone(),
        check_ratio: actual != Compression::None,
        deadline,
    };
    let mut tree = Tree::default();
    let mut state = tar::State::default();
    let fatal = match tar::parse(&mut limited, &mut tree, &mut state, checks) {
        Ok(fatal) => fatal,
        Err(e) => {
            if timed_out.get() {
                return Err(over_budget());
            }
            if failed.get() {
                return Err(read_err(e));
            }
            if let Some(l) = e.get_ref().and_then(|i| i.downcast_ref::<LimitExceeded>()) {
                checks.fail("archive.limits", l.0.clone(), state.current.clone());
            } else if e.kind() == io::ErrorKind::UnexpectedEof {
                checks.fail(
                    "archive.complete",
                    format!("the {} stream is truncated: {e}", actual.name()),
                    state.current.clone(),
                );
            } else if state.end_seen {
                checks.fail(
                    "archive.trailing",
                    format!("unreadable data after the end of the tar archive: {e}"),
                    None,
                );
            } else {
                checks.fail(
                    "archive.complete",
                    format!("the {} stream is corrupt: {e}", actual.name()),
                    state.current.clone(),
                );
            }
            // Garbage after a complete tar is a FAIL, but the content itself was read whole.
            !state.end_seen
        }
    };
    if timed_out.get() {
        // however the decoder reported it
        return Err(over_budget());
    }
    Ok(Scan {
        tree,
        fatal,
        compression: actual.name(),
    })
}
