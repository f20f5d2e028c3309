//! `lxcforge upload`: arguments and the command, kept out of main.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::client::Client;
use super::error::ProxmoxError;
use super::settings::{self, Flags, Timeouts};
use super::upload::{self, NodeFailure, UploadReport};
use crate::ui::{Ui, human_bytes};

/// Upload a template to Proxmox VE storage through the API (token auth), verified there.
///
/// Settings come from the flags, else the environment: PM_API_URL, PM_API_TOKEN_ID,
/// PM_API_TOKEN_SECRET, PM_NODE, PM_STORAGE (or the Terraform bpg provider's
/// PROXMOX_VE_ENDPOINT and PROXMOX_VE_API_TOKEN='user@realm!id=secret'). The secret is read
/// only from the environment or --token-secret-file, never from the command line. TLS:
/// PM_TLS_CA_CERT, PM_TLS_FINGERPRINT, PM_TLS_INSECURE=1 when no TLS flag is given.
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// The template (.tar.gz, .tar.zst, .tar.xz, .tar.bz2 or .tar). Without it: the newest
    /// artifact of --image.
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub file: Option<PathBuf>,
    /// Upload the newest local artifact of this image definition (from --out-dir).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Where --image looks for artifacts.
    #[arg(long, default_value = "artifacts")]
    pub out_dir: PathBuf,
    /// API URL, e.g. https://pve1:8006/api2/json [env: PM_API_URL, PROXMOX_VE_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// API token id, user@realm!tokenid [env: PM_API_TOKEN_ID, or from PROXMOX_VE_API_TOKEN]
    #[arg(long, value_name = "USER@REALM!ID")]
    pub token_id: Option<String>,
    /// A file holding the token's secret (or the whole user@realm!id=secret)
    /// [else env: PM_API_TOKEN_SECRET, PROXMOX_VE_API_TOKEN]
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Node(s) to upload to; several upload in parallel, a shared storage once [env: PM_NODE]
    #[arg(long, value_name = "NODE[,NODE…]", value_delimiter = ',')]
    pub node: Vec<String>,
    /// Storage id (must hold container templates) [env: PM_STORAGE; default: local]
    #[arg(long, value_name = "ID")]
    pub storage: Option<String>,
    /// Trust only this CA (PEM), e.g. a copy of /etc/pve/pve-root-ca.pem [env: PM_TLS_CA_CERT]
    #[arg(long, value_name = "PEM", conflicts_with_all = ["fingerprint", "insecure"])]
    pub ca_cert: Option<PathBuf>,
    /// Accept only the certificate with this SHA-256 fingerprint (AB:CD:…, as the GUI shows)
    /// [env: PM_TLS_FINGERPRINT]
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub fingerprint: Option<String>,
    /// Do not check the node's certificate at all (warns) [env: PM_TLS_INSECURE=1]
    #[arg(long)]
    pub insecure: bool,
    /// Timeout for connecting.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Timeout for each API call other than the upload.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub request_timeout: Duration,
    /// Deadline for the whole upload to one node, task and read-back included (default: 5
    /// minutes plus 1 second per MiB).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub upload_timeout: Option<Duration>,
    /// Retries after transient failures (API calls; the upload only if its body did not get
    /// out in full).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
}

/// A failed upload command: the message for stderr, the `--json` document, the exit code.
#[derive(Debug)]
pub struct UploadFailed {
    pub message: String,
    pub json: Value,
    pub code: i32,
}

/// The newest published artifact `<prefix>-v<N>.<ext>` of an image in `out_dir`.
pub fn newest_artifact(root: &Path, image: &str, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let def = crate::definition::load(
        root,
        image,
        crate::definition::LoadOptions {
            allow_unpinned: true,
        },
    )?;
    let dir = root.join(out_dir);
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = crate::version::parse_version(&def.prefix, name)
            && best.as_ref().is_none_or(|(b, _)| v > *b)
        {
            best = Some((v, entry.path()));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        anyhow::anyhow!(
            "no artifact of {image} ({}-v<N>.tar.*) in {}\n  fix: build one first (make image.build-next IMAGE={image}), or name the file",
            def.prefix,
            dir.display()
        )
    })
}

fn failure_json(
    message: &str,
    code: i32,
    outcome: Option<&upload::Outcome>,
    failures: &[NodeFailure],
) -> Value {
    json!({
        "ok": false,
        "error": message,
        "exit_code": code,
        "uploads": outcome.map(|o| json!(o.reports)).unwrap_or(json!([])),
        "failed": failures.iter().map(|f| json!({
            "node": if f.node.is_empty() { Value::Null } else { json!(f.node) },
            "error": f.error.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn single(e: ProxmoxError) -> UploadFailed {
    let message = e.to_string();
    let code = e.exit_code();
    UploadFailed {
        json: failure_json(&message, code, None, &[]),
        message,
        code,
    }
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

pub async fn run(args: UploadArgs, root: &Path, ui: &Ui) -> Result<Value, UploadFailed> {
    let file = match (&args.file, &args.image) {
        (Some(f), _) => f.clone(),
        (None, Some(image)) => newest_artifact(root, image, &args.out_dir).map_err(|e| {
            let message = format!("{e:#}");
            UploadFailed {
                json: failure_json(&message, 2, None, &[]),
                message,
                code: 2,
            }
        })?,
        (None, None) => unreachable!("clap requires FILE or --image"),
    };
    let flags = Flags {
        api_url: args.api_url,
        token_id: args.token_id,
        token_secret_file: args.token_secret_file,
        nodes: args.node,
        storage: args.storage,
        ca_cert: args.ca_cert,
        fingerprint: args.fingerprint,
        insecure: args.insecure,
        timeouts: Timeouts {
            connect: args.connect_timeout,
            request: args.request_timeout,
            upload: args.upload_timeout,
        },
        retries: args.retries,
    };
    // Local checks first: a wrong file fails without any setting or network.
    let local = upload::check_local(&file).map_err(single)?;
    let (settings, warnings) =
        settings::resolve(&flags, &env_lookup).map_err(|m| single(ProxmoxError::Settings(m)))?;
    for w in warnings {
        ui.warn(w);
    }
    if settings.tls == settings::TlsMode::Insecure {
        ui.warn(format!(
            "--insecure: the certificate of {} is not checked; anyone in between can read the token and change the template",
            settings.api_url.host_str().unwrap_or("the node")
        ));
    }
    ui.stage(
        "upload",
        format!(
            "{} ({}) to storage '{}' on {}",
            local.file_name,
            human_bytes(local.size),
            settings.storage,
            settings
                .nodes
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let client = Client::new(&settings, ui.clone()).map_err(single)?;
    let outcome = match upload::run(&settings, &client, &local, ui).await {
        Ok(o) => o,
        Err(failures) => {
            let message = summarize(&failures, 0, "nothing was uploaded");
            let code = failures
                .iter()
                .map(|f| f.error.exit_code())
                .max()
                .unwrap_or(1);
            return Err(UploadFailed {
                json: failure_json(&message, code, None, &failures),
                message,
                code,
            });
        }
    };
    for r in &outcome.reports {
        ui.info(format!(
            "verified {} on node '{}'{}: {} bytes, sha256 checked by Proxmox, in {:.1}s",
            r.volid,
            r.node,
            if r.shared { " (shared storage)" } else { "" },
            r.size,
            r.duration_secs
        ));
    }
    if !outcome.failures.is_empty() {
        let ok_nodes: Vec<&str> = outcome.reports.iter().map(|r| r.node.as_str()).collect();
        // What is verified is recorded even though another node failed: the template is on
        // those nodes now, and a ledger that did not know it would be wrong about them (and
        // the next upload, refused there as an existing volid, would have no record to go by).
        let recorded = if outcome.reports.is_empty() {
            String::new()
        } else {
            match record_in_ledger(root, &local.file_name, &outcome.reports) {
                Ok(Some((image, version))) => format!(
                    "; recorded in {}: v{version} on {}",
                    crate::ledger::path(root, &image).display(),
                    ok_nodes.join(", ")
                ),
                Ok(None) => String::new(),
                Err(e) => format!("; the ledger could not record the verified nodes: {e:#}"),
            }
        };
        let message = summarize(
            &outcome.failures,
            outcome.reports.len(),
            &if ok_nodes.is_empty() {
                "nothing was stored".to_owned()
            } else {
                format!(
                    "the template is verified on: {}{recorded}",
                    ok_nodes.join(", ")
                )
            },
        );
        return Err(UploadFailed {
            json: failure_json(&message, 1, Some(&outcome), &outcome.failures),
            message,
            code: 1,
        });
    }
    let ledger = record_in_ledger(root, &local.file_name, &outcome.reports).map_err(|e| {
        let message = format!(
            "the template is uploaded and verified, but the ledger could not record it: {e:#}\n  fix: the upload itself needs no repeat; fix the ledger file and record it by uploading to a new node, or edit versions/ by hand"
        );
        UploadFailed {
            json: failure_json(&message, 1, Some(&outcome), &[]),
            message,
            code: 1,
        }
    })?;
    match &ledger {
        Some((image, version)) => ui.info(format!(
            "recorded in {}: v{version}",
            crate::ledger::path(root, image).display()
        )),
        None => ui.warn(format!(
            "{} is not a version recorded in versions/ (built elsewhere?), so no ledger entry was written",
            local.file_name
        )),
    }
    ui.stage(
        "upload",
        format!(
            "done: {} verified on {} node(s)",
            outcome
                .reports
                .first()
                .map(|r| r.volid.as_str())
                .unwrap_or(""),
            outcome.reports.len()
        ),
    );
    Ok(json!({
        "ok": true,
        "file": local.path,
        "size": local.size,
        "sha256": outcome.sha256,
        "sha256_source": outcome.sha256_source,
        "uploads": outcome.reports,
        "ledger": ledger.map(|(image, version)| json!({ "image": image, "version": version })),
    }))
}

/// The image and version whose ledger records `file_name` (by the ledgers' prefixes), with
/// every verified upload added to it; `None` when no ledger knows the file.
fn record_in_ledger(
    root: &Path,
    file_name: &str,
    reports: &[UploadReport],
) -> anyhow::Result<Option<(String, u64)>> {
    use crate::ledger;
    for image in ledger::images(root) {
        let Some(l) = ledger::load(root, &image)? else {
            continue;
        };
        let Some(version) = crate::version::parse_version(&l.prefix, file_name) else {
            continue;
        };
        if l.entry(version).is_none() {
            continue;
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        for r in reports {
            ledger::record_upload(
                root,
                &image,
                version,
                ledger::UploadRecord {
                    node: r.node.clone(),
                    storage: r.storage.clone(),
                    volid: r.volid.clone(),
                    size: r.size,
                    sha256: r.sha256.clone(),
                    upid: r.upid.clone(),
                    uploaded_at: now.clone(),
                },
            )?;
        }
        return Ok(Some((image, version)));
    }
    Ok(None)
}

/// One error as is; several as a list under a headline.
fn summarize(failures: &[NodeFailure], succeeded: usize, state: &str) -> String {
    if let [only] = failures
        && succeeded == 0
    {
        return if only.node.is_empty() {
            only.error.to_string()
        } else {
            format!("node '{}': {}", only.node, only.error)
        };
    }
    let mut s = format!(
        "the upload failed on {} of {} node(s); {state}",
        failures.len(),
        failures.len() + succeeded
    );
    for f in failures {
        let node = if f.node.is_empty() {
            "all".to_owned()
        } else {
            format!("'{}'", f.node)
        };
        s.push_str(&format!(
            "\n- node {node}: {}",
            f.error.to_string().replace('\n', "\n  ")
        ));
    }
    s
}
