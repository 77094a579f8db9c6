//! The database sources' side of a key comparison ([`etl_core::keys`]): the key queries of
//! the source's dialect on the spec's relation, each on a connection of its own.

use etl_core::keys::{self, Cells, Content, ContentKind, Digests, KeyRow, KeySpace};
use etl_core::{Error, Result, TableSpec};

use super::read::{Column, Database, relation};

/// [`etl_core::keys::KeyReader::key_bounds`] of a database source.
pub(crate) async fn bounds<D: Database>(db: &D, spec: &TableSpec) -> Result<Option<(i64, i64)>> {
    let rows = query(db, spec, |rel, key| D::DIALECT.key_bounds(rel, key)).await?;
    keys::parse_bounds(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::key_digests`] of a database source.
pub(crate) async fn digests<D: Database>(
    db: &D,
    spec: &TableSpec,
    space: &KeySpace,
    content: &[Content],
) -> Result<Digests> {
    let rows = query(db, spec, |rel, key| {
        D::DIALECT.key_digests(rel, key, space, content, &|c| c.to_string())
    })
    .await?;
    keys::parse_digests(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::keys_in`] of a database source.
pub(crate) async fn keys_in<D: Database>(
    db: &D,
    spec: &TableSpec,
    space: &KeySpace,
    ranges: &[i64],
    content: &[Content],
) -> Result<Vec<KeyRow>> {
    let rows = query(db, spec, |rel, key| {
        D::DIALECT.keys_in(rel, key, space, ranges, content, &|c| c.to_string())
    })
    .await?;
    keys::parse_keys(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::keys_of`] of a database source.
pub(crate) async fn keys_of<D: Database>(
    db: &D,
    spec: &TableSpec,
    wanted: &[i64],
    content: &[Content],
) -> Result<Vec<KeyRow>> {
    let rows = query(db, spec, |rel, key| {
        D::DIALECT.keys_of(rel, key, wanted, content, &|c| c.to_string())
    })
    .await?;
    keys::parse_keys(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::content`] of a database source: the columns' kinds from
/// the relation's description.
pub(crate) async fn content<D: Database>(db: &D, spec: &TableSpec, columns: &[String]) -> Result<Vec<Content>> {
    let rel = relation::<D>(spec)?;
    let mut conn = db.connect(&spec.name).await?;
    let plans = db.describe(&mut conn, spec, &rel).await;
    db.close(conn).await;
    let plans = plans?;
    columns
        .iter()
        .map(|name| match plans.iter().find(|p| p.name() == name) {
            Some(p) => Ok(Content {
                name: name.clone(),
                kind: ContentKind::of(p.data_type()),
                native: false,
            }),
            None => Err(Error::ColumnNotFound {
                table: spec.name.clone(),
                column: name.clone(),
            }),
        })
        .collect()
}

async fn query<D: Database>(db: &D, spec: &TableSpec, sql: impl FnOnce(&str, &str) -> String) -> Result<Cells> {
    let rel = relation::<D>(spec)?;
    let key = keys::key_column(spec)?;
    let sql = sql(&rel, key);
    tracing::debug!(table = %spec.name, sql = %sql, connector = D::NAME, "key query");
    let mut conn = db.connect(&spec.name).await?;
    let mut out = Ok(Vec::new());
    for setup in D::DIALECT.key_session() {
        if out.is_ok() {
            out = db.cells(&mut conn, &spec.name, setup).await;
        }
    }
    if out.is_ok() {
        out = db.cells(&mut conn, &spec.name, &sql).await;
    }
    db.close(conn).await;
    out
}

/// Implements [`etl_core::keys::KeyReader`] for a database source (a [`Database`]): every
/// answer from the functions of this module.
macro_rules! key_reader {
    ($source:ty, $native:expr) => {
        #[async_trait::async_trait]
        impl etl_core::keys::KeyReader for $source {
            fn native_hash(&self) -> Option<&'static str> {
                $native
            }

            async fn key_bounds(&self, spec: &etl_core::TableSpec) -> etl_core::Result<Option<(i64, i64)>> {
                crate::db::keys::bounds(self, spec).await
            }

            async fn key_digests(
                &self,
                spec: &etl_core::TableSpec,
                space: &etl_core::keys::KeySpace,
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<etl_core::keys::Digests> {
                crate::db::keys::digests(self, spec, space, content).await
            }

            async fn keys_in(
                &self,
                spec: &etl_core::TableSpec,
                space: &etl_core::keys::KeySpace,
                ranges: &[i64],
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<Vec<etl_core::keys::KeyRow>> {
                crate::db::keys::keys_in(self, spec, space, ranges, content).await
            }

            async fn keys_of(
                &self,
                spec: &etl_core::TableSpec,
                keys: &[i64],
                content: &[etl_core::keys::Content],
            ) -> etl_core::Result<Vec<etl_core::keys::KeyRow>> {
                crate::db::keys::keys_of(self, spec, keys, content).await
            }

            async fn content(
                &self,
                spec: &etl_core::TableSpec,
                columns: &[String],
            ) -> etl_core::Result<Vec<etl_core::keys::Content>> {
                crate::db::keys::content(self, spec, columns).await
            }
        }
    };
}
pub(crate) use key_reader;
