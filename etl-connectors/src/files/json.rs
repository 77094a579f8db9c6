//! JSON lines: schema inference from a sample and decoding with per-line error reporting.

use std::io::BufRead;

use arrow::datatypes::Schema;
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::record_batch::RecordBatch;
use etl_core::{BadRows, BatchStream, Error, Location, Result};
use tokio::runtime::Handle;

use super::bridge::{Emit, StoreReader, decode_in_thread};
use super::{DecodeContext, FileTask};

fn io_err(file: &str, e: std::io::Error) -> Error {
    Error::Connector {
        connector: "files",
        message: format!("reading `{file}`: {e}"),
        retryable: true,
    }
}

/// Infers a file's schema from its first `sample` lines.
pub(super) async fn infer(location: &Location, f: &FileTask, sample: usize) -> Result<Schema> {
    let (location, f) = (location.clone(), f.clone());
    tokio::task::spawn_blocking(move || {
        let r = StoreReader::open(Handle::current(), &location, &f.meta.location)?;
        let mut values = Vec::new();
        for (i, line) in std::io::BufReader::new(r).lines().enumerate() {
            let line = line.map_err(|e| io_err(&f.rel, e))?;
            if line.trim().is_empty() {
                continue;
            }
            if values.len() >= sample {
                break;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => values.push(Ok(v)),
                Err(e) => {
                    return Err(Error::MalformedRow {
                        file: f.rel.clone(),
                        line: i as u64 + 1,
                        reason: e.to_string(),
                    });
                }
            }
        }
        infer_json_schema_from_iterator(values.into_iter()).map_err(|e| Error::MalformedRow {
            file: f.rel.clone(),
            line: 0,
            reason: e.to_string(),
        })
    })
    .await
    .map_err(|e| Error::config(format!("JSON inference task failed: {e}")))?
}

/// Decodes some lines with the schema; `Err` holds the decoder's message.
fn decode_lines(ctx: &DecodeContext, lines: &[(u64, String)]) -> std::result::Result<Option<RecordBatch>, String> {
    let mut d = ReaderBuilder::new(ctx.schema.clone())
        .with_batch_size(lines.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for (_, l) in lines {
        d.decode(l.as_bytes()).map_err(|e| e.to_string())?;
        d.decode(b"\n").map_err(|e| e.to_string())?;
    }
    d.flush().map_err(|e| e.to_string())
}

fn convert(
    ctx: &DecodeContext,
    file: &str,
    lines: &mut Vec<(u64, String)>,
    rejects: &mut Vec<(u64, String, String)>,
) -> Result<Option<RecordBatch>> {
    if lines.is_empty() {
        return Ok(None);
    }
    let taken = std::mem::take(lines);
    let batch = match decode_lines(ctx, &taken) {
        Ok(b) => b,
        Err(_) => {
            // Find the bad lines one by one.
            let mut good = Vec::new();
            for (no, l) in taken {
                match decode_lines(ctx, &[(no, l.clone())]) {
                    Ok(Some(b)) => good.push(b),
                    Ok(None) => {}
                    Err(reason) if ctx.bad_rows == BadRows::Fail => {
                        return Err(Error::MalformedRow {
                            file: file.to_string(),
                            line: no,
                            reason,
                        });
                    }
                    Err(reason) => rejects.push((no, reason, l)),
                }
            }
            if good.is_empty() {
                return Ok(None);
            }
            Some(arrow::compute::concat_batches(&ctx.schema, &good).map_err(|e| Error::arrow(&ctx.table, e))?)
        }
    };
    batch.map(|b| ctx.finish_batch(b)).transpose()
}

fn decode(handle: Handle, emit: &Emit, location: Location, f: FileTask, ctx: DecodeContext) -> Result<()> {
    let r = StoreReader::open(handle.clone(), &location, &f.meta.location)?;
    let file = f.rel.as_str();
    let mut lines = Vec::with_capacity(ctx.batch_size.min(65_536));
    let mut rejects = Vec::new();
    for (i, line) in std::io::BufReader::new(r).lines().enumerate() {
        let line = line.map_err(|e| io_err(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push((i as u64 + 1, line));
        if lines.len() >= ctx.batch_size
            && let Some(b) = convert(&ctx, file, &mut lines, &mut rejects)?
            && !emit.send(b)
        {
            return Ok(());
        }
    }
    if let Some(b) = convert(&ctx, file, &mut lines, &mut rejects)?
        && !emit.send(b)
    {
        return Ok(());
    }
    handle.block_on(ctx.write_rejects(file, rejects))
}

/// The batches of one JSON-lines file.
pub(super) fn stream(location: Location, f: FileTask, ctx: DecodeContext) -> BatchStream {
    decode_in_thread(move |handle, emit| decode(handle, emit, location, f, ctx))
}
