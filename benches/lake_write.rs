//! Arrow → Parquet lake write throughput: a 1M-row orders table through the pipeline runner
//! (in-memory source, FULL mode, zstd) into a lake on local disk, unpartitioned and
//! partitioned by day.
//!
//! ```text
//! cargo bench --bench lake_write
//! ```

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl::{LakeSink, LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Partitioning, Pipeline, TableSpec};

const ROWS: usize = 1_000_000;
const BATCH: usize = 65_536;

/// Deterministic orders rows `start..start+len`, shaped like the bench harness's table.
fn orders(start: usize, len: usize) -> RecordBatch {
    let ids: Vec<i64> = (start as i64..(start + len) as i64).collect();
    let products = [
        "Widget",
        "Gadget",
        "Gizmo",
        "Sprocket",
        "Doohickey",
        "Flux Capacitor",
        "Cog",
        "Lever",
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int32Array::from_iter_values(
            ids.iter().map(|i| (1 + (i * 7919) % 100_000) as i32),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter()
                .map(|i| format!("{} {:03}", products[(*i % 8) as usize], (i * 31) % 1000)),
        )),
        Arc::new(Int32Array::from_iter_values(
            ids.iter().map(|i| (1 + (i * 13) % 10) as i32),
        )),
        Arc::new(
            Decimal128Array::from_iter_values(ids.iter().map(|i| ((i * 7907) % 99_900 + 100) as i128))
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(Date32Array::from_iter_values(
            ids.iter().map(|i| 18_628 + ((i * 17) % 1400) as i32),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ids.iter().map(|i| {
            (18_628 + (i * 17) % 1400) * 86_400_000_000 + (i * 104_729) % 86_400_000_000
        }))),
    ];
    let names = [
        "order_id",
        "customer_id",
        "product_name",
        "quantity",
        "price",
        "order_date",
        "updated_at",
    ];
    RecordBatch::try_from_iter(names.into_iter().zip(cols)).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let source = Arc::new(MemorySource::new());
    let mut arrow_bytes = 0;
    for start in (0..ROWS).step_by(BATCH) {
        let b = orders(start, BATCH.min(ROWS - start));
        arrow_bytes += b.get_array_memory_size();
        source.append("orders", b).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = Location::local(dir.path()).unwrap();
    let rt = &rt;
    let run = |name: &str, partitioning: Partitioning| {
        let p = Pipeline::builder(name)
            .source_arc(source.clone())
            .sink(LakeSink::new(lake.clone()))
            .watermarks(ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
            .table(
                TableSpec::new("orders")
                    .target(name)
                    .mode(LoadMode::Full)
                    .partition_by(partitioning),
            )
            .build()
            .unwrap();
        move || {
            let r = rt.block_on(p.run()).unwrap().into_result().unwrap();
            assert_eq!(r.tables[0].written_count, ROWS as u64);
        }
    };
    let mut flat = run("flat", Partitioning::None);
    let mut daily = run("daily", Partitioning::ByDate("order_date".into()));
    let mut g = c.benchmark_group("lake_write");
    g.sample_size(10).throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("1M_unpartitioned", |b| b.iter(&mut flat));
    g.bench_function("1M_by_day_1400_partitions", |b| b.iter(&mut daily));
    g.finish();
    let mut g = c.benchmark_group("lake_write_arrow_bytes");
    g.sample_size(10).throughput(Throughput::Bytes(arrow_bytes as u64));
    g.bench_function("1M_unpartitioned", |b| b.iter(&mut flat));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
