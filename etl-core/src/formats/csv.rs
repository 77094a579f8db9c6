//! CSV: schema inference from a sample and decoding with per-row error reporting.
//!
//! Fields are read as text (the `csv` crate), then each column is cast to its type in one
//! vectorised step; a value the cast rejects marks its row bad, so a malformed row is named
//! by file and line without slowing the good rows down.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringBuilder};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use object_store::ObjectMeta;
use tokio::runtime::Handle;

use super::bridge::{Emit, StoreReader, decode_in_thread};
use super::{Decoded, DecodedStream, RejectedRow, TextRead};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::spec::{BadRows, CsvOptions};

fn reader<R: std::io::Read>(r: R, o: &CsvOptions) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(o.delimiter)
        .quote(o.quote)
        .flexible(true)
        .from_reader(r)
}

fn csv_err(file: &str, e: csv::Error) -> Error {
    Error::MalformedRow {
        file: file.to_string(),
        line: e.position().map_or(0, |p| p.line()),
        reason: e.to_string(),
    }
}

/// Column names: the header's, or `column_1…` without one.
fn read_header<R: std::io::Read>(rdr: &mut csv::Reader<R>, o: &CsvOptions, file: &str) -> Result<Option<Vec<String>>> {
    let mut rec = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut rec).map_err(|e| csv_err(file, e))? {
        return Ok(None);
    }
    if o.header {
        Ok(Some(
            rec.iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_string())
                .collect(),
        ))
    } else {
        // No header: positional names (the inference sample skips this first record).
        Ok(Some((1..=rec.len()).map(|i| format!("column_{i}")).collect()))
    }
}

/// Text values of one record, or why it is bad.
fn fields(rec: &csv::ByteRecord, n: usize) -> std::result::Result<Vec<&str>, String> {
    if rec.len() != n {
        return Err(format!("expected {n} fields, found {}", rec.len()));
    }
    rec.iter()
        .enumerate()
        .map(|(i, f)| std::str::from_utf8(f).map_err(|_| format!("field {} is not valid UTF-8", i + 1)))
        .collect()
}

/// The scale of a column whose values are all plain-notation numbers (`-12`, `3.50`) and
/// at least one has a fraction: a fixed-point decimal.
fn decimal_scale(col: &StringArray) -> Option<i8> {
    let mut scale = None;
    for v in col.iter().flatten() {
        let v = v.trim();
        let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let plain = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !plain(int) || !plain(frac) || int.len() + frac.len() > 38 {
            return None;
        }
        if digits.contains('.') {
            scale = scale.max(Some(frac.len()));
        }
    }
    scale.filter(|s| *s <= 18).map(|s| s as i8)
}

/// The narrowest type every non-null value of `col` casts to.
fn infer_type(col: &StringArray, decimals: bool) -> DataType {
    if col.null_count() == col.len() {
        return DataType::Utf8;
    }
    if decimals && let Some(scale) = decimal_scale(col) {
        return DataType::Decimal128(38, scale);
    }
    let candidates = [
        DataType::Int64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, None),
    ];
    let opts = CastOptions::default();
    for t in candidates {
        // The date cast accepts (and drops) a time of day: a date column has bare dates only.
        let bare = t != DataType::Date32 || col.iter().flatten().all(|v| v.trim().len() <= 10);
        if bare
            && let Ok(out) = cast_with_options(col, &t, &opts)
            && out.null_count() == col.null_count()
        {
            return t;
        }
    }
    DataType::Utf8
}

/// Infers the schema of a CSV file (`file` names it in errors) from its first `sample`
/// records; only as much of the file is fetched as those records take.
///
/// # Errors
/// A read that fails; [`Error::MalformedRow`] for text the CSV reader cannot split.
pub async fn infer_csv(
    location: &Location,
    meta: &ObjectMeta,
    file: &str,
    o: &CsvOptions,
    sample: usize,
) -> Result<Schema> {
    let (location, path, file, o) = (location.clone(), meta.location.clone(), file.to_string(), o.clone());
    tokio::task::spawn_blocking(move || {
        let r = StoreReader::open(Handle::current(), &location, &path)?;
        let mut rdr = reader(r, &o);
        let mut rec = csv::ByteRecord::new();
        let Some(names) = read_header(&mut rdr, &o, &file)? else {
            return Ok(Schema::empty());
        };
        let mut cols: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
        let mut n = 0;
        while n < sample && rdr.read_byte_record(&mut rec).map_err(|e| csv_err(&file, e))? {
            let Ok(values) = fields(&rec, names.len()) else {
                continue;
            };
            for (b, v) in cols.iter_mut().zip(values) {
                if o.null_markers.iter().any(|m| m == v) {
                    b.append_null();
                } else {
                    b.append_value(v);
                }
            }
            n += 1;
        }
        Ok(Schema::new(
            names
                .iter()
                .zip(cols.iter_mut())
                .map(|(name, b)| Field::new(name, infer_type(&b.finish(), o.decimals), true))
                .collect::<Vec<_>>(),
        ))
    })
    .await
    .map_err(|e| Error::config(format!("CSV inference task failed: {e}")))?
}

/// Rows of one batch being assembled.
struct Pending {
    builders: Vec<StringBuilder>,
    lines: Vec<u64>,
}

impl Pending {
    fn new(n: usize) -> Self {
        Pending {
            builders: (0..n).map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
        }
    }
}

/// Converts the text columns of a batch to the schema's types; bad rows fail or are
/// diverted into `rejects`.
fn convert(
    ctx: &TextRead,
    p: &mut Pending,
    rejects: &mut Vec<RejectedRow>,
    delimiter: u8,
) -> Result<Option<RecordBatch>> {
    let n = p.lines.len();
    if n == 0 {
        return Ok(None);
    }
    let strings: Vec<StringArray> = p.builders.iter_mut().map(|b| b.finish()).collect();
    let lines = std::mem::take(&mut p.lines);
    let mut bad: Vec<Option<String>> = vec![None; n];
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(strings.len());
    let opts = CastOptions::default();
    for (field, s) in ctx.schema.fields().iter().zip(&strings) {
        let out: ArrayRef = if field.data_type() == &DataType::Utf8 {
            Arc::new(s.clone())
        } else {
            cast_with_options(s, field.data_type(), &opts).map_err(|e| Error::arrow(&ctx.table, e))?
        };
        if out.null_count() > s.null_count() {
            for (r, slot) in bad.iter_mut().enumerate() {
                if slot.is_none() && s.is_valid(r) && out.is_null(r) {
                    *slot = Some(format!(
                        "column `{}`: `{}` is not a valid {}",
                        field.name(),
                        s.value(r),
                        field.data_type()
                    ));
                }
            }
        }
        if !field.is_nullable() && out.null_count() > 0 {
            for (r, slot) in bad.iter_mut().enumerate() {
                if slot.is_none() && out.is_null(r) {
                    *slot = Some(format!("column `{}` is NULL but declared not nullable", field.name()));
                }
            }
        }
        cols.push(out);
    }
    let first_bad = bad.iter().position(Option::is_some);
    let cols = match (first_bad, ctx.bad_rows) {
        (None, _) => cols,
        (Some(r), BadRows::Fail) => {
            return Err(Error::MalformedRow {
                file: ctx.file.clone(),
                line: lines[r],
                reason: bad[r].take().expect("bad row"),
            });
        }
        (Some(_), _) => {
            let sep = (delimiter as char).to_string();
            let keep: BooleanArray = bad.iter().map(|b| Some(b.is_none())).collect();
            for (r, reason) in bad.into_iter().enumerate() {
                if let Some(reason) = reason {
                    let record: Vec<&str> = strings
                        .iter()
                        .map(|s| if s.is_valid(r) { s.value(r) } else { "" })
                        .collect();
                    rejects.push(RejectedRow {
                        line: lines[r],
                        reason,
                        record: record.join(&sep),
                    });
                }
            }
            // The typed columns, without the diverted rows.
            cols.iter()
                .map(|c| arrow::compute::filter(c, &keep).map_err(|e| Error::arrow(&ctx.table, e)))
                .collect::<Result<Vec<_>>>()?
        }
    };
    RecordBatch::try_new(ctx.schema.clone(), cols)
        .map(Some)
        .map_err(|e| Error::arrow(&ctx.table, e))
}

fn decode(
    handle: Handle,
    emit: &Emit,
    location: Location,
    meta: ObjectMeta,
    o: CsvOptions,
    ctx: TextRead,
) -> Result<()> {
    let r = StoreReader::open(handle, &location, &meta.location)?;
    let mut rdr = reader(r, &o);
    let file = ctx.file.as_str();
    let names: Vec<String> = if o.header {
        match read_header(&mut rdr, &o, file)? {
            Some(names) => names,
            None => return Ok(()),
        }
    } else {
        // Without a header, fields are taken by position.
        ctx.schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    // Schema column i is record field map[i] (None: the file lacks it, read as NULL).
    let map: Vec<Option<usize>> = ctx
        .schema
        .fields()
        .iter()
        .map(|fld| names.iter().position(|n| n == fld.name()))
        .collect();
    let mut pending = Pending::new(map.len());
    let mut rejects = Vec::new();
    let mut rec = csv::ByteRecord::new();
    loop {
        if !rdr.read_byte_record(&mut rec).map_err(|e| csv_err(file, e))? {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line());
        let values = match fields(&rec, names.len()) {
            Ok(v) => v,
            Err(reason) => {
                if ctx.bad_rows == BadRows::Fail {
                    // Rows before this one may hold an earlier error: report that first.
                    convert(&ctx, &mut pending, &mut rejects, o.delimiter)?;
                    return Err(Error::MalformedRow {
                        file: file.to_string(),
                        line,
                        reason,
                    });
                }
                let raw: Vec<String> = rec.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
                rejects.push(RejectedRow {
                    line,
                    reason,
                    record: raw.join(&(o.delimiter as char).to_string()),
                });
                continue;
            }
        };
        for (b, idx) in pending.builders.iter_mut().zip(&map) {
            match idx.map(|j| values[j]) {
                Some(v) if !o.null_markers.iter().any(|m| m == v) => b.append_value(v),
                _ => b.append_null(),
            }
        }
        pending.lines.push(line);
        if pending.lines.len() >= ctx.batch_size
            && let Some(batch) = convert(&ctx, &mut pending, &mut rejects, o.delimiter)?
            && !emit.send(Decoded::Batch(batch))
        {
            return Ok(());
        }
    }
    if let Some(batch) = convert(&ctx, &mut pending, &mut rejects, o.delimiter)?
        && !emit.send(Decoded::Batch(batch))
    {
        return Ok(());
    }
    if !rejects.is_empty() {
        emit.send(Decoded::Rejects(rejects));
    }
    Ok(())
}

/// Decodes the CSV file `meta` names into `read.schema` on a blocking thread, at most two
/// batches ahead of the consumer. Columns are matched by header name (by position without
/// a header); a value that does not convert makes its row bad.
pub fn read_csv(location: Location, meta: ObjectMeta, o: CsvOptions, read: TextRead) -> DecodedStream {
    decode_in_thread(move |handle, emit| decode(handle, emit, location, meta, o, read))
}
