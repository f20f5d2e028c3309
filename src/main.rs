//! The `lxcforge` command line: a thin layer over the library's stages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;

use lxcforge::build::{self, BuildError, BuildOptions};
use lxcforge::definition::{self, Definition, LoadOptions};
use lxcforge::pack::{self, Compression};
use lxcforge::remote::TemplateStore;
use lxcforge::ui::Ui;
use lxcforge::validate;
use lxcforge::version;
use lxcforge::{diff, ledger, listing, promote};

/// Build golden LXC templates for Proxmox VE through the Docker Engine API.
///
/// An image definition (images/<name>.toml) names a base image pinned by digest or a rootfs
/// tarball pinned by sha256, and the provision and cleanup scripts to run. lxcforge runs them in
/// a build container, then streams the container's filesystem into a Proxmox-ready
/// <prefix>-v<N>.tar.gz with a .sha256 sidecar and a .json manifest.
#[derive(Parser, Debug)]
#[command(name = "lxcforge", version, max_term_width = 100)]
struct Cli {
    /// Project root holding images/, provision/ and cleanup/.
    #[arg(long, global = true, default_value = ".", env = "LXCFORGE_ROOT")]
    root: PathBuf,
    /// Print a machine-readable result on stdout (human output stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Only errors and warnings on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image definition into a versioned template artifact.
    Build(BuildArgs),
    /// Pack an existing container's filesystem into a template (as `build` does).
    Export(ExportArgs),
    /// Check a template against what `pct create` will do (any template, not only ours).
    ///
    /// One streaming read, nothing extracted. Exit 0: all checks passed (warnings allowed);
    /// 1: a check failed; 2: the file could not be read.
    Validate {
        /// The template: .tar.gz, .tar.zst, .tar.xz or .tar.
        file: PathBuf,
        /// Target Proxmox VE release, e.g. 8.2 (default: the newest known).
        #[arg(long, value_name = "X.Y")]
        pve_version: Option<String>,
        /// Give up (exit 2) when reading the file takes longer than this.
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
        time_budget: std::time::Duration,
    },
    /// Print the next free version number of an image.
    ///
    /// 1 + the highest version among the local artifacts, the ledger (versions/<IMAGE>.json)
    /// and, with --remote or whenever Proxmox settings (PM_*) are present, the templates on
    /// the Proxmox storage.
    NextVersion {
        /// Definition name (images/<NAME>.toml) or path.
        image: String,
        #[arg(long, default_value = "artifacts")]
        out_dir: PathBuf,
        /// Also list the Proxmox storage (an error without Proxmox settings).
        #[arg(long)]
        remote: bool,
    },
    /// List the versions of an image (or of all images): size, date, sha256, validation,
    /// where uploaded, and which one Terraform pins.
    List {
        /// Definition name; all images with a definition or a ledger when omitted.
        image: Option<String>,
        #[arg(long, default_value = "artifacts")]
        out_dir: PathBuf,
        /// Also list the Proxmox storage (an error without Proxmox settings).
        #[arg(long)]
        remote: bool,
    },
    /// Pin a version for Terraform: writes versions/<IMAGE>.auto.tfvars.json.
    ///
    /// Refused unless the version is in the ledger, passed validation, and is on the storage
    /// (every configured node of it) with the recorded size and sha256.
    Promote {
        /// Definition name (images/<IMAGE>.toml) or path.
        image: String,
        /// The version: vN or N.
        version: String,
        /// The Proxmox storage holding it, e.g. local.
        #[arg(long)]
        storage: String,
    },
    /// What changes between two artifacts: files added, removed and changed, packages.
    ///
    /// `diff IMAGE vA vB` compares two versions in the output directory; `diff A B` two files.
    Diff {
        /// IMAGE vA vB, or FILE_A FILE_B.
        #[arg(num_args = 2..=3, value_names = ["IMAGE|FILE_A", "vA|FILE_B", "vB"], required = true)]
        args: Vec<String>,
        #[arg(long, default_value = "artifacts")]
        out_dir: PathBuf,
        /// Lines per list in the human output (--json lists everything).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List the image definitions in the project.
    Images,
    Upload(lxcforge::proxmox::cli::UploadArgs),
    /// Remove build containers left by builds that died (killed, or the engine was gone).
    ///
    /// Only containers whose build process is provably gone are removed; a build in progress,
    /// another machine's build and containers without lxcforge's owner label are left alone.
    /// Every build does this for its project before it starts.
    Gc {
        /// Every project's leftover containers on this engine, not only this project's (--root).
        #[arg(long)]
        all: bool,
        /// Also remove dead builds' staging directories (partial artifacts) here.
        #[arg(long, default_value = "artifacts")]
        out_dir: PathBuf,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script, e.g. `lxcforge completions bash > /etc/bash_completion.d/lxcforge`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
struct PackArgs {
    /// Compression of the artifact: gzip (.tar.gz) or zstd (.tar.zst, Proxmox ≥ 7.0).
    #[arg(long, value_enum, default_value_t = Compress::Gzip)]
    compress: Compress,
    /// Compression level (gzip 1-12, zstd 1-19); default 4 for gzip (libdeflate level 4 is as
    /// small as `gzip -9` within 1% and keeps pace with the export), 3 for zstd.
    #[arg(long)]
    level: Option<i32>,
    /// Compression threads (default: all cores). The output bytes do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Clamp file times to this (default: $SOURCE_DATE_EPOCH, else the git commit time).
    #[arg(long)]
    source_date_epoch: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compress {
    Gzip,
    Zstd,
}

impl PackArgs {
    fn compression(&self) -> anyhow::Result<Compression> {
        Ok(match self.compress {
            Compress::Gzip => {
                let level = self.level.unwrap_or(pack::DEFAULT_GZIP_LEVEL as i32);
                anyhow::ensure!(
                    (1..=12).contains(&level),
                    "--level {level}: gzip levels are 1 to 12"
                );
                Compression::Gzip {
                    level: level as u32,
                }
            }
            Compress::Zstd => {
                let level = self.level.unwrap_or(3);
                anyhow::ensure!(
                    (1..=19).contains(&level),
                    "--level {level}: zstd levels are 1 to 19"
                );
                Compression::Zstd { level }
            }
        })
    }
    fn threads(&self) -> usize {
        self.threads
            .filter(|t| *t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// Definition name (images/<IMAGE>.toml) or path to a .toml file.
    image: String,
    /// Build the next free version: 1 + the highest one present.
    #[arg(long, conflicts_with = "version")]
    next: bool,
    /// Build exactly version N (refused if it exists anywhere lxcforge can see).
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Also check the Proxmox storage for taken versions (an error without Proxmox settings;
    /// with PM_* settings present it is always checked).
    #[arg(long)]
    remote: bool,
    /// Accept a base image not pinned by digest.
    #[arg(long)]
    allow_unpinned: bool,
    /// Stop a script that runs longer than this (e.g. 30m); overrides the definition.
    #[arg(long, value_parser = humantime::parse_duration)]
    script_timeout: Option<Duration>,
    /// Where artifacts are written.
    #[arg(long, default_value = "artifacts")]
    out_dir: PathBuf,
    #[command(flatten)]
    pack: PackArgs,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Container name or id on the engine.
    container: String,
    /// Output file; its extension must match --compress (.tar.gz or .tar.zst).
    output: PathBuf,
    #[command(flatten)]
    pack: PackArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(cli.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    match rt.block_on(run(cli, &ui)) {
        Ok(value) => {
            if json && !value.is_null() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<Exit>()
                && exit.quiet
            {
                // The result was already printed (e.g. a validation report); say why we fail.
                eprintln!("error: {}", exit.error);
                return ExitCode::from(exit.code as u8);
            }
            let (msg, code) = match (e.downcast_ref::<BuildError>(), e.downcast_ref::<Exit>()) {
                (Some(BuildError::Interrupted { exit_code, .. }), _) => (e.to_string(), *exit_code),
                (_, Some(exit)) => (format!("{:#}", exit.error), exit.code),
                _ => (format!("{e:#}"), 1),
            };
            eprintln!("error: {msg}");
            if json {
                println!(
                    "{}",
                    json!({ "ok": false, "error": msg, "exit_code": code })
                );
            }
            ExitCode::from(code as u8)
        }
    }
}

/// An error with a specific exit code (validate: 1 failed checks, 2 unreadable input).
#[derive(Debug)]
struct Exit {
    code: i32,
    error: anyhow::Error,
    /// The details were printed already; only a one-line reason goes to stderr.
    quiet: bool,
}

impl Exit {
    fn new(code: i32, error: anyhow::Error) -> Exit {
        Exit {
            code,
            error,
            quiet: false,
        }
    }
    fn quiet(code: i32, msg: String) -> Exit {
        Exit {
            code,
            error: anyhow::anyhow!(msg),
            quiet: true,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

async fn run(cli: Cli, ui: &Ui) -> anyhow::Result<serde_json::Value> {
    let root = cli.root.clone();
    match cli.command {
        Command::Build(args) => {
            let def = definition::load(
                &root,
                &args.image,
                LoadOptions {
                    allow_unpinned: args.allow_unpinned,
                },
            )?;
            let out_dir = root.join(&args.out_dir);
            let stores = remote_stores(args.remote, None, ui)?;
            let seen = version::resolve(&root, &def.name, &def.prefix, &out_dir, &stores).await?;
            if !args.next && args.version.is_none() {
                anyhow::bail!(
                    "say which version to build\n  fix: pass --next (the next free version, v{}) or --version N",
                    seen.next()
                );
            }
            if let Some(n) = args.version {
                version::check_free(&seen, &def.prefix, n)?;
            }
            let opts = BuildOptions {
                version: args.version,
                out_dir: root.join(&args.out_dir),
                script_timeout: args.script_timeout,
                compression: args.pack.compression()?,
                threads: args.pack.threads(),
                source_date_epoch: args.pack.source_date_epoch,
                taken_elsewhere: seen.remote.clone(),
            };
            let result = build::run(&def, &opts, ui).await?;
            Ok(json!({
                "ok": true,
                "image": def.name,
                "version": result.manifest.version,
                "artifact": result.artifact,
                "sha256": result.manifest.artifact.sha256,
                "size": result.manifest.artifact.size,
                "sha256_file": result.sha256_file,
                "manifest": result.manifest_file,
                "ledger": ledger::path(&root, &def.name),
            }))
        }
        Command::Export(args) => {
            let compression = args.pack.compression()?;
            let name = args
                .output
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            anyhow::ensure!(
                name.ends_with(&format!(".{}", compression.extension())),
                "{}: the name must end in .{} for {} output (Proxmox picks the decompressor by extension)\n  fix: rename the output or pass the matching --compress",
                args.output.display(),
                compression.extension(),
                compression.name()
            );
            let out = lxcforge::export::export_to_file(
                &args.container,
                &args.output,
                compression,
                args.pack.threads(),
                args.pack.source_date_epoch,
                ui,
            )
            .await?;
            Ok(serde_json::to_value(out)?)
        }
        Command::Validate {
            file,
            pve_version,
            time_budget,
        } => {
            let pve_version = pve_version
                .map(|v| {
                    v.parse::<validate::PveVersion>()
                        .map_err(|e| anyhow::anyhow!("--pve-version {v}: {e}"))
                })
                .transpose()
                .map_err(|e| Exit::new(2, e))?;
            let opts = validate::ValidateOptions {
                pve_version,
                time_budget,
            };
            let report = validate::validate_file(&file, &opts)
                .map_err(|e| Exit::new(2, anyhow::anyhow!(e.to_string())))?;
            if !cli.json {
                print!("{}", report.render_table());
            }
            let code = report.exit_code();
            let value = serde_json::to_value(&report)?;
            if code != 0 {
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&value)?);
                }
                let (_, _, failed) = report.counts();
                return Err(Exit::quiet(
                    code,
                    format!("{}: {failed} check(s) failed", file.display()),
                )
                .into());
            }
            Ok(value)
        }
        Command::NextVersion {
            image,
            out_dir,
            remote,
        } => {
            let def = load_any(&root, &image)?;
            let stores = remote_stores(remote, None, ui)?;
            let seen =
                version::resolve(&root, &def.name, &def.prefix, &root.join(out_dir), &stores)
                    .await?;
            let n = seen.next();
            if !cli.json {
                println!("{n}");
            }
            let max = |v: &[(u64, String)]| v.iter().map(|(n, _)| *n).max();
            Ok(json!({
                "image": def.name,
                "prefix": def.prefix,
                "next": n,
                "highest": { "local": max(&seen.local), "ledger": max(&seen.ledger), "remote": max(&seen.remote) },
                "stores": seen.stores,
            }))
        }
        Command::List {
            image,
            out_dir,
            remote,
        } => {
            let stores = remote_stores(remote, None, ui)?;
            let out_dir = root.join(out_dir);
            let names = match &image {
                Some(i) => vec![i.clone()],
                None => {
                    let mut n = definition::available(&root);
                    n.extend(ledger::images(&root));
                    n.sort();
                    n.dedup();
                    n
                }
            };
            let mut all = Vec::new();
            for name in names {
                // A ledger whose definition is gone still lists (with the ledger's prefix).
                let (image, prefix) = match load_any(&root, &name) {
                    Ok(d) => (d.name, d.prefix),
                    Err(e) => match ledger::load(&root, &name) {
                        Ok(Some(l)) => (l.image, l.prefix),
                        _ => return Err(e),
                    },
                };
                let l = listing::list(&root, &image, &prefix, &out_dir, &stores).await?;
                if !cli.json {
                    print!("{}", l.render());
                }
                all.push(l);
            }
            Ok(if image.is_some() {
                serde_json::to_value(&all[0])?
            } else {
                serde_json::to_value(&all)?
            })
        }
        Command::Promote {
            image,
            version: v,
            storage,
        } => {
            let def = load_any(&root, &image)?;
            let n = parse_version_arg(&v)?;
            // Without Proxmox settings there is nothing to verify against: the local checks
            // (recorded, validated) still run first, then the missing settings are reported.
            let stores = remote_stores(false, Some(&storage), ui)?;
            let p = match promote::promote(&root, &def.name, n, &storage, &stores).await {
                Err(promote::PromoteError::NoStore { .. }) if stores.is_empty() => {
                    return Err(remote_stores(true, Some(&storage), ui)
                        .err()
                        .unwrap_or_else(|| {
                            anyhow::anyhow!(
                                "no Proxmox store is configured for storage '{storage}'"
                            )
                        }));
                }
                r => r?,
            };
            ui.stage(
                "promote",
                format!("{} v{} → {}", p.image, p.version, p.volid),
            );
            ui.info(format!(
                "present on {} with {} bytes",
                p.verified_on.join(", "),
                p.size
            ));
            for w in &p.warnings {
                ui.warn(w);
            }
            if !cli.json {
                if p.changed {
                    print!("{}", p.diff);
                    println!("\n# commit the promotion:");
                    for c in &p.git {
                        println!("{c}");
                    }
                } else {
                    println!(
                        "{} already pins {}; nothing changed",
                        p.tfvars.display(),
                        p.volid
                    );
                }
            }
            let mut v = serde_json::to_value(&p)?;
            v["ok"] = json!(true);
            Ok(v)
        }
        Command::Diff {
            args,
            out_dir,
            limit,
        } => {
            let (a, b) = if args.len() == 3 {
                let def = load_any(&root, &args[0])?;
                let out_dir = root.join(out_dir);
                (
                    artifact_of(&root, &def, &out_dir, &args[1])?,
                    artifact_of(&root, &def, &out_dir, &args[2])?,
                )
            } else {
                (PathBuf::from(&args[0]), PathBuf::from(&args[1]))
            };
            ui.stage("diff", format!("{} → {}", a.display(), b.display()));
            let report = tokio::task::spawn_blocking(move || diff::diff(&a, &b)).await??;
            if !cli.json {
                print!("{}", report.render(limit));
            }
            Ok(serde_json::to_value(&report)?)
        }
        Command::Images => {
            let mut list = Vec::new();
            for name in definition::available(&root) {
                match definition::load(
                    &root,
                    &name,
                    LoadOptions {
                        allow_unpinned: true,
                    },
                ) {
                    Ok(d) => {
                        if !cli.json {
                            println!("{:<20} {:<32} {}", d.name, d.prefix, d.base.describe());
                        }
                        list.push(
                            json!({"name": d.name, "prefix": d.prefix, "base": d.base.describe()}),
                        );
                    }
                    Err(e) => {
                        ui.warn(format!("{e}"));
                        list.push(json!({"name": name, "error": e.to_string()}));
                    }
                }
            }
            Ok(json!(list))
        }
        Command::Upload(args) => lxcforge::proxmox::cli::run(args, &root, ui)
            .await
            .map_err(|f| {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&f.json).unwrap_or_default()
                    );
                }
                Exit::quiet(f.code, f.message).into()
            }),
        Command::Gc {
            all,
            out_dir,
            dry_run,
        } => {
            let engine = lxcforge::engine::Engine::connect().await?;
            let project = lxcforge::engine::project_id(&root);
            let scope = (!all).then_some(project.as_str());
            let mut swept = lxcforge::gc::sweep(&engine, scope, dry_run).await?;
            let containers = swept.len();
            swept.extend(lxcforge::gc::sweep_staging(&root.join(out_dir), dry_run));
            for (i, s) in swept.iter().enumerate() {
                let what = if i < containers {
                    "build container"
                } else {
                    "staging dir"
                };
                let line = format!("{} {what} {}: {}", s.action, s.name, s.reason);
                if s.action == "failed" {
                    ui.warn(line);
                } else {
                    ui.info(line);
                }
            }
            let removed = swept.iter().filter(|s| s.action == "removed").count();
            let failed = swept.iter().filter(|s| s.action == "failed").count();
            if swept.is_empty() {
                ui.info(format!(
                    "nothing to collect: no build containers of {} on {}, no staging dirs",
                    if all { "any project" } else { &project },
                    engine.endpoint
                ));
            }
            anyhow::ensure!(
                failed == 0,
                "{failed} leftover(s) could not be removed (see above)"
            );
            let (c, d) = swept.split_at(containers);
            Ok(json!({ "ok": true, "removed": removed, "containers": c, "staging": d }))
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lxcforge",
                &mut std::io::stdout(),
            );
            Ok(serde_json::Value::Null)
        }
    }
}

fn load_any(root: &std::path::Path, image: &str) -> anyhow::Result<Definition> {
    Ok(definition::load(
        root,
        image,
        LoadOptions {
            allow_unpinned: true,
        },
    )?)
}

/// `v3` or `3` → 3.
fn parse_version_arg(s: &str) -> anyhow::Result<u64> {
    s.strip_prefix('v')
        .unwrap_or(s)
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            anyhow::anyhow!("'{s}' is not a version\n  fix: write it as vN or N, e.g. v3")
        })
}

/// The local artifact of version `v` (`vN` or `N`) of `def`.
fn artifact_of(
    root: &std::path::Path,
    def: &Definition,
    out_dir: &std::path::Path,
    v: &str,
) -> anyhow::Result<PathBuf> {
    let n = parse_version_arg(v)?;
    if let Some((_, p)) = version::local_artifacts(out_dir, &def.prefix)
        .into_iter()
        .find(|(x, _)| *x == n)
    {
        return Ok(p);
    }
    let recorded = ledger::load(root, &def.name)?
        .and_then(|l| l.entry(n).map(|e| e.file.clone()))
        .map(|f| format!(" (the ledger records it as {f})"))
        .unwrap_or_default();
    anyhow::bail!(
        "v{n} of {} is not in {}{recorded}\n  fix: diff needs both archives on this machine; pass --out-dir where they are, or two file paths",
        def.name,
        out_dir.display()
    )
}

/// The Proxmox storages that next-version, build, list and promote consult: one store per
/// configured node (`PM_NODE`), on `storage` or the configured one. No Proxmox settings in the
/// environment → no stores (an error when `required`, i.e. `--remote`); settings present → they
/// are used, so a configured Proxmox is never silently ignored.
fn remote_stores(
    required: bool,
    storage: Option<&str>,
    ui: &Ui,
) -> anyhow::Result<Vec<Box<dyn TemplateStore>>> {
    if lxcforge::proxmox::store::configured_vars().is_empty() {
        if required {
            anyhow::bail!(
                "Proxmox settings are not configured (PM_API_URL and the other PM_* variables are unset), so the storage cannot be listed\n  fix: set PM_API_URL, PM_API_TOKEN_ID, PM_API_TOKEN_SECRET and PM_NODE, or leave out --remote to use the local artifacts and the ledger only"
            );
        }
        return Ok(Vec::new());
    }
    lxcforge::proxmox::store::stores_from_env(storage, ui)
        .context("the Proxmox settings in the environment cannot be used to list the storage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
