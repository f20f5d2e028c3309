//! The build pipeline, one named stage after another:
//!
//! 1. `reserve`   — take the version number (never one that exists);
//! 2. `base`      — pull the pinned image or import the rootfs tarball;
//! 3. `container` — create and start the build container;
//! 4. `scripts`   — copy scripts in, run provision then cleanup, stop at the first failure;
//! 5. `inventory` — the package list, for the manifest;
//! 6. `export`    — stream the container's filesystem through the packer into staging;
//! 7. `validate`  — check the staged template against what `pct create` will do;
//! 8. `publish`   — write the sidecar and manifest, link all three into place.
//!
//! Whatever a stage creates is registered in `Cleanup` first; `run` removes it on every exit
//! path: success, failure, Ctrl-C (exit 130) and SIGTERM (exit 143).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::artifact::{self, ArtifactInfo, ImageInfo, Manifest, Staging, ToolInfo};
use crate::definition::{Base, Definition, RootfsSource};
use crate::engine::{self, Engine, ResolvedBase};
use crate::pack::{self, Compression, PackOptions};
use crate::ui::Ui;
use crate::version::{self, Reservation};

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `Some(n)`: exactly vN; `None`: the next free version.
    pub version: Option<u64>,
    pub out_dir: PathBuf,
    pub script_timeout: Option<Duration>,
    pub compression: Compression,
    pub threads: usize,
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug)]
pub struct BuildResult {
    pub artifact: PathBuf,
    pub sha256_file: PathBuf,
    pub manifest_file: PathBuf,
    pub manifest: Manifest,
}

/// How a build ended when it did not produce an artifact.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
    #[error("interrupted by {signal}; everything the build created was removed")]
    Interrupted {
        signal: &'static str,
        exit_code: i32,
    },
}

/// Things to undo, registered as soon as they exist.
#[derive(Default)]
pub struct Cleanup {
    container: Mutex<Option<String>>,
    dirs: Mutex<Vec<PathBuf>>,
}

impl Cleanup {
    fn container(&self, id: &str) {
        *self.container.lock().unwrap() = Some(id.to_owned());
    }
    fn dir(&self, p: &Path) {
        self.dirs.lock().unwrap().push(p.to_owned());
    }
    /// Runs every undo step; reports (does not hide) what it could not remove.
    pub async fn run(&self, engine: Option<&Engine>, ui: &Ui) {
        let container = self.container.lock().unwrap().take();
        if let (Some(id), Some(engine)) = (container.as_ref(), engine) {
            match engine.remove_container(id).await {
                Ok(()) => ui.info(format!("removed build container {}", short(id))),
                Err(e) => ui.warn(format!(
                    "could not remove build container {id}: {e}\n  fix: remove it with `docker rm -f {id}`"
                )),
            }
        }
        for d in self.dirs.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Runs the build with signal handling and cleanup on every path.
pub async fn run(
    def: &Definition,
    opts: &BuildOptions,
    ui: &Ui,
) -> Result<BuildResult, BuildError> {
    let cleanup = Cleanup::default();
    let engine_slot: tokio::sync::OnceCell<Engine> = tokio::sync::OnceCell::new();
    let outcome = {
        let work = pipeline(def, opts, ui, &cleanup, &engine_slot);
        tokio::pin!(work);
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| BuildError::Failed(e.into()))?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| BuildError::Failed(e.into()))?;
        tokio::select! {
            r = &mut work => r.map_err(BuildError::Failed),
            _ = sigint.recv() => Err(BuildError::Interrupted { signal: "SIGINT", exit_code: 130 }),
            _ = sigterm.recv() => Err(BuildError::Interrupted { signal: "SIGTERM", exit_code: 143 }),
        }
    };
    if let Err(BuildError::Interrupted { signal, .. }) = &outcome {
        ui.stage(
            "cleanup",
            format!("{signal} received, removing what the build created"),
        );
    }
    cleanup.run(engine_slot.get(), ui).await;
    outcome
}

async fn pipeline(
    def: &Definition,
    opts: &BuildOptions,
    ui: &Ui,
    cleanup: &Cleanup,
    engine_slot: &tokio::sync::OnceCell<Engine>,
) -> anyhow::Result<BuildResult> {
    use anyhow::Context;
    let mut timings = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut BTreeMap<String, f64>| {
        timings.insert(
            format!("{:02}-{name}", timings.len() + 1),
            clock.elapsed().as_secs_f64(),
        );
        clock = Instant::now();
    };
    let build_id = build_id();
    let provenance = Provenance::collect(&def.root, opts.source_date_epoch);

    // 1. reserve
    std::fs::create_dir_all(&opts.out_dir).with_context(|| {
        format!(
            "cannot create the output directory {}",
            opts.out_dir.display()
        )
    })?;
    let reservation = Reservation::acquire(&opts.out_dir, &def.prefix, opts.version)?;
    let ext = opts.compression.extension();
    let file_name = version::artifact_name(&def.prefix, reservation.version, ext);
    ui.stage(
        "reserve",
        format!("{} → {}", def.name, opts.out_dir.join(&file_name).display()),
    );
    lap("reserve", &mut timings);

    // 2. base
    let engine = engine_slot.get_or_try_init(Engine::connect).await?;
    ui.stage(
        "base",
        format!("{} (engine: {})", def.base.describe(), engine.endpoint),
    );
    let base = resolve_base(engine, def, ui).await?;
    ui.info(format!("base digest {}", base.digest));
    lap("base", &mut timings);

    // 3. container
    let name = engine::container_name(&def.name, &build_id);
    let id = engine
        .create_container(&base.image, &name, &build_id)
        .await?;
    cleanup.container(&id);
    engine.start_container(&id).await?;
    ui.stage("container", format!("{name} ({})", short(&id)));
    lap("container", &mut timings);

    // 4. scripts
    let scripts: Vec<_> = def.scripts().collect();
    let paths = engine.upload_scripts(&id, &scripts).await?;
    let env = script_env(def, reservation.version, &provenance, &base, &build_id);
    for (script, path) in scripts.iter().zip(&paths) {
        let label = script.file_name();
        ui.stage(&script.stage.to_string(), &script.path);
        engine
            .run_script(
                &id,
                path,
                &label,
                &env,
                opts.script_timeout.or(def.script_timeout),
                ui,
            )
            .await?;
    }
    // The scripts' own directory is build scaffolding, not part of the image.
    let (code, _) = engine
        .capture(&id, &["rm", "-rf", engine::SCRIPT_DIR])
        .await?;
    anyhow::ensure!(
        code == 0,
        "could not remove {} from the build container",
        engine::SCRIPT_DIR
    );
    lap("scripts", &mut timings);

    // 5. inventory
    let (code, lines) = engine
        .capture(
            &id,
            &[
                "dpkg-query",
                "-W",
                "-f",
                "${Package}\t${Version}\t${Architecture}\n",
            ],
        )
        .await?;
    let packages = if code == 0 {
        artifact::parse_packages(&lines)
    } else {
        Vec::new()
    };
    if code != 0 {
        ui.warn("dpkg-query failed in the container; the manifest lists no packages");
    }
    lap("inventory", &mut timings);

    // 6. export
    let staging = Staging::create(&opts.out_dir, &build_id)?;
    cleanup.dir(&staging.dir);
    ui.stage(
        "export",
        format!("packing the container filesystem ({ext})"),
    );
    let report = export_container(
        engine,
        &id,
        &staging.path(&file_name),
        &PackOptions {
            source_date_epoch: provenance.source_date_epoch,
            compression: opts.compression,
            threads: opts.threads,
            spool_dir: staging.dir.clone(),
        },
        ui,
    )
    .await?;
    ui.info(format!(
        "{} members, {} → {} ({})",
        report.members,
        crate::ui::human_bytes(report.tar_bytes),
        crate::ui::human_bytes(report.compressed_bytes),
        &report.sha256[..16]
    ));
    lap("export", &mut timings);

    // 7. validate: never publish a template that `pct create` would refuse.
    ui.stage(
        "validate",
        "checking the template against what pct create does",
    );
    let staged = staging.path(&file_name);
    let checked = tokio::task::spawn_blocking(move || {
        crate::validate::validate_file(&staged, &crate::validate::ValidateOptions::default())
    })
    .await
    .context("the validator thread died")?
    .context("cannot read the packed template back")?;
    let validation = artifact::Validation::from_report(&checked);
    for f in &validation.findings {
        ui.info(f);
    }
    if !checked.passed() {
        anyhow::bail!(
            "the template failed validation, so it was not published:\n{}  fix: correct the provision/cleanup scripts; `lxcforge validate <file>` explains each check",
            checked.render_table()
        );
    }
    ui.info(format!(
        "{} checks passed, {} warnings (Proxmox VE {})",
        validation.pass, validation.warn, validation.pve_version
    ));
    lap("validate", &mut timings);

    // 8. publish
    let manifest = Manifest {
        schema: 1,
        tool: ToolInfo::default(),
        image: ImageInfo {
            name: def.name.clone(),
            definition: def
                .path
                .strip_prefix(&def.root)
                .unwrap_or(&def.path)
                .display()
                .to_string(),
            definition_sha256: def.sha256.clone(),
            description: def.description.clone(),
            prefix: def.prefix.clone(),
        },
        version: reservation.version,
        artifact: ArtifactInfo {
            file: file_name.clone(),
            sha256: report.sha256.clone(),
            size: report.compressed_bytes,
            compression: opts.compression.name().to_owned(),
            tar_size: report.tar_bytes,
            tar_sha256: report.tar_sha256.clone(),
            members: report.members,
            dropped: report.dropped.clone(),
        },
        base,
        scripts: scripts.into_iter().cloned().collect(),
        git_commit: provenance.git_commit.clone(),
        source_date_epoch: provenance.source_date_epoch,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        packages,
        validation,
        timings: timings.clone(),
    };
    let sha_name = format!("{file_name}.sha256");
    let json_name = manifest_name(&file_name);
    staging.write(
        &sha_name,
        artifact::sha256_sidecar(&report.sha256, &file_name).as_bytes(),
    )?;
    let mut manifest_json = serde_json::to_vec_pretty(&manifest)?;
    manifest_json.push(b'\n');
    staging.write(&json_name, &manifest_json)?;
    // The archive goes last: its presence is what marks the version as built.
    staging.publish(&[&sha_name, &json_name, &file_name])?;
    staging.remove();
    drop(reservation);
    ui.stage("done", opts.out_dir.join(&file_name).display());
    Ok(BuildResult {
        artifact: opts.out_dir.join(&file_name),
        sha256_file: opts.out_dir.join(&sha_name),
        manifest_file: opts.out_dir.join(&json_name),
        manifest,
    })
}

/// `x-v1.tar.gz` → `x-v1.json`.
pub fn manifest_name(artifact_file: &str) -> String {
    let stem = version::EXTENSIONS
        .iter()
        .find_map(|e| artifact_file.strip_suffix(&format!(".{e}")))
        .unwrap_or(artifact_file);
    format!("{stem}.json")
}

async fn resolve_base(engine: &Engine, def: &Definition, ui: &Ui) -> anyhow::Result<ResolvedBase> {
    Ok(match &def.base {
        Base::Image {
            reference,
            repository,
            tag,
            digest,
        } => {
            engine
                .ensure_image(reference, repository, tag.as_deref(), digest.as_deref(), ui)
                .await?
        }
        Base::Rootfs { source, sha256 } => {
            let (path, display) = match source {
                RootfsSource::Path(p) => (
                    p.clone(),
                    p.strip_prefix(&def.root).unwrap_or(p).display().to_string(),
                ),
                RootfsSource::Url(u) => {
                    let expected = sha256
                        .as_deref()
                        .expect("definition requires sha256 for URLs");
                    (
                        crate::fetch::download(u, expected, &engine::cache_dir(&def.root), ui)
                            .await?,
                        u.clone(),
                    )
                }
            };
            engine
                .ensure_rootfs(&def.name, &path, &display, sha256.as_deref(), ui)
                .await?
        }
    })
}

/// Streams `docker export` through the packer into `dest`, on a blocking thread (the tar crate
/// is synchronous), with bounded buffers all the way.
pub async fn export_container(
    engine: &Engine,
    id: &str,
    dest: &Path,
    opts: &PackOptions,
    ui: &Ui,
) -> anyhow::Result<pack::PackReport> {
    use anyhow::Context;
    // The size is only a progress-bar total, and the engine walks the whole filesystem to
    // compute it: ask only when a bar is drawn.
    let total = if !ui.draws_bars() {
        None
    } else {
        engine
            .docker()
            .inspect_container(
                id,
                Some(
                    bollard::query_parameters::InspectContainerOptionsBuilder::default()
                        .size(true)
                        .build(),
                ),
            )
            .await
            .ok()
            .and_then(|c| c.size_root_fs)
            .map(|s| s.max(0) as u64)
    };
    let progress = ui.bytes("export", total);
    let reader = StreamReader::new(engine.export(id));
    let file =
        std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let sync_file = file.try_clone()?;
    let opts = opts.clone();
    let p2 = progress.clone();
    let report = tokio::task::spawn_blocking(move || {
        let input = SyncIoBridge::new(reader);
        pack::pack(input, file, &opts, &|n| p2.set(n))
    })
    .await
    .context("the packer thread died")?;
    let report = match report {
        Ok(r) => r,
        Err(e @ pack::PackError::DiskFull { .. }) => anyhow::bail!(
            "cannot pack container {} into {}: {e}\n  fix: free space in {} or pass another --out-dir",
            short(id),
            dest.display(),
            dest.parent().unwrap_or(dest).display()
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot pack container {} into {}",
                short(id),
                dest.display()
            )));
        }
    };
    progress.finish();
    sync_file
        .sync_all()
        .with_context(|| format!("cannot flush {} to disk", dest.display()))?;
    Ok(report)
}

/// Where the build came from, passed to scripts and recorded in the manifest.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub git_commit: String,
    pub source_date_epoch: u64,
}

impl Provenance {
    /// SOURCE_DATE_EPOCH: the explicit value, else the environment's, else the commit time,
    /// else now. The commit gets a `-dirty` suffix when tracked files have changed.
    pub fn collect(root: &Path, explicit_epoch: Option<u64>) -> Provenance {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let mut git_commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if git_commit != "unknown"
            && git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty())
        {
            git_commit.push_str("-dirty");
        }
        let source_date_epoch = explicit_epoch
            .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok())
            .or_else(|| git(&["log", "-1", "--format=%ct"])?.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
        Provenance {
            git_commit,
            source_date_epoch,
        }
    }
}

fn script_env(
    def: &Definition,
    version: u64,
    p: &Provenance,
    base: &ResolvedBase,
    build_id: &str,
) -> Vec<String> {
    let mut env: Vec<String> = vec![
        "DEBIAN_FRONTEND=noninteractive".into(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "LC_ALL=C".into(),
        format!("LXCFORGE_IMAGE={}", def.name),
        format!("LXCFORGE_PREFIX={}", def.prefix),
        format!("LXCFORGE_VERSION={version}"),
        format!("LXCFORGE_BUILD_ID={build_id}"),
        format!("LXCFORGE_GIT_COMMIT={}", p.git_commit),
        format!("LXCFORGE_BASE_REF={}", base.reference),
        format!("LXCFORGE_BASE_DIGEST={}", base.digest),
        format!("LXCFORGE_TOOL_VERSION={}", env!("CARGO_PKG_VERSION")),
        format!("SOURCE_DATE_EPOCH={}", p.source_date_epoch),
    ];
    env.extend(def.env.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// Short, unique per run, safe in container and file names.
fn build_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:04x}",
        std::process::id(),
        (nanos & 0xffff_ffff) as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        assert_eq!(manifest_name("x-v1.tar.gz"), "x-v1.json");
        assert_eq!(manifest_name("x-v2.tar.zst"), "x-v2.json");
        assert_eq!(manifest_name("x-v3.tar"), "x-v3.json");
    }

    #[test]
    fn explicit_epoch_wins() {
        let p = Provenance::collect(Path::new("/nonexistent"), Some(42));
        assert_eq!(p.source_date_epoch, 42);
        assert_eq!(p.git_commit, "unknown");
    }
}
