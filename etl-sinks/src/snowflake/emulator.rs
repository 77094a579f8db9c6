//! Local development against [fakesnow](https://github.com/tekumara/fakesnow), an emulator of
//! Snowflake's REST API on DuckDB: `snowflake-api` always calls
//! `https://<account>.snowflakecomputing.com`, so a middleware sends each request to the
//! emulator instead, and fills in the answer fields the emulator leaves out that the API's
//! types require (a login's `masterToken`, `sessionId`, validities and role; a query's
//! `returned`, `version`, `finalRoleName`, `parameters`; an error's `age`, `internalError`,
//! `queryId`, `sqlState`). Nothing else changes: the sink sends the same statements.
//!
//! ```no_run
//! # fn demo() -> etl_core::Result<()> {
//! use etl_core::Location;
//! use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
//! let auth = SnowflakeAuth {
//!     account: "dev".into(),
//!     user: "dev".into(),
//!     secret: SnowflakeSecret::Password("dev".into()),
//!     database: "DEV".into(),
//!     warehouse: None,
//!     role: None,
//! };
//! // fakesnow -s --host 127.0.0.1 -p 9103; its stages read `file:///` folders.
//! let sink = SnowflakeSink::new(auth, Location::local("/tmp/stage")?, SnowflakeStage::Url("file:///tmp/stage".into()))
//!     .with_emulator("http://127.0.0.1:9103")?;
//! # Ok(()) }
//! ```

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::{Value, json};

/// Sends `snowflake-api`'s requests to the emulator at its URL and completes its answers.
pub(super) struct Fakesnow(pub(super) reqwest::Url);

/// An HTTP client for `snowflake-api` that talks to the emulator at `url`: what
/// [`super::SnowflakeSink::with_emulator`] uses, for a session of your own on the same
/// emulator (`SnowflakeApiBuilder::with_client`).
pub fn emulator_client(url: reqwest::Url) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new()).with(Fakesnow(url)).build()
}

fn fill(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), v);
    }
}

/// An answer's JSON with the fields the API's types require and the emulator leaves out.
fn complete(v: &mut Value, login: bool) {
    let ok = v["success"].as_bool().unwrap_or(false);
    let data = &mut v["data"];
    if login && ok {
        let token = data["token"].clone();
        fill(data, "masterToken", token);
        fill(data, "sessionId", json!(1));
        fill(data, "serverVersion", json!("fakesnow"));
        fill(data, "parameters", json!([]));
        fill(data, "validityInSeconds", json!(3600));
        fill(data, "masterValidityInSeconds", json!(14400));
        fill(data, "sessionInfo", json!({}));
        fill(&mut data["sessionInfo"], "roleName", json!("PUBLIC"));
    } else if ok {
        let total = data["total"].clone();
        fill(data, "returned", total);
        fill(data, "parameters", json!([]));
        fill(data, "rowtype", json!([]));
        fill(data, "queryId", json!(""));
        fill(data, "finalRoleName", json!("PUBLIC"));
        fill(data, "statementTypeId", json!(0));
        fill(data, "version", json!(1));
        fill(data, "chunks", json!([]));
        fill(data, "chunkHeaders", json!({}));
    } else if data.is_object() {
        fill(data, "age", json!(0));
        fill(data, "internalError", json!(false));
        fill(data, "queryId", json!(""));
        fill(data, "sqlState", json!("00000"));
        let code = v["code"].clone();
        fill(&mut v["data"], "errorCode", code);
    }
}

#[async_trait::async_trait]
impl Middleware for Fakesnow {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url_mut();
        let moved = url
            .set_scheme(self.0.scheme())
            .and_then(|()| url.set_host(self.0.host_str()).map_err(|_| ()))
            .and_then(|()| url.set_port(self.0.port()));
        if moved.is_err() {
            let msg = format!("the emulator URL `{}` cannot take a request", self.0);
            return Err(reqwest_middleware::Error::Middleware(std::io::Error::other(msg).into()));
        }
        let login = url.path().contains("login-request");
        let resp = next.run(req, ext).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                complete(&mut v, login);
                serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec())
            }
            Err(_) => bytes.to_vec(),
        };
        Ok(http::Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| reqwest_middleware::Error::Middleware(e.into()))?
            .into())
    }
}
