//! `lxcforge export`: pack any existing container the way a build does, for containers built
//! elsewhere, for debugging, and for benchmarks. The output is staged beside its final name and
//! linked into place only when complete; an existing file is never overwritten.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::build::{Provenance, export_container};
use crate::engine::Engine;
use crate::pack::{Compression, PackOptions};
use crate::ui::Ui;

#[derive(Debug, Serialize)]
pub struct ExportResult {
    pub output: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub tar_size: u64,
    pub tar_sha256: String,
    pub members: u64,
    pub dropped: Vec<String>,
    pub seconds: f64,
}

pub async fn export_to_file(
    container: &str,
    output: &Path,
    compression: Compression,
    threads: usize,
    source_date_epoch: Option<u64>,
    ui: &Ui,
) -> anyhow::Result<ExportResult> {
    let started = std::time::Instant::now();
    if output.exists() {
        anyhow::bail!(
            "{} already exists; lxcforge never overwrites\n  fix: choose another output name or remove the file",
            output.display()
        );
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let engine = Engine::connect().await?;
    let info = engine.docker().inspect_container(container, None).await.map_err(|e| {
        anyhow::anyhow!("cannot find container '{container}' on {}: {e}\n  fix: list containers with `docker ps -a`", engine.endpoint)
    })?;
    let id = info.id.unwrap_or_else(|| container.to_owned());
    let epoch = Provenance::collect(&dir, source_date_epoch).source_date_epoch;
    let staging = tempfile::Builder::new()
        .prefix(".lxcforge-export-")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a staging directory in {}", dir.display()))?;
    let name = output.file_name().context("the output needs a file name")?;
    let staged = staging.path().join(name);
    ui.stage("export", format!("{container} → {}", output.display()));
    let opts = PackOptions {
        source_date_epoch: epoch,
        compression,
        threads,
        spool_dir: staging.path().to_owned(),
    };
    let report = tokio::select! {
        r = export_container(&engine, &id, &staged, &opts, ui) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!(crate::build::BuildError::Interrupted { signal: "SIGINT", exit_code: 130, clean: true }),
    };
    std::fs::hard_link(&staged, output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} appeared while packing; lxcforge never overwrites",
                output.display()
            )
        } else {
            anyhow::anyhow!(
                "cannot move the output into place at {}: {e}",
                output.display()
            )
        }
    })?;
    ui.stage(
        "done",
        format!("{} ({} members)", output.display(), report.members),
    );
    Ok(ExportResult {
        output: output.to_owned(),
        sha256: report.sha256,
        size: report.compressed_bytes,
        tar_size: report.tar_bytes,
        tar_sha256: report.tar_sha256,
        members: report.members,
        dropped: report.dropped,
        seconds: started.elapsed().as_secs_f64(),
    })
}
