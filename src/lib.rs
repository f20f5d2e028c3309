//! lxcforge: golden LXC templates for Proxmox VE, built through the Docker Engine API.
//!
//! One module per stage of the pipeline (`build::run` strings them together):
//! `definition` → `engine` (base, container, scripts) → `pack` (export stream → tar.gz) →
//! `artifact` (staging, sidecar, manifest) → `version` (numbering, reservations) → `ledger`
//! (`versions/<image>.json`). `remote` is what Proxmox storage holds, `proxmox` uploads to it;
//! `promote` writes the Terraform pin, `diff` compares two artifacts; `gc` removes what builds
//! that died could not.
pub mod artifact;
pub mod build;
pub mod definition;
pub mod diff;
pub mod engine;
pub mod export;
pub mod fetch;
pub mod gc;
pub mod ledger;
pub mod listing;
pub mod pack;
pub mod promote;
pub mod proxmox;
pub mod remote;
pub mod ui;
pub mod validate;
pub mod version;
