//! `rest_handler` and the API methods (pveproxy + pvedaemon as one; ref §0.3, §2.4–§6).

// `ApiResult` is the response of a failed check, carried back as `Err`; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use crate::Fault;
use crate::config::{StorageConfig, TokenConfig};
use crate::multipart::{Param, Params};
use crate::state::{Shared, Task};
use crate::upid::Upid;
use regex::Regex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

/// Who is calling (after `auth_handler`).
#[derive(Debug, Clone)]
pub struct Auth {
    pub token: Option<TokenConfig>,
    pub is_upload: bool,
}

impl Auth {
    fn user(&self) -> String {
        self.token
            .as_ref()
            .map(|t| t.token_id())
            .unwrap_or_default()
    }

    fn has(&self, path: &str, privilege: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| t.has_priv(path, privilege))
    }
}

/// What `rest_handler` returns (before the JSON formatter).
#[derive(Debug, Clone)]
pub struct ApiResult {
    pub status: u16,
    pub message: Option<String>,
    pub data: Value,
    pub errors: BTreeMap<String, String>,
    pub total: Option<u64>,
    /// DELETE with `delay`: wait for this task up to this long (ref §6).
    pub wait_task: Option<(String, std::time::Duration)>,
}

impl ApiResult {
    pub fn ok(data: Value) -> ApiResult {
        ApiResult {
            status: 200,
            message: None,
            data,
            errors: BTreeMap::new(),
            total: None,
            wait_task: None,
        }
    }

    /// `die "text\n"` in a handler → 500 with the message as reason phrase (ref §7).
    pub fn die(msg: impl Into<String>) -> ApiResult {
        ApiResult {
            status: 500,
            message: Some(msg.into()),
            data: Value::Null,
            errors: BTreeMap::new(),
            total: None,
            wait_task: None,
        }
    }

    /// `raise_param_exc` / schema errors → `400 Parameter verification failed.` (ref §7).
    pub fn param_exc(errors: BTreeMap<String, String>) -> ApiResult {
        ApiResult {
            status: 400,
            message: Some("Parameter verification failed.\n".into()),
            data: Value::Null,
            errors,
            total: None,
            wait_task: None,
        }
    }

    fn param_exc1(key: &str, msg: &str) -> ApiResult {
        Self::param_exc(BTreeMap::from([(key.to_string(), msg.to_string())]))
    }

    /// `raise_perm_exc` → 403 `Permission check failed (…)` (ref §7).
    pub fn perm_exc(what: &str) -> ApiResult {
        ApiResult {
            status: 403,
            message: Some(format!("Permission check failed ({what})\n")),
            data: Value::Null,
            errors: BTreeMap::new(),
            total: None,
            wait_task: None,
        }
    }

    /// The JSON formatter (`prepare_response_data` for `json`, ref §2.9, §7).
    pub fn body(&self, with_message: bool, rng: &mut fastrand::Rng) -> String {
        let mut m = serde_json::Map::new();
        m.insert("data".into(), self.data.clone());
        if !self.errors.is_empty() {
            m.insert("errors".into(), json!(self.errors));
        }
        let is_error = self.status >= 400;
        if is_error && with_message {
            let msg = match &self.message {
                Some(s) if !s.is_empty() => s.clone(),
                _ => crate::http::status_message(self.status).to_string(),
            };
            m.insert("message".into(), Value::String(msg));
        }
        if !is_error && let Some(t) = self.total.filter(|t| *t > 0) {
            m.insert("total".into(), json!(t));
        }
        crate::json::to_string(&Value::Object(m), rng)
    }
}

/// The temp file pveproxy streamed an upload into.
pub struct UploadCtx {
    /// `/var/tmp/pveupload-…`.
    pub tmp_virt: String,
}

enum Route {
    Version,
    Nodes,
    StorageIndex,
    StorageStatus,
    ContentIndex,
    ContentInfo,
    ContentDelete,
    Upload,
    TaskIndex,
    TaskStatus,
    TaskLog,
}

/// `find_handler`: fragments split on `/+`, empty ones skipped (pve-common RESTHandler.pm).
fn find_handler(method: &str, rel_uri: &str) -> Option<(Route, Vec<(&'static str, String)>)> {
    let f: Vec<&str> = rel_uri.split('/').filter(|s| !s.is_empty()).collect();
    let p = |k: &'static str, v: &str| (k, v.to_string());
    let (route, params) = match (method, f.as_slice()) {
        ("GET", ["version"]) => (Route::Version, vec![]),
        ("GET", ["nodes"]) => (Route::Nodes, vec![]),
        ("GET", ["nodes", n, "storage"]) => (Route::StorageIndex, vec![p("node", n)]),
        ("GET", ["nodes", n, "storage", s, "status"]) => {
            (Route::StorageStatus, vec![p("node", n), p("storage", s)])
        }
        ("GET", ["nodes", n, "storage", s, "content"]) => {
            (Route::ContentIndex, vec![p("node", n), p("storage", s)])
        }
        ("GET", ["nodes", n, "storage", s, "content", vol @ ..]) if !vol.is_empty() => (
            Route::ContentInfo,
            vec![p("node", n), p("storage", s), p("volume", &vol.join("/"))],
        ),
        ("DELETE", ["nodes", n, "storage", s, "content", vol @ ..]) if !vol.is_empty() => (
            Route::ContentDelete,
            vec![p("node", n), p("storage", s), p("volume", &vol.join("/"))],
        ),
        ("POST", ["nodes", n, "storage", s, "upload"]) => {
            (Route::Upload, vec![p("node", n), p("storage", s)])
        }
        ("GET", ["nodes", n, "tasks", u]) => (Route::TaskIndex, vec![p("node", n), p("upid", u)]),
        ("GET", ["nodes", n, "tasks", u, "status"]) => {
            (Route::TaskStatus, vec![p("node", n), p("upid", u)])
        }
        ("GET", ["nodes", n, "tasks", u, "log"]) => {
            (Route::TaskLog, vec![p("node", n), p("upid", u)])
        }
        _ => return None,
    };
    Some((route, params))
}

/// `rest_handler` of pveproxy, followed (for protected or proxied methods) by the same on the
/// node that runs the method, then `PVE::RESTHandler::handle` (schema validation, code).
pub fn rest_handler(
    shared: &Arc<Shared>,
    method: &str,
    rel_uri: &str,
    auth: &Auth,
    params: Params,
    upload: Option<&UploadCtx>,
) -> ApiResult {
    let Some((route, uri_params)) = find_handler(method, rel_uri) else {
        return ApiResult {
            status: 501,
            message: Some(format!("Method '{method} {rel_uri}' not implemented")),
            data: Value::Null,
            errors: BTreeMap::new(),
            total: None,
            wait_task: None,
        };
    };
    if auth.token.is_none() {
        // Only the /access/* login paths are reachable without authentication; none of them
        // are emulated.
        return ApiResult::die("not emulated: password login\n");
    }
    let mut merged: Params = uri_params
        .iter()
        .map(|(k, v)| (k.to_string(), Param::Str(v.clone().into_bytes())))
        .collect();
    for (k, v) in &params {
        if let Some((_, uv)) = uri_params.iter().find(|(uk, _)| uk == k) {
            let same = matches!(v, Param::Str(b) if b == uv.as_bytes());
            if !same {
                return ApiResult::param_exc1(
                    k,
                    "duplicate parameter (already defined in URI) with conflicting values!",
                );
            }
        }
        merged.insert(k.clone(), v.clone());
    }
    let uri = |k: &str| {
        uri_params
            .iter()
            .find(|(uk, _)| *uk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };

    // check_api2_permissions (ref §2.10, §5.1).
    match route {
        Route::Upload => {
            let path = format!("/storage/{}", uri("storage"));
            if !auth.has(&path, "Datastore.AllocateTemplate") {
                return ApiResult::perm_exc(&format!("{path}, Datastore.AllocateTemplate"));
            }
        }
        Route::ContentIndex | Route::StorageStatus => {
            let path = format!("/storage/{}", uri("storage"));
            if !auth.has(&path, "Datastore.Audit") && !auth.has(&path, "Datastore.AllocateSpace") {
                return ApiResult::perm_exc(&format!(
                    "{path}, Datastore.Audit|Datastore.AllocateSpace"
                ));
            }
        }
        _ => {}
    }

    // proxyto => 'node': the method runs on that node (ref §4.1, §5).
    let proxied = matches!(
        route,
        Route::StorageIndex
            | Route::StorageStatus
            | Route::ContentIndex
            | Route::ContentInfo
            | Route::ContentDelete
            | Route::TaskIndex
            | Route::TaskStatus
            | Route::TaskLog
    );
    let mut local = shared.cfg.entry_node.clone();
    if proxied {
        let node = uri("node");
        if node != "localhost" && node != shared.cfg.entry_node {
            if !shared.is_member(&node) {
                return ApiResult::die(hostname_lookup_failed(&node));
            }
            local = node;
        }
    }

    if let Some(u) = upload {
        // pveproxy adds its temp file to the proxied parameters (AnyEvent.pm).
        merged.insert(
            "tmpfilename".into(),
            Param::Str(u.tmp_virt.clone().into_bytes()),
        );
    }

    let ctx = Ctx {
        shared,
        auth,
        local,
    };
    match route {
        Route::Version => ctx.version(&merged),
        Route::Nodes => ctx.nodes(&merged),
        Route::StorageIndex => ctx.storage_index(&merged),
        Route::StorageStatus => ctx.storage_status(&merged),
        Route::ContentIndex => ctx.content_index(&merged),
        Route::ContentInfo => ctx.content_info(&merged),
        Route::ContentDelete => ctx.content_delete(&merged),
        Route::Upload => ctx.upload(&merged),
        Route::TaskIndex => ctx.task_index(&merged),
        Route::TaskStatus => ctx.task_status(&merged),
        Route::TaskLog => ctx.task_log(&merged),
    }
}

fn hostname_lookup_failed(node: &str) -> String {
    format!(
        "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known\n"
    )
}

// ---------------------------------------------------------------------------------------------
// JSON schema validation (pve-common JSONSchema.pm `check_prop`/`check_object`, ref §2.4)

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Str,
    Int,
    Bool,
}

#[derive(Clone, Copy)]
enum Fmt {
    Node,
    StorageId,
    Content,
    ContentList,
    VmId,
}

#[derive(Clone)]
struct Prop {
    name: &'static str,
    ty: Ty,
    optional: bool,
    format: Option<Fmt>,
    enm: Option<Vec<&'static str>>,
    max_len: Option<usize>,
    pattern: Option<&'static str>,
    min: Option<i64>,
    max: Option<i64>,
    requires: Option<&'static str>,
}

fn prop(name: &'static str, ty: Ty) -> Prop {
    Prop {
        name,
        ty,
        optional: false,
        format: None,
        enm: None,
        max_len: None,
        pattern: None,
        min: None,
        max: None,
        requires: None,
    }
}

impl Prop {
    fn opt(mut self) -> Self {
        self.optional = true;
        self
    }
    fn fmt(mut self, f: Fmt) -> Self {
        self.format = Some(f);
        self
    }
    fn node() -> Prop {
        prop("node", Ty::Str).fmt(Fmt::Node)
    }
    fn storage() -> Prop {
        prop("storage", Ty::Str).fmt(Fmt::StorageId)
    }
}

/// The valid content types of a dir storage (`verify_content`).
const CONTENT_TYPES: [&str; 8] = [
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import",
];

fn check_format(f: Fmt, v: &str) -> Result<(), String> {
    static NODE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$").unwrap());
    static ID: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").unwrap());
    static VMID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[1-9][0-9]{2,8}$").unwrap());
    let content = |c: &str| {
        if CONTENT_TYPES.contains(&c) {
            Ok(())
        } else {
            Err(format!("invalid content type '{c}'\n"))
        }
    };
    match f {
        Fmt::Node if !NODE.is_match(v) => {
            Err("value does not look like a valid node name\n".into())
        }
        Fmt::StorageId if v.chars().count() < 2 => Err(format!(
            "storage ID '{v}' cannot be shorter than 2 characters\n"
        )),
        Fmt::StorageId if !ID.is_match(v) => {
            Err(format!("storage ID '{v}' contains illegal characters\n"))
        }
        Fmt::Content => content(v),
        Fmt::ContentList => v
            .split([',', ';', ' ', '\t', '\n', '\0'])
            .filter(|c| !c.is_empty())
            .try_for_each(content),
        Fmt::VmId if !VMID.is_match(v) => Err("value does not look like a valid VM ID\n".into()),
        _ => Ok(()),
    }
}

fn add_error(errors: &mut BTreeMap<String, String>, path: &str, msg: &str) {
    // join('\n', …): single quotes, so a literal backslash-n.
    errors
        .entry(path.to_string())
        .and_modify(|e| {
            e.push_str("\\n");
            e.push_str(msg);
        })
        .or_insert_with(|| msg.to_string());
}

/// Validates like `PVE::JSONSchema::validate` with `additionalProperties => 0`; returns the
/// string values of the known, defined parameters.
fn validate(props: &[Prop], params: &Params) -> Result<BTreeMap<String, String>, ApiResult> {
    static INT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[+-]?\d+$").unwrap());
    let mut errors = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in props {
        let v = match params.get(p.name) {
            None | Some(Param::Undef) => {
                if !p.optional {
                    add_error(
                        &mut errors,
                        p.name,
                        "property is missing and it is not optional",
                    );
                }
                continue;
            }
            Some(Param::List(_)) => {
                let t = match p.ty {
                    Ty::Str => "string",
                    Ty::Int => "integer",
                    Ty::Bool => "boolean",
                };
                add_error(
                    &mut errors,
                    p.name,
                    &format!("type check ('{t}') failed - got ARRAY"),
                );
                continue;
            }
            Some(Param::Str(b)) => String::from_utf8_lossy(b).into_owned(),
        };
        match p.ty {
            Ty::Int if !INT.is_match(&v) => {
                add_error(
                    &mut errors,
                    p.name,
                    &format!("type check ('integer') failed - got '{v}'"),
                );
                continue;
            }
            Ty::Bool if v != "0" && v != "1" => {
                add_error(
                    &mut errors,
                    p.name,
                    &format!("type check ('boolean') failed - got '{v}'"),
                );
                continue;
            }
            _ => {}
        }
        if let Some(f) = p.format
            && let Err(e) = check_format(f, &v)
        {
            add_error(&mut errors, p.name, &format!("invalid format - {e}"));
            continue;
        }
        if let Some(pat) = p.pattern
            && !Regex::new(&format!("^(?:{pat})$")).unwrap().is_match(&v)
        {
            add_error(
                &mut errors,
                p.name,
                "value does not match the regex pattern",
            );
            continue;
        }
        if let Some(max) = p.max_len
            && v.chars().count() > max
        {
            add_error(
                &mut errors,
                p.name,
                &format!("value may only be {max} characters long"),
            );
            continue;
        }
        if let Ok(n) = v.trim().parse::<i64>() {
            if let Some(max) = p.max.filter(|m| n > *m) {
                add_error(
                    &mut errors,
                    p.name,
                    &format!("value must have a maximum value of {max}"),
                );
                continue;
            }
            if let Some(min) = p.min.filter(|m| n < *m) {
                add_error(
                    &mut errors,
                    p.name,
                    &format!("value must have a minimum value of {min}"),
                );
                continue;
            }
        }
        if let Some(e) = &p.enm
            && !e.contains(&v.as_str())
        {
            add_error(
                &mut errors,
                p.name,
                &format!(
                    "value '{v}' does not have a value in the enumeration '{}'",
                    e.join(", ")
                ),
            );
        }
        out.insert(p.name.to_string(), v);
    }
    for k in params.keys() {
        match props.iter().find(|p| p.name == k) {
            Some(p) => {
                if let Some(req) = p.requires {
                    let defined =
                        matches!(params.get(req), Some(Param::Str(_)) | Some(Param::List(_)));
                    if !defined {
                        add_error(
                            &mut errors,
                            req,
                            &format!("missing property required by '{k}'"),
                        );
                    }
                }
            }
            None => add_error(
                &mut errors,
                k,
                "property is not defined in schema and the schema does not allow additional properties",
            ),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiResult::param_exc(errors))
    }
}

// ---------------------------------------------------------------------------------------------

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    auth: &'a Auth,
    /// The node running the method.
    local: String,
}

/// `storage_check_enabled` (pve-storage Storage.pm, ref §2.5 step 2).
fn storage_check_enabled<'s>(
    shared: &'s Shared,
    storage: &str,
    node: &str,
) -> Result<&'s StorageConfig, ApiResult> {
    let s = shared
        .storage(storage)
        .ok_or_else(|| ApiResult::die(format!("storage '{storage}' does not exist\n")))?;
    if !s.enabled {
        return Err(ApiResult::die(format!("storage '{storage}' is disabled\n")));
    }
    if !s.on_node(node) {
        return Err(ApiResult::die(format!(
            "storage '{storage}' is not available on node '{node}'\n"
        )));
    }
    Ok(s)
}

/// `normalize_content_filename` (ref §2.6).
pub fn normalize_content_filename(name: &str) -> String {
    let name = name.strip_suffix('\n').unwrap_or(name);
    let base = match name.rfind(['/', '\\']) {
        Some(i) => &name[i + 1..],
        None => name,
    };
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The upload method's parameter schema (proxmox-api.md §2.4); `content_enum` differs by
/// version (`import` since 8.3.6).
fn upload_schema(content_enum: Vec<&'static str>) -> Vec<Prop> {
    vec![
        Prop::node(),
        Prop::storage(),
        Prop {
            enm: Some(content_enum),
            ..prop("content", Ty::Str).fmt(Fmt::Content)
        },
        Prop {
            max_len: Some(255),
            ..prop("filename", Ty::Str)
        },
        Prop {
            requires: Some("checksum-algorithm"),
            ..prop("checksum", Ty::Str).opt()
        },
        Prop {
            enm: Some(vec!["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]),
            requires: Some("checksum"),
            ..prop("checksum-algorithm", Ty::Str).opt()
        },
        Prop {
            pattern: Some("/var/tmp/pveupload-[0-9a-f]+"),
            ..prop("tmpfilename", Ty::Str).opt()
        },
    ]
}

impl Ctx<'_> {
    fn rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        self.shared.with_rng(f)
    }

    /// GET /version (ref §5.3).
    fn version(&self, params: &Params) -> ApiResult {
        if let Err(e) = validate(&[], params) {
            return e;
        }
        let v = &self.shared.cfg.pve_version;
        let release: String = {
            let mut it = v.split(['.', '-']);
            format!("{}.{}", it.next().unwrap_or("0"), it.next().unwrap_or("0"))
        };
        let repoid = match v.as_str() {
            "8.2.4" => "faa83925c9641325".to_string(),
            _ => {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(v.as_bytes()))[..16].to_string()
            }
        };
        ApiResult::ok(json!({"version": v, "release": release, "repoid": repoid}))
    }

    /// GET /nodes (not in the reference; the minimal shape of the cluster node list).
    fn nodes(&self, params: &Params) -> ApiResult {
        if let Err(e) = validate(&[], params) {
            return e;
        }
        let mut list: Vec<Value> = self
            .shared
            .cfg
            .nodes
            .iter()
            .map(|n| {
                json!({"node": n, "status": "online", "type": "node", "id": format!("node/{n}"),
                       "ssl_fingerprint": self.shared.fingerprint, "level": ""})
            })
            .collect();
        self.rng(|r| r.shuffle(&mut list));
        ApiResult::ok(Value::Array(list))
    }

    /// GET /nodes/{node}/storage (ref §5.2).
    fn storage_index(&self, params: &Params) -> ApiResult {
        let props = vec![
            Prop::node(),
            prop("content", Ty::Str).opt().fmt(Fmt::ContentList),
            prop("enabled", Ty::Bool).opt(),
            prop("format", Ty::Bool).opt(),
            Prop::storage().opt(),
            prop("target", Ty::Str).opt().fmt(Fmt::Node),
        ];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let node = self.local.clone();
        let content: Option<Vec<String>> = p.get("content").map(|c| {
            c.split([',', ';', ' ', '\t', '\n', '\0'])
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        });
        // storage_info
        let mut info: BTreeMap<String, (&StorageConfig, bool)> = BTreeMap::new();
        for s in &self.shared.cfg.storages {
            let enabled = s.enabled && s.on_node(&node);
            if let Some(want) = &content
                && (!want.iter().any(|c| s.content.contains(c)) || !enabled)
            {
                continue;
            }
            info.insert(s.id.clone(), (s, enabled));
        }
        if let Some(sid) = p.get("storage")
            && !info.contains_key(sid)
        {
            return ApiResult::param_exc1("storage", "No such storage.");
        }
        let mut res = Vec::new();
        for (sid, (s, enabled)) in &info {
            let path = format!("/storage/{sid}");
            if !self.auth.has(&path, "Datastore.Audit")
                && !self.auth.has(&path, "Datastore.AllocateSpace")
            {
                continue;
            }
            if p.get("storage").is_some_and(|x| x != sid) {
                continue;
            }
            if p.get("enabled").is_some_and(|e| e == "1") && !s.enabled {
                continue;
            }
            // target: storages usable on this node and the target (the clone dialog's filter).
            if let Some(t) = p.get("target").filter(|t| *t != &node && *t != "localhost")
                && (!s.shared || !s.on_node(&node) || !s.on_node(t))
            {
                continue;
            }
            let item = self.storage_item(s, &node, *enabled);
            res.push(item);
        }
        // hash_to_array: hash order.
        self.rng(|r| r.shuffle(&mut res));
        ApiResult::ok(Value::Array(res))
    }

    /// One entry of `storage_info` (ref §5.2).
    fn storage_item(&self, s: &StorageConfig, node: &str, enabled: bool) -> Value {
        let mut content = s.content.clone();
        self.rng(|r| r.shuffle(&mut content));
        let mut item = json!({
            "storage": s.id, "type": s.kind, "content": content.join(","),
            "shared": if s.shared { 1 } else { 0 }, "enabled": if enabled { 1 } else { 0 },
            "active": 0, "total": 0, "used": 0, "avail": 0,
        });
        if enabled {
            let used = self.shared.storage_used(node, s).min(s.total);
            item["active"] = json!(1);
            item["total"] = json!(s.total);
            item["used"] = json!(used);
            item["avail"] = json!(s.total - used);
            if s.total > 0 {
                item["used_fraction"] = json!(used as f64 / s.total as f64);
            }
        }
        item
    }

    /// GET /nodes/{node}/storage/{storage}/status: the storage's `storage_info` entry.
    fn storage_status(&self, params: &Params) -> ApiResult {
        let p = match validate(&[Prop::node(), Prop::storage()], params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Some(s) = self.shared.storage(&p["storage"]) else {
            return ApiResult::param_exc1("storage", "No such storage.");
        };
        let mut item = self.storage_item(s, &self.local, s.enabled && s.on_node(&self.local));
        if let Some(m) = item.as_object_mut() {
            m.remove("storage");
            m.remove("used_fraction");
        }
        ApiResult::ok(item)
    }

    /// GET /nodes/{node}/storage/{storage}/content (ref §5.1).
    fn content_index(&self, params: &Params) -> ApiResult {
        let props = vec![
            Prop::node(),
            Prop::storage(),
            prop("content", Ty::Str).opt().fmt(Fmt::Content),
            Prop {
                format: Some(Fmt::VmId),
                ..prop("vmid", Ty::Int).opt()
            },
        ];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let sid = &p["storage"];
        // volume_list: storage_config, content filter, activate_storage.
        let Some(s) = self.shared.storage(sid) else {
            return ApiResult::die(format!("storage '{sid}' does not exist\n"));
        };
        let types = [
            "rootdir", "images", "vztmpl", "iso", "backup", "snippets", "import",
        ];
        let cts: Vec<&str> = match p.get("content") {
            Some(c) => vec![c.as_str()],
            None => types.to_vec(),
        };
        let cts: Vec<&str> = cts
            .into_iter()
            .filter(|c| s.content.iter().any(|x| x == c))
            .collect();
        if let Err(e) = storage_check_enabled(self.shared, sid, &self.local) {
            return e;
        }
        let mut items = Vec::new();
        if s.has_path() {
            for ct in cts {
                if ct != "vztmpl" && ct != "iso" {
                    continue; // other content types are not emulated: always empty
                }
                let dir = self.shared.content_dir(&self.local, s, ct);
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // `<$path/*>` skips dot files; stat follows symlinks; directories skipped.
                    if name.starts_with('.') {
                        continue;
                    }
                    let Ok(md) = std::fs::metadata(e.path()) else {
                        continue;
                    };
                    if md.is_dir() {
                        continue;
                    }
                    let format = if ct == "vztmpl" {
                        match self.shared.beh.list_format(&name) {
                            Some(f) => f,
                            None => continue,
                        }
                    } else {
                        static ISO: LazyLock<Regex> =
                            LazyLock::new(|| Regex::new(r"(?i)^[^/]+\.(?:iso|img)$").unwrap());
                        if !ISO.is_match(&name) {
                            continue;
                        }
                        "iso".to_string()
                    };
                    use std::os::unix::fs::MetadataExt;
                    items.push(json!({
                        "volid": format!("{sid}:{ct}/{name}"), "format": format,
                        "size": md.len(), "ctime": md.ctime(), "content": ct,
                    }));
                }
            }
        }
        items.sort_by_key(|i| i["volid"].as_str().unwrap_or("").to_lowercase());
        ApiResult::ok(Value::Array(items))
    }

    /// `$real_volume_id` + `parse_volname` for vztmpl/iso volumes (ref §6).
    #[allow(clippy::type_complexity)]
    fn volume(
        &self,
        p: &BTreeMap<String, String>,
    ) -> Result<(String, String, StorageConfig, &'static str, String), ApiResult> {
        let volume = &p["volume"];
        static VOLID: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$").unwrap());
        let (volid, sid, volname) = if volume.contains(':') {
            let Some(c) = VOLID.captures(volume) else {
                return Err(ApiResult::param_exc1(
                    "volume",
                    &format!("unable to parse volume ID '{volume}'\n"),
                ));
            };
            if let Some(st) = p.get("storage")
                && &c[1] != st
            {
                return Err(ApiResult::param_exc1(
                    "volume",
                    &format!("storage ID mismatch ({} != {st})\n", &c[1]),
                ));
            }
            (volume.clone(), c[1].to_string(), c[2].to_string())
        } else {
            let Some(st) = p.get("storage") else {
                return Err(ApiResult::param_exc1(
                    "volume",
                    "no storage specified - incomplete volume ID",
                ));
            };
            (format!("{st}:{volume}"), st.clone(), volume.clone())
        };
        let Some(s) = self.shared.storage(&sid) else {
            return Err(ApiResult::die(format!("storage '{sid}' does not exist\n")));
        };
        // parse_volname: only vztmpl and iso names are emulated.
        let (ct, name) = match volname.split_once('/') {
            Some(("vztmpl", n))
                if !n.contains('/') && self.shared.beh.vztmpl_upload_re.is_match(n.as_bytes()) =>
            {
                ("vztmpl", n.to_string())
            }
            Some(("iso", n))
                if !n.contains('/') && {
                    static ISO: LazyLock<Regex> =
                        LazyLock::new(|| Regex::new(r"(?i)^[^/]+\.(?:iso|img)$").unwrap());
                    ISO.is_match(n)
                } =>
            {
                ("iso", n.to_string())
            }
            _ => {
                return Err(ApiResult::die(format!(
                    "unable to parse directory volume name '{volname}'\n"
                )));
            }
        };
        Ok((volid, sid, s.clone(), ct, name))
    }

    /// GET /nodes/{node}/storage/{storage}/content/{volume}: path, size, used, format.
    fn content_info(&self, params: &Params) -> ApiResult {
        let props = vec![Prop::node(), Prop::storage().opt(), prop("volume", Ty::Str)];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let (volid, sid, s, ct, name) = match self.volume(&p) {
            Ok(v) => v,
            Err(e) => return e,
        };
        // check_volume_access: Allocate, or AllocateSpace/Audit for templates and ISOs.
        let path = format!("/storage/{sid}");
        if !self.auth.has(&path, "Datastore.Allocate")
            && !self.auth.has(&path, "Datastore.AllocateSpace")
            && !self.auth.has(&path, "Datastore.Audit")
        {
            return ApiResult::perm_exc(&format!(
                "{path}, Datastore.AllocateSpace|Datastore.Audit"
            ));
        }
        let real = self.shared.content_dir(&self.local, &s, ct).join(&name);
        let Ok(md) = std::fs::metadata(&real) else {
            return ApiResult::die(format!(
                "volume_size_info on '{volid}' failed - no format\n"
            ));
        };
        if md.len() == 0 {
            return ApiResult::die(format!("volume '{volid}' has size zero\n"));
        }
        use std::os::unix::fs::MetadataExt;
        ApiResult::ok(json!({
            "path": Shared::pve_content_path(&s, ct, &name),
            "size": md.len(),
            "used": md.blocks() * 512,
            "format": "raw",
        }))
    }

    /// DELETE /nodes/{node}/storage/{storage}/content/{volume} (ref §6).
    fn content_delete(&self, params: &Params) -> ApiResult {
        let props = vec![
            Prop::node(),
            Prop::storage().opt(),
            prop("volume", Ty::Str),
            Prop {
                min: Some(1),
                max: Some(30),
                ..prop("delay", Ty::Int).opt()
            },
        ];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let (volid, sid, s, ct, name) = match self.volume(&p) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let path = format!("/storage/{sid}");
        if !self.auth.has(&path, "Datastore.Allocate") {
            return ApiResult::perm_exc(&format!("{path}, Datastore.Allocate"));
        }
        let upid = self
            .shared
            .new_task(&self.local, "imgdel", &sid, &self.auth.user());
        let shared = self.shared.clone();
        let s = s.clone();
        let local = self.local.clone();
        let u = upid.clone();
        let done = tokio::spawn(async move {
            let r = (|| {
                if !s.enabled || !s.on_node(&local) {
                    return Err(if !s.enabled {
                        format!("storage '{}' is disabled\n", s.id)
                    } else {
                        format!("storage '{}' is not available on node '{local}'\n", s.id)
                    });
                }
                let real = shared.content_dir(&local, &s, ct).join(&name);
                let virt = Shared::pve_content_path(&s, ct, &name);
                if !(real.is_file() || real.is_symlink()) {
                    shared.task_println(&u, &format!("disk image '{virt}' does not exist"));
                } else if let Err(e) = std::fs::remove_file(&real) {
                    return Err(format!(
                        "unlink '{virt}' failed - {}\n",
                        crate::state::errno_text(&e)
                    ));
                }
                shared.task_println(&u, &format!("Removed volume '{volid}'"));
                Ok(())
            })();
            if let Some(nb) = shared.not_before(&u) {
                tokio::time::sleep_until(nb.into()).await;
            }
            shared.task_finish(&u, r);
        });
        drop(done);
        let mut r = ApiResult::ok(Value::String(upid.clone()));
        if let Some(delay) = p.get("delay").and_then(|d| d.parse::<u64>().ok()) {
            // The server waits up to `delay` seconds (see `finish_wait`).
            r.wait_task = Some((upid, std::time::Duration::from_secs(delay)));
        }
        r
    }

    /// POST /nodes/{node}/storage/{storage}/upload: the handler part (ref §2.4–§2.7).
    fn upload(&self, params: &Params) -> ApiResult {
        let beh = &self.shared.beh;
        let props = upload_schema(beh.upload_content_enum.clone());
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let shared = self.shared;
        let entry = shared.cfg.entry_node.clone();
        let node = p["node"].clone();
        let sid = p["storage"].clone();
        let target = shared.resolve_node(&node).to_string();
        let s = match storage_check_enabled(shared, &sid, &target) {
            Ok(s) => s.clone(),
            Err(e) => return e,
        };
        if !s.has_path() {
            return ApiResult::die(format!("can't upload to storage type '{}'\n", s.kind));
        }
        let content = p["content"].clone();
        let Some(tmp_virt) = p.get("tmpfilename").cloned() else {
            return ApiResult::die("missing temporary file name\n");
        };
        let tmp_real = shared.real_tmp_path(&entry, &tmp_virt);
        let size = match tmp_real.as_ref().and_then(|t| std::fs::metadata(t).ok()) {
            Some(m) => m.len(),
            None => return ApiResult::die(format!("temporary file '{tmp_virt}' does not exist\n")),
        };
        let tmp_real = tmp_real.unwrap();
        let filename = normalize_content_filename(&p["filename"]);
        match content.as_str() {
            "vztmpl" => {
                if !beh.vztmpl_upload_re.is_match(filename.as_bytes()) {
                    return ApiResult::param_exc1("filename", "wrong file extension");
                }
            }
            "iso" => {
                static ISO: LazyLock<Regex> =
                    LazyLock::new(|| Regex::new(r"(?i)^[^/]+\.(?:iso|img)$").unwrap());
                if !ISO.is_match(&filename) {
                    return ApiResult::param_exc1("filename", "wrong file extension");
                }
            }
            _ => {
                static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
                    Regex::new(r"^[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)$").unwrap()
                });
                if !IMPORT.is_match(&filename) {
                    return ApiResult::param_exc1(
                        "filename",
                        "invalid filename or wrong extension",
                    );
                }
            }
        }
        if !s.content.contains(&content) {
            return ApiResult::die(format!(
                "storage '{sid}' does not support '{content}' content\n"
            ));
        }
        let dest_virt = Shared::pve_content_path(&s, &content, &filename);
        let remote = node != "localhost" && node != entry;
        let (cmd, dest_node) = if remote {
            if !shared.is_member(&node) {
                return ApiResult::die(hostname_lookup_failed(&node));
            }
            let ip = shared.node_ip(&node);
            (
                format!(
                    "/usr/bin/scp -o BatchMode=yes -o HostKeyAlias={node} -p -- {tmp_virt} [{ip}]:{dest_virt}"
                ),
                node.clone(),
            )
        } else {
            (format!("cp -- {tmp_virt} {dest_virt}"), entry.clone())
        };
        let dest_real = shared.content_dir(&dest_node, &s, &content).join(&filename);
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp_real, std::fs::Permissions::from_mode(0o644));
        }
        let fails = shared.take_fault(|f| match f {
            Fault::TaskFails(m) => Some(m.clone()),
            _ => None,
        });
        let upid = shared.new_task(&entry, "imgcopy", "", &self.auth.user());
        let job = ImgCopy {
            shared: shared.clone(),
            upid: upid.clone(),
            tmp_virt,
            tmp_real,
            dest_real,
            dest_virt,
            dest_node,
            storage: s,
            size,
            cmd,
            checksum: p.get("checksum").cloned(),
            algorithm: p.get("checksum-algorithm").cloned(),
            fails,
        };
        tokio::spawn(job.run());
        ApiResult::ok(Value::String(upid))
    }

    fn find_task<T>(&self, upid: &str, f: impl FnOnce(&mut Task) -> T) -> Option<T> {
        let local = self.local.clone();
        let mut tasks = self.shared.tasks.lock().unwrap();
        tasks
            .iter_mut()
            .find(|t| t.upid == upid && t.node == local)
            .map(f)
    }

    /// `$check_task_user`: a token sees its own tasks (ref §4.1).
    fn check_task_user(&self, task_user: &str) -> Result<(), ApiResult> {
        let me = self.auth.user();
        let ok = match crate::auth::split_tokenid(task_user) {
            Some((user, _)) => me == task_user || me == user,
            None => me == task_user,
        };
        let path = format!("/nodes/{}", self.local);
        if ok || self.auth.has(&path, "Sys.Audit") {
            Ok(())
        } else {
            Err(ApiResult::perm_exc(&format!("{path}, Sys.Audit")))
        }
    }

    fn task_index(&self, params: &Params) -> ApiResult {
        let props = vec![Prop::node(), prop("upid", Ty::Str)];
        if let Err(e) = validate(&props, params) {
            return e;
        }
        ApiResult::ok(json!([{"name": "log"}, {"name": "status"}]))
    }

    /// GET /nodes/{node}/tasks/{upid}/status (ref §4.1).
    fn task_status(&self, params: &Params) -> ApiResult {
        let props = vec![Prop::node(), prop("upid", Ty::Str)];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let upid = &p["upid"];
        let Some(dec) = Upid::decode(upid) else {
            return ApiResult::param_exc1("upid", "unable to parse worker upid");
        };
        let found = self.find_task(upid, |t| {
            if t.no_such_polls > 0 {
                t.no_such_polls -= 1;
                None
            } else {
                Some((t.running(), t.exitstatus()))
            }
        });
        let Some(Some((running, exitstatus))) = found else {
            return ApiResult::param_exc1("upid", "no such task");
        };
        if let Err(e) = self.check_task_user(&dec.user) {
            return e;
        }
        let mut data = json!({
            "upid": upid, "node": dec.node, "pid": dec.pid, "pstart": dec.pstart,
            "starttime": dec.starttime, "type": dec.kind, "id": dec.id, "user": dec.user,
            "status": if running { "running" } else { "stopped" },
        });
        if let Some((user, tokenid)) = crate::auth::split_tokenid(&dec.user) {
            data["user"] = json!(user);
            data["tokenid"] = json!(tokenid);
        }
        if !running {
            data["exitstatus"] = json!(exitstatus);
        }
        ApiResult::ok(data)
    }

    /// GET /nodes/{node}/tasks/{upid}/log (ref §4.2).
    fn task_log(&self, params: &Params) -> ApiResult {
        let props = vec![
            Prop::node(),
            prop("upid", Ty::Str),
            Prop {
                min: Some(0),
                ..prop("start", Ty::Int).opt()
            },
            Prop {
                min: Some(0),
                ..prop("limit", Ty::Int).opt()
            },
            prop("download", Ty::Bool).opt(),
        ];
        let p = match validate(&props, params) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let upid = &p["upid"];
        let Some(dec) = Upid::decode(upid) else {
            return ApiResult::param_exc1("upid", "unable to parse worker upid");
        };
        if let Err(e) = self.check_task_user(&dec.user) {
            return e;
        }
        if p.get("download").is_some_and(|d| d == "1") {
            if p.contains_key("start") || p.contains_key("limit") {
                return ApiResult::die(
                    "'download' cannot be used together with 'start' or 'limit' parameters\n",
                );
            }
            return ApiResult::die("not emulated: task log download\n");
        }
        let start: u64 = p.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
        let limit: u64 = p.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50);
        let Some(lines) = self.find_task(upid, |t| t.log.clone()) else {
            let mut r = ApiResult::ok(
                json!([{"n": 1, "t": "unable to open file - No such file or directory"}]),
            );
            r.total = Some(1);
            return r;
        };
        // dump_logfile_by_filehandle
        let mut out = Vec::new();
        let mut count = 0u64;
        let mut left = limit;
        for l in &lines {
            count += 1;
            if count <= start {
                continue;
            }
            if limit != 0 {
                if left == 0 {
                    continue;
                }
                left -= 1;
            }
            out.push(json!({"n": count, "t": l}));
        }
        if count == 0 {
            count = 1;
            out.push(json!({"n": 1, "t": "no content"}));
        }
        let mut r = ApiResult::ok(Value::Array(out));
        r.total = Some(count);
        r
    }
}

/// The imgcopy worker (ref §2.7).
struct ImgCopy {
    shared: Arc<Shared>,
    upid: String,
    tmp_virt: String,
    tmp_real: PathBuf,
    dest_real: PathBuf,
    dest_virt: String,
    dest_node: String,
    storage: StorageConfig,
    size: u64,
    cmd: String,
    checksum: Option<String>,
    algorithm: Option<String>,
    fails: Option<String>,
}

impl ImgCopy {
    async fn run(self) {
        let r = self.work().await;
        if let Some(nb) = self.shared.not_before(&self.upid) {
            tokio::time::sleep_until(nb.into()).await;
        }
        self.shared.task_finish(&self.upid, r);
    }

    fn println(&self, s: &str) {
        self.shared.task_println(&self.upid, s);
    }

    async fn work(&self) -> Result<(), String> {
        self.println(&format!("starting file import from: {}", self.tmp_virt));
        let unlink_tmp = || {
            let _ = std::fs::remove_file(&self.tmp_real);
        };
        if let Some(msg) = &self.fails {
            unlink_tmp();
            return Err(format!("{msg}\n"));
        }
        if let (Some(algo), Some(expected)) = (&self.algorithm, &self.checksum) {
            self.shared
                .task_print(&self.upid, "calculating checksum...");
            let path = self.tmp_real.clone();
            let virt = self.tmp_virt.clone();
            let algo2 = algo.clone();
            let got = tokio::task::spawn_blocking(move || file_hash(&algo2, &path, &virt))
                .await
                .unwrap_or_else(|e| Err(format!("{e}\n")));
            match got {
                Ok(got) if got.to_lowercase() == expected.to_lowercase() => {
                    self.println("OK, checksum verified");
                }
                Ok(got) => {
                    self.println("");
                    unlink_tmp();
                    return Err(format!(
                        "checksum mismatch: got '{got}' != expect '{expected}'\n"
                    ));
                }
                Err(e) => {
                    unlink_tmp();
                    return Err(e);
                }
            }
        }
        self.println(&format!("target node: {}", self.dest_node));
        self.println(&format!("target file: {}", self.dest_virt));
        self.println(&format!("file size is: {}", self.size));
        self.println(&format!("command: {}", self.cmd));
        let r = self.copy().await;
        unlink_tmp();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&self.dest_real);
            return Err(format!("import failed: {e}\n"));
        }
        self.println("finished file import successfully");
        Ok(())
    }

    /// `cp`/`scp`: the temp file moves into the storage (rename when possible).
    async fn copy(&self) -> Result<(), String> {
        let tool = if self.cmd.starts_with("cp ") {
            "cp"
        } else {
            "scp"
        };
        let meta = match std::fs::metadata(&self.tmp_real) {
            Ok(m) => m,
            Err(e) => {
                return Err(match tool {
                    "cp" => format!(
                        "cp: cannot stat '{}': {}",
                        self.tmp_virt,
                        crate::state::errno_text(&e)
                    ),
                    _ => format!(
                        "/usr/bin/scp: stat local \"{}\": {}",
                        self.tmp_virt,
                        crate::state::errno_text(&e)
                    ),
                });
            }
        };
        let s = &self.storage;
        if s.total > 0 {
            let used = self.shared.storage_used(&self.dest_node, s);
            let existing = std::fs::metadata(&self.dest_real).map_or(0, |m| m.len());
            let avail = s.total.saturating_sub(used.saturating_sub(existing));
            if meta.len() > avail {
                return Err(format!(
                    "{tool}: error writing '{}': No space left on device",
                    self.dest_virt
                ));
            }
        }
        if let Some(dir) = self.dest_real.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{tool}: {e}"))?;
        }
        let (from, to) = (self.tmp_real.clone(), self.dest_real.clone());
        let dest_virt = self.dest_virt.clone();
        tokio::task::spawn_blocking(move || {
            if std::fs::rename(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| {
                    format!(
                        "cp: error writing '{dest_virt}': {}",
                        crate::state::errno_text(&e)
                    )
                })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// `PVE::Tools::get_file_hash`: lower-case hex, streamed.
fn file_hash(algo: &str, path: &std::path::Path, virt: &str) -> Result<String, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| {
        format!(
            "unable to open '{virt}': {}\n",
            crate::state::errno_text(&e)
        )
    })?;
    fn run<D: sha2::Digest>(f: &mut std::fs::File) -> std::io::Result<String> {
        let mut d = D::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        Ok(hex::encode(d.finalize()))
    }
    let r = match algo {
        "md5" => run::<md5::Md5>(&mut f),
        "sha1" => run::<sha1::Sha1>(&mut f),
        "sha224" => run::<sha2::Sha224>(&mut f),
        "sha256" => run::<sha2::Sha256>(&mut f),
        "sha384" => run::<sha2::Sha384>(&mut f),
        "sha512" => run::<sha2::Sha512>(&mut f),
        other => return Err(format!("unknown algorithm '{other}'\n")),
    };
    r.map_err(|e| format!("{e}\n"))
}

/// DELETE with `delay`: `{"data":null}` if the task finished OK within the delay, a 500 with
/// its status if it failed, the UPID if it is still running (ref §6).
pub async fn finish_wait(shared: &Shared, mut r: ApiResult) -> ApiResult {
    let Some((upid, delay)) = r.wait_task.take() else {
        return r;
    };
    let end = tokio::time::Instant::now() + delay;
    loop {
        match shared.with_task(&upid, |t| (t.running(), t.exitstatus())) {
            Some((false, ex)) if ex == "OK" || ex.starts_with("WARNINGS") => {
                return ApiResult::ok(Value::Null);
            }
            Some((false, ex)) => return ApiResult::die(format!("{ex}\n")),
            _ if tokio::time::Instant::now() >= end => return r,
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_content_filename("my template+v1.tar.zst"),
            "my_template_v1.tar.zst"
        );
        assert_eq!(normalize_content_filename("C:\\x\\y.tar.gz"), "y.tar.gz");
        assert_eq!(normalize_content_filename("../../etc/x.tar.gz"), "x.tar.gz");
        assert_eq!(normalize_content_filename("ü.tar.gz"), "_.tar.gz");
        assert_eq!(normalize_content_filename("a.tar.gz\n"), "a.tar.gz");
    }

    fn params(kv: &[(&str, &str)]) -> Params {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Param::Str(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn schema_error_strings() {
        let props = upload_schema(vec!["iso", "vztmpl"]);
        let long = "a".repeat(256);
        let e = validate(
            &props,
            &params(&[
                ("node", "pve!"),
                ("storage", "x"),
                ("content", "backup"),
                ("filename", &long),
                ("checksum", "abc"),
                ("foo", "1"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            e.errors["node"],
            "invalid format - value does not look like a valid node name\n"
        );
        assert_eq!(
            e.errors["storage"],
            "invalid format - storage ID 'x' cannot be shorter than 2 characters\n"
        );
        assert_eq!(
            e.errors["content"],
            "value 'backup' does not have a value in the enumeration 'iso, vztmpl'"
        );
        assert_eq!(
            e.errors["filename"],
            "value may only be 255 characters long"
        );
        assert_eq!(
            e.errors["checksum-algorithm"],
            "missing property required by 'checksum'"
        );
        assert_eq!(
            e.errors["foo"],
            "property is not defined in schema and the schema does not allow additional properties"
        );
        let e = validate(
            &props,
            &params(&[("node", "pve"), ("storage", "x!"), ("content", "foo")]),
        )
        .unwrap_err();
        assert_eq!(
            e.errors["storage"],
            "invalid format - storage ID 'x!' contains illegal characters\n"
        );
        assert_eq!(
            e.errors["content"],
            "invalid format - invalid content type 'foo'\n"
        );
        assert_eq!(
            e.errors["filename"],
            "property is missing and it is not optional"
        );
        let e = validate(
            &props,
            &params(&[
                ("node", "pve"),
                ("storage", "local"),
                ("content", "vztmpl"),
                ("filename", "a"),
                ("checksum-algorithm", "sha3"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e.errors["checksum-algorithm"],
            "value 'sha3' does not have a value in the enumeration 'md5, sha1, sha224, sha256, sha384, sha512'"
        );
        assert_eq!(
            e.errors["checksum"],
            "missing property required by 'checksum-algorithm'"
        );
    }
}
