//! Runs a synchronous decoder on a blocking thread, reading an object through `std::io::Read`
//! and handing batches over a bounded channel.

use std::io::Read;

use super::{Decoded, DecodedStream};
use crate::error::{Error, Result};
use crate::location::Location;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Batches handed over ahead of the consumer, at most.
const AHEAD: usize = 2;

/// Sends decoded batches to the stream's consumer.
pub(super) struct Emit(mpsc::Sender<Result<Decoded>>);

impl Emit {
    /// Hands an item over, waiting while the consumer is behind. False when the consumer is
    /// gone (the stream was dropped): the decoder should stop.
    pub(super) fn send(&self, item: Decoded) -> bool {
        matches!(&item, Decoded::Batch(b) if b.num_rows() == 0) || self.0.blocking_send(Ok(item)).is_ok()
    }
}

/// A lazy stream whose batches `decode` produces on a blocking thread; `decode`'s error ends
/// the stream. Dropping the stream makes the next `send` return false.
pub(super) fn decode_in_thread<F>(decode: F) -> DecodedStream
where
    F: FnOnce(Handle, &Emit) -> Result<()> + Send + 'static,
{
    let start = async move {
        let (tx, rx) = mpsc::channel(AHEAD);
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || {
            let emit = Emit(tx);
            if let Err(e) = decode(handle, &emit) {
                let _ = emit.0.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
    };
    Box::pin(futures::stream::once(start).flatten())
}

/// `std::io::Read` over an object, fetched chunk by chunk. Call from a blocking thread.
pub(super) struct StoreReader {
    handle: Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
}

impl StoreReader {
    /// Opens `path` of `location`.
    pub(super) fn open(handle: Handle, location: &Location, path: &Path) -> Result<Self> {
        let store = location.store().clone();
        let got = handle.block_on(store.get(path)).map_err(|e| Error::store(path, e))?;
        Ok(StoreReader {
            handle,
            stream: got.into_stream(),
            current: Bytes::new(),
        })
    }
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
