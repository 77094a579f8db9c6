//! How long a connector waits for a server before it gives up.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a database connection may take to open, and a server to answer.
///
/// Every wait ends in [`Error::Timeout`] naming the server and what was being done, which is
/// retryable: a server that accepts the connection but never answers fails the run (after
/// `login`), instead of hanging it.
///
/// ```
/// use std::time::Duration;
/// use etl_core::Timeouts;
/// let t = Timeouts::default();
/// assert_eq!((t.connect, t.login, t.answer), (Duration::from_secs(10), Duration::from_secs(30), Some(Duration::from_secs(3600))));
/// let patient = Timeouts { answer: None, ..Timeouts::default() };
/// # let _ = patient;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection (each address tried), default 10 s.
    pub connect: Duration,
    /// The whole login: connection, TLS, start-up and authentication, default 30 s.
    pub login: Duration,
    /// How long the server may stay silent while an answer is owed: a statement's result, or
    /// the next rows of a read (default one hour; `None`: no limit). A statement that runs
    /// longer without a word (a large `MERGE`, an index build) needs a larger one.
    pub answer: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            login: Duration::from_secs(30),
            answer: Some(Duration::from_secs(3600)),
        }
    }
}

impl Timeouts {
    /// Runs `call`, giving up after `limit` with [`Error::Timeout`] naming `host` and `phase`.
    ///
    /// # Errors
    /// [`Error::Timeout`], or `call`'s own error.
    pub async fn within<T, F>(
        connector: &'static str,
        host: &str,
        phase: &str,
        limit: Option<Duration>,
        call: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        match limit {
            None => call.await,
            Some(after) => tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    connector,
                    host: host.to_string(),
                    phase: phase.to_string(),
                    after,
                })
            }),
        }
    }
}
