//! One logged-in Snowflake session through `snowflake-api`: statements as text (the REST API
//! takes no parameters, so values are inlined as escaped literals), answers read as Arrow or
//! JSON, and errors that say whether trying again may help.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::{DriverErrorKind, Error, Result};
use snowflake_api::{
    AuthArgs, AuthType, CertificateArgs, PasswordArgs, RawQueryResult, SnowflakeApi, SnowflakeApiBuilder,
    SnowflakeApiError,
};

use super::{SF, SnowflakeSecret, SnowflakeSink, tokens};
use crate::warehouse::session::inline;
use crate::warehouse::{Session, SqlValue};

/// One logged-in session; statements' errors name the table.
pub(super) struct SfSession {
    api: SnowflakeApi,
    table: String,
    /// The account's host, for messages.
    host: String,
    /// The client's middleware: it knows whether a failed call timed out.
    tokens: std::sync::Arc<tokens::SessionTokens>,
}

/// What a statement returned.
enum Rows {
    Json(serde_json::Value),
    Arrow(Vec<RecordBatch>),
    Empty,
}

impl Rows {
    /// Every row's cells as text (`None`: NULL).
    fn cells(self, table: &str) -> Result<Vec<Vec<Option<String>>>> {
        let json = |v: &serde_json::Value| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        Ok(match self {
            Rows::Json(v) => v
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_array().into_iter().flatten().map(json).collect())
                .collect(),
            Rows::Arrow(batches) => {
                let mut out = Vec::new();
                for b in &batches {
                    for i in 0..b.num_rows() {
                        let row = b
                            .columns()
                            .iter()
                            .map(|col| {
                                col.is_valid(i)
                                    .then(|| arrow::util::display::array_value_to_string(col, i))
                                    .transpose()
                                    .map_err(|e| Error::arrow(table, e))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        out.push(row);
                    }
                }
                out
            }
            Rows::Empty => Vec::new(),
        })
    }
}

impl SnowflakeSink {
    /// Logs in for `table`'s run.
    pub(super) fn connect(&self, table: &str) -> Result<SfSession> {
        let a = &self.auth;
        let auth_type = match &a.secret {
            SnowflakeSecret::Password(p) => AuthType::Password(PasswordArgs {
                password: p.expose().to_string(),
            }),
            SnowflakeSecret::PrivateKeyPem(k) => AuthType::Certificate(CertificateArgs {
                private_key_pem: k.expose().to_string(),
            }),
        };
        let args = AuthArgs {
            account_identifier: a.account.clone(),
            warehouse: a.warehouse.clone(),
            database: Some(a.database.clone()),
            schema: None,
            username: a.user.clone(),
            role: a.role.clone(),
            auth_type,
        };
        let (client, tokens) =
            tokens::client(self.client.as_ref(), self.emulator.as_ref(), &self.timeouts).map_err(|e| {
                Error::Connector {
                    connector: "snowflake",
                    message: format!("table `{table}`: cannot build the HTTP client: {e}"),
                    retryable: false,
                }
            })?;
        let api = SnowflakeApiBuilder::new(args)
            .with_client(client)
            .build()
            .map_err(|e| sf_err(table, e))?;
        Ok(SfSession {
            api,
            table: table.to_string(),
            host: format!("{}.snowflakecomputing.com", a.account),
            tokens,
        })
    }
}

/// Whether a failed call may succeed if tried again: the network (a timeout, a refused or
/// dropped connection, a server error), never an answer that does not decode or a refusal.
fn transient(e: &SnowflakeApiError) -> bool {
    use snowflake_api::connection::ConnectionError as C;
    let http = |e: &reqwest::Error| {
        e.is_timeout() || e.is_connect() || e.is_request() || e.status().is_some_and(|s| s.is_server_error())
    };
    let connection = |c: &C| match c {
        C::RequestError(e) => http(e),
        C::RequestMiddlewareError(reqwest_middleware::Error::Reqwest(e)) => http(e),
        _ => false,
    };
    match e {
        SnowflakeApiError::RequestError(c) => connection(c),
        // A login's own error type is private: a failure of the connection underneath shows
        // as an I/O error in its sources.
        SnowflakeApiError::AuthError(a) => {
            let mut source = std::error::Error::source(a);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
        _ => false,
    }
}

fn sf_err(table: &str, e: SnowflakeApiError) -> Error {
    let (kind, code) = match &e {
        _ if transient(&e) => (DriverErrorKind::Connection, None),
        SnowflakeApiError::AuthError(_) => (DriverErrorKind::Authentication, None),
        SnowflakeApiError::ApiError(code, _) => (DriverErrorKind::Other, Some(code.clone())),
        _ => (DriverErrorKind::Other, None),
    };
    Error::Driver {
        connector: "snowflake",
        table: table.to_string(),
        message: e.to_string(),
        kind,
        code,
        source: Box::new(e),
    }
}

impl SfSession {
    async fn run(&self, sql: &str) -> Result<Rows> {
        let raw = self
            .api
            .exec_raw(sql)
            .await
            .map_err(|e| match self.tokens.timed_out() {
                Some((phase, after)) => Error::Timeout {
                    connector: "snowflake",
                    host: self.host.clone(),
                    phase: phase.to_string(),
                    after,
                },
                None => sf_err(&self.table, e),
            })?;
        Ok(match raw {
            RawQueryResult::Json(j) => Rows::Json(j.value),
            RawQueryResult::Empty => Rows::Empty,
            // Arrow IPC streams, read with this workspace's arrow (the API's own arrow is
            // another version: its types never cross).
            RawQueryResult::Bytes(chunks) => {
                let mut batches = Vec::new();
                for c in chunks {
                    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(c), None)
                        .map_err(|e| Error::arrow(&self.table, e))?;
                    for b in reader {
                        batches.push(b.map_err(|e| Error::arrow(&self.table, e))?);
                    }
                }
                Rows::Arrow(batches)
            }
        })
    }

    /// The rows of a query, every cell as text.
    async fn cells(&self, sql: &str, values: &[SqlValue]) -> Result<Vec<Vec<Option<String>>>> {
        self.run(&inline(SF, sql, values)).await?.cells(&self.table)
    }

    /// (name, type) of a table's columns from `information_schema.columns`, the type as
    /// [`crate::warehouse::column_type`] names it (`number(p,s)`).
    pub(super) async fn columns(&self, schema: &str, table: &str) -> Result<Vec<(String, String)>> {
        let rows = self
            .cells(
                "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2",
                &[SqlValue::Text(schema.into()), SqlValue::Text(table.into())],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let at = |i: usize| r.get(i).cloned().flatten();
                let ty = match (at(1).unwrap_or_default().to_ascii_lowercase().as_str(), at(2), at(3)) {
                    ("number", Some(p), Some(s)) => format!("number({p},{s})"),
                    (t, _, _) => t.to_string(),
                };
                (at(0).unwrap_or_default(), ty)
            })
            .collect())
    }
}

#[async_trait]
impl Session for SfSession {
    fn table(&self) -> &str {
        &self.table
    }

    /// The rows a DML statement touched: Snowflake answers one with a row of counts, the
    /// first of them the rows inserted, updated or deleted. A statement answered otherwise
    /// (DDL's status text) touched none.
    async fn exec_with(&self, sql: &str, values: &[SqlValue]) -> Result<u64> {
        let rows = self.cells(sql, values).await?;
        let first = rows.first().and_then(|r| r.first()).cloned().flatten();
        Ok(first.and_then(|c| c.trim().parse::<u64>().ok()).unwrap_or(0))
    }

    /// Snowflake enforces no unique key: a compare-and-swap is a statement inside the
    /// transaction, and a run that lost the race touches no row.
    async fn exec_unless_raced(&self, sql: &str, values: &[SqlValue]) -> Result<Option<u64>> {
        self.exec_with(sql, values).await.map(Some)
    }

    async fn rows(&self, sql: &str) -> Result<etl_core::keys::Cells> {
        self.cells(sql, &[]).await
    }

    async fn text_with(&self, sql: &str, values: &[SqlValue]) -> Result<Option<String>> {
        let rows = self.cells(sql, values).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()).flatten())
    }
}
