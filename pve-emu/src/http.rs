//! HTTP/1.1 the way pve-http-server's `AnyEvent.pm` reads and writes it.

use regex::bytes::Regex;
use std::sync::LazyLock;

/// pve-http-server limits (AnyEvent.pm).
pub const LIMIT_MAX_HEADERS: usize = 64;
pub const LIMIT_MAX_HEADER_SIZE: usize = 8 * 1024;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/api2/json/…?…`).
    pub target: String,
    pub proto_maj: u32,
    pub proto_min: u32,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// `HTTP::Headers->header($name)` in scalar context: all values joined by ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }

    pub fn proto_str(&self) -> String {
        format!("HTTP/{}.{}", self.proto_maj, self.proto_min)
    }

    /// The path part of the target (before `?`), not unescaped. An absolute-form target
    /// (`https://host/path`) yields its path.
    pub fn raw_path(&self) -> &str {
        let t = self.target.as_str();
        let t = match t.find("://") {
            Some(i) if t[..i].chars().all(|c| c.is_ascii_alphabetic()) => {
                let rest = &t[i + 3..];
                rest.find('/').map_or("/", |j| &rest[j..])
            }
            _ => t,
        };
        let t = t.split('#').next().unwrap_or("");
        t.split('?').next().unwrap_or("")
    }

    /// `uri_unescape($request->uri->path())`.
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&crate::multipart::percent_decode(
            self.raw_path().as_bytes(),
            false,
        ))
        .into_owned()
    }

    /// The raw query string (without `?`), empty if none.
    pub fn query(&self) -> &str {
        let t = self.target.split('#').next().unwrap_or("");
        t.split_once('?').map_or("", |(_, q)| q)
    }
}

/// Request line: `(\S+)\040(\S+)\040HTTP\/(\d+)\.(\d+)` (unanchored, as in AnyEvent.pm).
pub fn parse_request_line(line: &[u8]) -> Option<(String, String, u32, u32)> {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?-u)(\S+) (\S+) HTTP/(\d+)\.(\d+)").unwrap());
    let c = RE.captures(line)?;
    let s = |i: usize| String::from_utf8_lossy(&c[i]).into_owned();
    Some((s(1), s(2), s(3).parse().ok()?, s(4).parse().ok()?))
}

/// One header line: `Some(Ok((k, v)))` for `^([^:\s]+)\s*:\s*(.*)`, `Some(Err(v))` for a
/// continuation line `^\s+(.*)`, `None` for anything else (→ 506).
pub fn parse_header_line(line: &[u8]) -> Option<Result<(String, String), String>> {
    static KV: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?-u)^([^:\s]+)\s*:\s*(.*)").unwrap());
    static CONT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?-u)^\s+(.*)").unwrap());
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(c) = KV.captures(line) {
        return Some(Ok((s(&c[1]), s(&c[2]))));
    }
    CONT.captures(line).map(|c| Err(s(&c[1])))
}

/// `HTTP::Status::status_message`.
pub fn status_message(code: u16) -> &'static str {
    match code {
        200 => "OK",
        301 => "Moved Permanently",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        506 => "Variant Also Negotiates",
        _ => "Unknown",
    }
}

/// A response before `response()` turns it into bytes.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub code: u16,
    /// The reason phrase source (first line is used); empty = the standard message.
    pub msg: String,
    /// Extra headers (Content-Type, Location).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(code: u16, msg: impl Into<String>) -> Response {
        Response {
            code,
            msg: msg.into(),
            ..Default::default()
        }
    }
}

/// What was written.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub code: u16,
    pub reason: String,
    pub keep_alive: bool,
}

/// `response()` of AnyEvent.pm: the reason phrase is the first line of the message, a CR left
/// in it turns the answer into a bodiless `400 Bad Request`, codes ≥ 400 close the connection.
pub fn render(resp: &Response, proto: &str, keep_alive: bool) -> Rendered {
    let mut code = resp.code;
    let mut msg = if resp.msg.is_empty() {
        status_message(code).to_string()
    } else {
        resp.msg.clone()
    };
    let mut body = resp.body.clone();
    // ($msg) = $msg =~ m/^(.*)$/m;  — up to the first "\n" (a "\r" stays in).
    msg = msg.split('\n').next().unwrap_or("").to_string();
    if msg.contains('\r') {
        code = 400;
        msg = status_message(code).to_string();
        body.clear();
    }
    if (100..200).contains(&code) || code == 204 || code == 304 {
        body.clear();
    }
    let keep_alive = keep_alive && code < 400;
    let date = http_date(std::time::SystemTime::now());
    let find = |name: &str| {
        resp.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    // HTTP::Headers->as_string order: general, response, entity headers.
    let mut h: Vec<(String, String)> = vec![("Cache-Control".into(), "max-age=0".into())];
    h.push((
        "Connection".into(),
        if keep_alive { "Keep-Alive" } else { "close" }.into(),
    ));
    h.push(("Date".into(), date.clone()));
    h.push(("Pragma".into(), "no-cache".into()));
    if let Some(l) = find("Location") {
        h.push(("Location".into(), l));
    }
    h.push(("Server".into(), "pve-api-daemon/3.0".into()));
    if !body.is_empty() {
        h.push(("Content-Length".into(), body.len().to_string()));
    }
    if let Some(ct) = find("Content-Type") {
        h.push(("Content-Type".into(), ct));
    }
    h.push(("Expires".into(), date));
    let mut out = format!("{proto} {code} {msg}\r\n").into_bytes();
    for (k, v) in &h {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Rendered {
        bytes: out,
        code,
        reason: msg,
        keep_alive,
    }
}

/// `HTTP::Date::time2str`: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784111777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn cr_in_reason_becomes_bare_400() {
        let mut r = Response::new(500, "wrong Content-Disposition 'x\r\nmore");
        r.body = b"text".to_vec();
        let out = render(&r, "HTTP/1.1", true);
        assert_eq!(out.code, 400);
        let s = String::from_utf8(out.bytes).unwrap();
        assert!(s.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{s}");
        assert!(!s.contains("Content-Length"));
        assert!(s.contains("Connection: close\r\n"));
    }

    #[test]
    fn first_line_only() {
        let r = Response::new(500, "storage 'x' does not exist\n");
        let out = render(&r, "HTTP/1.1", true);
        assert_eq!(out.reason, "storage 'x' does not exist");
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            parse_request_line(b"GET /api2/json/version HTTP/1.1"),
            Some(("GET".into(), "/api2/json/version".into(), 1, 1))
        );
        assert!(matches!(parse_header_line(b"Host: x"), Some(Ok(_))));
        assert!(matches!(parse_header_line(b"  folded"), Some(Err(_))));
        assert!(parse_header_line(b": nope").is_none());
    }
}
