//! Downloads a rootfs base from a URL into the cache, verified against its pinned sha256.
//! The file is streamed to disk under a temporary name and renamed only once the hash matches,
//! so the cache never holds a partial or unverified base.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::ui::Ui;

pub async fn download(url: &str, sha256: &str, cache: &Path, ui: &Ui) -> anyhow::Result<PathBuf> {
    let dest = cache.join(format!("rootfs-{sha256}"));
    if dest.is_file() {
        ui.info(format!("{url} is cached as {}", dest.display()));
        return Ok(dest);
    }
    tokio::fs::create_dir_all(cache)
        .await
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot download the rootfs base {url}"))?;
    if !resp.status().is_success() {
        bail!(
            "cannot download the rootfs base {url}: the server answered {}\n  fix: check base.rootfs in the definition",
            resp.status()
        );
    }
    let progress = ui.bytes("download", resp.content_length());
    let tmp = cache.join(format!(".rootfs-{sha256}.{}.partial", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("the download of {url} broke off"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            progress.inc(chunk.len() as u64);
        }
        file.sync_all().await?;
        let got = hex::encode(hasher.finalize());
        if got != sha256 {
            bail!(
                "the rootfs downloaded from {url} has sha256 {got}, but the definition pins {sha256}\n  fix: the file on the server changed; check it and update base.sha256 if the change is intended"
            );
        }
        tokio::fs::rename(&tmp, &dest).await?;
        Ok(dest.clone())
    }
    .await;
    progress.finish();
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
