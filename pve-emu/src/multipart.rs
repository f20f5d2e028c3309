//! pveproxy's multipart upload parser, as a streaming state machine (ref §2.3).
//!
//! This mirrors pve-http-server `AnyEvent.pm` `file_upload_multipart` (≥ 4.2-2) step by step:
//! the parser runs again over the *buffered* bytes on every read event, pulls the text fields
//! `content` → `checksum-algorithm` → `checksum` off the front of the buffer with the same
//! regular expressions, then the file part named `filename`, then streams file data out while
//! holding back `length(boundary) + 8` bytes until the closing delimiter `--BOUNDARY--` shows up.
//!
//! Because it re-runs over whatever happens to be buffered, the real parser (and so this one)
//! is split-dependent in a few places, all of which follow from the algorithm in ref §2.3:
//! * text fields in the wrong order fail when they share a read, and can pass when each part
//!   arrives in a read of its own (ref §2.3 rule 2, "the failure is non-deterministic");
//! * when a read ends inside the file part's headers (after `filename="…"`, before the blank
//!   line), the rest of those headers becomes file data: the header strip runs only once;
//! * bytes after the closing delimiter that arrive in a later read start the handler again
//!   (ref §11, "stray bytes … can start a second task"); that includes the CRLF that follows
//!   `--BOUNDARY--` when it arrives on its own;
//! * a preamble before the first delimiter is counted twice towards Content-Length, so
//!   "upload failed" can fire before the last bytes are in (AnyEvent.pm adds it in phase 0 and
//!   again at the end of the call).
//!
//! Everything else gives the same result however the body is split (see the tests).

use memchr::memmem;
use regex::bytes::Regex;
use std::collections::BTreeMap;

/// Where Perl's `die` without a trailing newline says it died (libpve-http-server-perl 6.0.5).
const ANYEVENT_PM: &str = "/usr/share/perl5/PVE/APIServer/AnyEvent.pm";
const LINE_WRONG_FIELD: u32 = 1325;
const LINE_UPLOAD_FAILED: u32 = 1370;

/// A request parameter as Perl's `decode_urlencoded` leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// `?key` without `=`: the key exists, the value is undef.
    Undef,
    Str(Vec<u8>),
    /// The same key more than once.
    List(Vec<Vec<u8>>),
}

impl Param {
    pub fn as_str(&self) -> Option<String> {
        match self {
            Param::Str(v) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
}

pub type Params = BTreeMap<String, Param>;

/// Perl's `decode_urlencoded` (split on `&`/`;`, `+` → space, `%XX` → byte).
pub fn decode_urlencoded(query: &str) -> Params {
    let mut res = Params::new();
    if query.is_empty() {
        return res;
    }
    for kv in query.split(['&', ';']) {
        // Perl's split(/=/, $kv) drops trailing empty fields: "a=" gives ("a") → undef value.
        let mut parts = kv.split('=');
        let k = unescape_form(parts.next().unwrap_or(""));
        let v = parts.next().filter(|v| !v.is_empty()).map(unescape_form);
        let key = String::from_utf8_lossy(&k).into_owned();
        match v {
            None => {
                res.insert(key, Param::Undef);
            }
            Some(v) => {
                let new = match res.remove(&key) {
                    Some(Param::Str(old)) => Param::List(vec![old, v]),
                    Some(Param::List(mut l)) => {
                        l.push(v);
                        Param::List(l)
                    }
                    _ => Param::Str(v),
                };
                res.insert(key, new);
            }
        }
    }
    res
}

fn unescape_form(s: &str) -> Vec<u8> {
    percent_decode(s.as_bytes(), true)
}

/// `%XX` → byte (and `+` → space if `plus`); invalid escapes stay as they are.
pub fn percent_decode(b: &[u8], plus: bool) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        if plus && b[i] == b'+' {
            out.push(b' ');
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    out
}

/// `PVE::Tools::trim`: strip Perl `\s` ([ \t\n\x0B\f\r]) at both ends.
pub fn trim(v: &[u8]) -> Vec<u8> {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let start = v.iter().position(|c| !ws(c)).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    v[start..end.max(start)].to_vec()
}

/// A regex-safe rendering of arbitrary bytes (for `\Q$boundary\E`).
fn quote_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() {
                (c as char).to_string()
            } else {
                format!(r"\x{c:02X}")
            }
        })
        .collect()
}

/// `parse_content_type`: `(type, boundary)`. The boundary is `\S+?` as is, so a quoted
/// boundary keeps its quotes (ref §2.2).
pub fn parse_content_type(ctype: &str) -> (Option<String>, Option<String>) {
    static SPLIT: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\s*[;,]\s*").unwrap());
    static BOUNDARY: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^\s*boundary\s*=\s*(\S+?)\s*$").unwrap());
    // Perl's split drops trailing empty fields; a leading empty field stays.
    let mut parts: Vec<&str> = SPLIT.split(ctype).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    let mut it = parts.into_iter();
    let ct = it.next().map(str::to_string);
    for p in it {
        if let Some(c) = BOUNDARY.captures(p) {
            return (ct, Some(c[1].to_string()));
        }
    }
    (ct, None)
}

/// The outcome of one read event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing finished yet.
    Continue,
    /// Phase 100 was reached (again): pveproxy calls `handle_api2_request`.
    Complete,
}

/// The parser state of one upload (`$rstate` in AnyEvent.pm).
pub struct Multipart {
    size: u64,
    boundlen: usize,
    phase: u32,
    read: u64,
    bytes: u64,
    params: Params,
    close_delim: Vec<u8>,
    re_phase0: Regex,
    re_fields: Vec<(&'static str, Regex)>,
    re_file: Regex,
    re_value: Regex,
    re_until_data: Regex,
}

impl Multipart {
    /// `boundary` from the Content-Type, `size` = Content-Length, `params` = the query string.
    pub fn new(boundary: &[u8], size: u64, params: Params) -> Multipart {
        let q = quote_bytes(boundary);
        let delim = format!(r"--{q}\r?\n");
        let field = |name: &str| {
            Regex::new(&format!(
                r#"(?s-u)^{delim}.*?Content-Disposition: (.*?); name="{name}"(.*?{delim})"#
            ))
            .unwrap()
        };
        Multipart {
            size,
            boundlen: boundary.len() + 8,
            phase: 0,
            read: 0,
            bytes: 0,
            params,
            close_delim: [b"--".as_slice(), boundary, b"--"].concat(),
            re_phase0: Regex::new(&format!(r"(?s-u)^.*?({delim})")).unwrap(),
            re_fields: ["content", "checksum-algorithm", "checksum"]
                .into_iter()
                .map(|n| (n, field(n)))
                .collect(),
            re_file: Regex::new(&format!(
                r#"(?s-u)^{delim}Content-Disposition: (.*?); name="(.*?)"; filename="([^"]+)""#
            ))
            .unwrap(),
            re_value: Regex::new(&format!(r"(?s-u)^(.*?)({delim})")).unwrap(),
            re_until_data: Regex::new(r"(?s-u)^.*?(?:\r?\n){2}").unwrap(),
        }
    }

    pub fn phase(&self) -> u32 {
        self.phase
    }

    /// File bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// One read event of AnyEvent::Handle (`_drain_rbuf`): call the parser while it consumes
    /// bytes and the buffer is not empty. `sink` receives file data; its error is the text of
    /// Perl's `die` (`write to temporary file failed - …\n`). `Err` is a die of the parser:
    /// pveproxy answers it with `error(500, $err)`.
    pub fn read_event(
        &mut self,
        rbuf: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Event, String> {
        let mut event = Event::Continue;
        loop {
            let len = rbuf.len();
            if len == 0 {
                break;
            }
            if self.on_read(rbuf, sink)? == Event::Complete {
                event = Event::Complete;
            }
            if rbuf.len() == len {
                break;
            }
        }
        Ok(event)
    }

    /// One call of `file_upload_multipart`.
    fn on_read(
        &mut self,
        rbuf: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Event, String> {
        let startlen = rbuf.len();

        // Phase 0: drop the preamble, keep the first delimiter.
        if self.phase == 0
            && let Some(c) = self.re_phase0.captures(rbuf)
        {
            let start = c.get(1).unwrap().start();
            rbuf.drain(..start);
            // AnyEvent.pm counts these bytes here *and* again at the end of the call; the
            // double count is kept (it can make "upload failed" fire early).
            self.read += (startlen - rbuf.len()) as u64;
            self.phase = 1;
        }

        // Phase 1: the text fields in fixed order, then the file part's first header.
        if self.phase == 1 {
            for i in 0..self.re_fields.len() {
                self.extract_form_disposition(i, rbuf)?;
            }
            if let Some(c) = self.re_file.captures(rbuf) {
                let end = c.get(0).unwrap().end();
                let disp = c[1].to_vec();
                let name = c[2].to_vec();
                let filename = trim(&c[3]);
                rbuf.drain(..end);
                assert_form_disposition(&disp)?;
                if name != b"filename" {
                    return Err(format!(
                        "wrong field name '{}' for file upload, expected 'filename' at {ANYEVENT_PM} line {LINE_WRONG_FIELD}.\n",
                        String::from_utf8_lossy(&name)
                    ));
                }
                self.phase = 2;
                self.params.insert("filename".into(), Param::Str(filename));
                self.remove_until_data(rbuf);
            }
        }

        // Phase 2: file data up to `(\r?\n)?+--BOUNDARY--`; everything after it is dropped.
        if self.phase == 2 {
            // Equivalent to Perl's s/^(.*?)${newline_re}?+${close_delim_re}.*$//s: the lazy
            // prefix ends at the first closing delimiter, minus one optional \r\n or \n.
            if let Some(i) = memmem::find(rbuf, &self.close_delim) {
                let mut end = i;
                if rbuf[..end].ends_with(b"\r\n") {
                    end -= 2;
                } else if rbuf[..end].ends_with(b"\n") {
                    end -= 1;
                }
                if end > 0 {
                    sink(&rbuf[..end])?;
                    self.bytes += end as u64;
                }
                rbuf.clear();
                self.phase = 100;
            } else if rbuf.len() > self.boundlen {
                let n = rbuf.len() - self.boundlen;
                sink(&rbuf[..n])?;
                self.bytes += n as u64;
                rbuf.drain(..n);
            }
        }

        let complete = self.phase == 100;

        self.read += (startlen - rbuf.len()) as u64;
        if self.read + rbuf.len() as u64 >= self.size && self.phase != 100 {
            return Err(format!(
                "upload failed at {ANYEVENT_PM} line {LINE_UPLOAD_FAILED}.\n"
            ));
        }
        Ok(if complete {
            Event::Complete
        } else {
            Event::Continue
        })
    }

    fn extract_form_disposition(&mut self, i: usize, rbuf: &mut Vec<u8>) -> Result<(), String> {
        let (name, re) = &self.re_fields[i];
        let Some(c) = re.captures(rbuf) else {
            return Ok(());
        };
        let disp = c[1].to_vec();
        // s/…(.*?${delim_re})/$2/s: $2 ends where the match ends, so keep from its start.
        let keep = c.get(2).unwrap().start();
        let name = *name;
        rbuf.drain(..keep);
        assert_form_disposition(&disp)?;
        self.remove_until_data(rbuf);
        let value = if let Some(c) = self.re_value.captures(rbuf) {
            let v = trim(&c[1]);
            let keep = c.get(2).unwrap().start();
            rbuf.drain(..keep);
            v
        } else {
            // The substitution failed: Perl's $1 still holds the last successful match in
            // this scope, the Content-Disposition value.
            trim(&disp)
        };
        self.params.insert(name.into(), Param::Str(value));
        Ok(())
    }

    /// `s/^.*?${newline_re}{2}//s`: drop the remaining part headers up to the blank line.
    fn remove_until_data(&self, rbuf: &mut Vec<u8>) {
        if let Some(m) = self.re_until_data.find(rbuf) {
            rbuf.drain(..m.end());
        }
    }
}

fn assert_form_disposition(disp: &[u8]) -> Result<(), String> {
    if disp != b"form-data" {
        return Err(format!(
            "wrong Content-Disposition '{}' in multipart, expected 'form-data'\n",
            String::from_utf8_lossy(disp)
        ));
    }
    Ok(())
}

/// Records the names of the parts of a multipart body as it streams by (for
/// [`crate::RecordedRequest::part_names`]; not part of the emulated behaviour). It looks for
/// delimiter lines and reads `name=` from each part's Content-Disposition, case-insensitively.
pub struct PartScanner {
    delim: Vec<u8>,
    carry: Vec<u8>,
    in_headers: Option<Vec<u8>>,
    at_line_start: bool,
    done: bool,
    pub names: Vec<String>,
}

impl PartScanner {
    pub fn new(boundary: &[u8]) -> PartScanner {
        PartScanner {
            delim: [b"--".as_slice(), boundary].concat(),
            carry: Vec::new(),
            in_headers: None,
            at_line_start: true,
            done: false,
            names: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if let Some(h) = self.in_headers.as_mut() {
                let take = data.len().min(8192usize.saturating_sub(h.len()).max(1));
                h.extend_from_slice(&data[..take]);
                data = &data[take..];
                let end = memmem::find(h, b"\r\n\r\n")
                    .map(|i| i + 4)
                    .or_else(|| memmem::find(h, b"\n\n").map(|i| i + 2));
                if let Some(end) = end.or_else(|| (h.len() >= 8192).then_some(h.len())) {
                    let headers = h[..end].to_vec();
                    let rest = h[end..].to_vec();
                    self.in_headers = None;
                    self.names.push(part_name(&headers));
                    self.at_line_start = headers.ends_with(b"\n");
                    self.feed_search(&rest);
                }
                continue;
            }
            let n = data.len();
            self.feed_search(&data[..n]);
            data = &[];
        }
    }

    fn feed_search(&mut self, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let mut pos = 0;
        while let Some(i) = memmem::find(&buf[pos..], &self.delim).map(|i| i + pos) {
            let line_start = if i == 0 {
                self.at_line_start
            } else {
                buf[i - 1] == b'\n'
            };
            let after = i + self.delim.len();
            if !line_start {
                pos = i + 1;
                continue;
            }
            if buf.len() < after + 2 {
                // Not enough to tell a delimiter from a closing delimiter yet.
                self.carry = buf[i..].to_vec();
                self.at_line_start = true;
                return;
            }
            if &buf[after..after + 2] == b"--" {
                self.done = true;
                return;
            }
            let Some(nl) = memchr::memchr(b'\n', &buf[after..]).map(|n| after + n + 1) else {
                self.carry = buf[i..].to_vec();
                self.at_line_start = true;
                return;
            };
            self.in_headers = Some(Vec::new());
            let rest = buf[nl..].to_vec();
            self.feed(&rest);
            return;
        }
        // Keep a tail that could hold the start of a delimiter.
        let keep = (self.delim.len() + 1).min(buf.len());
        let tail_start = buf.len() - keep;
        self.at_line_start = if tail_start == 0 {
            self.at_line_start
        } else {
            buf[tail_start - 1] == b'\n'
        };
        self.carry = buf[tail_start..].to_vec();
    }
}

fn part_name(headers: &[u8]) -> String {
    static NAME: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r#"(?i-u)content-disposition:[^\n]*?[;\s]name=(?:"([^"]*)"|([^;\s]*))"#).unwrap()
    });
    match NAME.captures(headers) {
        Some(c) => {
            String::from_utf8_lossy(c.get(1).or(c.get(2)).map_or(&b""[..], |m| m.as_bytes()))
                .into_owned()
        }
        None => String::new(),
    }
}
