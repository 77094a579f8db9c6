//! The Redshift sink's settings: connection, schema, staging location and how `COPY` reads it.

use std::fmt;

use etl_connectors::postgres::PgConfig;
use etl_core::{Location, Result, Secret};

use super::RS;
use crate::warehouse::{Checkpoints, checkpoints};

/// How the staging table is loaded from the staged files.
#[derive(Clone, Debug)]
pub enum RedshiftLoad {
    /// `COPY … IAM_ROLE '<arn>'`: the cluster's role reads the bucket (recommended).
    IamRole(String),
    /// `COPY … ACCESS_KEY_ID … SECRET_ACCESS_KEY … [SESSION_TOKEN …]`.
    AccessKeys {
        /// The access key id.
        id: String,
        /// The secret access key.
        secret: Secret,
        /// A session token, for temporary credentials.
        token: Option<Secret>,
    },
    /// PostgreSQL standing in for Redshift: the staged files are read back and sent by `COPY
    /// … FROM STDIN`; every other statement is the one Redshift gets.
    PostgresStandIn,
}

/// Writes tables of one Redshift schema, staging Parquet under a location Redshift reads.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec};
/// use etl_sinks::redshift::{RedshiftLoad, RedshiftSink};
///
/// // With the `s3` feature: `Location::s3("my-bucket", "etl-staging", None)?`.
/// let staging = Location::local("/mnt/my-bucket/etl-staging")?;
/// let sink = RedshiftSink::new(
///     "host=cluster.abc.eu-west-1.redshift.amazonaws.com port=5439 user=etl dbname=dw sslmode=require",
///     staging,
///     RedshiftLoad::IamRole("arn:aws:iam::123456789012:role/redshift-copy".into()),
/// )?
/// .with_staging_url("s3://my-bucket/etl-staging")
/// .with_schema("analytics");
/// let pipeline = Pipeline::builder("crm")
///     .source(MemorySource::new())
///     .sink(sink)
///     .watermarks(ObjectStoreWatermarkStore::new(Location::local("./state")?))
///     .table(TableSpec::new("customers").mode(LoadMode::Upsert).primary_key(["customer_id"]))
///     .build()?;
/// pipeline.run().await?.into_result()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedshiftSink {
    pub(super) pg: PgConfig,
    pub(super) schema: String,
    pub(super) staging: Location,
    pub(super) staging_url: String,
    pub(super) load: RedshiftLoad,
}

impl fmt::Debug for RedshiftSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftSink")
            .field("pg", &self.pg)
            .field("schema", &self.schema)
            .field("staging_url", &self.staging_url)
            .field("load", &self.load)
            .finish()
    }
}

impl RedshiftSink {
    /// A sink writing into schema `public` of the database of a connection string (see
    /// [`PgConfig`]; Redshift wants `sslmode=require` and the `tls` feature), staging files
    /// under `staging` (an S3 location: Redshift reads it at its `s3://bucket/prefix` URL).
    ///
    /// # Errors
    /// [`etl_core::Error::Config`] when the string does not parse.
    pub fn new(conn: &str, staging: Location, load: RedshiftLoad) -> Result<Self> {
        Ok(RedshiftSink {
            pg: PgConfig::new(conn)?,
            schema: "public".to_string(),
            staging_url: staging.url().trim_end_matches('/').to_string(),
            staging,
            load,
        })
    }

    /// The URL Redshift reads the staging location at, when it is not the location's own
    /// (`s3://bucket/prefix`).
    pub fn with_staging_url(mut self, url: impl Into<String>) -> Self {
        self.staging_url = url.into().trim_end_matches('/').to_string();
        self
    }

    /// Writes into `schema` (created when missing).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Trusts the PEM certificates of `path` for `sslmode=require` (see [`PgConfig`]).
    pub fn with_root_certificate(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pg = self.pg.with_root_certificate(path);
        self
    }

    /// How long to wait for the cluster (default [`etl_core::Timeouts::default`]; raise
    /// `answer` for a `COPY` or `MERGE` that runs longer than an hour).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.pg = self.pg.with_timeouts(timeouts);
        self
    }

    pub(super) fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(RS, &self.schema, checkpoints::TABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_never_printed() {
        let load = RedshiftLoad::AccessKeys {
            id: "AKIA123".into(),
            secret: "s3cr3t".into(),
            token: Some("t0ken".into()),
        };
        let shown = format!("{load:?}");
        assert!(
            shown.contains("AKIA123") && !shown.contains("s3cr3t") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
