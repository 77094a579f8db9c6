//! JSON lines: schema inference from a sample and decoding with per-line error reporting.

use std::io::BufRead;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::record_batch::RecordBatch;
use object_store::ObjectMeta;
use tokio::runtime::Handle;

use super::bridge::{Emit, StoreReader, decode_in_thread};
use super::{Decoded, DecodedStream, RejectedRow, TextRead};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::spec::BadRows;

fn io_err(file: &str, e: std::io::Error) -> Error {
    Error::Connector {
        connector: "files",
        message: format!("reading `{file}`: {e}"),
        retryable: true,
    }
}

/// The type of a string column whose sampled values are all dates (`Date32`) or all
/// timestamps without zone (`Timestamp(µs)`); `Utf8` otherwise.
fn string_type<'a>(mut values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    use chrono::{NaiveDate, NaiveDateTime};
    let date = |v: &str| NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    let ts = |v: &str| {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .any(|f| NaiveDateTime::parse_from_str(v, f).is_ok())
    };
    if values.clone().next().is_none() {
        DataType::Utf8
    } else if values.clone().all(date) {
        DataType::Date32
    } else if values.all(|v| date(v) || ts(v)) {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else {
        DataType::Utf8
    }
}

/// Infers the schema of a JSON-lines file (`file` names it in errors) from its first
/// `sample` lines; only as much of the file is fetched as those lines take. Top-level string
/// fields holding only dates or timestamps are typed as such.
///
/// # Errors
/// A read that fails; [`Error::MalformedRow`] naming the line that is not JSON.
pub async fn infer_json(location: &Location, meta: &ObjectMeta, file: &str, sample: usize) -> Result<Schema> {
    let (location, path, file) = (location.clone(), meta.location.clone(), file.to_string());
    tokio::task::spawn_blocking(move || {
        let r = StoreReader::open(Handle::current(), &location, &path)?;
        let mut values = Vec::new();
        for (i, line) in std::io::BufReader::new(r).lines().enumerate() {
            let line = line.map_err(|e| io_err(&file, e))?;
            if line.trim().is_empty() {
                continue;
            }
            if values.len() >= sample {
                break;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => values.push(v),
                Err(e) => {
                    return Err(Error::MalformedRow {
                        file: file.clone(),
                        line: i as u64 + 1,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let schema =
            infer_json_schema_from_iterator(values.iter().cloned().map(Ok)).map_err(|e| Error::MalformedRow {
                file: file.clone(),
                line: 0,
                reason: e.to_string(),
            })?;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.data_type() != &DataType::Utf8 {
                    return f.as_ref().clone();
                }
                let strings = values.iter().filter_map(|v| v.get(f.name()).and_then(|x| x.as_str()));
                f.as_ref().clone().with_data_type(string_type(strings))
            })
            .collect();
        Ok(Schema::new(fields))
    })
    .await
    .map_err(|e| Error::config(format!("JSON inference task failed: {e}")))?
}

/// Decodes some lines with the schema; `Err` holds the decoder's message.
fn decode_lines(ctx: &TextRead, lines: &[(u64, String)]) -> std::result::Result<Option<RecordBatch>, String> {
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
    ctx: &TextRead,
    lines: &mut Vec<(u64, String)>,
    rejects: &mut Vec<RejectedRow>,
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
                            file: ctx.file.clone(),
                            line: no,
                            reason,
                        });
                    }
                    Err(reason) => rejects.push(RejectedRow {
                        line: no,
                        reason,
                        record: l,
                    }),
                }
            }
            if good.is_empty() {
                return Ok(None);
            }
            Some(arrow::compute::concat_batches(&ctx.schema, &good).map_err(|e| Error::arrow(&ctx.table, e))?)
        }
    };
    Ok(batch)
}

fn decode(handle: Handle, emit: &Emit, location: Location, meta: ObjectMeta, ctx: TextRead) -> Result<()> {
    let r = StoreReader::open(handle, &location, &meta.location)?;
    let file = ctx.file.as_str();
    let mut lines = Vec::with_capacity(ctx.batch_size.min(65_536));
    let mut rejects = Vec::new();
    for (i, line) in std::io::BufReader::new(r).lines().enumerate() {
        let line = line.map_err(|e| io_err(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push((i as u64 + 1, line));
        if lines.len() >= ctx.batch_size
            && let Some(b) = convert(&ctx, &mut lines, &mut rejects)?
            && !emit.send(Decoded::Batch(b))
        {
            return Ok(());
        }
    }
    if let Some(b) = convert(&ctx, &mut lines, &mut rejects)?
        && !emit.send(Decoded::Batch(b))
    {
        return Ok(());
    }
    if !rejects.is_empty() {
        emit.send(Decoded::Rejects(rejects));
    }
    Ok(())
}

/// Decodes the JSON-lines file `meta` names into `read.schema` on a blocking thread, at most
/// two batches ahead of the consumer. Keys the schema lacks are ignored; a line that does
/// not decode is bad.
pub fn read_json(location: Location, meta: ObjectMeta, read: TextRead) -> DecodedStream {
    decode_in_thread(move |handle, emit| decode(handle, emit, location, meta, read))
}
