//! Connections to PostgreSQL shared by the source and the Postgres sink: the connection
//! string, TLS, and the mapping of driver errors.

use std::fmt;
use std::path::PathBuf;

use std::time::Duration;

use etl_core::{DriverErrorKind, Error, Result, Secret, Timeouts};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Maps a driver error at the crate boundary: a missing table is [`Error::TableNotFound`]
/// naming the relation the server looked for; the rest [`Error::Driver`] naming `table`, its
/// kind from the SQLSTATE (a deadlock or serialization failure is a retryable
/// [`DriverErrorKind::Conflict`]), or [`DriverErrorKind::Connection`] when the connection
/// failed, and the driver's error as its source.
pub fn pg_err(table: &str, e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        return Error::TableNotFound {
            // `relation "s.nope" does not exist`
            table: e
                .as_db_error()
                .and_then(|d| crate::db::quoted(d.message(), '"'))
                .unwrap_or(table)
                .to_string(),
            source_name: "postgres".to_string(),
        };
    }
    let (message, kind, code) = match e.as_db_error() {
        Some(d) => (
            d.message().to_string(),
            DriverErrorKind::of_sqlstate(d.code().code()),
            Some(d.code().code().to_string()),
        ),
        None => {
            // The driver's message and its causes (a TLS handshake names the certificate
            // problem only in its source).
            let mut text = e.to_string();
            let mut io = e.is_closed();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                io |= s.is::<std::io::Error>();
                source = s.source();
            }
            let kind = if io {
                DriverErrorKind::Connection
            } else {
                DriverErrorKind::Other
            };
            (text, kind, None)
        }
    };
    Error::Driver {
        connector: "postgres",
        table: table.to_string(),
        message,
        kind,
        code,
        source: Box::new(e),
    }
}

/// A PostgreSQL connection string (libpq's `host=… user=… dbname=…` or a URL) with its TLS
/// settings and [`Timeouts`]. The password never appears in `Debug` output nor in errors.
///
/// TLS (feature `tls`, rustls) is used when the connection string says `sslmode=require`,
/// and then the server's certificate is always verified (libpq's `verify-full`) against the
/// bundled Mozilla roots and [`PgConfig::with_root_certificate`]; `sslmode=prefer` (the
/// default) and `disable` connect without TLS.
///
/// A connection string's own `connect_timeout` wins over [`Timeouts::connect`]; TCP
/// keepalives are on (idle 60 s unless the string says otherwise), so a server that vanishes
/// mid-run is noticed.
#[derive(Clone)]
pub struct PgConfig {
    config: tokio_postgres::Config,
    root_certificate: Option<PathBuf>,
    timeouts: Timeouts,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field(
                "password",
                &self
                    .config
                    .get_password()
                    .map(|p| Secret::new(String::from_utf8_lossy(p))),
            )
            .field("sslmode", &self.config.get_ssl_mode())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl PgConfig {
    /// Parses a connection string.
    ///
    /// # Errors
    /// [`Error::Config`] when the string does not parse (the message never repeats it).
    pub fn new(conn: &str) -> Result<Self> {
        let mut config = conn
            .parse::<tokio_postgres::Config>()
            .map_err(|e| Error::config(format!("invalid Postgres connection string: {e}")))?;
        // tokio-postgres' default idle time is two hours: a vanished server would hang a run.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(60));
        }
        Ok(PgConfig {
            config,
            root_certificate: None,
            timeouts: Timeouts::default(),
        })
    }

    /// Trusts the PEM certificates of `path` (a private CA, or a self-signed server) besides
    /// the bundled Mozilla roots.
    pub fn with_root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificate = Some(path.into());
        self
    }

    /// How long to wait for the server (default [`Timeouts::default`]).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The database as `postgres://user@host:port/dbname`, without the password: what two
    /// configurations of one database share.
    pub fn address(&self) -> String {
        format!(
            "postgres://{}@{}/{}",
            self.config.get_user().unwrap_or_default(),
            self.host(),
            self.config.get_dbname().unwrap_or_default()
        )
    }

    /// The server(s), as `host:port`, for messages.
    fn host(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .chain(self.config.get_hostaddrs().iter().map(|a| format!("{a}:{port}")))
            .collect();
        hosts.join(",")
    }

    /// Opens a connection; its driver task runs on the current runtime. `table` names what
    /// the connection is for, in errors.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login or the certificate;
    /// [`Error::Timeout`] when connecting or logging in takes longer than the timeouts allow.
    pub async fn connect(&self, table: &str) -> Result<PgClient> {
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
        let host = self.host();
        let mut config = self.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.timeouts.connect);
        }
        // tokio-postgres ends a TCP connect that takes too long with an I/O `TimedOut`.
        let connect_err = |e: tokio_postgres::Error| {
            let timed_out = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            match config.get_connect_timeout() {
                Some(after) if timed_out => Error::Timeout {
                    connector: "postgres",
                    host: host.clone(),
                    phase: "connecting".to_string(),
                    after: *after,
                },
                _ => pg_err(table, e),
            }
        };
        let login = async {
            if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                #[cfg(feature = "tls")]
                {
                    let tls = crate::db::tls_config("postgres", self.root_certificate.as_deref())?;
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                    let (client, conn) = config.connect(tls).await.map_err(connect_err)?;
                    spawn(conn);
                    return Ok(client);
                }
                #[cfg(not(feature = "tls"))]
                return Err(Error::config(format!(
                    "table `{table}`: sslmode=require needs the `tls` feature of the etl crates"
                )));
            }
            let (client, conn) = config.connect(NoTls).await.map_err(connect_err)?;
            spawn(conn);
            Ok(client)
        };
        let client = Timeouts::within("postgres", &host, "logging in", Some(self.timeouts.login), login).await?;
        Ok(PgClient {
            client,
            table: table.to_string(),
            host,
            answer: self.timeouts.answer,
        })
    }
}

/// A connection to PostgreSQL whose calls give up with [`Error::Timeout`] when the server
/// stays silent longer than [`Timeouts::answer`], and whose errors name the table it is for.
/// It derefs to the driver's client, to build calls with.
pub struct PgClient {
    client: Client,
    table: String,
    host: String,
    answer: Option<Duration>,
}

impl std::ops::Deref for PgClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for PgClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgClient")
            .field("table", &self.table)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl PgClient {
    /// The table the connection is for (in errors).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Awaits one call of the driver within the answer timeout; the driver's own error is
    /// handed back as it is (for callers that look at its SQLSTATE).
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub async fn timed<T, F>(&self, call: F) -> Result<std::result::Result<T, tokio_postgres::Error>>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let answer = Timeouts::within("postgres", &self.host, "waiting for an answer", self.answer, async {
            Ok(call.await)
        })
        .await;
        if answer.is_err() {
            self.cancel();
        }
        answer
    }

    /// Asks the server to cancel what the connection is running (after a timeout: a statement
    /// waiting on a lock would otherwise hold its own until the server notices the client is
    /// gone). Best effort, in the background.
    fn cancel(&self) {
        let token = self.client.cancel_token();
        tokio::spawn(async move {
            let cancel = tokio::time::timeout(Duration::from_secs(10), token.cancel_query(NoTls));
            if let Ok(Err(e)) = cancel.await {
                tracing::warn!(error = %e, "could not cancel a postgres statement that timed out");
            }
        });
    }

    /// Awaits one call of the driver within the answer timeout.
    ///
    /// # Errors
    /// [`Error::Timeout`], or the driver's error mapped by [`pg_err`].
    pub async fn call<T, F>(&self, call: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        self.timed(call).await?.map_err(self.err())
    }

    /// Maps a driver error to one naming the table.
    pub fn err(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        |e| pg_err(&self.table, e)
    }

    /// Runs a statement; returns the rows it touched.
    ///
    /// # Errors
    /// As [`PgClient::call`].
    pub async fn exec(&self, sql: &str) -> Result<u64> {
        self.call(self.client.execute(sql, &[])).await
    }

    /// Runs statements without parameters.
    ///
    /// # Errors
    /// As [`PgClient::call`].
    pub async fn batch(&self, sql: &str) -> Result<()> {
        self.call(self.client.batch_execute(sql)).await
    }

    /// Every row of a query, each cell as text (the query casts to text).
    ///
    /// # Errors
    /// As [`PgClient::call`]; a cell that is not text.
    pub async fn text_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let rows = self.call(self.client.query(sql, &[])).await?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Option<String>>(i).map_err(self.err()))
                    .collect()
            })
            .collect()
    }

    /// Runs a `SELECT count(*) …`.
    ///
    /// # Errors
    /// As [`PgClient::call`].
    pub async fn count(&self, sql: &str) -> Result<u64> {
        let row = self.call(self.client.query_one(sql, &[])).await?;
        let n: i64 = row.try_get(0).map_err(self.err())?;
        Ok(n as u64)
    }

    /// The bytes of a `COPY … TO STDOUT`; the server may stay silent for the answer timeout
    /// at most between two chunks (then the statement is cancelled).
    ///
    /// # Errors
    /// As [`PgClient::call`]; the stream's items too.
    pub async fn copy_out(&self, sql: &str) -> Result<CopyOut> {
        let stream = Box::pin(self.call(self.client.copy_out(sql)).await?);
        Ok(CopyOut {
            inner: stream,
            table: self.table.clone(),
            host: self.host.clone(),
            answer: self.answer,
            silence: None,
            token: self.client.cancel_token(),
        })
    }
}

/// The chunks of a `COPY … TO STDOUT`, failing with [`Error::Timeout`] when the server stays
/// silent longer than the answer timeout. The timer runs only while no chunk is ready (a
/// chunk is a row: one timer per row would cost more than the row).
pub struct CopyOut {
    inner: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    table: String,
    host: String,
    answer: Option<Duration>,
    silence: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    token: tokio_postgres::CancelToken,
}

impl futures::Stream for CopyOut {
    type Item = Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                this.silence = None;
                Poll::Ready(item.map(|r| r.map_err(|e| pg_err(&this.table, e))))
            }
            Poll::Pending => {
                let Some(after) = this.answer else {
                    return Poll::Pending;
                };
                let silence = this.silence.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if silence.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.silence = None;
                let token = this.token.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), token.cancel_query(NoTls)).await;
                });
                Poll::Ready(Some(Err(Error::Timeout {
                    connector: "postgres",
                    host: this.host.clone(),
                    phase: "reading rows".to_string(),
                    after,
                })))
            }
        }
    }
}
