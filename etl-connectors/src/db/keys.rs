//! The database sources' side of a key comparison ([`etl_core::keys`]): the key queries of
//! the source's dialect on the spec's relation, each on a connection of its own.

use etl_core::keys::{self, Cells, Digests, KeySpace};
use etl_core::{Error, Result, TableSpec};

use super::read::{Database, relation};

/// [`etl_core::keys::KeyReader::key_bounds`] of a database source.
pub(crate) async fn bounds<D: Database>(db: &D, spec: &TableSpec) -> Result<Option<(i64, i64)>> {
    let rows = query(db, spec, |rel, key| D::DIALECT.key_bounds(rel, key)).await?;
    keys::parse_bounds(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::key_digests`] of a database source.
pub(crate) async fn digests<D: Database>(db: &D, spec: &TableSpec, space: &KeySpace) -> Result<Digests> {
    let rows = query(db, spec, |rel, key| D::DIALECT.key_digests(rel, key, space)).await?;
    keys::parse_digests(&spec.name, &rows)
}

/// [`etl_core::keys::KeyReader::keys_in`] of a database source.
pub(crate) async fn keys_in<D: Database>(
    db: &D,
    spec: &TableSpec,
    space: &KeySpace,
    ranges: &[i64],
) -> Result<Vec<i64>> {
    let rows = query(db, spec, |rel, key| D::DIALECT.keys_in(rel, key, space, ranges)).await?;
    keys::parse_keys(&spec.name, &rows)
}

async fn query<D: Database>(db: &D, spec: &TableSpec, sql: impl FnOnce(&str, &str) -> String) -> Result<Cells> {
    let rel = relation::<D>(spec)?;
    let [key] = spec.primary_key.as_slice() else {
        return Err(Error::config(format!(
            "table `{}`: comparing keys needs a primary key of one column",
            spec.name
        )));
    };
    let sql = sql(&rel, key);
    tracing::debug!(table = %spec.name, sql = %sql, connector = D::NAME, "key query");
    let mut conn = db.connect(&spec.name).await?;
    let mut out = Ok(Vec::new());
    if let Some(setup) = D::DIALECT.key_session() {
        out = db.cells(&mut conn, &spec.name, setup).await;
    }
    if out.is_ok() {
        out = db.cells(&mut conn, &spec.name, &sql).await;
    }
    db.close(conn).await;
    out
}
