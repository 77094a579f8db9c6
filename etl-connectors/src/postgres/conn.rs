//! Connections to PostgreSQL shared by the source and the Postgres sink: the connection
//! string, TLS, and the mapping of driver errors.

use std::fmt;
use std::path::PathBuf;

use etl_core::{Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Maps a driver error at the crate boundary: a missing table is [`Error::TableNotFound`],
/// the rest [`Error::Connector`] (retryable for deadlocks, serialization failures, lost
/// connections and a server shutting down or out of connections).
pub fn pg_err(table: &str, e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => Error::TableNotFound {
            table: table.to_string(),
            source_name: "postgres".to_string(),
        },
        code => {
            let retryable = code.is_none_or(|c| {
                [
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(c)
            });
            let detail = e.as_db_error().map_or_else(
                || {
                    // The driver's message and its causes (a TLS handshake names the certificate
                    // problem only in its source).
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    text
                },
                |d| d.message().to_string(),
            );
            Error::Connector {
                connector: "postgres",
                message: format!("table `{table}`: {detail}"),
                retryable,
            }
        }
    }
}

/// A PostgreSQL connection string (libpq's `host=… user=… dbname=…` or a URL) with its TLS
/// settings. The password never appears in `Debug` output nor in errors.
///
/// TLS (feature `tls`, rustls) is used when the connection string says `sslmode=require`,
/// and then the server's certificate is always verified (libpq's `verify-full`) against the
/// bundled Mozilla roots and [`PgConfig::with_root_certificate`]; `sslmode=prefer` (the
/// default) and `disable` connect without TLS.
#[derive(Clone)]
pub struct PgConfig {
    config: tokio_postgres::Config,
    root_certificate: Option<PathBuf>,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("password", &self.config.get_password().map(|_| "<redacted>"))
            .field("sslmode", &self.config.get_ssl_mode())
            .finish()
    }
}

impl PgConfig {
    /// Parses a connection string.
    ///
    /// # Errors
    /// [`Error::Config`] when the string does not parse (the message never repeats it).
    pub fn new(conn: &str) -> Result<Self> {
        let config = conn
            .parse::<tokio_postgres::Config>()
            .map_err(|e| Error::config(format!("invalid Postgres connection string: {e}")))?;
        Ok(PgConfig {
            config,
            root_certificate: None,
        })
    }

    /// Trusts the PEM certificates of `path` (a private CA, or a self-signed server) besides
    /// the bundled Mozilla roots.
    pub fn with_root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificate = Some(path.into());
        self
    }

    /// Opens a connection; its driver task runs on the current runtime. `table` names what
    /// the connection is for, in errors.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login or the certificate.
    pub async fn connect(&self, table: &str) -> Result<Client> {
        fn spawn<F>(conn: F)
        where
            F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send + 'static,
        {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "postgres connection ended with an error");
                }
            });
        }
        if self.config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            #[cfg(feature = "tls")]
            {
                let tls = crate::db::tls_config("postgres", self.root_certificate.as_deref())?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, conn) = self.config.connect(tls).await.map_err(|e| pg_err(table, e))?;
                spawn(conn);
                return Ok(client);
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::config(format!(
                "table `{table}`: sslmode=require needs the `tls` feature of the etl crates"
            )));
        }
        let (client, conn) = self.config.connect(NoTls).await.map_err(|e| pg_err(table, e))?;
        spawn(conn);
        Ok(client)
    }
}
