//! `COPY … TO STDOUT (FORMAT binary)` decoded into Arrow record batches as it streams.
//!
//! # Memory
//! One batch of builders plus the undecoded tail of the last network chunk.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;

use etl_core::{BatchStream, Error, ExtractStats, Result};
use futures::{Stream, StreamExt};

use super::types::{Builder, ColumnPlan};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

struct Decoder {
    table: String,
    schema: SchemaRef,
    plans: Vec<ColumnPlan>,
    counter: Option<Arc<ExtractStats>>,
    builders: Vec<Builder>,
    batch_size: usize,
    rows: usize,
    buf: BytesMut,
    header_done: bool,
    finished: bool,
}

fn protocol(table: &str, msg: impl std::fmt::Display) -> Error {
    Error::Connector {
        connector: "postgres",
        message: format!("table `{table}`: binary COPY stream: {msg}"),
        retryable: false,
    }
}

impl Decoder {
    fn new_builders(plans: &[ColumnPlan], n: usize) -> Vec<Builder> {
        plans.iter().map(|p| Builder::new(p, n)).collect()
    }

    /// Length of the complete tuple at the start of `b`, `None` if more bytes are needed;
    /// `Some(2)` with `trailer` for the end marker.
    fn tuple_len(&self, b: &[u8]) -> Result<Option<(usize, bool)>> {
        if b.len() < 2 {
            return Ok(None);
        }
        let n = i16::from_be_bytes([b[0], b[1]]);
        if n == -1 {
            return Ok(Some((2, true)));
        }
        if n as usize != self.plans.len() {
            return Err(protocol(
                &self.table,
                format!("expected {} fields, found {n}", self.plans.len()),
            ));
        }
        let mut at = 2;
        for _ in 0..n {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(b[at..at + 4].try_into().expect("4"));
            at += 4;
            if len > 0 {
                at += len as usize;
            }
        }
        Ok((b.len() >= at).then_some((at, false)))
    }

    /// Decodes complete tuples from the buffer until the batch is full or bytes run out.
    fn decode(&mut self) -> Result<()> {
        if !self.header_done {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(protocol(&self.table, "bad signature"));
            }
            let ext = u32::from_be_bytes(
                self.buf[SIGNATURE.len() + 4..SIGNATURE.len() + 8]
                    .try_into()
                    .expect("4"),
            );
            let header = SIGNATURE.len() + 8 + ext as usize;
            if self.buf.len() < header {
                return Ok(());
            }
            self.buf.advance(header);
            self.header_done = true;
        }
        let mut consumed = 0;
        while self.rows < self.batch_size {
            let Some((len, trailer)) = self.tuple_len(&self.buf[consumed..])? else {
                break;
            };
            if trailer {
                self.finished = true;
                consumed += len;
                break;
            }
            let t = &self.buf[consumed + 2..consumed + len];
            let mut at = 0;
            for (i, b) in self.builders.iter_mut().enumerate() {
                let l = i32::from_be_bytes(t[at..at + 4].try_into().expect("4"));
                at += 4;
                let v = if l < 0 {
                    None
                } else {
                    let v = &t[at..at + l as usize];
                    at += l as usize;
                    Some(v)
                };
                b.append(v).map_err(|e| Error::Connector {
                    connector: "postgres",
                    message: format!("table `{}`, column `{}`: {e}", self.table, self.plans[i].name),
                    retryable: false,
                })?;
            }
            self.rows += 1;
            consumed += len;
        }
        self.buf.advance(consumed);
        Ok(())
    }

    fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let cols = self.builders.iter_mut().map(|b| b.finish()).collect();
        if let Some(c) = &self.counter {
            c.count_source(self.rows as u64);
        }
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), cols)
            .map(Some)
            .map_err(|e| Error::arrow(&self.table, e))
    }
}

/// Decodes a binary COPY byte stream into batches of at most `batch_size` rows.
pub(super) fn batches<S>(
    table: &str,
    schema: SchemaRef,
    plans: Vec<ColumnPlan>,
    batch_size: usize,
    counter: Option<Arc<ExtractStats>>,
    input: S,
) -> BatchStream
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
{
    let batch_size = batch_size.max(1);
    let decoder = Decoder {
        table: table.to_string(),
        schema,
        builders: Decoder::new_builders(&plans, batch_size),
        plans,
        counter,
        batch_size,
        rows: 0,
        buf: BytesMut::new(),
        header_done: false,
        finished: false,
    };
    let input = Box::pin(input);
    Box::pin(futures::stream::try_unfold(
        (decoder, input),
        |(mut d, mut input)| async move {
            loop {
                d.decode()?;
                if d.rows >= d.batch_size || (d.finished && d.rows > 0) {
                    let b = d.take_batch()?;
                    return Ok(b.map(|b| (b, (d, input))));
                }
                if d.finished {
                    return Ok(None);
                }
                match input.next().await {
                    Some(Ok(chunk)) => d.buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Err(e),
                    None => {
                        if !d.buf.is_empty() || !d.header_done {
                            return Err(protocol(&d.table, "stream ended inside a row"));
                        }
                        let b = d.take_batch()?;
                        d.finished = true;
                        return Ok(b.map(|b| (b, (d, input))));
                    }
                }
            }
        },
    ))
}
