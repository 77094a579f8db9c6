//! Reading CSV through the file source: 500 000 rows of a 6-column orders file (about 33 MB),
//! plain and gzip-compressed, decoded into Arrow batches and drained (no sink), so the
//! figure is the source's own cost: the `csv` crate's parsing, the quote tracking that finds
//! broken quotes, the typed casts, and for the gzip file the decompression.
//!
//! ```text
//! cargo bench --bench csv_read
//! ```

use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl::{FileFormat, FileSource, LoadMode, Location, ReadRequest, Source, TableSpec};
use futures::TryStreamExt;

const ROWS: usize = 500_000;

/// A deterministic orders CSV: ids, a customer, a quoted product name, a price, a date, a
/// timestamp.
fn orders() -> Vec<u8> {
    let mut out = b"order_id,customer_id,product_name,price,order_date,updated_at\n".to_vec();
    for i in 0..ROWS {
        writeln!(
            out,
            "{i},{},\"Product {}, size {}\",{}.{:02},2025-{:02}-{:02},2025-07-24 {:02}:{:02}:{:02}",
            i % 9973,
            i % 97,
            i % 7,
            i % 500,
            i % 100,
            i % 12 + 1,
            i % 28 + 1,
            i % 24,
            i % 60,
            (i * 7) % 60
        )
        .unwrap();
    }
    out
}

fn csv_read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = orders();
    std::fs::create_dir_all(dir.path().join("plain")).unwrap();
    std::fs::create_dir_all(dir.path().join("gz")).unwrap();
    std::fs::write(dir.path().join("plain/orders.csv"), &body).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    std::fs::write(dir.path().join("gz/orders.csv.gz"), gz.finish().unwrap()).unwrap();
    let source = FileSource::new(Location::local(dir.path()).unwrap());
    let mut g = c.benchmark_group("csv_read_500k_rows");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(body.len() as u64));
    for (name, prefix) in [("plain", "plain/"), ("gzip", "gz/")] {
        let spec = TableSpec::new("orders").from_files(prefix, FileFormat::csv());
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = ReadRequest {
                    spec: &spec,
                    mode: LoadMode::Full,
                    from: None,
                    run_id: "bench",
                    batch_size: 65_536,
                    limit: None,
                    until: None,
                    keys: None,
                    files: None,
                };
                let rows: usize = rt
                    .block_on(async { source.read(req).await?.stream.try_collect::<Vec<_>>().await })
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum();
                assert_eq!(rows, ROWS);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, csv_read);
criterion_main!(benches);
