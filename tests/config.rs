//! Pipelines from configuration files, run against the real services.

use std::path::Path;

use etl::config::{FromConfig, PipelineConfig};
use etl::{LoadMode, Pipeline, TableStatus};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn err(dir: &Path, name: &str, text: &str) -> String {
    match PipelineConfig::load(write(dir, name, text)) {
        Ok(c) => c.build().await.map(|_| ()).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    }
}

/// A malformed file is refused naming the file, the line and the key.
#[tokio::test]
async fn a_malformed_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let head = "name = \"p\"\nsource = { kind = \"files\", location = \"in\" }\nsink = { kind = \"lake\", location = \"out\" }\n";
    let e = err(
        dir.path(),
        "a.toml",
        &format!("{head}[[tables]]\nname = \"t\"\n\n[[tables]]\nname = \"u\"\nmode = \"UPSRT\"\n"),
    )
    .await;
    assert!(
        e.contains("a.toml, line 9, key tables[1].mode: unknown load mode `UPSRT`"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "b.toml",
        &format!("{head}[[tables]]\nname = \"t\"\nprimary_ky = \"id\"\n"),
    )
    .await;
    assert!(
        e.contains("b.toml, line 6, key tables[0].primary_ky: unknown field `primary_ky`"),
        "{e}"
    );
    let e = err(dir.path(), "c.toml", &format!("{head}tables = [ {{ name = 3 }} ]\n")).await;
    assert!(
        e.contains("c.toml, line 4, key tables[0].name: invalid type: integer `3`"),
        "{e}"
    );
    let e = err(dir.path(), "d.toml", "name = \"p\"\nsource = {\n").await;
    assert!(e.contains("d.toml, line 2"), "{e}");
    let e = err(
        dir.path(),
        "e.json",
        "{\"name\": \"p\",\n \"source\": {\"kind\": \"files\", \"location\": \"in\"},\n \"sink\": {\"kind\": \"lake\", \"location\": \"out\"},\n \"tables\": [{\"name\": \"t\", \"mode\": 7}]}\n",
    ).await;
    assert!(
        e.contains("e.json, line 4, key tables[0].mode: invalid type: integer `7`"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "f.toml",
        "name = \"p\"\nsource = { kind = \"postgres\" }\nsink = { kind = \"lake\", location = \"out\" }\ntables = []\n",
    )
    .await;
    assert!(e.contains("source of kind `postgres` needs `url`"), "{e}");
    let e = err(
        dir.path(),
        "g.toml",
        "name = \"p\"\nsource = { kind = \"oracle\", url = \"x\" }\nsink = { kind = \"lake\", location = \"out\" }\ntables = []\n",
    ).await;
    assert!(
        e.contains("source of kind `oracle`: unknown; expected one of postgres, mysql, files"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "h.toml",
        &format!("{head}[[tables]]\nname = \"t\"\nlookback = \"ten minutes\"\n"),
    )
    .await;
    assert!(
        e.contains("table `t`, key lookback: `ten minutes` is not a duration"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "i.toml",
        &format!("{head}[[tables]]\nname = \"t\"\nmode = \"UPSERT\"\n"),
    )
    .await;
    assert!(e.contains("i.toml: table `t`: mode UPSERT needs cursor columns"), "{e}");
    #[cfg(feature = "snowflake")]
    {
        let sf = "name = \"p\"\nsource = { kind = \"files\", location = \"in\" }\n\
                  sink = { kind = \"snowflake\", account = \"a\", user = \"u\", database = \"d\", staging = \"s\"";
        let e = err(dir.path(), "j.toml", &format!("{sf} }}\ntables = []\n")).await;
        assert!(
            e.contains("sink of kind `snowflake` needs one of `password` and `private_key`"),
            "{e}"
        );
        let e = err(
            dir.path(),
            "k.toml",
            &format!("{sf}, password = \"p\", emulator = \"nope\" }}\ntables = []\n"),
        )
        .await;
        assert!(
            e.contains("the Snowflake emulator URL `nope` is not an http(s) URL"),
            "{e}"
        );
        let e = err(
            dir.path(),
            "l.toml",
            &format!("{sf}, password = \"p\", iam_role = \"r\" }}\ntables = []\n"),
        )
        .await;
        assert!(e.contains("sink of kind `snowflake` takes no `iam_role`"), "{e}");
    }
}

/// CSV drops into a lake from a TOML file, twice: the second run finds nothing new; the file
/// written back reads as the same configuration.
#[tokio::test]
async fn a_toml_pipeline_loads_files_into_a_lake() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/orders")).unwrap();
    std::fs::write(
        dir.path().join("landing/orders/day1.csv"),
        "order_id,order_date,amount\n1,2025-07-23,9.5\n2,2025-07-24,20\n",
    )
    .unwrap();
    let path = write(
        dir.path(),
        "pipeline.toml",
        r#"
name = "daily"
source = { kind = "files", location = "landing" }
sink = { kind = "lake", location = "lake" }

[[tables]]
name = "orders"
files = { prefix = "orders/", format = "csv" }
mode = "INCREMENTAL"
partition_by = { date = "order_date" }
"#,
    );
    let p = Pipeline::from_config(&path).await.unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("orders").unwrap().written_count, 2);
    assert!(dir.path().join("lake/orders/year=2025/month=7/day=24").is_dir());
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("orders").unwrap().status, TableStatus::NoNewData);

    let config = PipelineConfig::load(&path).unwrap();
    let again = PipelineConfig::parse(Path::new("again.toml"), &config.to_toml().unwrap()).unwrap();
    assert_eq!(again.tables, config.tables);
    assert_eq!((&again.source, &again.sink), (&config.source, &config.sink));
    // The same in YAML.
    let yaml = write(
        dir.path(),
        "pipeline.yaml",
        "name: daily\nsource: {kind: files, location: landing}\nsink: {kind: lake, location: lake}\ntables:\n  - name: orders\n    files: {prefix: orders/, format: csv}\n    mode: INCREMENTAL\n    partition_by: {date: order_date}\n",
    );
    assert_eq!(PipelineConfig::load(yaml).unwrap().tables, config.tables);
}

/// The per-table keys of a Glue-style framework (`target_table`, `primary_key`,
/// `timestamp_column`, `operations`) run as they are: Postgres to Postgres, read back.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_glue_style_table_config_runs_as_it_is() {
    let url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let (pg, c) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    let src = format!("cfg_{}", std::process::id());
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {src} CASCADE; DROP SCHEMA IF EXISTS {src}_wh CASCADE; CREATE SCHEMA {src};
         CREATE TABLE {src}.customers (customer_id bigint PRIMARY KEY, name text, updated_at timestamp NOT NULL);
         INSERT INTO {src}.customers SELECT i, 'c' || i, '2025-07-01'::timestamp + i * interval '1 hour'
           FROM generate_series(1, 20) i;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Secrets by reference: the URL from the environment, the schema from a file.
    std::fs::write(dir.path().join("schema.txt"), format!("{src}_wh\n")).unwrap();
    let path = write(
        dir.path(),
        "crm.json",
        &format!(
            r#"{{
  "name": "crm_{src}",
  "source": {{"kind": "postgres", "url": "${{env:ETL_TEST_PG}}"}},
  "sink": {{"kind": "postgres", "url": "${{env:ETL_TEST_PG}}", "schema": "${{file:schema.txt}}"}},
  "tables": [
    {{"name": "customers", "from": "{src}.customers", "target_table": "dim_customers",
      "primary_key": "customer_id", "timestamp_column": "updated_at", "operations": "UPSERT",
      "processed_at": false}}
  ]
}}"#
        ),
    );
    let config = PipelineConfig::load(&path).unwrap();
    assert_eq!(config.tables[0].mode, LoadMode::Upsert);
    let p = config.build().await.unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("customers").unwrap().written_count, 20);
    pg.batch_execute(&format!(
        "UPDATE {src}.customers SET name = 'renamed', updated_at = '2026-01-01' WHERE customer_id = 7"
    ))
    .await
    .unwrap();
    // The plan counts the one row past the watermark, reading none.
    let plan = p.plan(&[], &etl::ModeOverrides::new()).await.unwrap();
    assert_eq!(
        (plan[0].mode, plan[0].estimate.rows),
        (LoadMode::Upsert, Some(1)),
        "{plan:?}"
    );
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("customers").unwrap().updated_count, 1);
    let rows = pg
        .query(
            &format!("SELECT count(*), max(name) FILTER (WHERE customer_id = 7) FROM {src}_wh.dim_customers"),
            &[],
        )
        .await
        .unwrap();
    let (n, name): (i64, String) = (rows[0].get(0), rows[0].get(1));
    assert_eq!((n, name.as_str()), (20, "renamed"));
    pg.batch_execute(&format!("DROP SCHEMA {src} CASCADE; DROP SCHEMA {src}_wh CASCADE"))
        .await
        .unwrap();
}

/// A Glue job's migration from its config: the first run starts from the legacy
/// `timestamp.csv` (with its header), the query places the watermark in its own predicate,
/// and the lake is partitioned `date=…/month=…` (zero-padded) by a date column.
#[cfg(all(feature = "postgres", feature = "lake"))]
#[tokio::test]
async fn a_legacy_timestamp_a_watermark_query_and_formatted_partitions() {
    let url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let (pg, c) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    let src = format!("cfgq_{}", std::process::id());
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {src} CASCADE; CREATE SCHEMA {src};
         CREATE TABLE {src}.orders (order_id bigint PRIMARY KEY, order_date date, updated_at timestamp NOT NULL);
         INSERT INTO {src}.orders VALUES (1, '2025-06-30', '2025-06-30 10:00'), (2, '2025-07-23', '2025-07-23 10:00'),
                                         (3, '2025-07-24', '2025-07-24 09:00'), (4, '2025-07-24', '2025-07-24 11:00');"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state/legacy")).unwrap();
    std::fs::write(
        dir.path().join("state/legacy/timestamp.csv"),
        "timestamp\n2025-07-01 00:00:00\n",
    )
    .unwrap();
    let path = write(
        dir.path(),
        "job.toml",
        &format!(
            r#"
name = "glue_port"
source = {{ kind = "postgres", url = "${{env:ETL_TEST_PG}}" }}
sink = {{ kind = "lake", location = "lake" }}
watermarks = {{ kind = "object_store", location = "state" }}

[[tables]]
name = "orders"
query = "SELECT * FROM {src}.orders WHERE updated_at > {{watermark}}"
operations = "INCREMENTAL"
timestamp_column = "updated_at"
timestamp_s3_path = "legacy/timestamp.csv"
processed_at = false
partition_by = {{ columns = [{{ name = "date", column = "order_date", format = "%Y-%m-%d" }}, {{ name = "month", column = "order_date", format = "%m" }}] }}
"#
        ),
    );
    let p = Pipeline::from_config(&path).await.unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders").unwrap();
    assert_eq!(t.extracted_count, 3, "order 1 is older than the legacy timestamp");
    let mut folders: Vec<String> = std::fs::read_dir(dir.path().join("lake/orders"))
        .unwrap()
        .flat_map(|d| {
            let d = d.unwrap().path();
            std::fs::read_dir(&d).unwrap().map(move |m| {
                format!(
                    "{}/{}",
                    d.file_name().unwrap().to_string_lossy(),
                    m.unwrap().file_name().to_string_lossy()
                )
            })
        })
        .collect();
    folders.sort();
    assert_eq!(folders, ["date=2025-07-23/month=07", "date=2025-07-24/month=07"]);
    pg.batch_execute(&format!(
        "UPDATE {src}.orders SET updated_at = '2025-07-25 08:00' WHERE order_id = 1"
    ))
    .await
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("orders").unwrap().extracted_count, 1);
    assert!(dir.path().join("lake/orders/date=2025-06-30/month=06").is_dir());
    // A legacy file for a sink that keeps watermarks in its database is refused by name.
    let bad = write(
        dir.path(),
        "bad.toml",
        "name = \"p\"\nsource = { kind = \"postgres\", url = \"${env:ETL_TEST_PG}\" }\n\
         sink = { kind = \"postgres\", url = \"${env:ETL_TEST_PG}\" }\n\
         [[tables]]\nname = \"t\"\nlegacy_timestamp_file = \"x.csv\"\n",
    );
    let e = PipelineConfig::load(&bad)
        .unwrap()
        .build()
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml: tables.t.legacy_timestamp_file"), "{e}");
    pg.batch_execute(&format!("DROP SCHEMA {src} CASCADE")).await.unwrap();
}

/// Transforms from the file: columns selected, renamed and cast, rows with a NULL key dropped;
/// DuckDB reads the lake back. A type the file misspells is named.
#[tokio::test]
async fn transforms_from_the_file_shape_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/orders")).unwrap();
    std::fs::write(
        dir.path().join("landing/orders/day1.csv"),
        "order_id,amount,note,secret\n1,9.5,gift,x\n,3,none,y\n2,20,rush,z\n",
    )
    .unwrap();
    let head = r#"
name = "shaped"
source = { kind = "files", location = "landing" }
sink = { kind = "lake", location = "lake" }

[[tables]]
name = "orders"
files = { prefix = "orders/", format = "csv" }
processed_at = false
"#;
    let path = write(
        dir.path(),
        "p.toml",
        &format!(
            "{head}transforms = [{{ select = [\"order_id\", \"amount\", \"note\"] }}, {{ rename = {{ note = \"comment\" }} }},\n  \
             {{ cast = {{ amount = \"decimal(10,2)\", order_id = \"int\" }} }}, {{ not_null = \"order_id\" }}]\n"
        ),
    );
    let p = Pipeline::from_config(&path).await.unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("orders").unwrap().written_count, 2);
    let python = std::env::var("ETL_TEST_PYTHON")
        .expect("ETL_TEST_PYTHON is not set: run `eval \"$(scripts/services.sh env)\"` (DuckDB lives in its venv)");
    let glob = dir.path().join("lake/orders/**/*.parquet");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            &format!(
                "import duckdb; r = duckdb.sql(\"SELECT * FROM read_parquet('{}') ORDER BY 1\"); print(r.types, r.fetchall())",
                glob.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[INTEGER, DECIMAL(10,2), VARCHAR] [(1, Decimal('9.50'), 'gift'), (2, Decimal('20.00'), 'rush')]"
    );
    let e = err(
        dir.path(),
        "bad.toml",
        &format!("{head}transforms = [{{ cast = {{ amount = \"dubble\" }} }}]\n"),
    )
    .await;
    assert!(
        e.contains("table `orders`, key transforms[0].cast.amount: `dubble` is not a type"),
        "{e}"
    );
}

/// A pipeline built in code, written back as a file: the file reads back as the same tables,
/// and builds; a transform of code is refused by name.
#[tokio::test]
async fn a_pipeline_built_in_code_is_written_back_as_a_file() {
    use etl::transform::{Cast, Filter, Rename, Select};
    use etl::{
        CsvOptions, Deletes, FileFormat, Location, MergeStrategy, ObjectStoreWatermarkStore, PartitionKey,
        Partitioning, Reconcile, ReconcilePolicy, TableSpec,
    };
    let dir = tempfile::tempdir().unwrap();
    let landing = Location::local(dir.path().join("landing")).unwrap();
    let csv = CsvOptions {
        delimiter: b';',
        decimals: true,
        ..CsvOptions::default()
    };
    let orders = TableSpec::new("orders")
        .from_files("orders/", FileFormat::Csv(csv))
        .file_drops(etl::FileDrops::Newest)
        .target("fact_orders")
        .mode(LoadMode::Incremental)
        .primary_key(["order_id"])
        .cursor(["updated_at"])
        .lookback(chrono::TimeDelta::minutes(10))
        .partition_by(Partitioning::columns([
            PartitionKey::formatted("date", "order_date", "%Y-%m-%d"),
            PartitionKey::column("site"),
        ]))
        .transform(Select::new(["order_id", "amount", "site", "order_date", "updated_at"]))
        .transform(Rename::new([("amount", "total")]))
        .transform(Cast::new([(
            "total",
            etl::deps::arrow::datatypes::DataType::Decimal128(10, 2),
        )]))
        .transform(Filter::not_null("order_id"))
        .merge_strategy(MergeStrategy::DeleteInsert)
        .detect_deletes(Deletes {
            max_share: 0.2,
            ..Deletes::default()
        })
        .reconcile(Reconcile::new(ReconcilePolicy::Fail).content(["total"]));
    let built = |specs: Vec<TableSpec>| {
        let mut b = Pipeline::builder("written_back")
            .source(etl::FileSource::new(landing.clone()))
            .sink(etl::LakeSink::new(Location::local(dir.path().join("lake")).unwrap()))
            .watermarks(ObjectStoreWatermarkStore::new(Location::memory()));
        for s in specs {
            b = b.table(s);
        }
        b.build()
    };
    let p = built(vec![
        orders.clone(),
        TableSpec::new("people").from_files("people/", FileFormat::JsonLines),
    ])
    .unwrap();
    let endpoint = |kind: &str, location: &str| etl::config::Endpoint {
        kind: kind.into(),
        location: Some(location.into()),
        ..Default::default()
    };
    let config =
        PipelineConfig::from_pipeline(&p, endpoint("files", "landing"), endpoint("lake", "lake"), None).unwrap();
    let toml = config.to_toml().unwrap();
    assert!(toml.contains("target = \"fact_orders\""), "{toml}");
    assert!(toml.contains("merge = \"delete_insert\""), "{toml}");
    let file = write(dir.path(), "written.toml", &toml);
    let again = PipelineConfig::load(&file).unwrap();
    assert_eq!(again.tables, config.tables);
    let rebuilt = again.build().await.unwrap();
    let specs: Vec<etl::config::TableConfig> = rebuilt
        .tables()
        .iter()
        .map(|s| etl::config::TableConfig::from_spec(s).unwrap())
        .collect();
    assert_eq!(specs, config.tables, "the built pipeline's tables are the file's");
    assert_eq!(rebuilt.tables()[0].transforms.len(), 4);

    let coded = built(vec![orders.transform(Filter::new("total > 0", |b| {
        etl::deps::arrow::compute::is_not_null(b.column(0))
    }))])
    .unwrap();
    let e = PipelineConfig::from_pipeline(&coded, endpoint("files", "landing"), endpoint("lake", "lake"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table `orders`: the transform Filter(\"total > 0\") is code"),
        "{e}"
    );
}

/// An `sql` source in a file: two CSV inputs of one landing folder joined by DataFusion into
/// a lake, written back as the same file; an `sql` source without inputs, or inside another,
/// is refused by name.
#[cfg(feature = "sql")]
#[tokio::test]
async fn an_sql_source_joins_its_inputs_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (folder, text) in [
        ("orders", "order_id,customer_id,amount\n1,1,9.5\n2,2,20\n3,1,4\n"),
        ("customers", "customer_id,name\n1,ann\n2,bob\n"),
    ] {
        std::fs::create_dir_all(dir.path().join("landing").join(folder)).unwrap();
        std::fs::write(dir.path().join("landing").join(folder).join("day1.csv"), text).unwrap();
    }
    let path = write(
        dir.path(),
        "across.toml",
        r#"
name = "across"
sink = { kind = "lake", location = "lake" }

[source]
kind = "sql"

[[source.inputs]]
name = "orders"
source = { kind = "files", location = "landing" }
files = { prefix = "orders/", format = "csv" }

[[source.inputs]]
name = "customers"
source = { kind = "files", location = "landing" }
files = { prefix = "customers/", format = "csv" }

[[tables]]
name = "spend"
query = "SELECT c.name, sum(o.amount) AS total FROM orders o JOIN customers c USING (customer_id) GROUP BY c.name"
mode = "FULL"
"#,
    );
    let p = Pipeline::from_config(&path).await.unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("spend").unwrap().written_count, 2);
    let lake = etl::LakeSink::new(etl::Location::local(dir.path().join("lake")).unwrap());
    let rows = lake.read_table("spend").await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ann") || l.contains("bob"))
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("| ann  | 13.5  |") && lines[1].starts_with("| bob  | 20.0  |"),
        "{text}"
    );
    let config = PipelineConfig::load(&path).unwrap();
    let again = PipelineConfig::parse(Path::new("again.toml"), &config.to_toml().unwrap()).unwrap();
    assert_eq!(again.source, config.source);

    let e = err(
        dir.path(),
        "bare.toml",
        "name = \"p\"\nsource = { kind = \"sql\" }\nsink = { kind = \"lake\", location = \"out\" }\n[[tables]]\nname = \"t\"\n",
    )
    .await;
    assert!(e.contains("source of kind `sql` needs `inputs`"), "{e}");
    let e = err(
        dir.path(),
        "nested.toml",
        "name = \"p\"\nsink = { kind = \"lake\", location = \"out\" }\n[source]\nkind = \"sql\"\n\
         [[source.inputs]]\nname = \"inner\"\nsource = { kind = \"sql\" }\n[[tables]]\nname = \"t\"\n",
    )
    .await;
    assert!(
        e.contains("source.inputs.inner: an input of an `sql` source reads"),
        "{e}"
    );
}
