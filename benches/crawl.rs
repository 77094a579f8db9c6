//! Crawling a lake of 2 000 small Parquet files (40 tables × 50 daily partitions) into its
//! catalog on local disk: the first crawl (every footer read) and a crawl of the unchanged
//! lake (one listing, no footer).
//!
//! ```text
//! cargo bench --bench crawl
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use criterion::{Criterion, criterion_group, criterion_main};
use etl::Location;
use etl::catalog::Catalog;
use etl::catalog::Crawler;
use etl::deps::parquet::arrow::ArrowWriter;

const TABLES: usize = 40;
const DAYS: usize = 50;

fn lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from_iter_values(0..100))),
        (
            "name",
            Arc::new(StringArray::from_iter_values((0..100).map(|i| format!("n{i}")))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    for t in 0..TABLES {
        for d in 1..=DAYS {
            let p = dir.path().join(format!("t{t}/year=2025/day={d}"));
            std::fs::create_dir_all(&p).unwrap();
            let mut w = ArrowWriter::try_new(
                std::fs::File::create(p.join("part.parquet")).unwrap(),
                batch.schema(),
                None,
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
    }
    dir
}

fn crawl(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("crawl_2000_files");
    g.sample_size(10);
    g.bench_function("first_crawl", |b| {
        b.iter_batched(
            lake,
            |dir| {
                let root = Location::local(dir.path()).unwrap();
                let s = rt
                    .block_on(Crawler::new(root.clone()).crawl_into(&Catalog::new(root)))
                    .unwrap();
                assert_eq!(s.footers_read, (TABLES * DAYS) as u64);
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    let dir = lake();
    let root = Location::local(dir.path()).unwrap();
    rt.block_on(Crawler::new(root.clone()).crawl_into(&Catalog::new(root.clone())))
        .unwrap();
    g.bench_function("unchanged_crawl", |b| {
        b.iter(|| {
            let s = rt
                .block_on(Crawler::new(root.clone()).crawl_into(&Catalog::new(root.clone())))
                .unwrap();
            assert_eq!(s.footers_read, 0);
        })
    });
    g.finish();
}

criterion_group!(benches, crawl);
criterion_main!(benches);
