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

/// The bytes of a text file, decompressed: gzip (by its magic bytes, whatever the file's
/// name) is read through a decoder; other compressions are refused, naming the file. Call
/// from a blocking thread.
///
/// # Errors
/// [`Error::ObjectStore`] when the file cannot be fetched; [`Error::MalformedRow`] (line 1)
/// for a compression that is not read, or a `.gz` name over bytes that are not gzip.
pub(super) fn open_text(handle: Handle, location: &Location, path: &Path, file: &str) -> Result<Box<dyn Read + Send>> {
    let mut r = StoreReader::open(handle, location, path)?;
    let head = r.peek(6).map_err(|e| io_error(file, 1, e))?;
    let refuse = |reason: String| {
        Err(Error::MalformedRow {
            file: file.to_string(),
            line: 1,
            reason,
        })
    };
    let named = file.to_ascii_lowercase();
    let kind = [
        (&b"\x1f\x8b"[..], "gzip"),
        (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
        (&b"BZh"[..], "bzip2"),
        (&b"\xfd7zXZ\x00"[..], "xz"),
        (&b"PK\x03\x04"[..], "zip"),
        (&b"\x04\x22\x4d\x18"[..], "lz4"),
    ]
    .into_iter()
    .find(|(magic, _)| head.starts_with(magic))
    .map(|(_, kind)| kind);
    match kind {
        Some("gzip") => Ok(Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 16, r),
        ))),
        Some(other) => Err(super::compression_refused(file, other)),
        None if named.ends_with(".gz") || named.ends_with(".gzip") => {
            refuse("the file is named as gzip-compressed but its bytes are not gzip".to_string())
        }
        None => Ok(Box::new(r)),
    }
}

/// The error of a failed read of `file` at `line`: a store failure (may succeed if tried
/// again), or bytes that do not decode (gzip, UTF-8), which never will.
pub(super) fn io_error(file: &str, line: u64, e: std::io::Error) -> Error {
    let from_store = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<object_store::Error>().is_some());
    if from_store {
        Error::Connector {
            connector: "files",
            message: format!("reading `{file}`: {e}"),
            retryable: true,
        }
    } else {
        Error::MalformedRow {
            file: file.to_string(),
            line,
            reason: format!("the bytes do not decode: {e}"),
        }
    }
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

impl StoreReader {
    /// The first `n` bytes (fewer at the end of the object), without consuming them.
    fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.current.len() < n {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) if self.current.is_empty() => self.current = b,
                Some(Ok(b)) => {
                    let mut joined = Vec::with_capacity(self.current.len() + b.len());
                    joined.extend_from_slice(&self.current);
                    joined.extend_from_slice(&b);
                    self.current = Bytes::from(joined);
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => break,
            }
        }
        Ok(&self.current[..n.min(self.current.len())])
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
