//! The AWS services against moto (the S3 server's sibling services), each result read back
//! with boto3: secrets in a configuration, CloudWatch metrics, the Glue Data Catalog.

use std::path::Path;
use std::process::Command;

use aws_config::BehaviorVersion;
use etl::aws::{CloudWatchMetrics, GlueCatalog};
use etl::catalog::Crawler;
use etl::{FileFormat, FileSource, LakeSink, LoadMode, Location, Partitioning, Pipeline, TableSpec};

fn endpoint() -> String {
    std::env::var("ETL_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "ETL_TEST_S3_ENDPOINT is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// Runs boto3 code (with `c(service)` a client of moto) and returns what it prints.
fn boto3(code: &str) -> String {
    let python = std::env::var("ETL_TEST_PYTHON").expect("ETL_TEST_PYTHON (scripts/services.sh env)");
    let script = format!(
        "import boto3, json, os\n\
         def c(s): return boto3.client(s, endpoint_url=os.environ['ETL_TEST_S3_ENDPOINT'], region_name='us-east-1')\n{code}"
    );
    let out = Command::new(python).arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .load()
        .await
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    )
}

/// A lake of `orders` partitioned by date, from CSV drops; `extra` adds a column.
async fn lake(dir: &Path, day: &str, extra: bool) -> etl::RunReport {
    let landing = dir.join("landing/orders");
    std::fs::create_dir_all(&landing).unwrap();
    let body = if extra {
        format!("order_id,order_date,amount,note\n10,{day},1.5,late\n")
    } else {
        format!("order_id,order_date,amount\n1,{day},9.5\n2,{day},20\n")
    };
    std::fs::write(landing.join(format!("{day}.csv")), body).unwrap();
    let lake = Location::local(dir.join("lake")).unwrap();
    let p = Pipeline::builder("shop")
        .source(FileSource::new(Location::local(dir.join("landing")).unwrap()))
        .sink(LakeSink::new(lake.clone()))
        .watermarks(etl::ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
        .table(
            TableSpec::new("orders")
                .from_files("orders/", FileFormat::csv())
                .mode(LoadMode::Incremental)
                .partition_by(Partitioning::ByDate("order_date".into())),
        )
        .build()
        .unwrap();
    p.run().await.unwrap().into_result().unwrap()
}

#[tokio::test]
async fn glue_catalog_holds_the_crawled_tables_and_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    lake(dir.path(), "2025-07-23", false).await;
    lake(dir.path(), "2025-07-24", false).await;
    let db = unique("lake_");
    let glue = GlueCatalog::new(&sdk().await, &db);
    let crawl = || async {
        Crawler::new(Location::local(dir.path().join("lake")).unwrap())
            .crawl()
            .await
            .unwrap()
    };
    let done = glue.register(&crawl().await, "s3://bucket/lake").await.unwrap();
    assert_eq!((done.tables_created, done.partitions_created), (1, 2), "{done:?}");
    let read = || {
        boto3(&format!(
            "g = c('glue')\n\
             t = g.get_table(DatabaseName='{db}', Name='orders')['Table']\n\
             ps = g.get_partitions(DatabaseName='{db}', TableName='orders')['Partitions']\n\
             print(json.dumps({{'cols': [x['Name'] + ':' + x['Type'] for x in t['StorageDescriptor']['Columns']],\n\
               'keys': [x['Name'] for x in t['PartitionKeys']], 'loc': t['StorageDescriptor']['Location'],\n\
               'parts': sorted('/'.join(p['Values']) for p in ps),\n\
               'serde': t['StorageDescriptor']['SerdeInfo']['SerializationLibrary']}}))"
        ))
    };
    let v: serde_json::Value = serde_json::from_str(&read()).unwrap();
    assert_eq!(v["keys"], serde_json::json!(["year", "month", "day"]));
    assert_eq!(v["loc"], "s3://bucket/lake/orders/");
    assert_eq!(v["parts"], serde_json::json!(["2025/7/23", "2025/7/24"]));
    assert!(v["serde"].as_str().unwrap().contains("ParquetHiveSerDe"), "{v}");
    let cols = v["cols"].as_array().unwrap();
    assert!(cols.contains(&serde_json::json!("order_id:bigint")), "{v}");

    // Unchanged: nothing is re-created; a new column and a new day: updated, one partition added.
    let again = glue.register(&crawl().await, "s3://bucket/lake").await.unwrap();
    assert_eq!((again.tables_unchanged, again.partitions_created), (1, 0), "{again:?}");
    lake(dir.path(), "2025-07-25", true).await;
    let third = glue.register(&crawl().await, "s3://bucket/lake").await.unwrap();
    assert_eq!((third.tables_updated, third.partitions_created), (1, 1), "{third:?}");
    let v: serde_json::Value = serde_json::from_str(&read()).unwrap();
    assert!(
        v["cols"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("note:string")),
        "{v}"
    );
    assert_eq!(v["parts"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn cloudwatch_holds_each_tables_figures() {
    let dir = tempfile::tempdir().unwrap();
    let report = lake(dir.path(), "2025-07-23", false).await;
    let ns = unique("ETL/test");
    let sent = CloudWatchMetrics::new(&sdk().await, &ns)
        .publish(&report)
        .await
        .unwrap();
    assert!(sent >= 6, "{sent}");
    let out = boto3(&format!(
        "import datetime\n\
         cw = c('cloudwatch')\n\
         names = sorted(m['MetricName'] for m in cw.list_metrics(Namespace='{ns}')['Metrics'])\n\
         dims = [{{'Name': 'Pipeline', 'Value': 'shop'}}, {{'Name': 'Table', 'Value': 'orders'}}]\n\
         now = datetime.datetime.now(datetime.timezone.utc)\n\
         s = cw.get_metric_statistics(Namespace='{ns}', MetricName='WrittenCount', Dimensions=dims,\n\
           StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(hours=1), Period=3600, Statistics=['Sum'])\n\
         print(json.dumps({{'names': names, 'written': sum(p['Sum'] for p in s['Datapoints'])}}))"
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for name in [
        "SourceCount",
        "FilteredCount",
        "TargetCount",
        "Difference",
        "WrittenCount",
        "Failed",
    ] {
        assert!(
            v["names"].as_array().unwrap().contains(&serde_json::json!(name)),
            "{name}: {v}"
        );
    }
    assert_eq!(v["written"], 2.0);
}

/// A configuration whose connection string is an SSM SecureString and whose schema a field of
/// a Secrets Manager secret: the pipeline runs Postgres to Postgres; a missing parameter is
/// named, and no secret appears in an error.
#[tokio::test]
async fn configuration_secrets_come_from_ssm_and_secrets_manager() {
    let pg_url = std::env::var("ETL_TEST_PG").expect("ETL_TEST_PG (scripts/services.sh env)");
    let id = unique("etl_sec_");
    boto3(&format!(
        "c('ssm').put_parameter(Name='/{id}/pg', Value=os.environ['ETL_TEST_PG'], Type='SecureString')\n\
         c('secretsmanager').create_secret(Name='{id}/wh', SecretString=json.dumps({{'schema': '{id}_wh', 'password': 'hunter2'}}))"
    ));
    let (pg, c) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    pg.batch_execute(&format!(
        "CREATE SCHEMA {id}; CREATE TABLE {id}.items (id bigint PRIMARY KEY, name text);
         INSERT INTO {id}.items SELECT i, 'n' || i FROM generate_series(1, 5) i;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etl.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{id}\"\nsource = {{ kind = \"postgres\", url = \"${{ssm:/{id}/pg}}\" }}\n\
             sink = {{ kind = \"postgres\", url = \"${{ssm:/{id}/pg}}\", schema = \"${{secretsmanager:{id}/wh#schema}}\" }}\n\
             [[tables]]\nname = \"items\"\nfrom = \"{id}.items\"\nprocessed_at = false\n"
        ),
    )
    .unwrap();
    let etl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_etl"))
            .args(args)
            .env("AWS_ENDPOINT_URL", endpoint())
            .output()
            .unwrap()
    };
    let out = etl(&["run", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let n: i64 = pg
        .query_one(&format!("SELECT count(*) FROM {id}_wh.items"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);

    // A secret in a connection string that does not parse is not repeated; a missing
    // parameter is named.
    let run_with = |source: &str, sink: &str| {
        std::fs::write(
            &config,
            format!("name = \"{id}\"\nsource = {{ kind = \"postgres\", url = \"{source}\" }}\nsink = {{ kind = \"postgres\", url = \"{sink}\" }}\ntables = []\n"),
        )
        .unwrap();
        let out = etl(&["run", config.to_str().unwrap()]);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let ssm = format!("${{ssm:/{id}/pg}}");
    let (code, err) = run_with(
        &ssm,
        &format!("postgresql://etl:${{secretsmanager:{id}/wh#password}}@db:notaport/x"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid Postgres connection string") && !err.contains("hunter2"),
        "{err}"
    );
    let (code, err) = run_with(&format!("${{ssm:/{id}/nope}}"), &ssm);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("source.url: reference `${{ssm:/{id}/nope}}`")),
        "{err}"
    );
    assert!(err.contains("ParameterNotFound"), "{err}");
    pg.batch_execute(&format!("DROP SCHEMA {id} CASCADE; DROP SCHEMA {id}_wh CASCADE"))
        .await
        .unwrap();
}

/// `etl run` of a configuration with `[after_run]`: the lake crawled, its tables in Glue, the
/// run's figures in CloudWatch — read back with boto3.
#[test]
fn a_configured_run_lands_in_glue_and_cloudwatch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("landing/orders")).unwrap();
    std::fs::write(
        d.join("landing/orders/day1.csv"),
        "order_id,order_date,amount\n1,2025-07-23,9.5\n2,2025-07-24,20\n3,2025-07-24,1\n",
    )
    .unwrap();
    let (db, ns) = (unique("cfg_lake_"), unique("ETL/cfg"));
    std::fs::write(
        d.join("etl.toml"),
        format!(
            "name = \"shop\"\nsource = {{ kind = \"files\", location = \"landing\" }}\nsink = {{ kind = \"lake\", location = \"lake\" }}\n\
             [after_run]\ncrawl = true\nglue_database = \"{db}\"\nglue_location = \"s3://bucket/lake\"\ncloudwatch_namespace = \"{ns}\"\n\
             [[tables]]\nname = \"orders\"\nfiles = {{ prefix = \"orders/\", format = \"csv\" }}\nmode = \"INCREMENTAL\"\n\
             partition_by = {{ date = \"order_date\" }}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(["run", "etl.toml"])
        .current_dir(d)
        .env("AWS_ENDPOINT_URL", endpoint())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("glue `{db}`: 1 tables created")), "{err}");
    let v: serde_json::Value = serde_json::from_str(&boto3(&format!(
        "g = c('glue')\n\
         ps = g.get_partitions(DatabaseName='{db}', TableName='orders')['Partitions']\n\
         cw = c('cloudwatch')\n\
         names = sorted(set(m['MetricName'] for m in cw.list_metrics(Namespace='{ns}')['Metrics']))\n\
         print(json.dumps({{'parts': len(ps), 'names': names}}))"
    )))
    .unwrap();
    assert_eq!(v["parts"], 2, "{v}");
    assert!(
        v["names"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("TargetCount")),
        "{v}"
    );
}
