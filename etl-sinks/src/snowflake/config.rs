//! The Snowflake sink's settings: account and secret, schema, where staged files are read
//! from, the HTTP client and timeouts, and how names are written.

use std::fmt;
use std::sync::Arc;

use etl_core::{Location, Secret, TableSpec};

use super::SF;
use crate::warehouse::{Checkpoints, Target, checkpoints};

/// How the sink logs in.
#[derive(Clone, Debug)]
pub enum SnowflakeSecret {
    /// A password.
    Password(Secret),
    /// Key-pair authentication: the user's private key, PEM (PKCS#8).
    PrivateKeyPem(Secret),
}

/// The account, user and context of the sink's sessions.
#[derive(Clone, Debug)]
pub struct SnowflakeAuth {
    /// The account identifier (`myorg-myaccount`).
    pub account: String,
    /// The user.
    pub user: String,
    /// Password or private key.
    pub secret: SnowflakeSecret,
    /// The database the sink writes into.
    pub database: String,
    /// The warehouse that runs the statements.
    pub warehouse: Option<String>,
    /// The role, when not the user's default.
    pub role: Option<String>,
}

/// Where Snowflake reads the staged files from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnowflakeStage {
    /// An existing external stage (`@name`) over the staging location's root.
    Named(String),
    /// A temporary stage on `url` (the staging location's `s3://bucket/prefix`) through a
    /// storage integration.
    Integration {
        /// The staging location's URL as Snowflake reads it.
        url: String,
        /// The storage integration's name.
        integration: String,
    },
    /// A temporary stage on `url` without credentials (a public bucket, or `file:///…`
    /// for an emulator).
    Url(String),
}

/// Writes tables of one Snowflake schema.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec};
/// use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
///
/// let auth = SnowflakeAuth {
///     account: "myorg-myaccount".into(),
///     user: "ETL".into(),
///     secret: SnowflakeSecret::PrivateKeyPem(std::fs::read_to_string("rsa_key.p8")?.into()),
///     database: "ANALYTICS".into(),
///     warehouse: Some("LOAD_WH".into()),
///     role: None,
/// };
/// // With the `s3` feature: `Location::s3("my-bucket", "etl", None)?`.
/// let staging = Location::local("/mnt/my-bucket/etl")?;
/// let sink = SnowflakeSink::new(auth, staging, SnowflakeStage::Named("ETL_STAGE".into())).with_schema("crm");
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
pub struct SnowflakeSink {
    pub(super) auth: Arc<SnowflakeAuth>,
    pub(super) schema: String,
    pub(super) staging: Location,
    pub(super) stage: SnowflakeStage,
    pub(super) client: Option<reqwest_middleware::ClientWithMiddleware>,
    /// The fakesnow emulator the requests go to instead of Snowflake.
    pub(super) emulator: Option<reqwest::Url>,
    pub(super) timeouts: etl_core::Timeouts,
    /// Names as given (quoted), not upper-cased.
    pub(super) exact_names: bool,
}

impl fmt::Debug for SnowflakeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeSink")
            .field("auth", &self.auth)
            .field("schema", &self.schema)
            .field("staging", &self.staging.url())
            .field("stage", &self.stage)
            .field("exact_names", &self.exact_names)
            .field("emulator", &self.emulator.as_ref().map(reqwest::Url::as_str))
            .finish()
    }
}

impl SnowflakeSink {
    /// A sink writing into schema `PUBLIC` of `auth.database`, staging files under `staging`
    /// that Snowflake reads through `stage`.
    ///
    /// Schema, table and column names are upper-cased, as Snowflake folds unquoted names: a
    /// user's `SELECT * FROM crm.orders` finds the table `orders` written into schema `crm`.
    pub fn new(auth: SnowflakeAuth, staging: Location, stage: SnowflakeStage) -> Self {
        SnowflakeSink {
            auth: Arc::new(auth),
            schema: "PUBLIC".to_string(),
            staging,
            stage,
            client: None,
            emulator: None,
            timeouts: etl_core::Timeouts::default(),
            exact_names: false,
        }
    }

    /// How long to wait for Snowflake (default [`etl_core::Timeouts::default`]): `login` for
    /// a login, `answer` for every other request (Snowflake answers a long statement within
    /// about 45 s, with "still running" if need be), `connect` for the sink's own HTTP client
    /// (a client given with [`SnowflakeSink::with_http_client`] keeps its own).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Writes into `schema` (created when missing; upper-cased unless
    /// [`SnowflakeSink::with_exact_names`]).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sends the API's requests through `client` (a proxy, extra middleware, or a test
    /// emulator) instead of the default one.
    pub fn with_http_client(mut self, client: reqwest_middleware::ClientWithMiddleware) -> Self {
        self.client = Some(client);
        self
    }

    /// Sends the API's requests to the [fakesnow](https://github.com/tekumara/fakesnow)
    /// emulator at `url` (`http://127.0.0.1:9103`) instead of Snowflake, for local
    /// development and tests: the same statements, the emulator's answers completed where
    /// they lack what the API requires (see `emulator_client`). Its stages read `file:///`
    /// folders ([`SnowflakeStage::Url`] over a local staging location).
    ///
    /// # Errors
    /// [`etl_core::Error::Config`] when `url` is not an `http://` or `https://` URL.
    pub fn with_emulator(mut self, url: &str) -> etl_core::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                etl_core::Error::config(format!("the Snowflake emulator URL `{url}` is not an http(s) URL"))
            })?;
        self.emulator = Some(parsed);
        Ok(self)
    }

    /// Keeps the case of schema, table and column names as given (each quoted), instead of
    /// upper-casing them: a target `orders` is then read as `"orders"`.
    pub fn with_exact_names(mut self) -> Self {
        self.exact_names = true;
        self
    }

    /// A name as the sink creates it.
    pub(super) fn fold(&self, name: &str) -> String {
        if self.exact_names {
            name.to_string()
        } else {
            name.to_uppercase()
        }
    }

    /// Where `spec`'s rows go: its target, in the sink's schema unless it names one.
    pub(super) fn target(&self, spec: &TableSpec) -> Target {
        Target::new(SF, &self.schema, &spec.target, !self.exact_names)
    }

    pub(super) fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(SF, &self.fold(&self.schema), &self.fold(checkpoints::TABLE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_printed() {
        let auth = SnowflakeAuth {
            account: "org-acct".into(),
            user: "ETL".into(),
            secret: SnowflakeSecret::Password("hunter2".into()),
            database: "DB".into(),
            warehouse: None,
            role: None,
        };
        let sink = SnowflakeSink::new(auth, Location::memory(), SnowflakeStage::Named("S".into()));
        let shown = format!("{sink:?}");
        assert!(shown.contains("org-acct") && !shown.contains("hunter2"), "{shown}");
    }
}
