//! The crawler over a lake this sink wrote: tables, formats, merged schemas, typed
//! partitions, the DDL, and DuckDB reading the same files with the partition columns listed.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use etl_core::catalog::{Crawler, PartitionValue, TableFormat};
use etl_core::{Error, LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Partitioning, Pipeline, TableSpec};
use etl_sinks::lake::LakeSink;

fn orders(ids: &[i64], days: &[i32], note: bool) -> RecordBatch {
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("order_id", Arc::new(Int64Array::from(ids.to_vec()))),
        ("order_date", Arc::new(Date32Array::from(days.to_vec()))),
        ("amount", Arc::new(Float64Array::from(vec![9.5; ids.len()]))),
    ];
    if note {
        cols.push(("note", Arc::new(StringArray::from(vec!["gift"; ids.len()]))));
    }
    RecordBatch::try_from_iter(cols).unwrap()
}

async fn load(lake: &LakeSink, batch: RecordBatch) {
    load_by(lake, batch, Partitioning::ByDate("order_date".into())).await
}

/// Appends `batch` to table `orders` of `lake`, partitioned so.
async fn load_by(lake: &LakeSink, batch: RecordBatch, partitioning: Partitioning) {
    let source = MemorySource::new();
    source.append("orders", batch).unwrap();
    Pipeline::builder("crawl")
        .source(source)
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("orders")
                .mode(LoadMode::Append)
                .partition_by(partitioning),
        )
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
}

#[tokio::test]
async fn crawl_a_lake_and_read_it_back_through_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let root = Location::local(dir.path()).unwrap();
    let lake = LakeSink::new(root.clone());
    // 2025-07-23, 2025-07-24 (days since 1970: 20292, 20293), then a later run adds a column.
    load(&lake, orders(&[1, 2, 3], &[20292, 20293, 20293], false)).await;
    load(&lake, orders(&[4], &[20293], true)).await;
    std::fs::create_dir_all(dir.path().join("landing/customers")).unwrap();
    std::fs::write(dir.path().join("landing/customers/day1.csv"), "id,name\n1,ann\n").unwrap();

    let tables = Crawler::new(root.clone()).crawl().await.unwrap();
    let names: Vec<(&str, TableFormat)> = tables.iter().map(|t| (t.name.as_str(), t.format)).collect();
    assert_eq!(
        names,
        [
            ("landing/customers", TableFormat::Csv),
            ("orders", TableFormat::Parquet)
        ]
    );
    let o = &tables[1];
    let fields: Vec<String> = o
        .schema
        .as_ref()
        .unwrap()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        fields,
        [
            "order_id:Int64",
            "order_date:Date32",
            "amount:Float64",
            "etl_processed_at:Timestamp(µs, \"+00:00\")",
            "note:Utf8"
        ],
        "the column added by the later run is merged in"
    );
    let keys: Vec<(&str, &DataType)> = o.partition_keys.iter().map(|(k, t)| (k.as_str(), t)).collect();
    assert_eq!(
        keys,
        [
            ("year", &DataType::Int64),
            ("month", &DataType::Int64),
            ("day", &DataType::Int64)
        ]
    );
    let parts: Vec<(Vec<PartitionValue>, u64, Option<u64>)> = o
        .partitions
        .iter()
        .map(|p| (p.values.clone(), p.files, p.rows))
        .collect();
    use PartitionValue::Int;
    assert_eq!(
        parts,
        [
            (vec![Int(2025), Int(7), Int(23)], 1, Some(1)),
            (vec![Int(2025), Int(7), Int(24)], 2, Some(3)),
        ]
    );
    assert_eq!(o.rows(), Some(4));

    let ddl = o.athena_ddl("s3://bucket/lake").unwrap();
    assert!(ddl.iter().all(|s| s.ends_with(';')), "{ddl:?}");
    assert!(
        ddl[0].starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `orders` (\n  `order_id` bigint,\n  `order_date` date,\n  `amount` double,\n  `etl_processed_at` timestamp,\n  `note` string\n)\nPARTITIONED BY (`year` bigint, `month` bigint, `day` bigint)\nSTORED AS PARQUET\nLOCATION 's3://bucket/lake/orders/';"),
        "{}",
        ddl[0]
    );
    assert_eq!(
        ddl[2],
        "ALTER TABLE `orders` ADD IF NOT EXISTS PARTITION (`year` = 2025, `month` = 7, `day` = 24) LOCATION 's3://bucket/lake/orders/year=2025/month=7/day=24/';"
    );

    // DuckDB reads the same files with the partition columns the crawl lists, typed alike.
    let python = std::env::var("ETL_TEST_PYTHON")
        .expect("ETL_TEST_PYTHON is not set: run `eval \"$(scripts/services.sh env)\"` (DuckDB lives in its venv)");
    let glob = dir.path().join("orders/**/*.parquet");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            &format!(
                "import duckdb; print(duckdb.sql(\"SELECT count(*), count(note), min(year), typeof(min(year)), \
                 string_agg(DISTINCT day::varchar, ',' ORDER BY day::varchar) FROM read_parquet('{}', \
                 hive_partitioning = true, union_by_name = true)\").fetchall()[0])",
                glob.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "(4, 1, 2025, 'BIGINT', '23,24')"
    );

    // A file whose column type conflicts is named, never coerced.
    let bad = RecordBatch::try_from_iter([("amount", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]).unwrap();
    let path = dir.path().join("orders/year=2030/month=1/day=1/bad.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), bad.schema(), None).unwrap();
    w.write(&bad).unwrap();
    w.close().unwrap();
    let err = Crawler::new(root).crawl().await.unwrap_err();
    assert!(
        matches!(&err, Error::ColumnTypeConflict { column, found, .. } if column == "amount" && found.contains("bad.parquet")),
        "{err}"
    );
}

/// The catalog: versions as the schema changes, incremental crawls that read only new files
/// (none when nothing changed), deleted files noticed, two crawls at once, partition pruning.
#[tokio::test]
async fn incremental_crawls_keep_the_catalog() {
    use etl_core::catalog::Catalog;
    let dir = tempfile::tempdir().unwrap();
    let root = Location::local(dir.path()).unwrap();
    let lake = LakeSink::new(root.clone());
    let catalog = Catalog::new(root.clone());
    let crawler = Crawler::new(root.clone());
    load(&lake, orders(&[1, 2, 3], &[20292, 20293, 20293], false)).await;
    let first = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((first.tables.len(), first.footers_read), (1, 2));
    let t = &first.tables[0];
    assert_eq!((t.generation, t.versions.len(), t.rows()), (1, 1, Some(3)));
    assert_eq!(t.versions[0].changes, ["first seen"]);

    // Nothing changed: one listing, no footer read, no new document.
    let again = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((again.footers_read, again.tables[0].generation), (0, 1));

    // A run adds a column: only the new file is read; a second schema version says what changed.
    load(&lake, orders(&[4], &[20293], true)).await;
    let second = crawler.crawl_into(&catalog).await.unwrap();
    let t = &second.tables[0];
    assert_eq!((second.footers_read, t.generation, t.rows()), (1, 2, Some(4)));
    assert_eq!(t.versions.len(), 2);
    assert_eq!(t.versions[1].changes, ["added `note` Utf8"]);
    assert_eq!(catalog.get("orders").await.unwrap().as_ref(), Some(t));
    assert_eq!(catalog.list().await.unwrap(), ["orders"]);
    // Partition pruning on typed values.
    let day24 = t.partitions_where(|v| v.get(2) == Some(&PartitionValue::Int(24)));
    assert_eq!(
        day24.iter().map(|p| (p.files, p.rows)).collect::<Vec<_>>(),
        [(2, Some(3))]
    );
    // A scan reads only the kept partitions and columns, in the catalog's schema: the file
    // written before `note` existed yields NULLs for it; partition keys come as columns.
    let scanned: Vec<RecordBatch> = futures::TryStreamExt::try_collect(
        catalog
            .scan(
                "orders",
                |v| v.get(2) == Some(&PartitionValue::Int(24)),
                Some(&["order_id", "note", "day"]),
            )
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        etl_core::conformance::render_sorted(&scanned, &[]),
        "+----------+------+-----+\n\
         | order_id | note | day |\n\
         +----------+------+-----+\n\
         | 2        |      | 24  |\n\
         | 3        |      | 24  |\n\
         | 4        | gift | 24  |\n\
         +----------+------+-----+"
    );
    let err = catalog.scan("orders", |_| true, Some(&["nope"])).await.err().unwrap();
    assert!(matches!(err, Error::ColumnNotFound { .. }), "{err}");
    // The DDL from the catalog is the crawl's.
    assert_eq!(
        t.crawled().unwrap().athena_ddl("s3://b/l").unwrap(),
        Crawler::new(root.clone()).crawl().await.unwrap()[0]
            .athena_ddl("s3://b/l")
            .unwrap()
    );

    // A deleted file leaves its partition (and the counts).
    let day23 = dir.path().join("orders/year=2025/month=7/day=23");
    std::fs::remove_dir_all(&day23).unwrap();
    let third = crawler.crawl_into(&catalog).await.unwrap();
    let t = &third.tables[0];
    assert_eq!(
        (third.footers_read, t.partitions.len(), t.rows(), t.files.len()),
        (0, 1, Some(3), 2)
    );

    // Two crawls at once over a change: both succeed, the catalog says what one crawl says.
    load(&lake, orders(&[5], &[20294], false)).await;
    let (a, b) = tokio::join!(crawler.crawl_into(&catalog), crawler.crawl_into(&catalog));
    a.unwrap();
    b.unwrap();
    let t = catalog.get("orders").await.unwrap().unwrap();
    assert_eq!(
        (t.partitions.len(), t.rows(), t.files.len(), t.versions.len()),
        (2, Some(4), 3, 2)
    );

    // A table whose files are all gone leaves the catalog.
    std::fs::remove_dir_all(dir.path().join("orders")).unwrap();
    let gone = crawler.crawl_into(&catalog).await.unwrap();
    assert!(gone.tables.is_empty() && catalog.list().await.unwrap().is_empty());
}

/// The Glue flow: the job, then the crawler, then the catalog updated.
#[tokio::test]
async fn a_pipeline_crawls_what_it_wrote() {
    use etl_core::catalog::Catalog;
    let dir = tempfile::tempdir().unwrap();
    let root = Location::local(dir.path()).unwrap();
    let source = Arc::new(MemorySource::new());
    source
        .append("orders", orders(&[1, 2], &[20292, 20293], false))
        .unwrap();
    let p = Pipeline::builder("glue")
        .source_arc(source.clone())
        .sink(LakeSink::new(root.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(root.child("_etl/watermarks")))
        .table(
            TableSpec::new("orders")
                .mode(LoadMode::Incremental)
                .cursor(["order_id"])
                .partition_by(Partitioning::ByDate("order_date".into())),
        )
        .crawl_after_run(root.clone())
        .build()
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let crawl = r.crawl.clone().unwrap();
    assert_eq!((crawl.tables, crawl.footers_read, crawl.error), (1, 2, None));
    assert_eq!(
        Catalog::new(root.clone()).get("orders").await.unwrap().unwrap().rows(),
        Some(2)
    );
    // Nothing new: nothing committed, no crawl.
    let r = p.run().await.unwrap();
    assert_eq!(r.crawl, None);
    // New rows: the crawl reads only the new file.
    source.append("orders", orders(&[3], &[20294], false)).unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.crawl.unwrap().footers_read, 1);
    assert_eq!(Catalog::new(root).get("orders").await.unwrap().unwrap().rows(), Some(3));
}

/// The same crawl on the S3 server: footers by ranged reads, e-tags in the bookmarks.
#[tokio::test]
async fn incremental_crawl_on_s3() {
    use etl_core::catalog::Catalog;
    let root = etl_core::conformance::s3_location();
    let lake = LakeSink::new(root.clone());
    load(&lake, orders(&[1, 2, 3], &[20292, 20293, 20293], false)).await;
    let crawler = Crawler::new(root.clone());
    let catalog = Catalog::new(root.clone());
    let first = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((first.footers_read, first.tables[0].rows()), (2, Some(3)));
    assert!(
        first.tables[0].files.values().all(|f| f.mark.e_tag.is_some()),
        "S3 gives e-tags"
    );
    let again = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((again.footers_read, again.tables[0].generation), (0, 1));
    load(&lake, orders(&[4], &[20293], true)).await;
    let third = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((third.footers_read, third.tables[0].versions.len()), (1, 2));
}

/// Partitions by any columns (`date=2025-07-24/month=07/site=eu%3Awest`): the folders as Hive
/// names them, on S3 and on disk; the crawler's keys and values; DuckDB reading the values back
/// from the folders.
#[tokio::test]
async fn partitions_by_any_columns_are_hive_folders() {
    use etl_core::PartitionKey;
    let batch = RecordBatch::try_from_iter([
        ("order_id", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef),
        (
            "order_date",
            Arc::new(Date32Array::from(vec![Some(20292), Some(20293), Some(20293), None])) as ArrayRef,
        ),
        (
            "site",
            Arc::new(StringArray::from(vec!["eu:west", "us/east", "eu:west", "eu:west"])) as ArrayRef,
        ),
    ])
    .unwrap();
    let partitioning = Partitioning::columns([
        PartitionKey::formatted("date", "order_date", "%Y-%m-%d"),
        PartitionKey::formatted("month", "order_date", "%m"),
        PartitionKey::column("site"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let s3 = etl_core::conformance::s3_location();
    for root in [Location::local(dir.path()).unwrap(), s3.clone()] {
        load_by(&LakeSink::new(root.clone()), batch.clone(), partitioning.clone()).await;
        let mut folders: Vec<String> = root
            .list("orders")
            .await
            .unwrap()
            .iter()
            .map(|m| {
                let rel = root.relative(&m.location);
                rel[..rel.rfind('/').unwrap()].to_string()
            })
            .collect();
        folders.sort();
        assert_eq!(
            folders,
            [
                "orders/date=2025-07-23/month=07/site=eu%3Awest",
                "orders/date=2025-07-24/month=07/site=eu%3Awest",
                "orders/date=2025-07-24/month=07/site=us%2Feast",
                "orders/date=__HIVE_DEFAULT_PARTITION__/month=__HIVE_DEFAULT_PARTITION__/site=eu%3Awest",
            ],
            "{}",
            root.url()
        );
    }
    // The S3 keys are the folders as written (no second escape of `%`).
    let keys = std::process::Command::new(std::env::var("ETL_TEST_PYTHON").unwrap())
        .args([
            "-c",
            &format!(
                "import boto3,os; c=boto3.client('s3', endpoint_url=os.environ['ETL_TEST_S3_ENDPOINT'], \
                 aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1'); \
                 print(sorted(o['Key'].split('/')[-2] for o in c.list_objects_v2(Bucket='{}', Prefix='{}')['Contents'] \
                 if '/orders/' in o['Key'] and '_etl' not in o['Key']))",
                s3.url().trim_start_matches("s3://").split('/').next().unwrap(),
                s3.url()
                    .trim_start_matches("s3://")
                    .split_once('/')
                    .map_or("", |(_, p)| p),
            ),
        ])
        .output()
        .unwrap();
    assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout).trim(),
        "['site=eu%3Awest', 'site=eu%3Awest', 'site=eu%3Awest', 'site=us%2Feast']"
    );

    let root = Location::local(dir.path()).unwrap();
    let t = Crawler::new(root.clone()).crawl().await.unwrap().remove(0);
    let keys: Vec<(&str, &DataType)> = t.partition_keys.iter().map(|(k, t)| (k.as_str(), t)).collect();
    assert_eq!(
        keys,
        [
            ("date", &DataType::Date32),
            ("month", &DataType::Int64),
            ("site", &DataType::Utf8)
        ]
    );
    let values: Vec<Vec<PartitionValue>> = t.partitions.iter().map(|p| p.values.clone()).collect();
    let day = |d| PartitionValue::Date(chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap());
    let text = |s: &str| PartitionValue::Text(s.into());
    assert_eq!(
        values,
        [
            vec![PartitionValue::Null, PartitionValue::Null, text("eu:west")],
            vec![day("2025-07-23"), PartitionValue::Int(7), text("eu:west")],
            vec![day("2025-07-24"), PartitionValue::Int(7), text("eu:west")],
            vec![day("2025-07-24"), PartitionValue::Int(7), text("us/east")],
        ]
    );
    let answer = super::duckdb(
        "SELECT order_id, date::varchar, month, site FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY order_id",
        &dir.path().join("orders/**/*.parquet"),
    )
    .unwrap();
    assert_eq!(
        answer,
        "[(1, '2025-07-23', '07', 'eu:west'), (2, '2025-07-24', '07', 'us/east'), (3, '2025-07-24', '07', 'eu:west'), \
         (4, None, None, 'eu:west')]"
    );
}
