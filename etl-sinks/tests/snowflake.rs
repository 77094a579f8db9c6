//! The Snowflake sink against the fakesnow emulator (`ETL_TEST_SNOWFLAKE_URL`, started by
//! `scripts/services.sh`), through a test-only middleware that points `snowflake-api` at it
//! and fills in the response fields the emulator leaves out; the external stage reads the
//! staged Parquet from a local folder (`file:///…`).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use etl_core::conformance::{render_sorted, unique};
use etl_core::{
    LoadMode, Location, MemorySource, MergeStrategy, ObjectStoreWatermarkStore, Pipeline, TableSpec, TableStatus,
};
use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::{Value, json};

fn emulator() -> url::Url {
    let url = std::env::var("ETL_TEST_SNOWFLAKE_URL").unwrap_or_else(|_| {
        panic!("ETL_TEST_SNOWFLAKE_URL is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    url.parse().expect("ETL_TEST_SNOWFLAKE_URL is a URL")
}

/// Sends `snowflake-api`'s requests to the emulator and completes its answers.
struct Fakesnow(url::Url);

fn fill(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), v);
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
        url.set_scheme(self.0.scheme()).expect("scheme");
        url.set_host(self.0.host_str()).expect("host");
        url.set_port(self.0.port()).expect("port");
        let login = url.path().contains("login-request");
        let resp = next.run(req, ext).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(http::Response::builder()
                .status(status)
                .body(bytes.to_vec())
                .expect("response")
                .into());
        };
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
        let body = serde_json::to_vec(&v).expect("json");
        Ok(http::Response::builder()
            .status(status)
            .body(body)
            .expect("response")
            .into())
    }
}

fn client() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(Fakesnow(emulator()))
        .build()
}

fn auth() -> SnowflakeAuth {
    SnowflakeAuth {
        account: "etl".into(),
        user: "etl".into(),
        secret: SnowflakeSecret::Password("not-a-secret".into()),
        database: "ETL_TEST".into(),
        warehouse: None,
        role: None,
    }
}

/// A schema of the test's own and a folder the emulator reads staged files from.
struct Wh {
    schema: String,
    staging: tempfile::TempDir,
}

impl Wh {
    fn new() -> Wh {
        Wh {
            schema: unique("sf"),
            staging: tempfile::tempdir().unwrap(),
        }
    }

    fn sink(&self) -> SnowflakeSink {
        let url = format!("file://{}", self.staging.path().display());
        SnowflakeSink::new(
            auth(),
            Location::local(self.staging.path()).unwrap(),
            SnowflakeStage::Url(url),
        )
        .with_schema(&self.schema)
        .with_http_client(client())
    }

    /// A query's rows, rendered sorted.
    async fn rows(&self, table: &str) -> String {
        let api = snowflake_api::SnowflakeApiBuilder::new(snowflake_api::AuthArgs {
            account_identifier: "etl".into(),
            warehouse: None,
            database: Some("ETL_TEST".into()),
            schema: None,
            username: "etl".into(),
            role: None,
            auth_type: snowflake_api::AuthType::Password(snowflake_api::PasswordArgs {
                password: "not-a-secret".into(),
            }),
        })
        .with_client(client())
        .build()
        .unwrap();
        let sql = format!("SELECT * FROM \"{}\".\"{table}\"", self.schema);
        let batches = match api.exec_raw(&sql).await.unwrap() {
            snowflake_api::RawQueryResult::Bytes(chunks) => chunks
                .into_iter()
                .flat_map(|c| {
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(c), None)
                        .unwrap()
                        .map(Result::unwrap)
                })
                .collect(),
            snowflake_api::RawQueryResult::Empty => Vec::new(),
            snowflake_api::RawQueryResult::Json(j) => panic!("unexpected JSON rows: {}", j.value),
        };
        render_sorted(&batches, &[])
    }

    fn pipeline(&self, source: Arc<MemorySource>, wm: &ObjectStoreWatermarkStore, spec: TableSpec) -> Pipeline {
        Pipeline::builder(unique("p"))
            .source_arc(source)
            .sink(self.sink())
            .watermarks(wm.clone())
            .table(spec.processed_at(false))
            .build()
            .unwrap()
    }
}

fn customers(rows: &[(i64, &str, i64)]) -> RecordBatch {
    let base = chrono::NaiveDate::from_ymd_opt(2025, 7, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(
            rows.iter().map(|r| base + r.2 * 3_600_000_000).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_from_iter(["customer_id", "name", "updated_at"].into_iter().zip(cols)).unwrap()
}

/// The seed's walkthrough on Snowflake: customers 1–10, then 11–15 with 15 twice; one row per
/// key, the later one; a rerun of the window changes nothing; staged files and tables gone.
#[tokio::test]
async fn snowflake_upsert_keeps_one_row_per_key_the_latest() {
    let wh = Wh::new();
    let source = Arc::new(MemorySource::new());
    let day1: Vec<(i64, String, i64)> = (1..=10).map(|i| (i, format!("c{i}"), 1)).collect();
    let day1: Vec<(i64, &str, i64)> = day1.iter().map(|(i, n, h)| (*i, n.as_str(), *h)).collect();
    source.append("customers", customers(&day1)).unwrap();
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let p = wh.pipeline(
        source.clone(),
        &wm,
        TableSpec::new("customers")
            .mode(LoadMode::Upsert)
            .primary_key(["customer_id"])
            .cursor(["updated_at"]),
    );
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = &r.tables[0];
    assert_eq!(
        (t.inserted_count, t.updated_count, t.target_count, t.files_written),
        (10, 0, Some(10), 1)
    );
    source
        .append(
            "customers",
            customers(&[
                (11, "c11", 2),
                (15, "c15 late", 4),
                (12, "c12", 2),
                (13, "c13", 2),
                (14, "c14", 2),
                (15, "c15 early", 3),
                (3, "c3 renamed", 2),
            ]),
        )
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = &r.tables[0];
    assert_eq!(
        (
            t.extracted_count,
            t.collapsed_count,
            t.inserted_count,
            t.updated_count,
            t.target_count
        ),
        (7, 1, 5, 1, Some(15))
    );
    let rows = wh.rows("customers").await;
    assert!(rows.contains("| 15          | c15 late   |"), "{rows}");
    assert!(rows.contains("| 3           | c3 renamed |"), "{rows}");
    assert_eq!(rows.lines().count(), 15 + 4, "{rows}");
    let r = p.run().await.unwrap();
    assert_eq!(r.tables[0].status, TableStatus::NoNewData);
    assert_eq!(wh.rows("customers").await, rows);
    assert_eq!(files_under(wh.staging.path()), 0, "staged files are removed");
}

fn files_under(d: &std::path::Path) -> usize {
    std::fs::read_dir(d).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
            .sum()
    })
}
