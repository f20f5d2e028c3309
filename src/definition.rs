//! Stage 1: the image definition (`images/<name>.toml`).
//!
//! A definition names a base (an image pinned by digest, or a rootfs tarball pinned by sha256),
//! the provision and cleanup scripts to run in order, and the artifact prefix. Everything is
//! checked here, before Docker is touched: unknown keys, the base reference, the prefix, and
//! every script (present, a regular file, inside the project tree, of sane size).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Scripts are copied into the build container through the API in one request; anything
/// larger than this is a mistake (a binary, a log) rather than a script.
pub const MAX_SCRIPT_BYTES: u64 = 4 * 1024 * 1024;
/// A definition file is a few lines of TOML.
const MAX_DEFINITION_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error(
        "image definition '{name}' not found: no file {path}\n  fix: {}",
        fix_not_found(.available, .suggestion.as_deref())
    )]
    NotFound {
        name: String,
        path: PathBuf,
        available: Vec<String>,
        suggestion: Option<String>,
    },
    #[error("cannot read image definition {path}: {source}\n  fix: {fix}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
        fix: &'static str,
    },
    #[error(
        "image definition {path} is invalid: {message}\n  fix: correct the file (see README.md, 'Image definitions')"
    )]
    Parse { path: PathBuf, message: String },
    #[error("image definition {path} {problem}\n  fix: {fix}")]
    Unusable {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
    #[error("image definition {path}: `{field}` {problem}\n  fix: {fix}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
        fix: String,
    },
    #[error("image definition {path}: {stage} script '{script}' {problem}\n  fix: {fix}")]
    Script {
        path: PathBuf,
        stage: Stage,
        script: String,
        problem: String,
        fix: String,
    },
}

fn fix_not_found(available: &[String], suggestion: Option<&str>) -> String {
    match (suggestion, available.is_empty()) {
        (Some(s), _) => format!(
            "did you mean '{s}'? Definitions here: {}",
            available.join(", ")
        ),
        (None, false) => format!("pick one of: {}", available.join(", ")),
        (None, true) => "create images/<name>.toml (see README.md, 'Image definitions')".into(),
    }
}

/// A value from the definition as shown in an error: control characters escaped (no terminal
/// escapes from a hostile file), at most 80 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s
        .chars()
        .take(MAX)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().count() > MAX {
        out.push_str(&format!("… ({} bytes)", s.len()));
    }
    out
}

/// A parser message for the terminal: control characters other than newlines escaped, each
/// line (the parser quotes the offending line) cut to 200 characters, at most 20 lines.
fn clean_message(m: &str) -> String {
    m.lines()
        .take(20)
        .map(|l| {
            let mut line: String = l
                .chars()
                .take(200)
                .flat_map(|c| {
                    if c.is_control() && c != '\t' {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect();
            if l.chars().count() > 200 {
                line.push('…');
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The on-disk shape. `deny_unknown_fields` makes a misspelled key an error naming the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefinition {
    description: Option<String>,
    prefix: String,
    base: RawBase,
    provision: Vec<String>,
    #[serde(default)]
    cleanup: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    script_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBase {
    image: Option<String>,
    rootfs: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Provision,
    Cleanup,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Provision => "provision",
            Stage::Cleanup => "cleanup",
        })
    }
}

/// A script to run in the build container, with its content hash for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Script {
    pub stage: Stage,
    /// As written in the definition, relative to the project root.
    pub path: String,
    #[serde(skip)]
    pub abs: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Script {
    pub fn file_name(&self) -> String {
        Path::new(&self.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    Path(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An image reference. `digest` is `sha256:<hex>` when pinned.
    Image {
        reference: String,
        repository: String,
        tag: Option<String>,
        digest: Option<String>,
    },
    /// A root filesystem tarball imported through the Engine API (`docker import`).
    Rootfs {
        source: RootfsSource,
        sha256: Option<String>,
    },
}

impl Base {
    pub fn describe(&self) -> String {
        match self {
            Base::Image { reference, .. } => reference.clone(),
            Base::Rootfs {
                source: RootfsSource::Path(p),
                ..
            } => p.display().to_string(),
            Base::Rootfs {
                source: RootfsSource::Url(u),
                ..
            } => u.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Definition {
    /// The definition's name: the file stem (`debian-12`).
    pub name: String,
    /// The definition file.
    pub path: PathBuf,
    /// The project root: script paths and relative rootfs paths are resolved against it.
    pub root: PathBuf,
    pub sha256: String,
    pub description: Option<String>,
    pub prefix: String,
    pub base: Base,
    pub provision: Vec<Script>,
    pub cleanup: Vec<Script>,
    pub env: BTreeMap<String, String>,
    pub script_timeout: Option<Duration>,
}

impl Definition {
    /// All scripts in the order they run: provision, then cleanup.
    pub fn scripts(&self) -> impl Iterator<Item = &Script> {
        self.provision.iter().chain(self.cleanup.iter())
    }
}

/// Options that relax checks; they come from the command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadOptions {
    pub allow_unpinned: bool,
}

/// The definitions present under `<root>/images`, sorted.
pub fn available(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Finds a definition by name (`debian-12` → `<root>/images/debian-12.toml`) or by path.
pub fn locate(root: &Path, name_or_path: &str) -> Result<PathBuf, DefinitionError> {
    // Something there that is not a regular file (a directory, a FIFO that would block the
    // read, a device that never ends) is refused by name, before it is opened.
    let not_a_file = |p: PathBuf| DefinitionError::Unusable {
        path: p,
        problem: "is not a regular file".into(),
        fix: "point at a .toml file (a FIFO, device or directory is not a definition)",
    };
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        let p = PathBuf::from(name_or_path);
        if p.is_file() {
            return Ok(p);
        }
        if p.exists() {
            return Err(not_a_file(p));
        }
    }
    let path = root.join("images").join(format!("{name_or_path}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    if path.exists() {
        return Err(not_a_file(path));
    }
    let available = available(root);
    let suggestion = available
        .iter()
        .map(|n| (strsim::levenshtein(n, name_or_path), n))
        .filter(|(d, n)| *d <= 3.max(n.len() / 3))
        .min()
        .map(|(_, n)| n.clone());
    Err(DefinitionError::NotFound {
        name: name_or_path.to_owned(),
        path,
        available,
        suggestion,
    })
}

/// Loads and checks a definition. `root` is the project root.
pub fn load(
    root: &Path,
    name_or_path: &str,
    opts: LoadOptions,
) -> Result<Definition, DefinitionError> {
    let path = locate(root, name_or_path)?;
    let read_err = |source| DefinitionError::Read {
        path: path.clone(),
        source,
        fix: "check that the file exists and is readable",
    };
    let too_big = |len: String| DefinitionError::Unusable {
        path: path.clone(),
        problem: format!(
            "is {len} bytes; a definition is a few lines of TOML, at most {MAX_DEFINITION_BYTES} bytes"
        ),
        fix: "point at the right file; keep payloads in scripts or files next to it",
    };
    let meta = std::fs::metadata(&path).map_err(read_err)?;
    if meta.len() > MAX_DEFINITION_BYTES {
        return Err(too_big(meta.len().to_string()));
    }
    // Read at most one byte past the limit, whatever the size said (a file still growing).
    let bytes = read_capped(&path, MAX_DEFINITION_BYTES).map_err(read_err)?;
    if bytes.len() as u64 > MAX_DEFINITION_BYTES {
        return Err(too_big("more than".into()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        DefinitionError::Unusable {
            path: path.clone(),
            problem: format!("is not UTF-8 text (invalid byte at offset {at}, line {line})"),
            fix: "save it as UTF-8 (TOML files are UTF-8), e.g. iconv -f latin1 -t utf-8",
        }
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_owned();
    parse(root, &path, &name, &text, opts)
}

/// Reads at most `max + 1` bytes of a file, so the caller can tell "over the limit" without
/// reading it all.
fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Parses definition text; separate from `load` so tests need no files for pure checks.
pub fn parse(
    root: &Path,
    path: &Path,
    name: &str,
    text: &str,
    opts: LoadOptions,
) -> Result<Definition, DefinitionError> {
    let raw: RawDefinition = toml::from_str(text).map_err(|e| DefinitionError::Parse {
        path: path.to_owned(),
        message: clean_message(e.to_string().trim_end()),
    })?;
    let invalid = |field: &str, problem: String, fix: &str| DefinitionError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        problem,
        fix: fix.to_owned(),
    };

    check_name(name).map_err(|p| {
        invalid(
            "file name",
            p,
            "name the file images/<name>.toml with letters, digits, '.', '_' or '-'",
        )
    })?;
    check_prefix(&raw.prefix).map_err(|p| {
        invalid(
            "prefix",
            p,
            "use letters, digits, '.', '_' and '-', e.g. prefix = \"debian-12-lxc-rootfs\"",
        )
    })?;
    let base = parse_base(root, &raw.base, opts)
        .map_err(|(field, problem, fix)| invalid(field, problem, &fix))?;
    if raw.provision.is_empty() {
        return Err(invalid(
            "provision",
            "is empty".into(),
            "list at least one script, e.g. provision = [\"provision/10-packages.sh\"]",
        ));
    }
    for key in raw.env.keys() {
        if !is_env_name(key) || key.starts_with("LXCFORGE_") {
            return Err(invalid(
                &format!("env.{}", shown(key)),
                "is not a usable environment variable name (or uses the reserved LXCFORGE_ prefix)"
                    .into(),
                "use [A-Za-z_][A-Za-z0-9_]* and a name not starting with LXCFORGE_",
            ));
        }
    }
    let script_timeout = raw
        .script_timeout
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| {
            invalid(
                "script-timeout",
                format!("cannot be read: {e}"),
                "write a duration such as \"30m\" or \"1h\"",
            )
        })?;

    let provision = load_scripts(root, path, Stage::Provision, &raw.provision)?;
    let cleanup = load_scripts(root, path, Stage::Cleanup, &raw.cleanup)?;
    Ok(Definition {
        name: name.to_owned(),
        path: path.to_owned(),
        root: root.to_owned(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        description: raw.description,
        prefix: raw.prefix,
        base,
        provision,
        cleanup,
        env: raw.env,
        script_timeout,
    })
}

fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-'])
    {
        Ok(())
    } else {
        Err(format!("'{}' is not a valid image name", shown(name)))
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The prefix becomes a file name on Proxmox storage (`<prefix>-v<N>.tar.gz`), so it must be a
/// plain name, and must not itself end in a version suffix that would confuse the resolver.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 100 {
        return Err(format!("'{}' must be 1 to 100 characters", shown(prefix)));
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || !prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "'{}' may only hold letters, digits, '.', '_' and '-', starting with a letter or digit",
            shown(prefix)
        ));
    }
    if let Some(pos) = prefix.rfind("-v")
        && !prefix[pos + 2..].is_empty()
        && prefix[pos + 2..].chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "'{prefix}' ends in a version suffix; lxcforge appends -v<N> itself"
        ));
    }
    Ok(())
}

type FieldError = (&'static str, String, String);

fn parse_base(root: &Path, raw: &RawBase, opts: LoadOptions) -> Result<Base, FieldError> {
    match (&raw.image, &raw.rootfs) {
        (Some(_), Some(_)) => Err((
            "base",
            "sets both `image` and `rootfs`".into(),
            "keep exactly one of them".into(),
        )),
        (None, None) => Err((
            "base",
            "sets neither `image` nor `rootfs`".into(),
            "add image = \"ubuntu:24.04@sha256:<digest>\" or rootfs = \"bases/<file>.tar.gz\""
                .into(),
        )),
        (Some(reference), None) => {
            if raw.sha256.is_some() {
                return Err((
                    "base.sha256",
                    "only applies to a rootfs base".into(),
                    "pin an image by digest in the reference itself: image = \"<name>@sha256:<digest>\"".into(),
                ));
            }
            parse_image_ref(reference, opts.allow_unpinned)
        }
        (None, Some(rootfs)) => {
            let sha256 = match &raw.sha256 {
                Some(s) => Some(parse_sha256(s).ok_or((
                    "base.sha256",
                    format!("'{}' is not a sha256 digest", shown(s)),
                    "write the 64 hex digits printed by `sha256sum <file>`".to_string(),
                ))?),
                None => None,
            };
            let source = if rootfs.starts_with("https://") || rootfs.starts_with("http://") {
                if rootfs.starts_with("http://") && !is_loopback_url(rootfs) {
                    return Err((
                        "base.rootfs",
                        format!("'{}' uses plain http", shown(rootfs)),
                        "use an https:// URL (plain http is accepted only for 127.0.0.1/localhost)"
                            .into(),
                    ));
                }
                if sha256.is_none() {
                    return Err((
                        "base.sha256",
                        "is required for a rootfs downloaded from a URL".into(),
                        "add sha256 = \"<64 hex digits>\" so the download is verified".into(),
                    ));
                }
                RootfsSource::Url(rootfs.clone())
            } else {
                let p = Path::new(rootfs);
                RootfsSource::Path(if p.is_absolute() {
                    p.to_owned()
                } else {
                    root.join(p)
                })
            };
            Ok(Base::Rootfs { source, sha256 })
        }
    }
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.")
}

fn parse_sha256(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Splits `repo[:tag][@sha256:hex]`. The tag separator is a ':' after the last '/', so a
/// registry port (`127.0.0.1:5000/x`) is not mistaken for a tag.
pub fn parse_image_ref(reference: &str, allow_unpinned: bool) -> Result<Base, FieldError> {
    let bad = |problem: String| {
        (
            "base.image",
            problem,
            "write <name>[:<tag>]@sha256:<64 hex digits>, e.g. ubuntu:24.04@sha256:…".to_string(),
        )
    };
    if reference.is_empty()
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(format!(
            "'{}' is not an image reference",
            shown(reference)
        )));
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .and_then(parse_sha256)
                .ok_or_else(|| bad(format!("'{}' is not a sha256 digest", shown(d))))?;
            (n, Some(format!("sha256:{hex}")))
        }
        None => (reference, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if repository.is_empty() || tag == Some("") {
        return Err(bad(format!(
            "'{}' is not an image reference",
            shown(reference)
        )));
    }
    if digest.is_none() && !allow_unpinned {
        return Err((
            "base.image",
            format!(
                "'{}' is not pinned by digest, so two builds may start from different bases",
                shown(reference)
            ),
            "append @sha256:<digest> (see `docker buildx imagetools inspect <ref>` or the registry), or pass --allow-unpinned".into(),
        ));
    }
    Ok(Base::Image {
        reference: reference.to_owned(),
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
        digest,
    })
}

fn load_scripts(
    root: &Path,
    def_path: &Path,
    stage: Stage,
    entries: &[String],
) -> Result<Vec<Script>, DefinitionError> {
    let canon_root = root.canonicalize().map_err(|e| DefinitionError::Unusable {
        path: def_path.to_owned(),
        problem: format!(
            "cannot be checked: its project root {} cannot be resolved: {e}",
            root.display()
        ),
        fix: "run from the project directory or pass --root DIR",
    })?;
    let mut out: Vec<Script> = Vec::with_capacity(entries.len());
    for entry in entries {
        let err = |problem: String, fix: &str| DefinitionError::Script {
            path: def_path.to_owned(),
            stage,
            script: shown(entry),
            problem,
            fix: fix.to_owned(),
        };
        if entry.is_empty() {
            return Err(err(
                "is an empty path".into(),
                &format!(
                    "write the script's path relative to the project, e.g. \"{stage}/10-name.sh\""
                ),
            ));
        }
        let rel = Path::new(entry);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(err(
                "points outside the project".into(),
                &format!(
                    "keep scripts inside the project and write paths relative to it, e.g. \"{stage}/10-name.sh\""
                ),
            ));
        }
        if entry.contains('\0') {
            return Err(err(
                "contains a NUL byte, which no file name can hold".into(),
                "fix the path in the definition",
            ));
        }
        let abs = root.join(rel);
        let canon = abs.canonicalize().map_err(|e| {
            err(
                format!("cannot be opened: {e}"),
                &format!(
                    "create {} or fix the path in the definition",
                    shown(&abs.display().to_string())
                ),
            )
        })?;
        if !canon.starts_with(&canon_root) {
            return Err(err(
                format!(
                    "resolves to {} outside the project (through a symlink)",
                    canon.display()
                ),
                "copy the script into the project instead of linking to it",
            ));
        }
        let meta = std::fs::metadata(&canon)
            .map_err(|e| err(format!("cannot be read: {e}"), "check its permissions"))?;
        if !meta.is_file() {
            return Err(err(
                "is not a regular file".into(),
                "point at a script file",
            ));
        }
        if meta.len() > MAX_SCRIPT_BYTES {
            return Err(err(
                format!(
                    "is {} bytes, over the {MAX_SCRIPT_BYTES}-byte limit for scripts",
                    meta.len()
                ),
                "keep large payloads out of scripts: install them with the package manager or download them in the script",
            ));
        }
        // At most one byte past the limit, whatever the size said (a file still growing).
        let bytes = read_capped(&canon, MAX_SCRIPT_BYTES)
            .map_err(|e| err(format!("cannot be read: {e}"), "check its permissions"))?;
        if bytes.len() as u64 > MAX_SCRIPT_BYTES {
            return Err(err(
                format!("grew past the {MAX_SCRIPT_BYTES}-byte limit for scripts while being read"),
                "do not write to scripts during a build",
            ));
        }
        if !bytes.starts_with(b"#!") {
            return Err(err(
                "has no #! line, so the container would not know how to run it".into(),
                "start the script with e.g. #!/bin/sh",
            ));
        }
        out.push(Script {
            stage,
            path: entry.clone(),
            abs: canon,
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("provision")).unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("provision/10-a.sh"), "#!/bin/sh\necho a\n").unwrap();
        dir
    }

    const GOOD: &str = r#"
prefix = "debian-12-lxc-rootfs"
provision = ["provision/10-a.sh"]
[base]
rootfs = "bases/x.tar.gz"
"#;

    fn parse_text(root: &Path, text: &str) -> Result<Definition, DefinitionError> {
        parse(
            root,
            &root.join("images/t.toml"),
            "t",
            text,
            LoadOptions::default(),
        )
    }

    #[test]
    fn good_definition_loads_with_script_hashes() {
        let p = project();
        let d = parse_text(p.path(), GOOD).unwrap();
        assert_eq!(d.prefix, "debian-12-lxc-rootfs");
        assert_eq!(d.provision.len(), 1);
        assert_eq!(
            d.provision[0].sha256,
            hex::encode(Sha256::digest(b"#!/bin/sh\necho a\n"))
        );
        assert!(
            matches!(d.base, Base::Rootfs { source: RootfsSource::Path(ref p), sha256: None } if p.ends_with("bases/x.tar.gz"))
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let p = project();
        let e = parse_text(p.path(), &format!("{GOOD}\nprovison = []\n"))
            .unwrap_err()
            .to_string();
        // the misplaced key lands in [base] here, so toml names it there
        assert!(e.contains("unknown field `provison`"), "{e}");
        assert!(e.contains("images/t.toml"), "{e}");
        let e = parse_text(p.path(), &format!("colour = 1\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn missing_script_is_named_with_fix() {
        let p = project();
        let e = parse_text(p.path(), &GOOD.replace("10-a.sh", "20-missing.sh"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("provision script 'provision/20-missing.sh' cannot be opened"),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn scripts_outside_the_project_are_refused() {
        let p = project();
        let e = parse_text(
            p.path(),
            &GOOD.replace("provision/10-a.sh", "../../etc/passwd"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("points outside the project"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", p.path().join("provision/evil.sh")).unwrap();
        let e = parse_text(p.path(), &GOOD.replace("10-a.sh", "evil.sh"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the project (through a symlink)"), "{e}");
    }

    #[test]
    fn oversized_and_shebangless_scripts_are_refused() {
        let p = project();
        std::fs::write(
            p.path().join("provision/big.sh"),
            vec![b'#'; MAX_SCRIPT_BYTES as usize + 1],
        )
        .unwrap();
        let e = parse_text(p.path(), &GOOD.replace("10-a.sh", "big.sh"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the"), "{e}");
        std::fs::write(p.path().join("provision/nosheb.sh"), "echo hi\n").unwrap();
        let e = parse_text(p.path(), &GOOD.replace("10-a.sh", "nosheb.sh"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no #! line"), "{e}");
    }

    #[test]
    fn image_refs_must_be_pinned_unless_allowed() {
        let e = parse_image_ref("ubuntu:24.04", false).unwrap_err();
        assert!(e.1.contains("not pinned"), "{e:?}");
        assert!(e.2.contains("--allow-unpinned"));
        let b = parse_image_ref("ubuntu:24.04", true).unwrap();
        assert!(matches!(b, Base::Image { digest: None, .. }));
        let d = "a".repeat(64);
        let b =
            parse_image_ref(&format!("127.0.0.1:5000/lf/ubuntu:24.04@sha256:{d}"), false).unwrap();
        assert_eq!(
            b,
            Base::Image {
                reference: format!("127.0.0.1:5000/lf/ubuntu:24.04@sha256:{d}"),
                repository: "127.0.0.1:5000/lf/ubuntu".into(),
                tag: Some("24.04".into()),
                digest: Some(format!("sha256:{d}")),
            }
        );
        let b = parse_image_ref(&format!("127.0.0.1:5000/x@sha256:{d}"), false).unwrap();
        assert!(
            matches!(b, Base::Image { ref repository, tag: None, .. } if repository == "127.0.0.1:5000/x")
        );
        assert!(parse_image_ref("ubuntu@sha256:abc", false).is_err());
        assert!(parse_image_ref("ubuntu:@sha256:abc", true).is_err());
    }

    #[test]
    fn base_kinds_are_exclusive_and_checked() {
        let p = project();
        let both = GOOD.replace("[base]\n", "[base]\nimage = \"x@sha256:0\"\n");
        assert!(
            parse_text(p.path(), &both)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
        let bad_sha = GOOD.replace("[base]\n", "[base]\nsha256 = \"nope\"\n");
        assert!(
            parse_text(p.path(), &bad_sha)
                .unwrap_err()
                .to_string()
                .contains("not a sha256")
        );
        let url = GOOD.replace("bases/x.tar.gz", "http://example.org/x.tar.gz");
        assert!(
            parse_text(p.path(), &url)
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        let url = GOOD.replace("bases/x.tar.gz", "https://example.org/x.tar.gz");
        assert!(
            parse_text(p.path(), &url)
                .unwrap_err()
                .to_string()
                .contains("required")
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(check_prefix("ubuntu-24.04-lxc-rootfs").is_ok());
        assert!(check_prefix("x-v3").is_err());
        assert!(check_prefix("a/b").is_err());
        assert!(check_prefix("-a").is_err());
        assert!(check_prefix("").is_err());
    }

    #[test]
    fn misspelled_name_gets_a_suggestion() {
        let p = project();
        std::fs::write(p.path().join("images/debian-12.toml"), GOOD).unwrap();
        std::fs::write(p.path().join("images/ubuntu-24.04.toml"), GOOD).unwrap();
        let e = load(p.path(), "debain-12", LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'debian-12'"), "{e}");
        assert!(e.contains("ubuntu-24.04"), "{e}");
        let d = load(p.path(), "debian-12", LoadOptions::default()).unwrap();
        assert_eq!(d.name, "debian-12");
    }

    #[test]
    fn env_and_timeout_are_checked() {
        let p = project();
        let t = format!("script-timeout = \"5m\"\n{GOOD}\n[env]\nFOO = \"1\"\n");
        let d = parse_text(p.path(), &t).unwrap();
        assert_eq!(d.script_timeout, Some(Duration::from_secs(300)));
        assert_eq!(d.env.get("FOO").map(String::as_str), Some("1"));
        let t = format!("{GOOD}\n[env]\nLXCFORGE_X = \"1\"\n");
        assert!(
            parse_text(p.path(), &t)
                .unwrap_err()
                .to_string()
                .contains("env.LXCFORGE_X")
        );
        let t = format!("script-timeout = \"soon\"\n{GOOD}");
        assert!(
            parse_text(p.path(), &t)
                .unwrap_err()
                .to_string()
                .contains("script-timeout")
        );
    }
}
