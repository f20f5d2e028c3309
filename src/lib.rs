//! lxcforge: golden LXC templates for Proxmox VE, built through the Docker Engine API.
//!
//! One module per stage of the pipeline (see `build::run`):
//! definition → engine (base, container, scripts) → pack (export → tar.gz) → artifact (staging,
//! sidecar, manifest) → version.
pub mod pack;
