//! Stage: what Proxmox storage already holds. A [`TemplateStore`] is one storage on one node as
//! seen through the API (`GET /nodes/{node}/storage/{storage}/content?content=vztmpl`); the
//! version resolver, `promote` and `list` only ever read its listing, so they work the same
//! against the real client and against an in-memory store in tests.
//!
//! Volids look like `<storage>:vztmpl/<file>` (proxmox-api.md §2.5, §5.1).

use futures_util::future::BoxFuture;

/// One `vztmpl` item of a storage's content listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteTemplate {
    /// `<storage>:vztmpl/<file>`.
    pub volid: String,
    /// Bytes, as `stat` reports them on the node.
    pub size: u64,
    /// The file's inode change time (seconds since the epoch).
    pub ctime: i64,
    /// `tgz`, `tzst`, `txz`, `tbz2` or `tar`.
    pub format: String,
}

/// A storage on a node whose template listing can be read.
///
/// Object-safe (`Box<dyn TemplateStore>` works): `list_templates` returns a boxed future.
pub trait TemplateStore: Send + Sync {
    /// The node the listing is asked from.
    fn node(&self) -> String;
    /// The storage id, the part of a volid before `:`.
    fn storage(&self) -> String;
    /// `<node>/<storage>`, for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.node(), self.storage())
    }
    /// Every `vztmpl` volume on the storage.
    fn list_templates(&self) -> BoxFuture<'_, anyhow::Result<Vec<RemoteTemplate>>>;
}

impl<T: TemplateStore + ?Sized> TemplateStore for Box<T> {
    fn node(&self) -> String {
        (**self).node()
    }
    fn storage(&self) -> String {
        (**self).storage()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn list_templates(&self) -> BoxFuture<'_, anyhow::Result<Vec<RemoteTemplate>>> {
        (**self).list_templates()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "cannot list the templates on {store}: {source:#}\n  fix: check the Proxmox settings (PM_API_URL, the token, the node and storage names) and that the token has Datastore.Audit on the storage"
    )]
    Listing {
        store: String,
        source: anyhow::Error,
    },
}

/// The volid a file gets on a storage: `<storage>:vztmpl/<file>`.
pub fn volid(storage: &str, file: &str) -> String {
    format!("{storage}:vztmpl/{file}")
}

/// `(storage, file)` of a `vztmpl` volid, `None` for anything else.
pub fn split_volid(volid: &str) -> Option<(&str, &str)> {
    let (storage, rest) = volid.split_once(':')?;
    let file = rest.strip_prefix("vztmpl/")?;
    (!storage.is_empty() && !file.is_empty() && !file.contains('/')).then_some((storage, file))
}

/// What one store holds, listed once.
#[derive(Debug, Clone)]
pub struct StoreListing {
    pub store: String,
    pub node: String,
    pub storage: String,
    pub templates: Vec<RemoteTemplate>,
}

/// Lists every store. Any failure is an error: a resolver that silently skips a storage could
/// hand out a number that is already taken there.
pub async fn list_all<S: TemplateStore>(stores: &[S]) -> Result<Vec<StoreListing>, RemoteError> {
    let mut out = Vec::with_capacity(stores.len());
    for s in stores {
        let templates = s
            .list_templates()
            .await
            .map_err(|source| RemoteError::Listing {
                store: s.name(),
                source,
            })?;
        out.push(StoreListing {
            store: s.name(),
            node: s.node(),
            storage: s.storage(),
            templates,
        });
    }
    Ok(out)
}

/// Versions of `prefix` present on the stores, with the volid and store holding each. Names
/// that are not `<prefix>-v<N>.tar.<ext>` are ignored.
pub fn versions_in(listings: &[StoreListing], prefix: &str) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for l in listings {
        for t in &l.templates {
            if let Some((_, file)) = split_volid(&t.volid)
                && let Some(v) = crate::version::parse_version(prefix, file)
            {
                found.push((v, format!("{} on {}", t.volid, l.store)));
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volids_split_and_join() {
        assert_eq!(volid("local", "x-v1.tar.gz"), "local:vztmpl/x-v1.tar.gz");
        assert_eq!(
            split_volid("local:vztmpl/x-v1.tar.gz"),
            Some(("local", "x-v1.tar.gz"))
        );
        assert_eq!(split_volid("local:iso/x.iso"), None);
        assert_eq!(split_volid("vztmpl/x.tar.gz"), None);
        assert_eq!(split_volid(":vztmpl/x.tar.gz"), None);
        assert_eq!(split_volid("local:vztmpl/"), None);
    }
}
