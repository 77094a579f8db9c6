//! Where data and metadata live: an object store plus a prefix inside it.

use std::fmt;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// How long [`Location::s3`] retries a failed request.
#[cfg(feature = "s3")]
pub const S3_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An object store and a prefix in it: a local folder, an S3 prefix, or memory.
///
/// Every file-based component (file source, lake sink, watermark store, crawler) takes one,
/// so the same code runs on local disk and on S3.
///
/// ```
/// # fn main() -> etl_core::Result<()> {
/// let dir = std::env::temp_dir().join("etl-doc-location");
/// let lake = etl_core::Location::local(&dir)?;
/// assert_eq!(lake.child("orders").prefix().as_ref(), "orders");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl Location {
    /// Wraps any object store; `prefix` may be empty.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl AsRef<str>, url: impl Into<String>) -> Self {
        Location {
            store,
            prefix: Path::from(prefix.as_ref()),
            url: url.into(),
        }
    }

    /// A folder on local disk, created if missing.
    ///
    /// # Errors
    /// [`Error::Config`] when the folder cannot be created.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::config(format!("cannot create folder {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::store(dir.display(), e))?
            .with_automatic_cleanup(true);
        Ok(Location::new(Arc::new(store), "", format!("file://{}", dir.display())))
    }

    /// A fresh in-memory store (for tests and examples).
    pub fn memory() -> Self {
        Location::new(Arc::new(InMemory::new()), "", "memory://")
    }

    /// An S3 (or S3-compatible) bucket and prefix, configured from the `AWS_*` environment
    /// variables; `endpoint` points at an S3-compatible server (plain HTTP allowed).
    ///
    /// Requests give up after 5 s to connect and 30 s to answer, and failed ones are retried
    /// for 30 s at most ([`S3_RETRY_TIMEOUT`]; `object_store`'s own default is three minutes),
    /// so an unreachable endpoint fails a run within about half a minute. For other settings,
    /// build an `AmazonS3` yourself and wrap it with [`Location::new`].
    ///
    /// # Errors
    /// [`Error::Config`] when the builder rejects the configuration.
    #[cfg(feature = "s3")]
    pub fn s3(bucket: &str, prefix: &str, endpoint: Option<&str>) -> Result<Self> {
        let retry = object_store::RetryConfig {
            retry_timeout: S3_RETRY_TIMEOUT,
            ..Default::default()
        };
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        if let Some(ep) = endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        let store = b
            .build()
            .map_err(|e| Error::config(format!("S3 bucket `{bucket}`: {e}")))?;
        Ok(Location::new(
            Arc::new(store),
            prefix,
            format!("s3://{bucket}/{prefix}"),
        ))
    }

    /// The location of a sub-folder.
    pub fn child(&self, name: &str) -> Location {
        Location {
            store: self.store.clone(),
            prefix: self.path(name),
            url: format!("{}/{}", self.url.trim_end_matches('/'), name),
        }
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix inside the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// A URL-like description (`file:///…`, `s3://bucket/prefix`) for messages and DDL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The path of `rel` (a `/`-separated relative path) under the prefix. A part already
    /// escaped (a partition value's `%3A`, [`crate::lake::partition::escape`]) is kept as it
    /// is; in any other the object store escapes what it must.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            let raw = crate::lake::partition::is_escaped(part)
                .then(|| object_store::path::PathPart::parse(part).ok())
                .flatten();
            p = match raw {
                Some(raw) => p.join(raw),
                None => p.join(part),
            };
        }
        p
    }

    /// `path` relative to the prefix, as a `/`-separated string.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            None => path.to_string(),
        }
    }

    /// Reads a JSON document (a watermark, a commit record).
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when it cannot be read, [`Error::Metadata`] when it does not parse.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T> {
        use object_store::ObjectStoreExt;
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::store(path, e))?
            .bytes()
            .await
            .map_err(|e| Error::store(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Metadata {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Writes a JSON document, replacing any at `path`.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when it cannot be written.
    pub async fn put_json<T: serde::Serialize>(&self, path: &Path, doc: &T) -> Result<()> {
        use object_store::ObjectStoreExt;
        let body = serde_json::to_vec_pretty(doc).expect("metadata documents serialise");
        self.store
            .put(path, body.into())
            .await
            .map_err(|e| Error::store(path, e))?;
        Ok(())
    }

    /// Creates a JSON document only if none exists at `path` (`PutMode::Create`, atomic on
    /// local disk, S3 and memory): `Ok(false)` when one does — another writer got there
    /// first.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when it cannot be written.
    pub async fn create_json<T: serde::Serialize>(&self, path: &Path, doc: &T) -> Result<bool> {
        use object_store::{PutMode, PutOptions, PutPayload};
        let body = serde_json::to_vec_pretty(doc).expect("metadata documents serialise");
        match self
            .store
            .put_opts(path, PutPayload::from(body), PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Every object under `rel`, recursively, sorted by path.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when listing fails.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let p = self.path(rel);
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| Error::store(&p, e))?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Deletes every object under `rel` (those already gone are no error).
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when listing or a delete fails.
    pub async fn delete_dir(&self, rel: &str) -> Result<()> {
        for m in self.list(rel).await? {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(&m.location, e)),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location").field("url", &self.url).finish()
    }
}
