//! Stage: uploading a template to Proxmox VE storage through the API, with an API token, and
//! verifying it there (proxmox-api.md is the contract).
//!
//! - [`settings`]: flags and environment (`PM_*`, the Terraform bpg provider's `PROXMOX_VE_*`),
//!   the token and its [`settings::Secret`], which never prints.
//! - [`tls`]: system roots, an extra CA, SHA-256 pinning, or insecure; the server's fingerprint
//!   is captured so a TLS failure can say what to pin.
//! - [`client`]: the few API calls, each answer classified into a [`ProxmoxError`].
//! - [`multipart`]: the upload body, byte for byte as pveproxy's parser needs it.
//! - [`upload`]: the flow: check, send once, follow the task, read back, report.
//! - [`cli`]: `lxcforge upload`.

pub mod cli;
pub mod client;
pub mod error;
pub mod multipart;
pub mod settings;
pub mod store;
pub mod tls;
pub mod upload;

pub use client::{Client, RemoteTemplate, StorageInfo};
pub use error::ProxmoxError;
pub use upload::UploadReport;
