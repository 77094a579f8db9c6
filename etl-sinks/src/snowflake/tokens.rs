//! The HTTP client of the Snowflake sink, and the session tokens it keeps out of logs.
//!
//! `snowflake-api` logs the login answer (`Auth response: …`, holding the session and master
//! tokens) at debug level, and in debug builds its default HTTP client logs every byte on the
//! wire at trace level. So the sink builds its own client, and [`SessionTokens`] sits next to
//! the network: the tokens of a login or renewal answer are swapped for stand-ins before the
//! API sees them, and swapped back into each request's header and body on the way out.
//! Whatever the API (or any middleware the user adds) logs holds the stand-ins only.
//!
//! The same middleware bounds each request by the sink's [`Timeouts`] (`login` for a login,
//! `answer` for the rest: Snowflake answers within about 45 s, with "still running" if need
//! be), whatever client the user gave, and remembers the timeout for the sink's error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etl_core::Timeouts;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

/// The client every session of the sink uses: `base` (or a default one with the connect
/// timeout and retries of transient failures) with [`SessionTokens`] nearest the network.
pub(super) fn client(
    base: Option<&ClientWithMiddleware>,
    emulator: Option<&reqwest::Url>,
    timeouts: &Timeouts,
) -> reqwest::Result<(ClientWithMiddleware, Arc<SessionTokens>)> {
    let base = match base {
        Some(c) => c.clone(),
        None => {
            let http = reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .gzip(true)
                .build()?;
            let retries = reqwest_retry::policies::ExponentialBackoff::builder().build_with_max_retries(3);
            ClientBuilder::new(http)
                .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(retries))
                .build()
        }
    };
    let base = match emulator {
        Some(url) => ClientBuilder::from_client(base)
            .with(super::emulator::Fakesnow(url.clone()))
            .build(),
        None => base,
    };
    let tokens = Arc::new(SessionTokens::new(*timeouts));
    Ok((
        ClientBuilder::from_client(base).with_arc(tokens.clone()).build(),
        tokens,
    ))
}

/// Swaps session tokens for stand-ins in answers, and back in requests; bounds each request
/// by the timeouts.
pub(super) struct SessionTokens {
    /// (stand-in, token), newest last; a few are kept (a session renews its tokens).
    known: Mutex<VecDeque<(String, String)>>,
    timeouts: Timeouts,
    /// The last request that timed out: what it was doing, and the limit.
    timed_out: Mutex<Option<(&'static str, Duration)>>,
}

/// A request that ran out of time (the error the middleware hands the API).
#[derive(Debug)]
struct Silent(&'static str, Duration);

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {}s while {}", self.1.as_secs_f64(), self.0)
    }
}

impl std::error::Error for Silent {}

/// Tokens kept at most (a session holds two; renewals replace them).
const KEEP: usize = 16;

impl SessionTokens {
    fn new(timeouts: Timeouts) -> Self {
        SessionTokens {
            known: Mutex::new(VecDeque::new()),
            timeouts,
            timed_out: Mutex::new(None),
        }
    }

    /// What the last request that timed out was doing, and its limit (taken once).
    pub(super) fn timed_out(&self) -> Option<(&'static str, Duration)> {
        self.timed_out.lock().expect("timeout lock").take()
    }

    fn stand_in(&self, token: &str) -> String {
        let mut known = self.known.lock().expect("tokens lock");
        if let Some((s, _)) = known.iter().find(|(_, t)| t == token) {
            return s.clone();
        }
        let s = format!("etl-redacted-{}", uuid::Uuid::new_v4().simple());
        known.push_back((s.clone(), token.to_string()));
        if known.len() > KEEP {
            known.pop_front();
        }
        s
    }

    /// `text` with every stand-in replaced by its token.
    fn restore(&self, text: &str) -> Option<String> {
        let known = self.known.lock().expect("tokens lock");
        let mut out = None;
        for (s, t) in known.iter() {
            let current: &str = out.as_deref().unwrap_or(text);
            if current.contains(s.as_str()) {
                out = Some(current.replace(s.as_str(), t));
            }
        }
        out
    }
}

#[async_trait::async_trait]
impl Middleware for SessionTokens {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let auth = reqwest::header::AUTHORIZATION;
        if let Some(real) = req
            .headers()
            .get(&auth)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| self.restore(v))
            && let Ok(v) = reqwest::header::HeaderValue::from_str(&real)
        {
            req.headers_mut().insert(auth, v);
        }
        // A renewal's body names the old session token.
        if let Some(real) = req
            .body()
            .and_then(|b| b.as_bytes())
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| self.restore(b))
        {
            *req.body_mut() = Some(real.into());
        }
        let path = req.url().path();
        let session = path.contains("login-request") || path.contains("token-request");
        let (phase, limit) = if path.contains("login-request") {
            ("logging in", Some(self.timeouts.login))
        } else {
            ("waiting for an answer", self.timeouts.answer)
        };
        let resp = match limit {
            None => next.run(req, ext).await?,
            Some(after) => match tokio::time::timeout(after, next.run(req, ext)).await {
                Ok(resp) => resp?,
                Err(_) => {
                    *self.timed_out.lock().expect("timeout lock") = Some((phase, after));
                    return Err(reqwest_middleware::Error::middleware(Silent(phase, after)));
                }
            },
        };
        if !session {
            return Ok(resp);
        }
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.bytes().await?;
        let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut v) => {
                if let Some(data) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
                    for key in ["token", "masterToken", "sessionToken"] {
                        if let Some(serde_json::Value::String(t)) = data.get_mut(key) {
                            *t = self.stand_in(t);
                        }
                    }
                }
                serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec())
            }
            Err(_) => bytes.to_vec(),
        };
        let mut out = http::Response::builder().status(status);
        for (k, v) in headers.iter().filter(|(k, _)| *k != reqwest::header::CONTENT_LENGTH) {
            out = out.header(k, v);
        }
        Ok(out
            .body(body)
            .map_err(|e| reqwest_middleware::Error::Middleware(e.into()))?
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_restored_in_requests() {
        let t = SessionTokens::new(Timeouts::default());
        let s = t.stand_in("real-token");
        assert!(s.starts_with("etl-redacted-") && !s.contains("real"));
        assert_eq!(t.stand_in("real-token"), s, "one stand-in per token");
        assert_eq!(
            t.restore(&format!("Snowflake Token=\"{s}\"")).as_deref(),
            Some("Snowflake Token=\"real-token\"")
        );
        assert_eq!(t.restore("nothing to restore"), None);
    }
}
