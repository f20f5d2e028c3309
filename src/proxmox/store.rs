//! The Proxmox client as the version resolver's [`TemplateStore`]: one store per configured
//! node, all sharing one client (one TLS setup, one token).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::client::Client;
use super::settings::{self, Flags};
use crate::remote::{RemoteTemplate, TemplateStore};
use crate::ui::Ui;

/// One storage on one node, listed through the API.
pub struct PveStore {
    client: Arc<Client>,
    node: String,
    storage: String,
}

impl TemplateStore for PveStore {
    fn node(&self) -> String {
        self.node.clone()
    }
    fn storage(&self) -> String {
        self.storage.clone()
    }
    fn list_templates(&self) -> BoxFuture<'_, anyhow::Result<Vec<RemoteTemplate>>> {
        Box::pin(async move {
            Ok(self
                .client
                .list_templates(&self.node, &self.storage)
                .await?)
        })
    }
}

/// The environment variables that configure Proxmox; any of them set means "Proxmox is
/// configured", so it is consulted rather than silently ignored.
pub const SETTING_VARS: &[&str] = &[
    settings::ENV_API_URL,
    settings::ENV_BPG_ENDPOINT,
    settings::ENV_TOKEN_ID,
    settings::ENV_TOKEN_SECRET,
    settings::ENV_BPG_TOKEN,
    settings::ENV_NODE,
    settings::ENV_STORAGE,
];

/// Names (never values) of the Proxmox settings present in the environment.
pub fn configured_vars() -> Vec<&'static str> {
    SETTING_VARS
        .iter()
        .copied()
        .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        .collect()
}

/// Stores for every node of the settings found in the environment, on `storage` (else the
/// configured storage). Settings errors are the upload's own (they say what to set).
pub fn stores_from_env(
    storage: Option<&str>,
    ui: &Ui,
) -> anyhow::Result<Vec<Box<dyn TemplateStore>>> {
    let flags = Flags {
        storage: storage.map(str::to_owned),
        ..Flags::default()
    };
    let (settings, _warnings) =
        settings::resolve(&flags, &|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    let client = Arc::new(Client::new(&settings, ui.clone())?);
    Ok(settings
        .nodes
        .iter()
        .map(|node| {
            Box::new(PveStore {
                client: client.clone(),
                node: node.clone(),
                storage: settings.storage.clone(),
            }) as Box<dyn TemplateStore>
        })
        .collect())
}
