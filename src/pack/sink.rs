//! The byte pipeline behind the tar writer:
//! `Hashing` (tar sha256) → `BufWriter` 1 MiB → `Encoder` (parallel gzip / zstd) → `Hashing`
//! (artifact sha256) → file.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};

use gzp::ZWriter;
use gzp::deflate::Mgzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use sha2::{Digest, Sha256};

use super::Compression;

/// Size of the independent gzip members. Each member is compressed on its own by whichever
/// thread is free, so the block layout, and with it every output byte, depends only on the
/// input and the level, never on the thread count. 1 MiB keeps the ratio within a fraction of a
/// percent of a single stream while bounding memory to a few blocks per thread.
pub(crate) const GZIP_BLOCK: usize = 1 << 20;
/// Buffer in front of the compressor: the tar writer's many small header writes become 1 MiB
/// writes.
pub(crate) const TAR_BUFFER: usize = 1 << 20;

/// sha256 + byte count of everything written through it (sha2 0.11 has no `io::Write`).
pub(crate) struct Hashing<W> {
    pub inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }
    /// (inner, hex sha256, bytes)
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.sha.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The output file behind a latch. gzp's writer threads `unwrap()` internally once the sink
/// has returned an error (a full disk would panic the packer), so the sink never returns one
/// to the compressor: the first error is kept, later writes are discarded, and both the tar
/// writer (through `Encoder::write`) and `finish_sink` report the kept error instead.
pub(crate) struct Latch {
    file: File,
    err: Arc<Mutex<Option<io::Error>>>,
}

impl Latch {
    fn failed(err: &Mutex<Option<io::Error>>) -> Option<io::Error> {
        let g = err.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map(|e| io::Error::new(e.kind(), e.to_string()))
    }
    fn keep(&self, e: io::Error) {
        let mut g = self.err.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(e);
    }
}

impl Write for Latch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if Latch::failed(&self.err).is_none()
            && let Err(e) = self.file.write_all(buf)
        {
            self.keep(e);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if Latch::failed(&self.err).is_none()
            && let Err(e) = self.file.flush()
        {
            self.keep(e);
        }
        Ok(())
    }
}

pub(crate) type OutSink = Hashing<Latch>;

/// Parallel compressor writing into the hashed output file.
pub(crate) struct Encoder {
    kind: EncoderKind,
    /// The output's first write error (see `Latch`).
    out_err: Arc<Mutex<Option<io::Error>>>,
}

enum EncoderKind {
    Gzip(GzipEnc),
    Zstd(zstd::stream::write::Encoder<'static, OutSink>),
}

/// `Option` so that our `Drop` can finish it on error paths: gzp's own `Drop` would `unwrap()`
/// the result of finishing.
pub(crate) struct GzipEnc(Option<ParCompress<'static, Mgzip, OutSink>>);

impl Drop for GzipEnc {
    fn drop(&mut self) {
        if let Some(mut p) = self.0.take() {
            // Error path only: stop the worker threads, ignore the outcome.
            let _ = p.finish();
        }
    }
}

impl Encoder {
    pub fn new(c: &Compression, threads: usize, out: File) -> io::Result<Encoder> {
        let out_err = Arc::new(Mutex::new(None));
        let sink = Hashing::new(Latch {
            file: out,
            err: out_err.clone(),
        });
        let kind = Self::kind(c, threads, sink)?;
        Ok(Encoder { kind, out_err })
    }

    fn kind(c: &Compression, threads: usize, sink: OutSink) -> io::Result<EncoderKind> {
        let threads = threads.max(1);
        match *c {
            Compression::Gzip { level } => {
                let par = ParCompressBuilder::<Mgzip>::new()
                    .num_threads(threads)
                    .and_then(|b| b.buffer_size(GZIP_BLOCK))
                    .map_err(io::Error::other)?
                    .compression_level(gzp::Compression::new(level))
                    .from_writer(sink);
                Ok(EncoderKind::Gzip(GzipEnc(Some(par))))
            }
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(sink, level)?;
                // Always the multi-threaded mode, even for one thread: zstd's output is the same
                // for any number of workers >= 1, but single-threaded mode (0 workers) cuts
                // blocks differently.
                enc.multithread(threads as u32)?;
                enc.include_checksum(true)?;
                enc.include_contentsize(false)?;
                Ok(EncoderKind::Zstd(enc))
            }
        }
    }

    /// Flushes the last block and returns the sink.
    pub fn finish(self) -> io::Result<(File, String, u64)> {
        let sink = match self.kind {
            EncoderKind::Gzip(mut g) => {
                let mut par = g.0.take().expect("finish called once");
                par.finish().map_err(gzp_to_io)?
            }
            EncoderKind::Zstd(enc) => enc.finish()?,
        };
        if let Some(e) = Latch::failed(&self.out_err) {
            return Err(e);
        }
        let (latch, sha, bytes) = sink.finish();
        Ok((latch.file, sha, bytes))
    }
}

fn gzp_to_io(e: gzp::GzpError) -> io::Error {
    match e {
        gzp::GzpError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = Latch::failed(&self.out_err) {
            return Err(e);
        }
        match &mut self.kind {
            EncoderKind::Gzip(g) => g.0.as_mut().expect("not finished").write(buf),
            EncoderKind::Zstd(z) => z.write(buf),
        }
    }
    /// Deliberately a no-op: a flush would cut a compression block at a position that depends
    /// on buffering, and the output must depend on the content only. `finish` ends the stream.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The full writer stack the tar writer writes into.
pub(crate) type TarSink = Hashing<BufWriter<Encoder>>;

pub(crate) fn tar_sink(c: &Compression, threads: usize, out: File) -> io::Result<TarSink> {
    let enc = Encoder::new(c, threads, out)?;
    Ok(Hashing::new(BufWriter::with_capacity(TAR_BUFFER, enc)))
}

pub(crate) struct Finished {
    pub file: File,
    pub tar_sha256: String,
    pub tar_bytes: u64,
    pub sha256: String,
    pub compressed_bytes: u64,
}

/// Ends compression and returns the file with both hashes.
pub(crate) fn finish_sink(s: TarSink) -> io::Result<Finished> {
    let (buf, tar_sha256, tar_bytes) = s.finish();
    // `into_inner` writes the buffer out without calling the encoder's `flush`.
    let enc = buf.into_inner().map_err(|e| e.into_error())?;
    let (file, sha256, compressed_bytes) = enc.finish()?;
    Ok(Finished {
        file,
        tar_sha256,
        tar_bytes,
        sha256,
        compressed_bytes,
    })
}

/// A reader that decompresses what this module wrote (used to re-read an already written prefix).
pub(crate) fn decoder<'a, R: Read + 'a>(c: &Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        // multi-member: `GzDecoder` would stop after the first member
        Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}
