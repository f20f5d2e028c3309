//! Settings for the Proxmox API, from flags first, then the seed's environment names (`PM_*`),
//! then the Terraform bpg provider's (`PROXMOX_VE_*`).
//!
//! The token secret is read only from the environment or a file, never from a flag, so it can
//! never sit in anyone's argv (`make`, `ps`, shell history). It lives in a [`Secret`], whose
//! `Debug` and `Display` print a placeholder; the one place it is exposed is the
//! `Authorization` header built by the client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

/// A token secret. `Debug` and `Display` never show it; [`Secret::expose`] is for the
/// `Authorization` header only.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(SecretString::from(s.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn len(&self) -> usize {
        self.expose().len()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
    /// Proxmox issues token secrets as lower-case UUIDs; saying whether ours is shaped like
    /// one helps with a 401 without revealing anything.
    pub fn looks_like_uuid(&self) -> bool {
        let s = self.expose().as_bytes();
        s.len() == 36
            && s.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    }
    /// What may be said about the secret: its length and shape, never a character of it.
    pub fn describe(&self) -> String {
        format!(
            "<secret: {} characters, {}>",
            self.len(),
            if self.looks_like_uuid() {
                "shaped like the UUID Proxmox issues"
            } else {
                "NOT shaped like the UUID Proxmox issues (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            }
        )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `user@realm!tokenid`, as pve-access-control's `$token_full_regex` accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenId {
    pub user: String,
    pub realm: String,
    pub name: String,
}

impl TokenId {
    /// The user part, `user@realm`.
    pub fn userid(&self) -> String {
        format!("{}@{}", self.user, self.realm)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}!{}", self.user, self.realm, self.name)
    }
}

/// REALM and TOKENSUBID: `[A-Za-z][A-Za-z0-9\.\-_]+` (so at least two characters).
fn is_realm_like(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.len() >= 2
        && it.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

const TOKEN_FORM: &str = "user@realm!tokenid, e.g. automation@pve!ci";

impl std::str::FromStr for TokenId {
    type Err = String;
    /// Parses a token id. The error never repeats anything after a `=` (that would be a
    /// secret pasted into the id).
    fn from_str(s: &str) -> Result<TokenId, String> {
        if let Some((before, _)) = s.split_once('=') {
            return Err(format!(
                "'{before}=…' holds a secret after '=': the token id is only the part before it ({TOKEN_FORM}); put the secret in PM_API_TOKEN_SECRET or --token-secret-file"
            ));
        }
        let bad =
            |why: &str| format!("'{s}' is not a token id ({why}); it is written {TOKEN_FORM}");
        let (userid, name) = s
            .rsplit_once('!')
            .ok_or_else(|| bad("no '!' before the token name"))?;
        let (user, realm) = userid
            .rsplit_once('@')
            .ok_or_else(|| bad("no '@realm' after the user"))?;
        if user.is_empty()
            || user
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '/')
        {
            return Err(bad("the user name is empty or holds a space, ':' or '/'"));
        }
        if !is_realm_like(realm) {
            return Err(bad(&format!(
                "the realm '{realm}' must start with a letter and hold only letters, digits, '.', '-', '_'"
            )));
        }
        if !is_realm_like(name) {
            return Err(bad(&format!(
                "the token name '{name}' must be at least 2 characters, start with a letter and hold only letters, digits, '.', '-', '_'"
            )));
        }
        Ok(TokenId {
            user: user.to_owned(),
            realm: realm.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Splits `user@realm!tokenid=secret` on the last `=`, as Proxmox's `verify_token` does.
/// The error names the variable but shows nothing that might be the secret.
pub fn parse_full_token(s: &str, source: &str) -> Result<(TokenId, Secret), String> {
    let Some((id, secret)) = s.rsplit_once('=') else {
        return Err(format!(
            "{source} must be user@realm!tokenid=secret (the token id, '=', the secret); it holds no '='"
        ));
    };
    let id = id
        .trim()
        .parse::<TokenId>()
        .map_err(|e| format!("{source}: {e}"))?;
    let secret = check_secret(secret.trim(), source)?;
    Ok((id, secret))
}

fn check_secret(s: &str, source: &str) -> Result<Secret, String> {
    if s.is_empty() {
        return Err(format!("{source}: the token secret is empty"));
    }
    if s.contains('!') && s.contains('@') && s.contains('=') {
        return Err(format!(
            "{source} holds a whole token (user@realm!tokenid=…), not just its secret; give the id in PM_API_TOKEN_ID and only the part after the last '=' as the secret"
        ));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ';' || !c.is_ascii())
    {
        return Err(format!(
            "{source}: the token secret holds a space, a control character, ';' or a non-ASCII character (Proxmox secrets are UUIDs); check for a stray character"
        ));
    }
    Ok(Secret::new(s))
}

/// How the node's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// The system's roots (Proxmox behind a public or company CA).
    System,
    /// Only these roots, e.g. the cluster CA `/etc/pve/pve-root-ca.pem`.
    CaFile(PathBuf),
    /// Only a certificate with this SHA-256 fingerprint (the GUI's "Fingerprint").
    Fingerprint([u8; 32]),
    /// No certificate check at all (asked for, with a warning).
    Insecure,
}

/// Parses a SHA-256 fingerprint as Proxmox shows it (`AB:CD:…`), as `openssl x509
/// -fingerprint -sha256` prints it (`sha256 Fingerprint=AB:CD:…`), or as 64 bare hex digits.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let t = match t.split_once('=') {
        Some((label, rest)) if label.to_ascii_lowercase().contains("fingerprint") => rest,
        _ => t,
    };
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let err = || {
        format!(
            "'{s}' is not a SHA-256 fingerprint: expected 32 bytes in hex, e.g. AB:CD:…:EF (64 hex digits, colons optional)"
        )
    };
    if hex.len() != 64 {
        return Err(err());
    }
    let bytes = hex::decode(&hex).map_err(|_| err())?;
    bytes.try_into().map_err(|_| err())
}

/// `AB:CD:…`, the form Proxmox's GUI and `pvenode cert info` show.
pub fn format_fingerprint(fp: &[u8]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises an API URL to `https://host[:port]/…/api2/json/` (trailing slash, so paths
/// join under it). `https://pve:8006`, `https://pve:8006/` (bpg's endpoint form) and
/// `https://pve:8006/api2/json` all give the same.
pub fn normalize_api_url(raw: &str, source: &str) -> Result<Url, String> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).map_err(|e| {
        format!("{source} '{raw}' is not a URL ({e}); it looks like https://pve1.example.com:8006/api2/json")
    })?;
    match url.scheme() {
        "https" => {}
        "http" => {
            return Err(format!(
                "{source} '{raw}' is plain http: Proxmox's API is HTTPS only, and the token must not travel in clear; use https://…:8006/api2/json"
            ));
        }
        other => {
            return Err(format!(
                "{source} '{raw}': scheme '{other}' is not https; use https://…:8006/api2/json"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{source} '{raw}' names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{source} must not carry credentials (user:password@); the API token goes in PM_API_TOKEN_ID / PM_API_TOKEN_SECRET"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{source} '{raw}' has a query or fragment; give only https://host:port[/api2/json]"
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/api2/json") {
        format!("{path}/")
    } else {
        format!("{path}/api2/json/")
    };
    url.set_path(&path);
    Ok(url)
}

/// Proxmox's node name format (`pve-node`).
pub fn check_node_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{n}' is not a Proxmox node name (letters, digits and '-', not at either end)"
        ))
    }
}

/// Proxmox's storage id format (`pve-storage-id`).
pub fn check_storage_id(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{s}' is not a Proxmox storage id (at least 2 characters, a letter first, then letters, digits, '-', '_', '.')"
        ))
    }
}

/// Timeouts; the whole-upload one scales with the file's size unless given.
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// Each API call except the upload itself.
    pub request: Duration,
    /// The whole upload of one file to one node: sending, the task, the read-back.
    pub upload: Option<Duration>,
}

/// The slowest link an automatic upload deadline allows for: 1 MiB/s.
pub const MIN_UPLOAD_RATE: u64 = 1 << 20;
/// Fixed part of the automatic deadline: connection, Proxmox's hand-over, the task's copy.
pub const UPLOAD_BASE: Duration = Duration::from_secs(300);

impl Timeouts {
    /// The deadline for uploading `size` bytes to one node: the given one, else 5 minutes
    /// plus the time the file takes at 1 MiB/s.
    pub fn upload_for(&self, size: u64) -> Duration {
        self.upload
            .unwrap_or_else(|| UPLOAD_BASE + Duration::from_secs(size.div_ceil(MIN_UPLOAD_RATE)))
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
            upload: None,
        }
    }
}

/// The token with where each half came from (named in error messages; never the value).
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub id: TokenId,
    pub secret: Secret,
    pub id_source: String,
    pub secret_source: String,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub api_url: Url,
    pub token: ApiToken,
    pub nodes: Vec<String>,
    pub storage: String,
    pub tls: TlsMode,
    pub timeouts: Timeouts,
    pub retries: u32,
}

/// What the command line gave (no secret can be among them).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub api_url: Option<String>,
    pub token_id: Option<String>,
    pub token_secret_file: Option<PathBuf>,
    pub nodes: Vec<String>,
    pub storage: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub insecure: bool,
    pub timeouts: Timeouts,
    pub retries: u32,
}

/// Environment names, in order of precedence after the flags.
pub const ENV_API_URL: &str = "PM_API_URL";
pub const ENV_TOKEN_ID: &str = "PM_API_TOKEN_ID";
pub const ENV_TOKEN_SECRET: &str = "PM_API_TOKEN_SECRET";
pub const ENV_NODE: &str = "PM_NODE";
pub const ENV_STORAGE: &str = "PM_STORAGE";
pub const ENV_BPG_ENDPOINT: &str = "PROXMOX_VE_ENDPOINT";
pub const ENV_BPG_TOKEN: &str = "PROXMOX_VE_API_TOKEN";
pub const ENV_CA_CERT: &str = "PM_TLS_CA_CERT";
pub const ENV_FINGERPRINT: &str = "PM_TLS_FINGERPRINT";
pub const ENV_INSECURE: &str = "PM_TLS_INSECURE";

/// The storage Proxmox creates on every node, with `vztmpl` content.
pub const DEFAULT_STORAGE: &str = "local";

fn truthy(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{ENV_INSECURE}='{v}' is not a boolean (1/0, true/false)"
        )),
    }
}

/// Reads the secret (or a whole `id=secret` token) from a file, trimmed. Warns (returns the
/// warning) if other users can read it.
pub fn read_secret_file(path: &Path) -> Result<(Option<TokenId>, Secret, Option<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--token-secret-file {}: cannot read it ({e}); it should hold the token's secret (the UUID), on one line",
            path.display()
        )
    })?;
    let source = format!("--token-secret-file {}", path.display());
    let text = text.trim();
    let mut warning = None;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o004 != 0
        {
            warning = Some(format!(
                "{} is readable by every user on this machine; `chmod 600` it",
                path.display()
            ));
        }
    }
    if text.contains('@') && text.contains('!') && text.contains('=') {
        let (id, secret) = parse_full_token(text, &source)?;
        return Ok((Some(id), secret, warning));
    }
    Ok((None, check_secret(text, &source)?, warning))
}

/// Resolves the settings: flags, then `PM_*`, then `PROXMOX_VE_*`. `env` looks a variable up
/// (empty values count as unset). Returns the settings and any warnings to print.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Settings, Vec<String>), String> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let mut warnings = Vec::new();

    let (url_raw, url_source) = if let Some(u) = &flags.api_url {
        (u.clone(), "--api-url".to_owned())
    } else if let Some(u) = env(ENV_API_URL) {
        (u, ENV_API_URL.to_owned())
    } else if let Some(u) = env(ENV_BPG_ENDPOINT) {
        (u, ENV_BPG_ENDPOINT.to_owned())
    } else {
        return Err(format!(
            "no Proxmox API URL\n  fix: set {ENV_API_URL}=https://<node>:8006/api2/json (or {ENV_BPG_ENDPOINT}, or pass --api-url)"
        ));
    };
    let api_url = normalize_api_url(&url_raw, &url_source)?;

    // The bpg form carries both halves; it is used for whichever half nothing else gives,
    // and only when its id agrees with the id in use.
    let bpg = env(ENV_BPG_TOKEN)
        .map(|v| parse_full_token(&v, ENV_BPG_TOKEN))
        .transpose()?;
    let file = flags
        .token_secret_file
        .as_deref()
        .map(read_secret_file)
        .transpose()?;
    if let Some((_, _, Some(w))) = &file {
        warnings.push(w.clone());
    }

    let (id, id_source) = if let Some(i) = &flags.token_id {
        (
            i.trim()
                .parse::<TokenId>()
                .map_err(|e| format!("--token-id: {e}"))?,
            "--token-id".to_owned(),
        )
    } else if let Some(i) = env(ENV_TOKEN_ID) {
        (
            i.trim()
                .parse::<TokenId>()
                .map_err(|e| format!("{ENV_TOKEN_ID}: {e}"))?,
            ENV_TOKEN_ID.to_owned(),
        )
    } else if let Some((Some(i), _, _)) = &file {
        (
            i.clone(),
            format!(
                "--token-secret-file {}",
                flags
                    .token_secret_file
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            ),
        )
    } else if let Some((i, _)) = &bpg {
        (i.clone(), ENV_BPG_TOKEN.to_owned())
    } else {
        return Err(format!(
            "no API token id\n  fix: set {ENV_TOKEN_ID}='user@realm!tokenid' and {ENV_TOKEN_SECRET}, or {ENV_BPG_TOKEN}='user@realm!tokenid=secret'"
        ));
    };

    let (secret, secret_source) = if let Some((file_id, s, _)) = file {
        let src = format!(
            "--token-secret-file {}",
            flags
                .token_secret_file
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        );
        if let Some(fid) = file_id
            && fid != id
        {
            return Err(format!(
                "{src} holds a token for '{fid}', but the token id in use is '{id}' (from {id_source})\n  fix: make them agree"
            ));
        }
        (s, src)
    } else if let Some(s) = env(ENV_TOKEN_SECRET) {
        (
            check_secret(s.trim(), ENV_TOKEN_SECRET)?,
            ENV_TOKEN_SECRET.to_owned(),
        )
    } else if let Some((bid, s)) = bpg {
        if bid != id {
            return Err(format!(
                "the token id in use is '{id}' (from {id_source}) but {ENV_BPG_TOKEN} holds the secret of '{bid}'\n  fix: set {ENV_TOKEN_SECRET} (or --token-secret-file) for '{id}', or unset {id_source}"
            ));
        }
        (s, ENV_BPG_TOKEN.to_owned())
    } else {
        return Err(format!(
            "no secret for API token '{id}'\n  fix: set {ENV_TOKEN_SECRET}, or pass --token-secret-file FILE (the secret is never taken from the command line, where other users could read it)"
        ));
    };

    let nodes: Vec<String> = if !flags.nodes.is_empty() {
        flags.nodes.clone()
    } else if let Some(n) = env(ENV_NODE) {
        n.split(',').map(str::to_owned).collect()
    } else {
        return Err(format!(
            "no Proxmox node named\n  fix: set {ENV_NODE}=<node> or pass --node a[,b,…] (the node names shown in the GUI's tree)"
        ));
    };
    let mut seen = Vec::new();
    for n in nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        check_node_name(n)?;
        if !seen.iter().any(|s: &String| s == n) {
            seen.push(n.to_owned());
        }
    }
    if seen.is_empty() {
        return Err(format!(
            "no Proxmox node named\n  fix: set {ENV_NODE} or --node"
        ));
    }

    let storage = flags
        .storage
        .clone()
        .or_else(|| env(ENV_STORAGE))
        .unwrap_or_else(|| DEFAULT_STORAGE.to_owned())
        .trim()
        .to_owned();
    check_storage_id(&storage)?;

    // TLS: any TLS flag replaces the TLS environment entirely.
    let tls = if flags.insecure || flags.ca_cert.is_some() || flags.fingerprint.is_some() {
        tls_mode(
            flags.ca_cert.clone(),
            flags.fingerprint.clone(),
            flags.insecure,
            "flags",
        )?
    } else {
        tls_mode(
            env(ENV_CA_CERT).map(PathBuf::from),
            env(ENV_FINGERPRINT),
            env(ENV_INSECURE)
                .map(|v| truthy(&v))
                .transpose()?
                .unwrap_or(false),
            "environment",
        )?
    };

    Ok((
        Settings {
            api_url,
            token: ApiToken {
                id,
                secret,
                id_source,
                secret_source,
            },
            nodes: seen,
            storage,
            tls,
            timeouts: flags.timeouts.clone(),
            retries: flags.retries,
        },
        warnings,
    ))
}

fn tls_mode(
    ca: Option<PathBuf>,
    fingerprint: Option<String>,
    insecure: bool,
    from: &str,
) -> Result<TlsMode, String> {
    let n = ca.is_some() as u8 + fingerprint.is_some() as u8 + insecure as u8;
    if n > 1 {
        return Err(format!(
            "choose one way to check the node's certificate (the {from} give more than one of CA file, fingerprint, insecure)"
        ));
    }
    Ok(match (ca, fingerprint) {
        (Some(p), _) => TlsMode::CaFile(p),
        (_, Some(f)) => TlsMode::Fingerprint(parse_fingerprint(&f)?),
        _ if insecure => TlsMode::Insecure,
        _ => TlsMode::System,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "d0c0ffee-1234-4abc-8def-0123456789ab";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn base_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENV_API_URL, "https://pve1:8006/api2/json"),
            (ENV_TOKEN_ID, "automation@pve!ci"),
            (ENV_TOKEN_SECRET, SECRET),
            (ENV_NODE, "pve1"),
        ]
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(SECRET);
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!s.describe().contains("d0c0ffee"));
        assert!(s.looks_like_uuid());
        assert!(!Secret::new("ci").looks_like_uuid());
        let (settings, _) = resolve(&Flags::default(), &env_of(&base_env())).unwrap();
        let dbg = format!("{settings:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains("automation"), "{dbg}");
    }

    #[test]
    fn token_ids_parse_like_proxmox() {
        let t: TokenId = "automation@pve!ci".parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.realm.as_str(), t.name.as_str()),
            ("automation", "pve", "ci")
        );
        assert_eq!(t.to_string(), "automation@pve!ci");
        assert_eq!(t.userid(), "automation@pve");
        let t: TokenId = "ansible@EXAMPLE.COM!ansible".parse().unwrap();
        assert_eq!(t.realm, "EXAMPLE.COM");
        // a user may contain '@' (the realm is after the last one)
        let t: TokenId = "first.last@corp@ad!tok-1".parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.realm.as_str()),
            ("first.last@corp", "ad")
        );
        for bad in [
            "automation@pve",     // no token name
            "automation!ci",      // no realm
            "automation@pve!c",   // token name too short
            "automation@pve!1ci", // must start with a letter
            "automation@pve!a!b", // proxcenter-ui#32
            "@pve!ci",            // no user
            "auto mation@pve!ci", // whitespace
            "automation@p!ci",    // realm too short
        ] {
            assert!(bad.parse::<TokenId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_secret_pasted_into_the_id_is_not_repeated() {
        let e = format!("automation@pve!ci={SECRET}")
            .parse::<TokenId>()
            .unwrap_err();
        assert!(!e.contains(SECRET) && !e.contains("d0c0ffee"), "{e}");
        assert!(e.contains("automation@pve!ci=…"), "{e}");
        let mut env = base_env();
        let bad = format!("automation@pve!ci={SECRET}");
        env[1] = (ENV_TOKEN_ID, Box::leak(bad.into_boxed_str()));
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(!e.contains(SECRET), "{e}");
        assert!(e.starts_with(ENV_TOKEN_ID), "{e}");
    }

    #[test]
    fn full_token_splits_on_the_last_equals() {
        let (id, s) = parse_full_token(&format!("automation@pve!ci={SECRET}"), "X").unwrap();
        assert_eq!(id.to_string(), "automation@pve!ci");
        assert_eq!(s.expose(), SECRET);
        let e = parse_full_token(SECRET, "X").unwrap_err();
        assert!(!e.contains(SECRET), "{e}");
        let e = parse_full_token(&format!("automation@pve={SECRET}"), "X").unwrap_err();
        assert!(!e.contains(SECRET), "{e}");
    }

    #[test]
    fn a_whole_token_in_the_secret_variable_is_refused_without_echo() {
        let mut env = base_env();
        let whole = format!("automation@pve!ci={SECRET}");
        env[2] = (ENV_TOKEN_SECRET, Box::leak(whole.into_boxed_str()));
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(e.contains("whole token") && !e.contains(SECRET), "{e}");
        env[2] = (ENV_TOKEN_SECRET, "abc def");
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(!e.contains("abc def"), "{e}");
    }

    #[test]
    fn flags_beat_pm_beat_bpg() {
        let env = vec![
            (ENV_API_URL, "https://pm:8006/api2/json"),
            (ENV_BPG_ENDPOINT, "https://bpg:8006/"),
            (ENV_TOKEN_ID, "pm@pve!tok"),
            (ENV_TOKEN_SECRET, SECRET),
            (
                ENV_BPG_TOKEN,
                "bpg@pve!tok=00000000-0000-4000-8000-000000000009",
            ),
            (ENV_NODE, "n1,n2"),
            (ENV_STORAGE, "nfs"),
        ];
        let (s, _) = resolve(&Flags::default(), &env_of(&env)).unwrap();
        assert_eq!(s.api_url.as_str(), "https://pm:8006/api2/json/");
        assert_eq!(s.token.id.to_string(), "pm@pve!tok");
        assert_eq!(s.token.secret.expose(), SECRET);
        assert_eq!(s.token.secret_source, ENV_TOKEN_SECRET);
        assert_eq!(s.nodes, vec!["n1", "n2"]);
        assert_eq!(s.storage, "nfs");
        assert_eq!(s.tls, TlsMode::System);

        let flags = Flags {
            api_url: Some("https://flag:8443".into()),
            token_id: Some("flag@pam!tk".into()),
            nodes: vec!["a".into(), "b".into(), "a".into()],
            storage: Some("local".into()),
            ..Flags::default()
        };
        let (s, _) = resolve(&flags, &env_of(&env)).unwrap();
        assert_eq!(s.api_url.as_str(), "https://flag:8443/api2/json/");
        assert_eq!(s.token.id.to_string(), "flag@pam!tk");
        assert_eq!(
            s.token.secret.expose(),
            SECRET,
            "PM secret goes with any id"
        );
        assert_eq!(s.nodes, vec!["a", "b"], "duplicates dropped");
        assert_eq!(s.storage, "local");

        // only the bpg names
        let env = vec![
            (ENV_BPG_ENDPOINT, "https://bpg.example:8006/"),
            (
                ENV_BPG_TOKEN,
                "terraform@pve!provider=00000000-0000-4000-8000-000000000009",
            ),
            (ENV_NODE, "pve"),
        ];
        let (s, _) = resolve(&Flags::default(), &env_of(&env)).unwrap();
        assert_eq!(s.api_url.as_str(), "https://bpg.example:8006/api2/json/");
        assert_eq!(s.token.id.to_string(), "terraform@pve!provider");
        assert_eq!(s.token.secret_source, ENV_BPG_TOKEN);
        assert_eq!(s.storage, DEFAULT_STORAGE);

        // a bpg secret is not paired with a different id
        let flags = Flags {
            token_id: Some("other@pve!tok".into()),
            ..Flags::default()
        };
        let e = resolve(&flags, &env_of(&env)).unwrap_err();
        assert!(
            e.contains("other@pve!tok") && e.contains("terraform@pve!provider"),
            "{e}"
        );
        assert!(!e.contains("0000-4000"), "{e}");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let mut env = base_env();
        env.push((ENV_STORAGE, ""));
        env.push((ENV_BPG_ENDPOINT, "https://other:8006"));
        let (s, _) = resolve(&Flags::default(), &env_of(&env)).unwrap();
        assert_eq!(s.storage, "local");
        env[0] = (ENV_API_URL, "  ");
        let (s, _) = resolve(&Flags::default(), &env_of(&env)).unwrap();
        assert_eq!(s.api_url.host_str(), Some("other"));
    }

    #[test]
    fn missing_settings_say_which_variable() {
        let e = resolve(&Flags::default(), &env_of(&[])).unwrap_err();
        assert!(
            e.contains(ENV_API_URL) && e.contains(ENV_BPG_ENDPOINT),
            "{e}"
        );
        let env = vec![(ENV_API_URL, "https://pve:8006")];
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(e.contains(ENV_TOKEN_ID), "{e}");
        let env = vec![
            (ENV_API_URL, "https://pve:8006"),
            (ENV_TOKEN_ID, "a@pve!tk"),
        ];
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(
            e.contains(ENV_TOKEN_SECRET) && e.contains("--token-secret-file"),
            "{e}"
        );
        let env = vec![
            (ENV_API_URL, "https://pve:8006"),
            (ENV_TOKEN_ID, "a@pve!tk"),
            (ENV_TOKEN_SECRET, SECRET),
        ];
        let e = resolve(&Flags::default(), &env_of(&env)).unwrap_err();
        assert!(e.contains(ENV_NODE), "{e}");
    }

    #[test]
    fn secret_file_wins_and_may_hold_the_whole_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "00000000-0000-4000-8000-00000000000f\n").unwrap();
        let flags = Flags {
            token_secret_file: Some(f.clone()),
            ..Flags::default()
        };
        let (s, _) = resolve(&flags, &env_of(&base_env())).unwrap();
        assert_eq!(
            s.token.secret.expose(),
            "00000000-0000-4000-8000-00000000000f"
        );
        assert!(s.token.secret_source.contains("--token-secret-file"));

        std::fs::write(&f, format!("file@pve!tk={SECRET}")).unwrap();
        let env = vec![(ENV_API_URL, "https://pve:8006"), (ENV_NODE, "pve")];
        let (s, _) = resolve(&flags, &env_of(&env)).unwrap();
        assert_eq!(s.token.id.to_string(), "file@pve!tk");
        assert_eq!(s.token.secret.expose(), SECRET);
        // disagreeing ids
        let e = resolve(&flags, &env_of(&base_env())).unwrap_err();
        assert!(e.contains("file@pve!tk") && !e.contains(SECRET), "{e}");

        let e = resolve(
            &Flags {
                token_secret_file: Some(dir.path().join("missing")),
                ..Flags::default()
            },
            &env_of(&base_env()),
        )
        .unwrap_err();
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn api_urls_normalise() {
        for (raw, want) in [
            ("https://pve:8006", "https://pve:8006/api2/json/"),
            ("https://pve:8006/", "https://pve:8006/api2/json/"),
            ("https://pve:8006/api2/json", "https://pve:8006/api2/json/"),
            ("https://pve:8006/api2/json/", "https://pve:8006/api2/json/"),
            ("https://proxy/pve/", "https://proxy/pve/api2/json/"),
            (
                "https://127.0.0.1:1234/api2/json",
                "https://127.0.0.1:1234/api2/json/",
            ),
        ] {
            assert_eq!(normalize_api_url(raw, "X").unwrap().as_str(), want, "{raw}");
        }
        for bad in [
            "http://pve:8006/api2/json",
            "pve:8006",
            "ftp://pve",
            "https://u:p@pve:8006",
            "https://pve:8006/?x=1",
            "not a url",
        ] {
            assert!(normalize_api_url(bad, "X").is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_parse_in_every_common_form() {
        let want: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let colon = format_fingerprint(&want);
        assert_eq!(colon.len(), 32 * 3 - 1);
        assert!(colon.starts_with("00:07:0E:15"), "{colon}");
        for form in [
            colon.clone(),
            colon.to_lowercase(),
            colon.replace(':', ""),
            format!("sha256 Fingerprint={colon}"),
            format!("SHA256 Fingerprint={colon}"),
            format!("  {colon}\n"),
        ] {
            assert_eq!(parse_fingerprint(&form).unwrap(), want, "{form}");
        }
        assert!(parse_fingerprint(&colon[..colon.len() - 3]).is_err());
        assert!(parse_fingerprint(&colon.replace("00", "ZZ")).is_err());
        assert!(parse_fingerprint("").is_err());
    }

    #[test]
    fn tls_modes_exclude_each_other() {
        let fp = format_fingerprint(&[0xab; 32]);
        let flags = Flags {
            fingerprint: Some(fp.clone()),
            ..Flags::default()
        };
        let (s, _) = resolve(&flags, &env_of(&base_env())).unwrap();
        assert_eq!(s.tls, TlsMode::Fingerprint([0xab; 32]));
        let flags = Flags {
            fingerprint: Some(fp.clone()),
            insecure: true,
            ..Flags::default()
        };
        assert!(resolve(&flags, &env_of(&base_env())).is_err());
        // env TLS settings are used only without TLS flags
        let mut env = base_env();
        env.push((ENV_INSECURE, "1"));
        let (s, _) = resolve(&Flags::default(), &env_of(&env)).unwrap();
        assert_eq!(s.tls, TlsMode::Insecure);
        let flags = Flags {
            ca_cert: Some("/ca.pem".into()),
            ..Flags::default()
        };
        let (s, _) = resolve(&flags, &env_of(&env)).unwrap();
        assert_eq!(s.tls, TlsMode::CaFile("/ca.pem".into()));
        env.push((ENV_FINGERPRINT, Box::leak(fp.into_boxed_str())));
        assert!(resolve(&Flags::default(), &env_of(&env)).is_err());
    }

    #[test]
    fn names_are_checked_like_proxmox() {
        assert!(check_node_name("pve-1").is_ok());
        assert!(check_node_name("-pve").is_err());
        assert!(check_node_name("pve_1").is_err());
        assert!(check_storage_id("local").is_ok());
        assert!(check_storage_id("pve-nfs.a_b").is_ok());
        assert!(check_storage_id("l").is_err());
        assert!(check_storage_id("1local").is_err());
        assert!(check_storage_id("local-").is_err());
    }

    #[test]
    fn the_upload_deadline_scales_with_size() {
        let t = Timeouts::default();
        assert_eq!(t.upload_for(0), UPLOAD_BASE);
        assert_eq!(t.upload_for(1), UPLOAD_BASE + Duration::from_secs(1));
        assert_eq!(
            t.upload_for(2 << 30),
            UPLOAD_BASE + Duration::from_secs(2048),
            "2 GiB at 1 MiB/s"
        );
        let t = Timeouts {
            upload: Some(Duration::from_secs(7)),
            ..Timeouts::default()
        };
        assert_eq!(t.upload_for(10 << 30), Duration::from_secs(7));
    }
}
