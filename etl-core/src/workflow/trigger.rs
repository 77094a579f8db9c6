//! File triggers: new files under an object-store prefix start a workflow run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::location::Location;
use crate::position::FileMark;

/// Watches a prefix for new or changed files (by path, size, last-modified and e-tag). The
/// files a run was started with are bookmarked only after that run succeeded, in
/// `_etl/triggers/<name>.json` of the state location, so a restart does not start old files
/// again and a failed run's files are offered again at the next poll.
///
/// Used by [`super::Scheduler::on_files`]; [`FileTrigger::poll`] and [`FileTrigger::commit`]
/// are the same steps for a caller that polls by itself.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use etl_core::Location;
/// use etl_core::workflow::FileTrigger;
/// use object_store::ObjectStoreExt;
///
/// let landing = Location::memory();
/// landing.store().put(&landing.path("orders/day1.csv"), "id\n1\n".into()).await.unwrap();
/// let trigger = FileTrigger::new("orders", landing.clone(), "orders/");
/// let batch = trigger.poll().await.unwrap();
/// assert_eq!(batch.files(), ["orders/day1.csv"]);
/// trigger.commit(&batch).await.unwrap();
/// assert!(trigger.poll().await.unwrap().files().is_empty());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct FileTrigger {
    name: String,
    location: Location,
    prefix: String,
    state: Location,
    interval: Duration,
}

/// The new files one poll found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileBatch {
    new: BTreeMap<String, FileMark>,
    listed: BTreeSet<String>,
}

impl FileBatch {
    /// The new or changed files, relative to the trigger's location, sorted.
    pub fn files(&self) -> Vec<String> {
        self.new.keys().cloned().collect()
    }

    /// Whether nothing new was found.
    pub fn is_empty(&self) -> bool {
        self.new.is_empty()
    }
}

impl FileTrigger {
    /// A trigger named `name` (it names the bookmark document) on the files under `prefix`
    /// of `location`; bookmarks kept in `location` too, polled every minute.
    pub fn new(name: impl Into<String>, location: Location, prefix: impl Into<String>) -> Self {
        FileTrigger {
            name: name.into(),
            state: location.clone(),
            location,
            prefix: prefix.into(),
            interval: Duration::from_secs(60),
        }
    }

    /// Keeps the bookmarks under another location (when the watched one is read-only).
    pub fn state_in(mut self, state: Location) -> Self {
        self.state = state;
        self
    }

    /// Polls every `interval` (default one minute).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The trigger's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.interval
    }

    fn state_path(&self) -> object_store::path::Path {
        self.state.path(&format!("_etl/triggers/{}.json", self.name))
    }

    async fn bookmarks(&self) -> Result<BTreeMap<String, FileMark>> {
        match self.state.get_json(&self.state_path()).await {
            Ok(m) => Ok(m),
            Err(Error::ObjectStore {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// Lists the prefix once: the files not bookmarked, or changed since. Names starting
    /// with `_` or `.` are skipped.
    ///
    /// # Errors
    /// The store's error; [`Error::Metadata`] for a bookmark document that does not parse.
    pub async fn poll(&self) -> Result<FileBatch> {
        let seen = self.bookmarks().await?;
        let mut batch = FileBatch::default();
        for meta in self.location.list(&self.prefix).await? {
            let rel = self.location.relative(&meta.location);
            if rel.split('/').any(|p| p.starts_with('_') || p.starts_with('.')) {
                continue;
            }
            let mark = FileMark {
                size: meta.size,
                last_modified: meta.last_modified,
                e_tag: meta.e_tag,
            };
            batch.listed.insert(rel.clone());
            if seen.get(&rel) != Some(&mark) {
                batch.new.insert(rel, mark);
            }
        }
        Ok(batch)
    }

    /// Bookmarks a batch's files as done (after the run they started succeeded); files no
    /// longer listed are forgotten.
    ///
    /// # Errors
    /// The store's error.
    pub async fn commit(&self, batch: &FileBatch) -> Result<()> {
        let mut marks = self.bookmarks().await?;
        marks.retain(|k, _| batch.listed.contains(k));
        marks.extend(batch.new.iter().map(|(k, v)| (k.clone(), v.clone())));
        let path = self.state_path();
        self.state.put_json(&path, &marks).await
    }
}
