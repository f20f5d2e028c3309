//! The Proxmox API calls lxcforge makes, with every answer classified into a
//! [`ProxmoxError`] a user can act on (proxmox-api.md §7: reasons in the status line, empty
//! 401 bodies, JSON `message`/`errors`).
//!
//! GETs are retried with backoff on transient failures. The upload POST is never retried here:
//! [`crate::proxmox::upload`] decides, knowing how much of the body went out.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::Value;

use super::error::ProxmoxError;
use super::multipart::MultipartBody;
use super::settings::{Settings, TlsMode, TokenId};
use super::tls::{self, Observed};
use crate::ui::Ui;

/// A template in a storage's content listing (one type for the client and the resolver).
pub use crate::remote::RemoteTemplate;

/// One storage as `GET /nodes/{node}/storage` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageInfo {
    pub storage: String,
    pub kind: String,
    pub content: Vec<String>,
    pub shared: bool,
    pub enabled: bool,
    pub active: bool,
    pub total: Option<u64>,
    pub avail: Option<u64>,
}

impl StorageInfo {
    pub fn holds(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize)]
pub struct PveVersion {
    pub version: String,
    pub release: String,
}

impl PveVersion {
    /// (major, minor) of `version` (`8.2.4`, or PVE 7's `7.4-3`).
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let mut it = self.version.split(['.', '-']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
}

/// A task's state (`GET /nodes/{node}/tasks/{upid}/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub running: bool,
    /// Present once stopped: `OK`, `WARNINGS: n`, or the error.
    pub exitstatus: Option<String>,
}

/// Why the upload POST produced no UPID.
#[derive(Debug)]
pub enum PostError {
    /// Proxmox answered (so no task was started: a UPID is the only sign of one).
    Answered(ProxmoxError),
    /// No answer: the connection failed, was cut, or timed out.
    NoAnswer {
        detail: String,
        timed_out: bool,
        /// Set if the failure was the TLS handshake.
        tls: Option<ProxmoxError>,
    },
}

/// The client. Its `Debug` shows the URL and token id, never the secret.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    token_id: TokenId,
    secret_desc: String,
    id_source: String,
    secret_source: String,
    storage: String,
    tls: TlsMode,
    observed: Arc<Observed>,
    request_timeout: Duration,
    retries: u32,
    ui: Ui,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token_id", &self.token_id.to_string())
            .field("secret", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// The JSON `message` and `errors` of an error body, as `: message (key: value, …)`.
pub fn error_details(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.chars().take(300).collect::<String>())
        };
    };
    let mut out = String::new();
    if let Some(m) = v.get("message").and_then(Value::as_str) {
        out.push_str(": ");
        out.push_str(m.trim());
    }
    if let Some(errs) = v.get("errors").and_then(Value::as_object) {
        let list: Vec<String> = errs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    v.as_str().map_or(v.to_string(), |s| s.trim().to_owned())
                )
            })
            .collect();
        if !list.is_empty() {
            out.push_str(&format!(" ({})", list.join(", ")));
        }
    }
    out
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn as_flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => Some(s == "1" || s == "true"),
        _ => None,
    }
}

/// Parses `GET /nodes/{node}/storage` items (0/1 ints, unordered comma lists, random order).
pub fn parse_storages(data: &Value) -> Result<Vec<StorageInfo>, String> {
    let arr = data.as_array().ok_or("the storage list is not an array")?;
    arr.iter()
        .map(|it| {
            let storage = it
                .get("storage")
                .and_then(Value::as_str)
                .ok_or("a storage item without 'storage'")?
                .to_owned();
            let mut content: Vec<String> = it
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            content.sort();
            Ok(StorageInfo {
                storage,
                kind: it
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                content,
                shared: as_flag(it.get("shared")).unwrap_or(false),
                enabled: as_flag(it.get("enabled")).unwrap_or(true),
                active: as_flag(it.get("active")).unwrap_or(true),
                total: it.get("total").and_then(as_u64),
                avail: it.get("avail").and_then(as_u64),
            })
        })
        .collect()
}

/// Parses `GET /nodes/{node}/storage/{storage}/content?content=vztmpl` items.
pub fn parse_templates(data: &Value) -> Result<Vec<RemoteTemplate>, String> {
    let arr = data.as_array().ok_or("the content list is not an array")?;
    arr.iter()
        .filter(|it| {
            it.get("content")
                .and_then(Value::as_str)
                .is_none_or(|c| c == "vztmpl")
        })
        .map(|it| {
            Ok(RemoteTemplate {
                volid: it
                    .get("volid")
                    .and_then(Value::as_str)
                    .ok_or("a content item without 'volid'")?
                    .to_owned(),
                size: it
                    .get("size")
                    .and_then(as_u64)
                    .ok_or("a content item without 'size'")?,
                ctime: it.get("ctime").and_then(Value::as_i64).unwrap_or(0),
                format: it
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            })
        })
        .collect()
}

/// The node in a UPID (`UPID:node:pid:pstart:starttime:type:id:user:`): where the task runs
/// and must be followed.
pub fn upid_node(upid: &str) -> Option<&str> {
    let rest = upid.strip_prefix("UPID:")?;
    if !rest.ends_with(':') || rest.split(':').count() < 8 {
        return None;
    }
    let node = rest.split(':').next()?;
    (!node.is_empty()).then_some(node)
}

/// Whether an error is Proxmox's `no such task` (400), which right after an upload only means
/// the task is not registered yet.
pub fn is_no_such_task(e: &ProxmoxError) -> bool {
    matches!(e, ProxmoxError::Api { status: 400, message, .. } if message.contains("no such task"))
}

/// The path and privilege in a `Permission check failed (/storage/x, Priv)` reason.
fn storage_in_reason(reason: &str) -> Option<String> {
    let start = reason.find("(/storage/")? + "(/storage/".len();
    let rest = &reason[start..];
    let end = rest.find([',', ')'])?;
    Some(rest[..end].to_owned())
}

impl Client {
    pub fn new(settings: &Settings, ui: Ui) -> Result<Client, ProxmoxError> {
        let (config, observed) =
            tls::client_config(&settings.tls).map_err(ProxmoxError::Settings)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(settings.timeouts.connect)
            .user_agent(concat!("lxcforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProxmoxError::Settings(format!("cannot set up the HTTP client: {e}")))?;
        let token = &settings.token;
        let mut auth = HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            token.id,
            token.secret.expose()
        ))
        .map_err(|_| {
            ProxmoxError::Settings(format!(
                "the token '{}' or its secret holds characters that cannot go in an HTTP header",
                token.id
            ))
        })?;
        auth.set_sensitive(true);
        Ok(Client {
            http,
            base: settings.api_url.clone(),
            auth,
            token_id: token.id.clone(),
            secret_desc: token.secret.describe(),
            id_source: token.id_source.clone(),
            secret_source: token.secret_source.clone(),
            storage: settings.storage.clone(),
            tls: settings.tls.clone(),
            observed,
            request_timeout: settings.timeouts.request,
            retries: settings.retries,
            ui,
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn token_id(&self) -> &TokenId {
        &self.token_id
    }

    /// The fingerprint of the certificate the server presented, once connected.
    pub fn server_fingerprint(&self) -> Option<String> {
        self.observed.fingerprint()
    }

    /// `base` + segments, each percent-encoded (node names, storage ids, UPIDs with `:`/`!`).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("https URLs have paths");
            p.pop_if_empty();
            p.extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    fn host(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => self.base.to_string(),
        }
    }

    /// A failed request without an answer: TLS, connection, timeout.
    fn transport_error(&self, e: &reqwest::Error, url: &Url, timeout: Duration) -> ProxmoxError {
        if let Some(t) = self.tls_error(e) {
            return t;
        }
        let detail = error_chain(e);
        if e.is_timeout() {
            return ProxmoxError::Timeout {
                what: format!("GET {}", url.path()),
                after: timeout,
                fix: "check the node's load and network, or raise --request-timeout".into(),
            };
        }
        ProxmoxError::Connect {
            url: self.base.to_string(),
            detail,
            fix: "check the API URL (Proxmox listens on https://<node>:8006/api2/json) and that the node is up and reachable from here".into(),
        }
    }

    fn tls_error(&self, e: &reqwest::Error) -> Option<ProxmoxError> {
        let rustls_err = find_rustls_error(e);
        let observed = self.observed.rejection();
        if rustls_err.is_none() && observed.is_none() {
            return None;
        }
        // A rejection is only ours if this error is a TLS one (or nothing else explains it).
        if rustls_err.is_none() && !e.is_connect() {
            return None;
        }
        let (fingerprint, reason) = match (observed, rustls_err) {
            (Some((fp, why)), _) => (fp, why),
            (None, Some(r)) => (
                "(not received: the handshake failed before the certificate)".to_owned(),
                tls::describe_rustls_error(r),
            ),
            (None, None) => return None,
        };
        let fix = match &self.tls {
            TlsMode::System => format!(
                "Proxmox nodes use certificates from their own cluster CA by default. Check the fingerprint above against the node's (`pvenode cert info` on the node, or the GUI: node → System → Certificates), then pin it with --fingerprint {fingerprint}, or trust the cluster CA with --ca-cert pve-root-ca.pem (copied from /etc/pve/pve-root-ca.pem on a node)"
            ),
            TlsMode::CaFile(p) => format!(
                "the certificate must be signed by a CA in {} and carry the host name of the API URL; check the file is the cluster's /etc/pve/pve-root-ca.pem and that the URL uses a name or IP in the node's certificate, or pin the certificate with --fingerprint {fingerprint} after checking it on the node (`pvenode cert info`)",
                p.display()
            ),
            TlsMode::Fingerprint(_) => "if the node's certificate was renewed, read its new fingerprint on the node (`pvenode cert info`) and pin that; if it was not, this is not the machine you pinned — do not go on".to_owned(),
            TlsMode::Insecure => "(--insecure accepts any certificate; this failure is in the TLS handshake itself)".to_owned(),
        };
        Some(ProxmoxError::Tls {
            host: self.host(),
            reason,
            fingerprint,
            fix,
        })
    }

    /// Classifies an answer; returns the JSON `data` of a success.
    fn classify(
        &self,
        what: &str,
        status: StatusCode,
        reason: &str,
        body: &[u8],
        url: &Url,
    ) -> Result<Value, ProxmoxError> {
        if status.is_success() {
            let v: Value = serde_json::from_slice(body).map_err(|e| ProxmoxError::Protocol {
                what: what.to_owned(),
                detail: format!("the body is not JSON ({e})"),
            })?;
            return Ok(v.get("data").cloned().unwrap_or(Value::Null));
        }
        Err(self.status_error(what, status, reason, body, url))
    }

    fn status_error(
        &self,
        what: &str,
        status: StatusCode,
        reason: &str,
        body: &[u8],
        url: &Url,
    ) -> ProxmoxError {
        match status.as_u16() {
            401 => ProxmoxError::Auth {
                url: format!("{}{}", self.host(), url.path()),
                reason: reason.to_owned(),
                token_id: self.token_id.to_string(),
                userid: self.token_id.userid(),
                sent: format!(
                    "Authorization: PVEAPIToken={}={} (the token id from {}, the secret from {})",
                    self.token_id, self.secret_desc, self.id_source, self.secret_source
                ),
            },
            403 => ProxmoxError::Forbidden {
                action: what.to_owned(),
                reason: format!("{reason}{}", error_details(body)),
                token_id: self.token_id.to_string(),
                userid: self.token_id.userid(),
                storage: storage_in_reason(reason).unwrap_or_else(|| self.storage.clone()),
            },
            code => {
                let message = error_details(body);
                let fix = if code >= 500 {
                    "look at the node's syslog (journalctl -u pveproxy -u pvedaemon) for the cause; run again once it is fixed"
                } else {
                    "this request was refused as shown; check the settings it names"
                };
                ProxmoxError::Api {
                    what: what.to_owned(),
                    status: code,
                    reason: reason.to_owned(),
                    message,
                    fix: fix.to_owned(),
                }
            }
        }
    }

    fn reason_of(resp: &reqwest::Response) -> String {
        resp.extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_owned))
            .unwrap_or_else(|| resp.status().canonical_reason().unwrap_or("").to_owned())
    }

    async fn get_once(&self, what: &str, url: &Url) -> Result<Value, ProxmoxError> {
        let resp = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url, self.request_timeout))?;
        let status = resp.status();
        let reason = Self::reason_of(&resp);
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, url, self.request_timeout))?;
        self.classify(what, status, &reason, &body, url)
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.retries as usize)
            .with_jitter()
    }

    /// A GET, retried with backoff on transient failures.
    pub async fn get(&self, what: &str, url: Url) -> Result<Value, ProxmoxError> {
        (|| self.get_once(what, &url))
            .retry(self.backoff())
            .when(ProxmoxError::is_transient)
            .notify(|e, d| {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("");
                self.ui
                    .info(format!("{what}: {first}; trying again in {d:.1?}"));
            })
            .await
    }

    /// `GET /version`: proves the URL, TLS and the token.
    pub async fn version(&self) -> Result<PveVersion, ProxmoxError> {
        let what = "checking the token (GET /version)";
        let d = self.get(what, self.url(&["version"], &[])).await?;
        Ok(PveVersion {
            version: d
                .get("version")
                .and_then(Value::as_str)
                .ok_or_else(|| ProxmoxError::Protocol {
                    what: what.into(),
                    detail: "no 'version' in the answer".into(),
                })?
                .to_owned(),
            release: d
                .get("release")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    /// The storages the token can see on a node.
    pub async fn storages(&self, node: &str) -> Result<Vec<StorageInfo>, ProxmoxError> {
        let what = format!("listing the storages of node '{node}'");
        let d = self
            .get(&what, self.url(&["nodes", node, "storage"], &[]))
            .await?;
        parse_storages(&d).map_err(|detail| ProxmoxError::Protocol { what, detail })
    }

    /// The vztmpl content of a storage on a node.
    pub async fn list_templates(
        &self,
        node: &str,
        storage: &str,
    ) -> Result<Vec<RemoteTemplate>, ProxmoxError> {
        let what = format!("listing the templates on storage '{storage}' of node '{node}'");
        let d = self
            .get(
                &what,
                self.url(
                    &["nodes", node, "storage", storage, "content"],
                    &[("content", "vztmpl")],
                ),
            )
            .await?;
        parse_templates(&d).map_err(|detail| ProxmoxError::Protocol { what, detail })
    }

    /// The token's effective privileges on `path` (`GET /access/permissions?path=…`), or None
    /// if the server does not answer that (the check is then left to the upload itself).
    pub async fn privileges(&self, path: &str) -> Option<Vec<String>> {
        let url = self.url(&["access", "permissions"], &[("path", path)]);
        let d = self
            .get_once("reading the token's privileges", &url)
            .await
            .ok()?;
        let privs = d.get(path)?.as_object()?;
        Some(privs.keys().cloned().collect())
    }

    pub async fn task_status(&self, node: &str, upid: &str) -> Result<TaskStatus, ProxmoxError> {
        let what = format!("following task {upid} on node '{node}'");
        let d = self
            .get(
                &what,
                self.url(&["nodes", node, "tasks", upid, "status"], &[]),
            )
            .await?;
        let status = d.get("status").and_then(Value::as_str).unwrap_or("");
        Ok(TaskStatus {
            running: status == "running",
            exitstatus: d
                .get("exitstatus")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The last `n` lines of a task's log.
    pub async fn task_log_tail(&self, node: &str, upid: &str, n: u64) -> Vec<String> {
        let what = format!("reading the log of task {upid}");
        let fetch = |start: u64, limit: u64| {
            let url = self.url(
                &["nodes", node, "tasks", upid, "log"],
                &[("start", &start.to_string()), ("limit", &limit.to_string())],
            );
            let what = what.clone();
            async move {
                let resp = self
                    .http
                    .get(url.clone())
                    .header(AUTHORIZATION, self.auth.clone())
                    .timeout(self.request_timeout)
                    .send()
                    .await
                    .ok()?;
                let status = resp.status();
                let reason = Self::reason_of(&resp);
                let body = resp.bytes().await.ok()?;
                let v: Value = serde_json::from_slice(&body).ok()?;
                let data = self.classify(&what, status, &reason, &body, &url).ok()?;
                let total = v.get("total").and_then(Value::as_u64);
                let lines: Vec<String> = data
                    .as_array()?
                    .iter()
                    .filter_map(|l| l.get("t").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                Some((lines, total))
            }
        };
        let Some((lines, total)) = fetch(0, 500).await else {
            return vec!["(the task log could not be read)".to_owned()];
        };
        match total {
            Some(t) if t > lines.len() as u64 => fetch(t.saturating_sub(n), n)
                .await
                .map(|(l, _)| l)
                .unwrap_or(lines),
            _ => {
                let skip = lines.len().saturating_sub(n as usize);
                lines[skip..].to_vec()
            }
        }
    }

    /// The upload POST. Streams the body; returns the UPID.
    #[allow(clippy::too_many_arguments)]
    pub async fn post_upload(
        &self,
        node: &str,
        storage: &str,
        body: &MultipartBody,
        path: &std::path::Path,
        sent: Arc<AtomicU64>,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<String, PostError> {
        let url = self.url(&["nodes", node, "storage", storage, "upload"], &[]);
        let what = format!("uploading to storage '{storage}' of node '{node}'");
        let stream = body
            .stream(path, sent, on_chunk)
            .map_err(|e| PostError::NoAnswer {
                detail: format!("cannot read {}: {e}", path.display()),
                timed_out: false,
                tls: None,
            })?;
        let resp = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, body.content_type())
            .header(CONTENT_LENGTH, body.content_length())
            .body(reqwest::Body::wrap_stream(stream))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| PostError::NoAnswer {
                detail: error_chain(&e),
                timed_out: e.is_timeout(),
                tls: self.tls_error(&e),
            })?;
        let status = resp.status();
        let reason = Self::reason_of(&resp);
        let bytes = resp.bytes().await.map_err(|e| PostError::NoAnswer {
            detail: format!("the answer broke off: {}", error_chain(&e)),
            timed_out: e.is_timeout(),
            tls: None,
        })?;
        let data = self
            .classify(&what, status, &reason, &bytes, &url)
            .map_err(PostError::Answered)?;
        match data.as_str() {
            Some(upid) if upid_node(upid).is_some() => Ok(upid.to_owned()),
            _ => Err(PostError::Answered(ProxmoxError::Protocol {
                what,
                detail: format!("expected a task id (UPID:…), got {data}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storages_parse_leniently() {
        let d = json!([
            {"storage":"local","type":"dir","content":"vztmpl,iso,backup","shared":0,"enabled":1,"active":1,"total":100,"used":7,"avail":93},
            {"storage":"nfs","type":"nfs","content":"images","shared":1,"enabled":1,"active":0,"total":1.2e16}
        ]);
        let s = parse_storages(&d).unwrap();
        assert_eq!(s[0].content, vec!["backup", "iso", "vztmpl"]);
        assert!(s[0].holds("vztmpl") && !s[0].shared && s[0].active);
        assert_eq!(s[0].avail, Some(93));
        assert!(s[1].shared && !s[1].active && !s[1].holds("vztmpl"));
        assert!(parse_storages(&json!({"x":1})).is_err());
    }

    #[test]
    fn templates_parse() {
        let d = json!([{"volid":"local:vztmpl/a.tar.zst","format":"tzst","size":126528764,"ctime":1727045000,"content":"vztmpl"}]);
        assert_eq!(
            parse_templates(&d).unwrap(),
            vec![RemoteTemplate {
                volid: "local:vztmpl/a.tar.zst".into(),
                size: 126528764,
                ctime: 1727045000,
                format: "tzst".into()
            }]
        );
        assert!(parse_templates(&json!([{"volid":"x"}])).is_err());
    }

    #[test]
    fn upids_name_the_task_node() {
        assert_eq!(
            upid_node("UPID:pve:0012ABCD:0A1B2C3D:66F0A1B2:imgcopy::automation@pve!ci:"),
            Some("pve")
        );
        assert_eq!(
            upid_node(
                "UPID:proxmoxa:001A8239:0E46EB64:691B7346:imgcopy::ansible@EXAMPLE.COM!ansible:"
            ),
            Some("proxmoxa")
        );
        assert_eq!(
            upid_node("UPID:pve:1:2:3:imgcopy::u@pve"),
            None,
            "trailing colon"
        );
        assert_eq!(upid_node("pve:1"), None);
    }

    #[test]
    fn error_bodies_are_summarised() {
        let b = br#"{"data":null,"errors":{"filename":"wrong file extension"},"message":"Parameter verification failed.\n"}"#;
        assert_eq!(
            error_details(b),
            ": Parameter verification failed. (filename: wrong file extension)"
        );
        assert_eq!(error_details(b""), "");
        assert_eq!(
            error_details(b"upload failed at x line 1.\n"),
            ": upload failed at x line 1."
        );
        assert_eq!(
            storage_in_reason(
                "Permission check failed (/storage/cephfs, Datastore.AllocateTemplate)"
            ),
            Some("cephfs".into())
        );
    }

    #[test]
    fn versions_split() {
        let v = |s: &str| PveVersion {
            version: s.into(),
            release: String::new(),
        };
        assert_eq!(v("8.2.4").major_minor(), Some((8, 2)));
        assert_eq!(v("7.4-3").major_minor(), Some((7, 4)));
        assert_eq!(v("x").major_minor(), None);
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use crate::proxmox::settings::{Flags, resolve};

    const SECRET: &str = "5ec2e7aa-9d1f-4c3b-a0e1-77aa00bb11cc";

    fn client() -> Client {
        let env = |k: &str| match k {
            "PM_API_URL" => Some("https://127.0.0.1:8006".to_owned()),
            "PM_API_TOKEN_ID" => Some("automation@pve!ci".to_owned()),
            "PM_API_TOKEN_SECRET" => Some(SECRET.to_owned()),
            "PM_NODE" => Some("pve".to_owned()),
            _ => None,
        };
        let (s, _) = resolve(&Flags::default(), &env).unwrap();
        Client::new(&s, Ui::silent()).unwrap()
    }

    #[test]
    fn no_error_or_debug_output_holds_the_secret() {
        let c = client();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains(SECRET) && dbg.contains("automation@pve!ci"),
            "{dbg}"
        );
        assert!(!format!("{:?}", c.auth).contains(SECRET));
        let url = c.url(&["version"], &[]);
        for (status, reason, body) in [
            (401, "Authentication failed!", &b""[..]),
            (401, "no tokenid specified", &b""[..]),
            (
                403,
                "Permission check failed (/storage/local, Datastore.AllocateTemplate)",
                &b""[..],
            ),
            (
                500,
                "storage 'x' does not exist",
                &br#"{"data":null,"message":"storage 'x' does not exist\n"}"#[..],
            ),
            (
                400,
                "Parameter verification failed.",
                &br#"{"errors":{"upid":"no such task"}}"#[..],
            ),
        ] {
            let e = c.status_error(
                "doing it",
                StatusCode::from_u16(status).unwrap(),
                reason,
                body,
                &url,
            );
            let m = e.to_string();
            assert!(!m.contains(SECRET) && !m.contains("5ec2e7aa"), "{m}");
            assert!(!format!("{e:?}").contains(SECRET));
            if status == 401 {
                assert!(
                    m.contains("automation@pve!ci") && m.contains("36 characters"),
                    "{m}"
                );
                assert!(m.contains(reason), "{m}");
            }
            if status == 403 {
                assert!(
                    m.contains("privilege separation") && m.contains("/storage/local"),
                    "{m}"
                );
            }
        }
        let e = c.status_error(
            "x",
            StatusCode::BAD_REQUEST,
            "Parameter verification failed.",
            br#"{"errors":{"upid":"no such task"}}"#,
            &url,
        );
        assert!(is_no_such_task(&e), "{e}");
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = client();
        let u = c.url(
            &[
                "nodes",
                "pve",
                "tasks",
                "UPID:pve:0000:00:00:imgcopy::automation@pve!ci:",
                "status",
            ],
            &[],
        );
        assert_eq!(
            u.as_str(),
            "https://127.0.0.1:8006/api2/json/nodes/pve/tasks/UPID:pve:0000:00:00:imgcopy::automation@pve!ci:/status"
        );
        let u = c.url(&["nodes", "a/b"], &[("content", "vztmpl")]);
        assert_eq!(
            u.as_str(),
            "https://127.0.0.1:8006/api2/json/nodes/a%2Fb?content=vztmpl"
        );
    }
}
