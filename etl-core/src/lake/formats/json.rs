//! JSON lines: schema inference from a sample and decoding with per-line error reporting.

use std::io::BufRead;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::record_batch::RecordBatch;
use object_store::ObjectMeta;
use tokio::runtime::Handle;

use super::bridge::{Emit, decode_in_thread, io_error, open_text};
use super::{Decoded, DecodedStream, RejectedRow, TextRead};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::spec::BadRows;

/// The lines of a text file with their numbers (1-based); a line that is not UTF-8 is
/// `Err(reason)`, a failed read an error.
fn numbered_lines(
    r: impl std::io::Read,
    file: &str,
) -> impl Iterator<Item = Result<(u64, std::result::Result<String, String>)>> {
    let file = file.to_string();
    std::io::BufReader::with_capacity(1 << 16, r)
        .split(b'\n')
        .enumerate()
        .map(move |(i, bytes)| {
            let no = i as u64 + 1;
            let mut bytes = bytes.map_err(|e| io_error(&file, no, e))?;
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            Ok((
                no,
                String::from_utf8(bytes).map_err(|_| "the line is not valid UTF-8 text".to_string()),
            ))
        })
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
/// fields holding only dates or timestamps are typed as such. Under [`BadRows::Divert`] a
/// line that is not JSON is left out of the sample (the read diverts it).
///
/// # Errors
/// A read that fails; [`Error::MalformedRow`] naming the line that is not JSON (under
/// [`BadRows::Fail`]).
pub async fn infer_json(
    location: &Location,
    meta: &ObjectMeta,
    file: &str,
    sample: usize,
    bad_rows: BadRows,
) -> Result<Schema> {
    let (location, path, file) = (location.clone(), meta.location.clone(), file.to_string());
    tokio::task::spawn_blocking(move || {
        let r = open_text(Handle::current(), &location, &path, &file)?;
        let mut values = Vec::new();
        for item in numbered_lines(r, &file) {
            let (no, line) = item?;
            if line.as_ref().is_ok_and(|l| l.trim().is_empty()) {
                continue;
            }
            if values.len() >= sample {
                break;
            }
            let parsed = line.and_then(|l| match serde_json::from_str::<serde_json::Value>(&l) {
                Ok(v) if v.is_object() => Ok(v),
                Ok(_) => Err("a JSON line must hold an object".to_string()),
                Err(e) => Err(e.to_string()),
            });
            match parsed {
                Ok(v) => values.push(v),
                // Left to the read, which diverts it.
                Err(_) if bad_rows == BadRows::Divert => {}
                Err(reason) => {
                    return Err(Error::MalformedRow {
                        file: file.clone(),
                        line: no,
                        reason,
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
    let file = ctx.file.as_str();
    let r = open_text(handle, &location, &meta.location, file)?;
    let mut lines = Vec::with_capacity(ctx.batch_size.min(65_536));
    let mut rejects = Vec::new();
    for item in numbered_lines(r, file) {
        let (no, line) = item?;
        let line = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => l,
            Err(reason) if ctx.bad_rows == BadRows::Fail => {
                return Err(Error::MalformedRow {
                    file: file.to_string(),
                    line: no,
                    reason,
                });
            }
            Err(reason) => {
                rejects.push(RejectedRow {
                    line: no,
                    reason,
                    record: String::new(),
                });
                continue;
            }
        };
        lines.push((no, line));
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
