//! The SQL warehouses' side of a key comparison ([`etl_core::keys`]) and the deletes it finds,
//! on the target table: the key queries of the warehouse's dialect, run on its session.

use etl_core::keys::{self, Content, Digests, KeyRow, KeySpace};
use etl_core::kit::sql::Dialect;
use etl_core::{Result, TableSpec};

use super::Target;
use super::session::Session;

/// Keys deleted per statement.
const DELETE_CHUNK: usize = 5_000;

/// The target's key column as the warehouse stores it (upper-cased where names are).
fn column(target: &Target, spec: &TableSpec) -> Result<String> {
    Ok(target.fold(keys::key_column(spec)?))
}

/// One target table's side of a key comparison, on a session of its own.
pub(crate) struct TableKeys {
    db: Box<dyn Session>,
    dialect: Dialect,
    target: Target,
}

impl TableKeys {
    /// The key queries of `target` in `dialect` on `db`.
    pub(crate) fn new(db: Box<dyn Session>, dialect: Dialect, target: Target) -> TableKeys {
        TableKeys { db, dialect, target }
    }

    /// The target's live rows, as a relation: those without a deletion mark, when the table
    /// has the mark column ([`etl_core::Deletes::mark`]).
    async fn live(&self) -> Result<String> {
        Ok(if self.target.has_marks(self.db.as_ref()).await? {
            format!(
                "(SELECT * FROM {} WHERE {} IS NULL) live",
                self.target.qualified,
                self.dialect.quote(&self.target.fold(etl_core::DELETED_AT))
            )
        } else {
            self.target.qualified.clone()
        })
    }

    /// [`etl_core::keys::KeyReader::key_bounds`]; `None` when the table does not exist.
    pub(crate) async fn bounds(&self, spec: &TableSpec) -> Result<Option<(i64, i64)>> {
        if !self.target.exists(self.db.as_ref()).await? {
            return Ok(None);
        }
        let sql = self
            .dialect
            .key_bounds(&self.live().await?, &column(&self.target, spec)?);
        keys::parse_bounds(&spec.name, &self.db.rows(&sql).await?)
    }

    /// [`etl_core::keys::KeyReader::key_digests`].
    pub(crate) async fn digests(&self, spec: &TableSpec, space: &KeySpace, content: &[Content]) -> Result<Digests> {
        for setup in self.dialect.key_session() {
            self.db.exec(setup).await?;
        }
        let sql = self.dialect.key_digests(
            &self.live().await?,
            &column(&self.target, spec)?,
            space,
            content,
            &|c| self.target.fold(c),
        );
        keys::parse_digests(&spec.name, &self.db.rows(&sql).await?)
    }

    /// [`etl_core::keys::KeyReader::keys_in`].
    pub(crate) async fn keys_in(
        &self,
        spec: &TableSpec,
        space: &KeySpace,
        ranges: &[i64],
        content: &[Content],
    ) -> Result<Vec<KeyRow>> {
        for setup in self.dialect.key_session() {
            self.db.exec(setup).await?;
        }
        let sql = self.dialect.keys_in(
            &self.live().await?,
            &column(&self.target, spec)?,
            space,
            ranges,
            content,
            &|c| self.target.fold(c),
        );
        keys::parse_keys(&spec.name, &self.db.rows(&sql).await?)
    }

    /// [`etl_core::keys::KeyReader::keys_of`].
    pub(crate) async fn keys_of(&self, spec: &TableSpec, wanted: &[i64], content: &[Content]) -> Result<Vec<KeyRow>> {
        let sql = self.dialect.keys_of(
            &self.live().await?,
            &column(&self.target, spec)?,
            wanted,
            content,
            &|c| self.target.fold(c),
        );
        keys::parse_keys(&spec.name, &self.db.rows(&sql).await?)
    }

    /// [`etl_core::Sink::delete_keys`]: the rows of `keys` deleted — or marked, under
    /// [`etl_core::Deletes::mark`] (the mark column added first when missing) — in one
    /// transaction (rolled back on an error).
    pub(crate) async fn delete(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        let column = column(&self.target, spec)?;
        let db = self.db.as_ref();
        let mark = spec.deletes.is_some_and(|d| d.mark);
        let marker = self.target.fold(etl_core::DELETED_AT);
        if mark && !self.target.has_marks(db).await? {
            let kind = match self.dialect {
                Dialect::Snowflake => "timestamp_ntz",
                _ => "timestamptz",
            };
            db.exec(&format!(
                "ALTER TABLE {} ADD COLUMN {} {kind}",
                self.target.qualified,
                self.dialect.quote(&marker)
            ))
            .await?;
        }
        db.exec("BEGIN").await?;
        let mut deleted = 0;
        for chunk in keys.chunks(DELETE_CHUNK) {
            let sql = if mark {
                self.dialect.mark_keys(&self.target.qualified, &column, &marker, chunk)
            } else {
                self.dialect.delete_keys(&self.target.qualified, &column, chunk)
            };
            match db.exec(&sql).await {
                Ok(n) => deleted += n,
                Err(e) => {
                    let _ = db.exec("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        db.exec("COMMIT").await?;
        Ok(deleted)
    }
}

/// Implements [`etl_core::keys::KeyReader`] for a warehouse sink with an
/// `async fn table_keys(&self, spec) -> Result<TableKeys>`: every answer from the target
/// table's [`TableKeys`].
macro_rules! key_reader {
    ($sink:ty, $native:expr) => {
        #[async_trait::async_trait]
        impl etl_core::keys::KeyReader for $sink {
            fn native_hash(&self) -> Option<&'static str> {
                $native
            }

            async fn key_bounds(&self, spec: &etl_core::TableSpec) -> etl_core::Result<Option<(i64, i64)>> {
                self.table_keys(spec).await?.bounds(spec).await
            }

            async fn key_digests(
                &self,
                spec: &etl_core::TableSpec,
                space: &etl_core::keys::KeySpace,
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<etl_core::keys::Digests> {
                self.table_keys(spec).await?.digests(spec, space, content).await
            }

            async fn keys_of(
                &self,
                spec: &etl_core::TableSpec,
                keys: &[i64],
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<Vec<etl_core::keys::KeyRow>> {
                self.table_keys(spec).await?.keys_of(spec, keys, content).await
            }

            async fn keys_in(
                &self,
                spec: &etl_core::TableSpec,
                space: &etl_core::keys::KeySpace,
                ranges: &[i64],
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<Vec<etl_core::keys::KeyRow>> {
                self.table_keys(spec)
                    .await?
                    .keys_in(spec, space, ranges, content)
                    .await
            }
        }
    };
}
pub(crate) use key_reader;
