//! The `lxcforge` command line: a thin layer over the library's stages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;

use lxcforge::build::{self, BuildError, BuildOptions};
use lxcforge::definition::{self, LoadOptions};
use lxcforge::pack::{self, Compression};
use lxcforge::ui::Ui;
use lxcforge::validate;
use lxcforge::version;

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
    NextVersion {
        /// Definition name (images/<NAME>.toml) or path.
        image: String,
        #[arg(long, default_value = "artifacts")]
        out_dir: PathBuf,
    },
    /// List the image definitions in the project.
    Images,
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
    /// Build exactly version N (refused if it exists).
    #[arg(long, value_name = "N")]
    version: Option<u64>,
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
            if !args.next && args.version.is_none() {
                anyhow::bail!(
                    "say which version to build\n  fix: pass --next (the next free version, v{}) or --version N",
                    version::next_local(&root.join(&args.out_dir), &def.prefix)
                );
            }
            let opts = BuildOptions {
                version: args.version,
                out_dir: root.join(&args.out_dir),
                script_timeout: args.script_timeout,
                compression: args.pack.compression()?,
                threads: args.pack.threads(),
                source_date_epoch: args.pack.source_date_epoch,
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
        Command::NextVersion { image, out_dir } => {
            let def = definition::load(
                &root,
                &image,
                LoadOptions {
                    allow_unpinned: true,
                },
            )?;
            let n = version::next_local(&root.join(out_dir), &def.prefix);
            if !cli.json {
                println!("{n}");
            }
            Ok(json!({ "image": def.name, "prefix": def.prefix, "next": n }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
