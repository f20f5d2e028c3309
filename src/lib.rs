//! lxcforge: golden LXC templates for Proxmox VE, built through the Docker Engine API.
//!
//! One module per stage of the pipeline (`build::run` strings them together):
//! `definition` → `engine` (base, container, scripts) → `pack` (export stream → tar.gz) →
//! `artifact` (staging, sidecar, manifest) → `version` (numbering, reservations); `gc` removes
//! what builds that died could not.
pub mod artifact;
pub mod build;
pub mod definition;
pub mod engine;
pub mod export;
pub mod fetch;
pub mod gc;
pub mod pack;
pub mod ui;
pub mod validate;
pub mod version;
