//! pveproxy: TLS, request heads, authentication, the upload stream (ref §0.3, §1, §2.2).

use crate::api::{self, ApiResult, Auth, UploadCtx};
use crate::http::{self, Request, Response};
use crate::multipart::{self, Event, Multipart, PartScanner};
use crate::state::{Shared, errno_text};
use crate::{Config, Emulator, Fault, RecordedRequest};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

pub struct Started {
    pub emulator: Emulator,
}

/// The thread body behind [`Emulator::start`].
pub fn run_thread(config: Config, tx: oneshot::Sender<std::io::Result<Started>>) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pve-emu-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let (stop_tx, stop_rx) = oneshot::channel();
        match setup(config, stop_tx).await {
            Ok((emulator, listener, shared, acceptor)) => {
                if tx.send(Ok(Started { emulator })).is_err() {
                    return;
                }
                serve(listener, shared, acceptor, stop_rx).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn loopback_only(addr: &SocketAddr) -> std::io::Result<()> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("pve-emu listens on 127.0.0.0/8 only, not on {addr}"),
        )),
    }
}

async fn setup(
    mut config: Config,
    stop: oneshot::Sender<()>,
) -> std::io::Result<(
    Emulator,
    TcpListener,
    Arc<Shared>,
    tokio_rustls::TlsAcceptor,
)> {
    loopback_only(&config.listen)?;
    if !config.nodes.contains(&config.entry_node) {
        config.nodes.insert(0, config.entry_node.clone());
    }
    let (tempdir, data_dir) = match &config.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.canonicalize()?)
        }
        None => {
            let t = tempfile::Builder::new().prefix("pve-emu-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let tls = crate::tls::generate()?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config, data_dir, tls.fingerprint.clone())?);
    let emulator = Emulator {
        addr,
        cert_pem: tls.cert_pem.clone(),
        cert_der: tls.cert_der.clone(),
        fingerprint: tls.fingerprint.clone(),
        shared: shared.clone(),
        stop: Some(stop),
        thread: None,
        _tempdir: tempdir,
    };
    Ok((
        emulator,
        listener,
        shared,
        tokio_rustls::TlsAcceptor::from(tls.config),
    ))
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => {
                if let Ok((tcp, _)) = r {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(connection(shared.clone(), tcp, acceptor.clone()));
                }
            }
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Read {
    Data(usize),
    Eof,
    Timeout,
    Error,
}

/// A client connection with AnyEvent::Handle's read buffer.
struct Conn {
    s: Box<dyn Stream>,
    rbuf: Vec<u8>,
    chunk: Vec<u8>,
    tls: bool,
}

impl Conn {
    /// One read event: appends what the socket has to `rbuf`.
    async fn read_more(&mut self, t: Duration) -> Read {
        match timeout(t, self.s.read(&mut self.chunk)).await {
            Err(_) => Read::Timeout,
            Ok(Ok(0)) => Read::Eof,
            Ok(Ok(n)) => {
                self.rbuf.extend_from_slice(&self.chunk[..n]);
                Read::Data(n)
            }
            Ok(Err(_)) => Read::Error,
        }
    }

    /// A line ending in `\r?\n` (AnyEvent's default `line` reader), without the EOL.
    async fn read_line(&mut self, t: Duration, max: usize) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.rbuf) {
                let mut line: Vec<u8> = self.rbuf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            if self.rbuf.len() > max {
                return None; // ENOSPC
            }
            match self.read_more(t).await {
                Read::Data(_) => {}
                _ => return None,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).await.is_ok() && self.s.flush().await.is_ok()
    }

    /// `client_do_disconnect`: stop TLS, shut the socket.
    async fn close(mut self) {
        let _ = timeout(Duration::from_secs(1), self.s.shutdown()).await;
    }

    /// What happens when pveproxy `die`s without answering: the handle keeps reading into its
    /// buffer until it overflows `rbuf_max` (ENOSPC), the 5 s inactivity timeout fires, or the
    /// client closes (ref §2.2, §2.3 item 6). Returns the bytes swallowed.
    async fn hang(&mut self, shared: &Shared) -> u64 {
        let mut n = 0;
        loop {
            if self.rbuf.len() > shared.beh.rbuf_max {
                return n;
            }
            match self.read_more(shared.cfg.client_timeout).await {
                Read::Data(k) => n += k as u64,
                _ => return n,
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
    let ct = shared.cfg.client_timeout;
    let mut first = [0u8; 1];
    match timeout(ct, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    let (s, tls): (Box<dyn Stream>, bool) = if first[0] == 0x16 {
        match timeout(ct, acceptor.accept(tcp)).await {
            Ok(Ok(t)) => (Box::new(t), true),
            _ => return,
        }
    } else {
        (Box::new(tcp), false)
    };
    let mut conn = Conn {
        s,
        rbuf: Vec::new(),
        chunk: vec![0u8; 64 * 1024],
        tls,
    };
    // pveproxy's keep_alive budget per connection.
    let mut keep_alive: i32 = 100;
    loop {
        keep_alive -= 1;
        match one_request(&shared, &mut conn, keep_alive).await {
            Next::KeepAlive if keep_alive > 0 => continue,
            _ => break,
        }
    }
    conn.close().await;
}

enum Next {
    KeepAlive,
    Close,
}

/// Per-request bookkeeping for the request log.
struct Rec<'a> {
    shared: &'a Shared,
    idx: usize,
    body_start: u64,
}

impl Rec<'_> {
    fn status(&self, code: u16, reason: &str) {
        let reason = reason.to_string();
        self.shared.update_request(self.idx, |r| {
            r.status = Some(code);
            r.reason = Some(reason);
        });
    }
    fn body(&self, n: u64) {
        self.shared.update_request(self.idx, |r| r.body_len = n);
    }
    fn handler_run(&self) {
        self.shared
            .update_request(self.idx, |r| r.handler_runs += 1);
    }
    fn parts(&self, names: &[String]) {
        let names = names.to_vec();
        self.shared
            .update_request(self.idx, |r| r.part_names = names);
    }
}

/// `error()` of AnyEvent.pm: since 5.2.0 the message is also the body (no Content-Type);
/// before, 5xx errors of the http server were 501 and the body empty (ref §7).
fn http_error(shared: &Shared, code: u16, msg: &str) -> Response {
    let code = if code == 500 && !shared.beh.http_5_2_0 {
        501
    } else {
        code
    };
    let mut r = Response::new(code, msg);
    if shared.beh.http_5_2_0 {
        r.body = msg.as_bytes().to_vec();
    }
    r
}

/// The JSON formatter's response (ref §2.9, §7).
fn api_response(shared: &Shared, res: &ApiResult) -> Response {
    let body = shared.with_rng(|rng| res.body(shared.beh.http_5_2_0, rng));
    let mut r = Response::new(res.status, res.message.clone().unwrap_or_default());
    r.headers.push((
        "Content-Type".into(),
        "application/json;charset=UTF-8".into(),
    ));
    r.body = body.into_bytes();
    r
}

async fn send(
    conn: &mut Conn,
    rec: &Rec<'_>,
    req: &Request,
    resp: &Response,
    keep_alive: bool,
) -> Next {
    let out = http::render(resp, &req.proto_str(), keep_alive);
    rec.status(out.code, &out.reason);
    if !conn.write(&out.bytes).await {
        return Next::Close;
    }
    if out.keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Perl numification of a Content-Length value (leading digits).
fn perl_num(s: &str) -> u64 {
    let s = s.trim_start();
    s.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// `$split_abs_uri`: `^/api2/+([a-z][a-z0-9]+)(/.*)?$` → (rel_uri, format).
fn split_abs_uri(path: &str) -> Option<(String, String)> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)^/api2/+([a-z][a-z0-9]+)(/.*)?$").unwrap()
    });
    let c = RE.captures(path)?;
    let rel = c.get(2).map_or("/", |m| m.as_str()).to_string();
    Some((rel, c[1].to_string()))
}

async fn one_request(shared: &Arc<Shared>, conn: &mut Conn, keep_alive: i32) -> Next {
    let ct = shared.cfg.client_timeout;
    let max = shared.beh.rbuf_max;
    // Request line; empty lines before it are ignored.
    let line = loop {
        match conn.read_line(ct, max).await {
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
            None => return Next::Close,
        }
    };
    let parsed = http::parse_request_line(&line);
    let mut req = Request {
        method: String::new(),
        target: String::new(),
        proto_maj: 1,
        proto_min: 0,
        headers: Vec::new(),
    };
    let idx = shared.record(RecordedRequest {
        method: String::new(),
        path: String::from_utf8_lossy(&line).into_owned(),
        headers: Vec::new(),
        part_names: Vec::new(),
        body_len: 0,
        status: None,
        reason: None,
        handler_runs: 0,
    });
    let mut rec = Rec {
        shared,
        idx,
        body_start: 0,
    };
    let Some((method, target, maj, min)) = parsed else {
        return send(
            conn,
            &rec,
            &req,
            &http_error(shared, 400, "bad request"),
            false,
        )
        .await;
    };
    req.method = method;
    req.target = target;
    req.proto_maj = maj;
    req.proto_min = min;
    {
        let (m, t) = (req.method.clone(), req.target.clone());
        shared.update_request(idx, |r| {
            r.method = m;
            r.path = t;
        });
    }
    if maj != 1 {
        let msg = format!("http protocol version {maj}.{min} not supported");
        return send(conn, &rec, &req, &http_error(shared, 506, &msg), false).await;
    }
    if regex::Regex::new(r"^[^/]*@").unwrap().is_match(&req.target) {
        return send(
            conn,
            &rec,
            &req,
            &http_error(shared, 400, "invalid url"),
            false,
        )
        .await;
    }

    // Header lines (unshift_read_header).
    let mut count = 0;
    let mut size = 0;
    let mut cur: Option<(String, String)> = None;
    loop {
        let Some(l) = conn.read_line(ct, max).await else {
            return Next::Close;
        };
        count += 1;
        size += l.len();
        if count >= http::LIMIT_MAX_HEADERS || size >= http::LIMIT_MAX_HEADER_SIZE {
            // die inside the header reader: only warned, no response.
            conn.hang(shared).await;
            return Next::Close;
        }
        if l.is_empty() {
            req.headers.extend(cur.take());
            break;
        }
        match http::parse_header_line(&l) {
            Some(Ok(kv)) => {
                req.headers.extend(cur.take());
                cur = Some(kv);
            }
            Some(Err(cont)) => {
                if let Some((_, v)) = cur.as_mut() {
                    v.push(' ');
                    v.push_str(&cont);
                }
            }
            None => {
                let r = http_error(shared, 506, "unable to parse request header");
                return send(conn, &rec, &req, &r, false).await;
            }
        }
    }
    {
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("Authorization") || k.eq_ignore_ascii_case("Cookie") {
                    (k.clone(), crate::auth::redact(v))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        shared.update_request(idx, |r| r.headers = headers);
    }
    rec.body_start = conn.rbuf.len() as u64;
    rec.body(rec.body_start);

    // process_header
    let method = req.method.clone();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
        let r = Response::new(501, format!("method '{method}' not available"));
        return send(conn, &rec, &req, &r, false).await;
    }
    let mut ka = keep_alive > 0;
    match req.header("Connection") {
        Some(c) if c.to_lowercase().contains("close") => ka = false,
        Some(_) => {}
        None if (maj, min) < (1, 1) => ka = false,
        None => {}
    }
    if let Some(te) = req
        .header("Transfer-Encoding")
        .filter(|t| !t.is_empty() && t != "0")
    {
        let msg = if te.eq_ignore_ascii_case("chunked") {
            "chunked transfer encoding not supported".to_string()
        } else {
            format!("Unknown transfer encoding '{te}'")
        };
        return send(conn, &rec, &req, &http_error(shared, 501, &msg), false).await;
    }

    // ensure_tls_connection: plain HTTP gets a redirect (ref §2.2).
    if !conn.tls {
        let Some(host) = req.header("Host") else {
            conn.hang(shared).await;
            return Next::Close;
        };
        let host = host
            .strip_prefix("https://")
            .or_else(|| host.strip_prefix("http://"))
            .unwrap_or(&host)
            .to_string();
        let (code, msg) = if method == "GET" {
            (301, "Moved Permanently")
        } else {
            (308, "Permanent Redirect")
        };
        let mut r = http_error(shared, code, msg);
        r.headers
            .push(("Location".into(), format!("https://{host}{}", req.target)));
        send(conn, &rec, &req, &r, false).await;
        return Next::Close;
    }

    // authenticate_and_handle_request
    let path = req.path();
    let mut auth = Auth {
        token: None,
        is_upload: false,
    };
    let mut rel_uri = String::new();
    if path.starts_with("/api2") {
        let Some((rel, _format)) = split_abs_uri(&path) else {
            return send(
                conn,
                &rec,
                &req,
                &http_error(shared, 501, "no such uri"),
                false,
            )
            .await;
        };
        rel_uri = rel;
        match auth_handler(shared, &req, &method, &rel_uri) {
            Ok(a) => auth = a,
            Err((code, msg)) => return delayed_failure(shared, conn, &rec, &req, code, &msg).await,
        }
    }

    let len_hdr = req.header("Content-Length").unwrap_or_default();
    if !len_hdr.is_empty() && len_hdr != "0" {
        let len = perl_num(&len_hdr);
        if method != "PUT" && method != "POST" {
            let msg = format!("Unexpected content for method '{method}'");
            return send(conn, &rec, &req, &http_error(shared, 501, &msg), false).await;
        }
        let ctype = req.header("Content-Type");
        let (ct, boundary) = ctype
            .as_deref()
            .map(multipart::parse_content_type)
            .unwrap_or((None, None));
        if auth.is_upload {
            let Some(boundary) = boundary.filter(|_| ct.as_deref() == Some("multipart/form-data"))
            else {
                // die "upload 'Content-Type '…' not implemented" outside any eval that answers.
                let n = conn.hang(shared).await;
                rec.body(rec.body_start + n);
                return Next::Close;
            };
            return upload(shared, conn, &mut rec, &req, &auth, &rel_uri, boundary, len).await;
        }
        if len > shared.beh.limit_max_post as u64 {
            return send(
                conn,
                &rec,
                &req,
                &http_error(shared, 501, "for data too large"),
                false,
            )
            .await;
        }
        let ct = ct.unwrap_or_default();
        if ct.is_empty() || ct == "application/x-www-form-urlencoded" || ct == "application/json" {
            while (conn.rbuf.len() as u64) < len {
                match conn.read_more(ct_timeout(shared)).await {
                    Read::Data(_) => {}
                    _ => return Next::Close,
                }
            }
            let body: Vec<u8> = conn.rbuf.drain(..len as usize).collect();
            rec.body(body.len() as u64);
            let is_json = ct == "application/json";
            return handle_request(
                shared,
                conn,
                &rec,
                &req,
                &auth,
                &path,
                &rel_uri,
                Some((body, is_json)),
                ka,
            )
            .await;
        }
        let msg = format!(
            "upload 'Content-Type '{}' not implemented",
            ctype.unwrap_or_default()
        );
        return send(conn, &rec, &req, &http_error(shared, 506, &msg), false).await;
    }
    handle_request(shared, conn, &rec, &req, &auth, &path, &rel_uri, None, ka).await
}

fn ct_timeout(shared: &Shared) -> Duration {
    shared.cfg.client_timeout
}

/// `auth_handler` (pve-manager HTTPServer.pm, ref §1, §2.1): Err((code, message)).
fn auth_handler(
    shared: &Shared,
    req: &Request,
    method: &str,
    rel_uri: &str,
) -> Result<Auth, (u16, String)> {
    let no_auth = (rel_uri == "/access/domains" && method == "GET")
        || (rel_uri == "/access/ticket" && (method == "GET" || method == "POST"))
        || (rel_uri == "/access/vncticket" && method == "POST")
        || (rel_uri == "/access/openid/login" && method == "POST")
        || (rel_uri == "/access/openid/auth-url" && method == "POST");
    if no_auth {
        return Ok(Auth {
            token: None,
            is_upload: false,
        });
    }
    let cookie = req.header("Cookie");
    let authz = req.header("Authorization");
    let ticket = crate::auth::extract_auth_value(cookie.as_deref(), "PVEAuthCookie")
        .or_else(|| crate::auth::extract_auth_value(authz.as_deref(), "PVEAuthCookie"));
    let failed = |detail: &str| {
        let msg = if shared.beh.unified_auth_reason {
            "Authentication failed!".to_string()
        } else {
            detail.to_string()
        };
        (401, msg)
    };
    let token = if ticket.is_none() {
        crate::auth::extract_auth_value(authz.as_deref(), "PVEAPIToken")
    } else {
        None
    };
    let token = match (token, ticket) {
        (Some(t), _) => crate::auth::verify_token(&shared.cfg.tokens, &t)
            .map_err(|e| failed(&e))?
            .clone(),
        // Tickets (password logins) are not emulated: every ticket is invalid.
        (None, Some(_)) => return Err(failed("Authentication failed!")),
        (None, None) => return Err((401, "No ticket".into())),
    };
    let mut is_upload = false;
    if method == "POST" {
        static UP: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"^/nodes/([^/]+)/storage/([^/]+)/upload$").unwrap()
        });
        if let Some(c) = UP.captures(rel_uri) {
            let path = format!("/storage/{}", &c[2]);
            if !token.has_priv(&path, "Datastore.AllocateTemplate") {
                return Err((
                    403,
                    format!("Permission check failed ({path}, Datastore.AllocateTemplate)\n"),
                ));
            }
            is_upload = true;
        }
    }
    Ok(Auth {
        token: Some(token),
        is_upload,
    })
}

/// Authentication failures: empty body, after the delay, connection closed. While waiting,
/// pveproxy keeps reading; more than `rbuf_max` buffered bytes drop the connection with no
/// answer at all (ref §1.2, §2.10, §11).
async fn delayed_failure(
    shared: &Shared,
    conn: &mut Conn,
    rec: &Rec<'_>,
    req: &Request,
    code: u16,
    msg: &str,
) -> Next {
    let deadline = Instant::now() + shared.cfg.auth_failure_delay;
    let mut body = rec.body_start;
    loop {
        if conn.rbuf.len() > shared.beh.rbuf_max {
            rec.body(body);
            return Next::Close;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let t = left.min(shared.cfg.client_timeout);
        match conn.read_more(t).await {
            Read::Data(n) => body += n as u64,
            Read::Timeout if Instant::now() >= deadline => break,
            Read::Timeout => {
                rec.body(body);
                return Next::Close;
            }
            Read::Eof | Read::Error => {
                rec.body(body);
                return Next::Close;
            }
        }
    }
    rec.body(body);
    send(conn, rec, req, &Response::new(code, msg), false).await;
    Next::Close
}

#[allow(clippy::too_many_arguments)]
async fn handle_request(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    rec: &Rec<'_>,
    req: &Request,
    auth: &Auth,
    path: &str,
    rel_uri: &str,
    body: Option<(Vec<u8>, bool)>,
    ka: bool,
) -> Next {
    if !path.starts_with("/api2") {
        let r = http_error(shared, 500, &format!("no such file '{path}'\n"));
        return send(conn, rec, req, &r, ka).await;
    }
    // extract_params: body (urlencoded or JSON) for POST/PUT, then the query string.
    let mut params = multipart::Params::new();
    if let Some((b, is_json)) = body {
        if is_json {
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&b) {
                for (k, v) in m {
                    let s = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    params.insert(k, multipart::Param::Str(s.into_bytes()));
                }
            }
        } else {
            params.extend(multipart::decode_urlencoded(&String::from_utf8_lossy(&b)));
        }
    }
    params.extend(multipart::decode_urlencoded(req.query()));
    params.remove("_dc");
    rec.handler_run();
    let res = match status500_fault(shared, req) {
        Some(r) => r,
        None => {
            let r = api::rest_handler(shared, &req.method, rel_uri, auth, params, None);
            api::finish_wait(shared, r).await
        }
    };
    send(conn, rec, req, &api_response(shared, &res), ka).await
}

fn status500_fault(shared: &Shared, req: &Request) -> Option<ApiResult> {
    let path = req.target.clone();
    shared
        .take_fault(|f| match f {
            Fault::Status500On(s) if path.contains(s.as_str()) => Some(()),
            _ => None,
        })
        .map(|_| ApiResult::die("Internal Server Error\n"))
}

/// The upload path of `authenticate_and_handle_request` + `file_upload_multipart`.
#[allow(clippy::too_many_arguments)]
async fn upload(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    rec: &mut Rec<'_>,
    req: &Request,
    auth: &Auth,
    rel_uri: &str,
    boundary: String,
    len: u64,
) -> Next {
    let entry = shared.cfg.entry_node.clone();
    let tmp_name = shared.new_tmp_name();
    let tmp_real = shared.tmp_dir(&entry).join(&tmp_name);
    let tmp_virt = format!("/var/tmp/{tmp_name}");
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_real)
    };
    let Ok(mut file) = file else {
        conn.hang(shared).await;
        return Next::Close;
    };
    let query = multipart::decode_urlencoded(req.query());
    if query.contains_key("tmpfilename") {
        // die after the temp file was created: no response, the file stays (ref §2.2).
        drop(file);
        let n = conn.hang(shared).await;
        rec.body(rec.body_start + n);
        return Next::Close;
    }
    let mut mp = Multipart::new(boundary.as_bytes(), len, query);
    let mut scanner = PartScanner::new(boundary.as_bytes());
    scanner.feed(&conn.rbuf);
    let mut body_len = conn.rbuf.len() as u64;
    let drop_at = shared.peek_fault(|f| match f {
        Fault::DropConnectionAfterBodyBytes(n) => Some(*n),
        _ => None,
    });
    let mut disk_full: Option<bool> = None;
    let unlink = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
    };
    let ct = shared.cfg.client_timeout;

    // Read events until phase 100.
    loop {
        rec.body(body_len);
        rec.parts(&scanner.names);
        if let Some((id, n)) = drop_at
            && body_len >= n
            && shared.consume_fault(id)
        {
            unlink(&tmp_real);
            return Next::Close;
        }
        if !conn.rbuf.is_empty() {
            let mut sink = |data: &[u8]| -> Result<(), String> {
                let full = *disk_full.get_or_insert_with(|| {
                    shared
                        .take_fault(|f| matches!(f, Fault::DiskFull).then_some(()))
                        .is_some()
                });
                if full {
                    return Err("write to temporary file failed - No space left on device\n".into());
                }
                file.write_all(data)
                    .map_err(|e| format!("write to temporary file failed - {}\n", errno_text(&e)))
            };
            match mp.read_event(&mut conn.rbuf, &mut sink) {
                Err(msg) => {
                    // $self->error($reqstate, 500, $err); the temp file is not unlinked.
                    return send(conn, rec, req, &http_error(shared, 500, &msg), false).await;
                }
                Ok(Event::Complete) => break,
                Ok(Event::Continue) => {}
            }
            if conn.rbuf.len() > shared.beh.rbuf_max {
                unlink(&tmp_real); // ENOSPC → client_do_disconnect
                return Next::Close;
            }
        }
        match conn.read_more(ct).await {
            Read::Data(n) => {
                body_len += n as u64;
                let start = conn.rbuf.len() - n;
                let new = conn.rbuf[start..].to_vec();
                scanner.feed(&new);
            }
            _ => {
                unlink(&tmp_real);
                return Next::Close;
            }
        }
    }
    let _ = file.flush();
    if shared
        .take_fault(|f| matches!(f, Fault::CorruptUpload).then_some(()))
        .is_some()
    {
        corrupt(&mut file);
    }
    drop(file);

    let ctx = UploadCtx { tmp_virt };
    let run_handler = |mp: &Multipart| -> ApiResult {
        rec.handler_run();
        if let Some(msg) = shared.take_fault(|f| match f {
            Fault::UploadStatus500(m) => Some(m.clone()),
            _ => None,
        }) {
            return ApiResult::die(format!("{msg}\n"));
        }
        if let Some(r) = status500_fault(shared, req) {
            return r;
        }
        let mut params = mp.params().clone();
        params.remove("_dc");
        api::rest_handler(shared, "POST", rel_uri, auth, params, Some(&ctx))
    };
    let first = run_handler(&mp);

    // The proxied call to pvedaemon takes a moment; bytes arriving meanwhile re-enter the
    // parser in phase 100 and start the handler again (ref §11).
    let deadline = Instant::now() + shared.cfg.proxy_latency;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match conn.read_more(left).await {
            Read::Timeout => break,
            Read::Data(n) => {
                body_len += n as u64;
                rec.body(body_len);
                let mut sink = |_: &[u8]| -> Result<(), String> { Ok(()) };
                if let Ok(Event::Complete) = mp.read_event(&mut conn.rbuf, &mut sink) {
                    let _ = run_handler(&mp);
                }
                if conn.rbuf.len() > shared.beh.rbuf_max {
                    return Next::Close;
                }
            }
            Read::Eof | Read::Error => {
                // The client vanished before the answer: the temp file goes with it.
                if let Some(p) = shared.real_tmp_path(&shared.cfg.entry_node, &ctx.tmp_virt) {
                    unlink(&p);
                }
                return Next::Close;
            }
        }
    }
    send(conn, rec, req, &api_response(shared, &first), false).await;
    Next::Close
}

/// Fault::CorruptUpload: flip the first byte (or append one to an empty file).
fn corrupt(file: &mut std::fs::File) {
    use std::io::{Read as _, Seek, SeekFrom};
    let mut b = [0u8; 1];
    let _ = file.seek(SeekFrom::Start(0));
    match file.read(&mut b) {
        Ok(1) => {
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.write_all(&[b[0] ^ 0xFF]);
        }
        _ => {
            let _ = file.write_all(b"\0");
        }
    }
    let _ = file.flush();
}
