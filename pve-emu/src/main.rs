//! `pve-emu`: the Proxmox VE API emulator as a process (for bench/upload.sh and manual checks).
//!
//! Prints one JSON line once listening, then serves until SIGTERM/SIGINT.

use clap::Parser;
use pve_emu::{Config, Emulator, StorageConfig, TokenConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pve-emu",
    about = "Proxmox VE API emulator (upload, storage, tasks) on 127.0.0.0/8 with a self-signed certificate"
)]
struct Args {
    /// Address to listen on; only 127.0.0.0/8 is accepted.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// USER@REALM!ID=SECRET; all datastore privileges on all storages. Repeatable; replaces the
    /// default token automation@pve!ci=00000000-0000-4000-8000-000000000001.
    #[arg(long = "token", value_name = "USER@REALM!ID=SECRET")]
    tokens: Vec<String>,
    /// ID[:content,content][:shared] (a dir storage, 100 GiB). Repeatable; replaces the default
    /// "local:vztmpl,iso,backup".
    #[arg(long = "storage", value_name = "ID[:CONTENT,…][:shared]")]
    storages: Vec<String>,
    /// Cluster node; the first one receives the requests. Repeatable; default "pve".
    #[arg(long = "node", value_name = "N")]
    nodes: Vec<String>,
    /// Emulated Proxmox VE version.
    #[arg(long, default_value = "8.2.4")]
    pve_version: String,
    /// Where the storages live; default a temporary directory removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Delay of authentication failures in milliseconds (real Proxmox: 3000).
    #[arg(long, default_value_t = 3000)]
    auth_delay_ms: u64,
    /// How long tasks stay running, in milliseconds.
    #[arg(long, default_value_t = 200)]
    task_ms: u64,
}

fn parse_token(s: &str) -> Result<TokenConfig, String> {
    let (id, secret) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("--token '{s}': expected USER@REALM!ID=SECRET (no '=' found)"))?;
    let (user, token) = id
        .split_once('!')
        .ok_or_else(|| format!("--token '{s}': expected USER@REALM!ID=SECRET (no '!' found)"))?;
    if !user.contains('@') {
        return Err(format!(
            "--token '{s}': the user needs a realm (USER@REALM)"
        ));
    }
    Ok(TokenConfig::full(user, token, secret))
}

fn parse_storage(s: &str) -> Result<StorageConfig, String> {
    let mut parts = s.split(':');
    let id = parts.next().unwrap_or_default();
    if id.is_empty() {
        return Err(format!("--storage '{s}': empty storage id"));
    }
    let mut st = StorageConfig::dir(id, &["vztmpl", "iso", "backup"]);
    if let Some(content) = parts.next() {
        st.content = content
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
    }
    for p in parts {
        match p {
            "shared" => st.shared = true,
            other => {
                return Err(format!(
                    "--storage '{s}': unknown flag '{other}' (only 'shared')"
                ));
            }
        }
    }
    Ok(st)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("pve-emu: {e}");
        std::process::exit(2);
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut cfg = Config {
        listen: args.listen,
        pve_version: args.pve_version,
        data_dir: args.data_dir.clone(),
        auth_failure_delay: Duration::from_millis(args.auth_delay_ms),
        task_duration: Duration::from_millis(args.task_ms),
        ..Config::default()
    };
    if !args.tokens.is_empty() {
        cfg.tokens = args
            .tokens
            .iter()
            .map(|t| parse_token(t))
            .collect::<Result<_, _>>()?;
    }
    if !args.storages.is_empty() {
        cfg.storages = args
            .storages
            .iter()
            .map(|s| parse_storage(s))
            .collect::<Result<_, _>>()?;
    }
    if !args.nodes.is_empty() {
        cfg.entry_node = args.nodes[0].clone();
        cfg.nodes = args.nodes.clone();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let emu = Emulator::start(cfg)
            .await
            .map_err(|e| format!("cannot start: {e}"))?;
        let data_dir = emu.data_dir();
        let pem_file = data_dir.join("pve-ssl.pem");
        std::fs::write(&pem_file, emu.cert_pem())
            .map_err(|e| format!("cannot write {}: {e}", pem_file.display()))?;
        let line = serde_json::json!({
            "base_url": emu.base_url(),
            "api_url": emu.api_url(),
            "fingerprint": emu.fingerprint_sha256(),
            "cert_pem_file": pem_file,
            "data_dir": data_dir,
            "pid": std::process::id(),
        });
        println!("{line}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("signal: {e}"))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        emu.shutdown().await;
        Ok(())
    })
}
