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

use super::bridge::{Emit, decode_in_thread, io_error, open_text};
use super::{Decoded, DecodedStream, RejectedRow, TextRead};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::spec::{BadRows, CsvOptions};

/// Where a quoted field that is never closed opened.
#[derive(Clone, Copy, Debug)]
struct OpenQuote {
    /// Byte offset of the quote, from the reader's start.
    byte: u64,
    /// Its line (1-based, from the reader's start).
    line: u64,
    /// Byte offset of the first line break after it, if any.
    newline: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    /// Outside quoted fields: a quote opens one only at the start of a field.
    Unquoted,
    /// Inside a quoted field.
    InQuoted,
    /// After a quote inside a quoted field: a second quote is an escaped one.
    QuoteInQuoted,
}

/// Passes a file's bytes to the CSV reader and follows its quoting as it does, so that a
/// broken quote — which the `csv` crate silently reads as one field holding the lines after
/// it — is found and placed: a quoted field still open at the end of the file, or one that
/// spans lines and is "closed" by a quote followed by more text (`2,"bob` … `4,"dan`).
struct Tracked {
    inner: Box<dyn std::io::Read + Send>,
    quote: u8,
    delimiter: u8,
    state: Quoting,
    /// The byte before the next one (a line end at the start: a field starts there).
    prev: u8,
    offset: u64,
    line: u64,
    open: Option<OpenQuote>,
    /// The first quoted field that spans lines and closes with text after its quote.
    misclosed: Option<OpenQuote>,
    eof: bool,
}

impl Tracked {
    fn new(inner: Box<dyn std::io::Read + Send>, o: &CsvOptions) -> Self {
        Tracked {
            inner,
            quote: o.quote,
            delimiter: o.delimiter,
            state: Quoting::Unquoted,
            prev: b'\n',
            offset: 0,
            line: 1,
            open: None,
            misclosed: None,
            eof: false,
        }
    }

    /// The first broken quote seen so far: one closed wrongly, or one still open at the end
    /// of the file once the end was read.
    fn broken(&self) -> Option<OpenQuote> {
        self.misclosed
            .or_else(|| self.open.filter(|_| self.eof && self.state == Quoting::InQuoted))
    }

    fn scan(&mut self, buf: &[u8]) {
        // Between two quotes a few bytes lie: a plain loop beats a vectorised count there.
        let newlines = |b: &[u8]| {
            if b.len() < 256 {
                b.iter().filter(|&&c| c == b'\n').count() as u64
            } else {
                memchr::memchr_iter(b'\n', b).count() as u64
            }
        };
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                // Only a quote at the start of a field matters: jump from quote to quote.
                Quoting::Unquoted => {
                    let Some(j) = memchr::memchr(self.quote, &buf[i..]) else {
                        self.line += newlines(&buf[i..]);
                        self.prev = buf[buf.len() - 1];
                        break;
                    };
                    let at = i + j;
                    self.line += newlines(&buf[i..at]);
                    let before = if at > i { buf[at - 1] } else { self.prev };
                    if before == self.delimiter || before == b'\n' || before == b'\r' {
                        self.open = Some(OpenQuote {
                            byte: self.offset + at as u64,
                            line: self.line,
                            newline: None,
                        });
                        self.state = Quoting::InQuoted;
                    }
                    self.prev = self.quote;
                    i = at + 1;
                }
                Quoting::InQuoted => {
                    let end = memchr::memchr(self.quote, &buf[i..]).map_or(buf.len(), |j| i + j);
                    if let Some(open) = self.open.as_mut().filter(|o| o.newline.is_none())
                        && let Some(nl) = memchr::memchr(b'\n', &buf[i..end])
                    {
                        open.newline = Some(self.offset + (i + nl) as u64);
                    }
                    self.line += newlines(&buf[i..end]);
                    if end < buf.len() {
                        self.state = Quoting::QuoteInQuoted;
                    }
                    i = end + 1;
                }
                Quoting::QuoteInQuoted => {
                    let b = buf[i];
                    self.state = if b == self.quote {
                        Quoting::InQuoted
                    } else {
                        // Anything but a delimiter or a line end after a closing quote: the
                        // field goes on unquoted, which is a broken quote if it spanned lines.
                        let closed = b == self.delimiter || b == b'\r' || b == b'\n';
                        if !closed && self.misclosed.is_none() {
                            self.misclosed = self.open.filter(|o| o.newline.is_some());
                        }
                        Quoting::Unquoted
                    };
                    if b == b'\n' {
                        self.line += 1;
                    }
                    self.prev = b;
                    i += 1;
                }
            }
        }
        self.offset += buf.len() as u64;
    }
}

impl std::io::Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.eof = true;
        } else {
            self.scan(&buf[..n]);
        }
        Ok(n)
    }
}

fn reader(r: Tracked, o: &CsvOptions) -> csv::Reader<Tracked> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(o.delimiter)
        .quote(o.quote)
        .flexible(true)
        .from_reader(r)
}

fn csv_err(file: &str, base_line: u64, e: csv::Error) -> Error {
    let line = base_line + e.position().map_or(0, |p| p.line());
    let reason = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io_error(file, line, io),
        _ => Error::MalformedRow {
            file: file.to_string(),
            line,
            reason,
        },
    }
}

/// What [`Records::next`] read.
enum Next {
    /// A record, starting on this line; its fields are in the caller's record.
    Record(u64),
    /// A quoted field opened on `line` and never closed properly: that line is a bad record
    /// of its own (`text`), and reading goes on at the next line.
    Unclosed { line: u64, text: String },
    /// The end of the file.
    End,
}

/// Opens a file's (decompressed) bytes from the start.
type Open = Box<dyn FnMut() -> Result<Box<dyn std::io::Read + Send>> + Send>;

/// The records of one CSV file, each with its line; an unclosed quote costs one line, never
/// the rest of the file.
struct Records {
    open: Open,
    rdr: csv::Reader<Tracked>,
    options: CsvOptions,
    file: String,
    /// Lines and bytes before the current reader's start (after an unclosed quote).
    base_line: u64,
    base_byte: u64,
    done: bool,
}

impl Records {
    fn new(mut open: Open, options: &CsvOptions, file: &str) -> Result<Self> {
        let rdr = reader(Tracked::new(open()?, options), options);
        Ok(Records {
            open,
            rdr,
            options: options.clone(),
            file: file.to_string(),
            base_line: 0,
            base_byte: 0,
            done: false,
        })
    }

    fn next(&mut self, rec: &mut csv::ByteRecord) -> Result<Next> {
        if self.done
            || !self
                .rdr
                .read_byte_record(rec)
                .map_err(|e| csv_err(&self.file, self.base_line, e))?
        {
            return Ok(Next::End);
        }
        let start = rec.position().map_or(0, |p| p.byte());
        let end = self.rdr.position().byte();
        let line = self.base_line + rec.position().map_or(0, |p| p.line());
        let Some(open) = self.rdr.get_ref().broken().filter(|o| o.byte >= start && o.byte < end) else {
            return Ok(Next::Record(line));
        };
        // The record as far as the line the quote opened on: the fields before the broken
        // one, and its first line.
        let sep = (self.options.delimiter as char).to_string();
        let mut parts = Vec::new();
        for f in rec.iter() {
            let f = String::from_utf8_lossy(f);
            match f.split_once('\n') {
                Some((first, _)) => {
                    parts.push(format!(
                        "{}{}",
                        self.options.quote as char,
                        first.trim_end_matches('\r')
                    ));
                    break;
                }
                None => parts.push(f.into_owned()),
            }
        }
        let bad = Next::Unclosed {
            line: self.base_line + open.line,
            text: parts.join(&sep),
        };
        match open.newline {
            None => self.done = true,
            Some(nl) => {
                // Read on from the line after it, on a fresh reader (no header).
                let skip = self.base_byte + nl + 1;
                let mut r = (self.open)()?;
                std::io::copy(&mut std::io::Read::take(&mut r, skip), &mut std::io::sink())
                    .map_err(|e| io_error(&self.file, self.base_line + open.line, e))?;
                self.base_line += open.line;
                self.base_byte = skip;
                self.rdr = reader(Tracked::new(r, &self.options), &self.options);
            }
        }
        Ok(bad)
    }
}

/// Opens `path` of `location` as text for [`Records`].
fn opener(handle: Handle, location: &Location, path: &object_store::path::Path, file: &str) -> Open {
    let (location, path, file) = (location.clone(), path.clone(), file.to_string());
    Box::new(move || open_text(handle.clone(), &location, &path, &file))
}

/// Column names: the header's, or `column_1…` without one.
fn read_header(records: &mut Records, o: &CsvOptions, file: &str) -> Result<Option<Vec<String>>> {
    let mut rec = csv::ByteRecord::new();
    let line = match records.next(&mut rec)? {
        Next::End => return Ok(None),
        Next::Record(line) => line,
        Next::Unclosed { line, .. } => {
            return Err(Error::MalformedRow {
                file: file.to_string(),
                line,
                reason: "the header opens a quoted field that is never closed".to_string(),
            });
        }
    };
    if !o.header {
        // No header: positional names (the inference sample skips this first record).
        return Ok(Some((1..=rec.len()).map(|i| format!("column_{i}")).collect()));
    }
    // Names are text: bytes that are not (a binary or compressed file) are refused, never
    // decoded lossily into column names.
    rec.iter()
        .enumerate()
        .map(|(i, f)| match std::str::from_utf8(f) {
            Ok(name) if !name.chars().any(|c| c.is_control() && c != '\t') => Ok(name.trim().to_string()),
            _ => Err(Error::MalformedRow {
                file: file.to_string(),
                line,
                reason: format!("header field {} is not text (a binary or compressed file?)", i + 1),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
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

/// The message of an unclosed quote.
const UNCLOSED: &str =
    "a quoted field opened on this line is never closed properly (it would swallow the lines after it)";

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
        let mut records = Records::new(opener(Handle::current(), &location, &path, &file), &o, &file)?;
        let mut rec = csv::ByteRecord::new();
        let Some(names) = read_header(&mut records, &o, &file)? else {
            return Ok(Schema::empty());
        };
        let mut cols: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
        let mut n = 0;
        while n < sample {
            match records.next(&mut rec)? {
                Next::End => break,
                // Bad records are left to the read, which fails on them or diverts them.
                Next::Unclosed { .. } => continue,
                Next::Record(_) => {}
            }
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
    let file = ctx.file.as_str();
    let mut records = Records::new(opener(handle, &location, &meta.location, file), &o, file)?;
    let names: Vec<String> = if o.header {
        match read_header(&mut records, &o, file)? {
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
        let (line, values) = match records.next(&mut rec)? {
            Next::End => break,
            Next::Record(line) => (line, fields(&rec, names.len()).map_err(|reason| (reason, None))),
            Next::Unclosed { line, text } => (line, Err((UNCLOSED.to_string(), Some(text)))),
        };
        let values = match values {
            Ok(v) => v,
            Err((reason, text)) => {
                if ctx.bad_rows == BadRows::Fail {
                    // Rows before this one may hold an earlier error: report that first.
                    convert(&ctx, &mut pending, &mut rejects, o.delimiter)?;
                    return Err(Error::MalformedRow {
                        file: file.to_string(),
                        line,
                        reason,
                    });
                }
                let record = text.unwrap_or_else(|| {
                    let raw: Vec<String> = rec.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
                    raw.join(&(o.delimiter as char).to_string())
                });
                rejects.push(RejectedRow { line, reason, record });
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
