//! The Delta table's side of a key comparison ([`etl_core::keys`]) and its deletes: a Delta
//! `DELETE` of the keys (earlier versions keep the rows, for time travel, until `VACUUM`).

use std::sync::{Arc, Mutex};

use deltalake::datafusion::prelude::{Expr, lit};
use deltalake::kernel::transaction::CommitProperties;
use etl_core::keys::{self, Content, KeyRows};
use etl_core::{Error, Result, TableSpec};
use futures::TryStreamExt;

use super::{DeltaSink, delta_err};

/// A table, its version, the content columns, and its key rows then.
type Cached = (String, i64, Vec<Content>, Arc<KeyRows>);

/// The key rows of the table last compared, at its version then.
#[derive(Debug, Default)]
pub(super) struct HeldRows {
    cached: Mutex<Option<Cached>>,
}

/// The refusal of what the Delta sink does not do with keys.
pub(super) fn check(spec: &TableSpec) -> Result<()> {
    if spec.deletes.as_ref().is_some_and(|d| d.mark) {
        return Err(Error::config(format!(
            "table `{}`: a Delta table deletes the rows of keys deleted at the source (its earlier versions \
             keep them, for time travel): leave Deletes::mark false",
            spec.name
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl keys::HeldKeys for DeltaSink {
    /// Every key of the table's current version with its row's hash of `content`: a scan of
    /// those columns alone, once per version.
    async fn key_rows(&self, spec: &TableSpec, content: Option<&[Content]>) -> Result<Arc<KeyRows>> {
        let table = &spec.target;
        let Some(t) = self.open(table).await? else {
            return Ok(Arc::new(KeyRows::default()));
        };
        let version = t.version().unwrap_or(0) as i64;
        if let Some((name, v, c, rows)) = self.held.cached.lock().expect("held keys lock").as_ref()
            && name == table
            && *v == version
            && content.is_none_or(|content| c.as_slice() == content)
        {
            return Ok(rows.clone());
        }
        let content = content.unwrap_or_default();
        let key = keys::key_column(spec)?;
        let mut columns = vec![key.to_string()];
        columns.extend(content.iter().map(|c| c.name.clone()));
        let (_, mut stream) = t
            .scan_table()
            .with_columns(columns)
            .await
            .map_err(|e| delta_err(table, e))?;
        let mut rows = Vec::new();
        while let Some(batch) = stream.try_next().await.map_err(|e| delta_err(table, e.into()))? {
            rows.extend(keys::row_hashes(&spec.name, &batch, key, content)?);
        }
        let rows = Arc::new(KeyRows::new(rows));
        *self.held.cached.lock().expect("held keys lock") =
            Some((table.clone(), version, content.to_vec(), rows.clone()));
        Ok(rows)
    }
}

impl DeltaSink {
    /// Deletes the rows of `keys` in one Delta commit, which carries no checkpoint (the
    /// table's last run stays the one its transaction identifier names).
    pub(super) async fn delete_rows(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        check(spec)?;
        let table = &spec.target;
        let Some(t) = self.open(table).await? else {
            return Ok(0);
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let key = keys::key_column(spec)?;
        let column = Expr::Column(deltalake::datafusion::common::Column::new_unqualified(key));
        let predicate = column.in_list(keys.iter().map(|k| lit(*k)).collect(), false);
        let (_, metrics) = t
            .delete()
            .with_predicate(predicate)
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await
            .map_err(|e| delta_err(table, e))?;
        Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
    }
}
