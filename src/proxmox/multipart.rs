//! The upload body, built by hand because pveproxy's multipart parser is strict
//! (proxmox-api.md §2.3, §10.3–5, §11):
//!
//! - the text parts come first, in exactly the order `content`, `checksum-algorithm`,
//!   `checksum`; the file part is last and named `filename`;
//! - each part's first header is exactly `Content-Disposition: form-data; name="…"` (this case,
//!   one space, quoted values, `name` before `filename`); the file part has a `Content-Type`
//!   (required by libpve-http-server-perl 4.1-4/4.1-5);
//! - the boundary is unquoted (a quoted one keeps its quotes in Proxmox's parser);
//! - nothing follows the closing `--BOUNDARY--\r\n`;
//! - the request has an exact `Content-Length` and no chunked encoding.
//!
//! The file itself is streamed from disk by a reader thread into a small bounded channel, so
//! at most a few chunks are in memory whatever the file's size.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};

/// Size of each chunk read from disk and handed to the connection.
pub const CHUNK: usize = 512 << 10;
/// Chunks in flight between the reader thread and the connection.
const IN_FLIGHT: usize = 4;

/// Everything of the body except the file bytes.
#[derive(Debug, Clone)]
pub struct MultipartBody {
    pub boundary: String,
    head: Bytes,
    tail: Bytes,
    file_len: u64,
}

/// A boundary from a seed: `lxcforge-` and 40 hex digits. Token characters only, so it needs
/// no quotes; long and random enough never to occur in the file by chance (and if it did,
/// Proxmox would store a truncated file whose checksum fails in the task, storing nothing).
pub fn boundary_from_seed(seed: &[u8]) -> String {
    let h = Sha256::digest(seed);
    format!("lxcforge-{}", &hex::encode(h)[..40])
}

/// A fresh boundary for this process and moment.
pub fn fresh_boundary(extra: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    boundary_from_seed(format!("{nanos}:{}:{n}:{extra}", std::process::id()).as_bytes())
}

impl MultipartBody {
    /// `remote_name` must already be normalised (no `"`, no path); `sha256` is lower-case hex.
    pub fn new(boundary: &str, remote_name: &str, sha256: &str, file_len: u64) -> MultipartBody {
        debug_assert!(!remote_name.contains('"') && !remote_name.contains('/'));
        let b = boundary;
        let field = |name: &str, value: &str| {
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
        };
        let head = format!(
            "{}{}{}--{b}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{remote_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            field("content", "vztmpl"),
            field("checksum-algorithm", "sha256"),
            field("checksum", sha256),
        );
        let tail = format!("\r\n--{b}--\r\n");
        MultipartBody {
            boundary: b.to_owned(),
            head: Bytes::from(head),
            tail: Bytes::from(tail),
            file_len,
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The exact number of bytes the body has.
    pub fn content_length(&self) -> u64 {
        self.head.len() as u64 + self.file_len + self.tail.len() as u64
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// The body as a stream: the head, `file_len` bytes of `path` read by a thread, the tail.
    /// `sent` counts the bytes handed to the connection; `on_chunk` sees each file chunk's
    /// length (progress). A file that turns out shorter or longer than `file_len` ends the
    /// stream with an error, so a changing file is never sent as if complete.
    pub fn stream(
        &self,
        path: &Path,
        sent: Arc<AtomicU64>,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
        let mut file = std::fs::File::open(path)?;
        let file_len = self.file_len;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(IN_FLIGHT);
        std::thread::Builder::new()
            .name("upload-reader".into())
            .spawn(move || {
                let mut left = file_len;
                while left > 0 {
                    let want = (left.min(CHUNK as u64)) as usize;
                    let mut buf = vec![0u8; want];
                    let mut got = 0;
                    while got < want {
                        match file.read(&mut buf[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = tx.blocking_send(Err(e));
                                return;
                            }
                        }
                    }
                    if got < want {
                        let _ = tx.blocking_send(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "the file shrank while it was being sent ({} of {file_len} bytes read)",
                                file_len - left + got as u64
                            ),
                        )));
                        return;
                    }
                    buf.truncate(got);
                    left -= got as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the request was dropped
                    }
                }
                let mut probe = [0u8; 1];
                if matches!(file.read(&mut probe), Ok(n) if n > 0) {
                    let _ = tx.blocking_send(Err(std::io::Error::other(
                        "the file grew while it was being sent",
                    )));
                }
            })?;

        enum Phase {
            Head,
            File,
            Tail,
            Done,
        }
        struct State<F> {
            phase: Phase,
            head: Bytes,
            tail: Bytes,
            rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
            sent: Arc<AtomicU64>,
            on_chunk: F,
        }
        let state = State {
            phase: Phase::Head,
            head: self.head.clone(),
            tail: self.tail.clone(),
            rx,
            sent,
            on_chunk,
        };
        Ok(futures_util::stream::unfold(state, |mut st| async move {
            let item = loop {
                match st.phase {
                    Phase::Head => {
                        st.phase = Phase::File;
                        break Ok(st.head.clone());
                    }
                    Phase::File => match st.rx.recv().await {
                        Some(Ok(chunk)) => {
                            (st.on_chunk)(chunk.len() as u64);
                            break Ok(chunk);
                        }
                        Some(Err(e)) => {
                            st.phase = Phase::Done;
                            break Err(e);
                        }
                        None => st.phase = Phase::Tail,
                    },
                    Phase::Tail => {
                        st.phase = Phase::Done;
                        break Ok(st.tail.clone());
                    }
                    Phase::Done => return None,
                }
            };
            if let Ok(b) = &item {
                st.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Some((item, st))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn the_body_is_byte_for_byte_what_pveproxy_parses() {
        let m = MultipartBody::new("lxcforge-b0", "debian-12-v1.tar.gz", SHA, 4);
        let want_head = format!(
            "--lxcforge-b0\r\n\
Content-Disposition: form-data; name=\"content\"\r\n\
\r\n\
vztmpl\r\n\
--lxcforge-b0\r\n\
Content-Disposition: form-data; name=\"checksum-algorithm\"\r\n\
\r\n\
sha256\r\n\
--lxcforge-b0\r\n\
Content-Disposition: form-data; name=\"checksum\"\r\n\
\r\n\
{SHA}\r\n\
--lxcforge-b0\r\n\
Content-Disposition: form-data; name=\"filename\"; filename=\"debian-12-v1.tar.gz\"\r\n\
Content-Type: application/octet-stream\r\n\
\r\n"
        );
        assert_eq!(std::str::from_utf8(m.head()).unwrap(), want_head);
        assert_eq!(
            m.tail(),
            b"\r\n--lxcforge-b0--\r\n",
            "nothing after the close"
        );
        assert_eq!(
            m.content_type(),
            "multipart/form-data; boundary=lxcforge-b0",
            "unquoted boundary"
        );
        assert_eq!(
            m.content_length(),
            (want_head.len() + 4 + "\r\n--lxcforge-b0--\r\n".len()) as u64
        );
    }

    /// The order rules of §2.3, checked the way Proxmox's phase-1 regexes consume the buffer.
    #[test]
    fn fields_come_in_proxmoxs_order_and_the_file_is_last() {
        let m = MultipartBody::new("B", "x.tar.zst", SHA, 0);
        let s = String::from_utf8(m.head().to_vec()).unwrap();
        let pos = |n: &str| s.find(&format!("name=\"{n}\"")).unwrap();
        assert!(pos("content") < pos("checksum-algorithm"));
        assert!(pos("checksum-algorithm") < pos("checksum"));
        assert!(pos("checksum") < pos("filename"));
        assert_eq!(s.matches("--B\r\n").count(), 4, "four parts");
        assert!(!s.contains("content-disposition"), "header case matters");
        assert!(
            s.ends_with("\r\n\r\n"),
            "the file starts right after the headers"
        );
    }

    #[test]
    fn boundaries_are_token_characters_and_differ() {
        let a = boundary_from_seed(b"1");
        assert!(a.starts_with("lxcforge-") && a.len() == 49);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
        assert_ne!(fresh_boundary("x"), fresh_boundary("x"));
    }

    fn collect(m: &MultipartBody, path: &Path) -> (Vec<u8>, Option<String>, u64, u64) {
        let sent = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (bytes, err) = rt.block_on(async {
            let mut st = Box::pin(
                m.stream(path, sent.clone(), move |n| {
                    s2.fetch_add(n, Ordering::Relaxed);
                })
                .unwrap(),
            );
            let mut out = Vec::new();
            while let Some(item) = st.next().await {
                match item {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
            (out, None)
        });
        (
            bytes,
            err,
            sent.load(Ordering::Relaxed),
            seen.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn the_stream_is_head_file_tail_with_the_declared_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.tar.gz");
        let data: Vec<u8> = (0..(CHUNK * 2 + 1234)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let m = MultipartBody::new("B", "f.tar.gz", SHA, data.len() as u64);
        let (bytes, err, sent, progress) = collect(&m, &p);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(bytes.len() as u64, m.content_length());
        assert_eq!(sent, m.content_length());
        assert_eq!(progress, data.len() as u64);
        let mut want = m.head().to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(m.tail());
        assert!(bytes == want);
    }

    #[test]
    fn a_file_that_changes_size_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.tar.gz");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        let m = MultipartBody::new("B", "f.tar.gz", SHA, 2000);
        let (bytes, err, _, _) = collect(&m, &p);
        assert!(err.unwrap().contains("shrank"));
        assert!(!bytes.ends_with(m.tail()), "never closed as if complete");
        let m = MultipartBody::new("B", "f.tar.gz", SHA, 500);
        let (_, err, _, _) = collect(&m, &p);
        assert!(err.unwrap().contains("grew"));
    }
}
