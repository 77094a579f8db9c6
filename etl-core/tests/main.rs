//! Integration tests of etl-core: the watermark stores on every object store.

mod crawl_text;
mod workflow;

use std::sync::Arc;

use etl_core::conformance;
use etl_core::{CursorValue, Location, ObjectStoreWatermarkStore, WatermarkStore};

#[tokio::test]
async fn watermark_store_in_memory() {
    conformance::watermark_store(&ObjectStoreWatermarkStore::new(Location::memory())).await;
}

#[tokio::test]
async fn watermark_store_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    conformance::watermark_store(&ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watermark_commits_race_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap()));
    for _ in 0..5 {
        conformance::watermark_store_race(store.clone()).await;
    }
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn watermark_store_on_s3() {
    conformance::watermark_store(&ObjectStoreWatermarkStore::new(conformance::s3_location())).await;
}

/// An S3 endpoint that refuses connections, or accepts them and never answers, fails a call
/// once its retries are spent ([`etl_core::S3_RETRY_TIMEOUT`], not object_store's three
/// minutes), with a retryable error naming the request.
#[cfg(feature = "s3")]
#[tokio::test]
async fn an_unreachable_s3_endpoint_is_a_retryable_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = closed.local_addr().unwrap().port();
    drop(closed);
    for port in [refusing, conformance::silent_server()] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let loc = Location::s3("etl-test", "nowhere", Some(&endpoint)).unwrap();
        // Bounded well below object_store's own three minutes of retries.
        let store = ObjectStoreWatermarkStore::new(loc);
        let load = store.load("p", "t");
        let err = tokio::time::timeout(etl_core::S3_RETRY_TIMEOUT * 3, load)
            .await
            .expect("the call gives up on its own")
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}

#[tokio::test]
async fn legacy_timestamp_file_is_the_starting_watermark() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("legacy")).unwrap();
    std::fs::write(
        dir.path().join("legacy/last_processed_timestamp.txt"),
        "2025-07-24 01:05:23\n",
    )
    .unwrap();
    let store = ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap())
        .with_legacy_timestamp_file("orders", "legacy/last_processed_timestamp.txt");
    let wm = store.load("p", "orders").await.unwrap().expect("legacy watermark");
    assert_eq!(wm.generation, 0);
    assert_eq!(
        wm.position.cursor.as_ref().map(CursorValue::to_string).as_deref(),
        Some("2025-07-24 01:05:23")
    );
    assert!(
        store.load("p", "customers").await.unwrap().is_none(),
        "only the configured table"
    );

    // The first commit replaces it (generation 1), and the file is no longer consulted.
    let mut next = wm.clone();
    next.generation = 1;
    next.run_id = "r1".into();
    store.commit(Some(&wm), &next).await.unwrap();
    assert_eq!(store.load("p", "orders").await.unwrap().unwrap().run_id, "r1");

    std::fs::write(dir.path().join("legacy/last_processed_timestamp.txt"), "garbage").unwrap();
    let err = ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap())
        .with_legacy_timestamp_file("t2", "legacy/last_processed_timestamp.txt")
        .load("p", "t2")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("last_processed_timestamp.txt") && err.contains("garbage"),
        "{err}"
    );
}
