//! Test helpers: a raw HTTPS client that controls every byte and split, curl, multipart bodies.
#![allow(dead_code)]

use pve_emu::{Config, Emulator};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECRET: &str = "00000000-0000-4000-8000-000000000001";
pub const AUTH: &str = "PVEAPIToken=automation@pve!ci=00000000-0000-4000-8000-000000000001";

/// The defaults with short delays (one test checks the faithful 3 s on its own).
pub fn fast() -> Config {
    Config {
        auth_failure_delay: Duration::from_millis(150),
        task_duration: Duration::from_millis(100),
        ..Config::default()
    }
}

pub fn start(cfg: Config) -> Emulator {
    Emulator::start_blocking(cfg).expect("emulator starts")
}

/// A response as received; `status == None` when the server closed without answering.
#[derive(Debug, Default)]
pub struct Raw {
    pub status: Option<u16>,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
    /// The write side failed (server closed early).
    pub write_failed: bool,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn tls_config(emu: &Emulator) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(emu.cert_der()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Sends `chunks` (pausing `pause` between them, each flushed as its own TLS record) and
/// reads the answer until the server closes. When the server closes early the answer that
/// arrived before is still read (the unsent rest is dropped, not retried).
pub fn exchange_chunks(emu: &Emulator, chunks: &[Vec<u8>], pause: Duration) -> Raw {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(emu.addr()).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_config(emu), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    let mut raw = Raw::default();
    'send: for (i, c) in chunks.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let mut rest: &[u8] = c;
        loop {
            let n = conn.writer().write(rest).unwrap_or(0);
            rest = &rest[n..];
            while conn.wants_write() {
                if conn.write_tls(&mut tcp).is_err() {
                    raw.write_failed = true;
                    break 'send;
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    'recv: loop {
        match conn.read_tls(&mut tcp) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            break;
        }
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break 'recv,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break 'recv,
            }
        }
    }
    raw.elapsed = start.elapsed();
    parse_response(&out, &mut raw);
    raw
}

pub fn exchange(emu: &Emulator, req: &[u8]) -> Raw {
    exchange_chunks(emu, &[req.to_vec()], Duration::ZERO)
}

fn parse_response(out: &[u8], raw: &mut Raw) {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    parts.next();
    raw.status = parts.next().and_then(|c| c.parse().ok());
    raw.reason = parts.next().unwrap_or("").to_string();
    for l in lines {
        if let Some((k, v)) = l.split_once(": ") {
            raw.headers.push((k.to_string(), v.to_string()));
        }
    }
    raw.body = out[end + 4..].to_vec();
}

/// A request with the default token.
pub fn request(method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("Connection: close\r\n\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(emu: &Emulator, path: &str) -> Raw {
    exchange(emu, &request("GET", &format!("/api2/json{path}"), &[], b""))
}

/// One multipart part.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

pub fn text<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part {
        name,
        filename: None,
        content_type: None,
        data: value.as_bytes(),
    }
}

pub fn file<'a>(name: &'a str, filename: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        name,
        filename: Some(filename),
        content_type: Some("application/octet-stream"),
        data,
    }
}

pub const BOUNDARY: &str = "------------------------d74496d66958873e";

/// A body the way curl writes it.
pub fn multipart(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match p.filename {
            Some(f) => b.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{f}\"\r\n",
                    p.name
                )
                .as_bytes(),
            ),
            None => b.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{}\"\r\n", p.name).as_bytes(),
            ),
        }
        if let Some(ct) = p.content_type {
            b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(p.data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

pub fn upload_request(path: &str, body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        path,
        &[(
            "Content-Type",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
        )],
        body,
    )
}

pub const UPLOAD: &str = "/api2/json/nodes/pve/storage/local/upload";

/// Polls the status endpoint until the task stopped; returns its status data.
pub fn wait_task(emu: &Emulator, node: &str, upid: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(emu, &format!("/nodes/{node}/tasks/{}/status", urlenc(upid)));
        if r.status == Some(200) {
            let d = r.json()["data"].clone();
            if d["status"] == "stopped" {
                return d;
            }
        }
        assert!(Instant::now() < end, "task {upid} did not stop: {:?}", r);
        std::thread::sleep(Duration::from_millis(30));
    }
}

pub fn task_log(emu: &Emulator, node: &str, upid: &str) -> Vec<String> {
    let r = get(
        emu,
        &format!("/nodes/{node}/tasks/{}/log?limit=0", urlenc(upid)),
    );
    assert_eq!(r.status, Some(200));
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["t"].as_str().unwrap().to_string())
        .collect()
}

pub fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// curl is needed by some tests: skip them outside CI when it is missing, fail in CI.
pub fn have_curl() -> bool {
    let ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "curl is missing (install it: apt-get install curl, or scripts/ensure-deps.sh test)"
            );
        }
        eprintln!("SKIP: curl is missing (apt-get install curl, or scripts/ensure-deps.sh test)");
    }
    ok
}

pub struct Curl {
    pub code: Option<u16>,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub exit: i32,
    pub stderr: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -sS -i --cacert <pem> -H 'Authorization: …' ARGS… URL`.
pub fn curl(emu: &Emulator, pem: &std::path::Path, args: &[&str], url: &str) -> Curl {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(pem)
        .args(["-H", &format!("Authorization: {AUTH}")])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let _ = emu;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut c = Curl {
        code: None,
        reason: String::new(),
        headers: Vec::new(),
        body: String::new(),
        exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Some((head, body)) = s.split_once("\r\n\r\n") {
        let mut lines = head.split("\r\n");
        let st = lines.next().unwrap_or("");
        let mut p = st.splitn(3, ' ');
        p.next();
        c.code = p.next().and_then(|x| x.parse().ok());
        c.reason = p.next().unwrap_or("").to_string();
        for l in lines {
            if let Some((k, v)) = l.split_once(": ") {
                c.headers.push((k.into(), v.into()));
            }
        }
        c.body = body.to_string();
    }
    c
}

pub fn write_pem(emu: &Emulator, dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("pve-ssl.pem");
    std::fs::write(&p, emu.cert_pem()).unwrap();
    p
}
