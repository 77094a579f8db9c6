//! What the database sources share: the read template every database source fills in with
//! its driver's parts ([`read`]), the incremental window of a read ([`window`]), when to
//! count, and the helpers of their connections (TLS, server messages).

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod keys;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod read;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod window;

#[cfg(any(feature = "tls", feature = "postgres", feature = "mysql"))]
use etl_core::{Error, Result};

/// When a database source counts the table's rows for the report.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counts {
    /// On every read.
    Always,
    /// When the whole table is read (full and first incremental reads); the default, so a
    /// delta read never scans the whole table just to count it.
    #[default]
    WholeReads,
    /// Never.
    Never,
}

/// The first `quote`-delimited part of a server's message (the relation it names).
pub(crate) fn quoted(message: &str, quote: char) -> Option<&str> {
    let (_, rest) = message.split_once(quote)?;
    rest.split_once(quote).map(|(name, _)| name).filter(|n| !n.is_empty())
}

/// A TLS client configuration: the bundled Mozilla roots, plus the PEM certificates of
/// `root` (a private CA or a self-signed server) when given.
#[cfg(feature = "tls")]
pub(crate) fn tls_config(connector: &'static str, root: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root {
        let bad =
            |e: &dyn std::fmt::Display| Error::config(format!("{connector}: root certificate {}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no PEM certificate in the file"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("{connector}: TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Waits for a count task started beside the read.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn join_count(
    connector: &'static str,
    table: &str,
    task: etl_core::kit::task::AbortOnDrop<Result<()>>,
) -> Result<()> {
    match task.join().await {
        Ok(r) => r,
        Err(e) => Err(Error::Connector {
            connector,
            message: format!("table `{table}`: count task failed: {e}"),
            retryable: true,
        }),
    }
}
