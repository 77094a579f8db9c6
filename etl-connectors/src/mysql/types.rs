//! MySQL / MariaDB column types → Arrow: the mapping from result-set metadata, and the
//! decoding of binary-protocol values into Arrow builders.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::NaiveDate;
use mysql_async::Value;
use mysql_async::consts::{ColumnFlags, ColumnType};

/// Character set number of binary strings (`BINARY`, `VARBINARY`, `BLOB`, `BIT`).
const BINARY_CHARSET: u16 = 63;
const US_PER_DAY: i64 = 86_400_000_000;

/// How one column is read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnPlan {
    pub name: String,
    pub data_type: DataType,
    pub kind: Decode,
    /// The SELECT casts the column to text (a type not mapped yet, read as text on request).
    pub as_text: bool,
    /// The type as the server names it, for errors.
    pub type_name: String,
    /// Whether the column may hold NULL (as the server's metadata says).
    pub nullable: bool,
}

/// The decoder of one column's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decode {
    /// `TINYINT(1)` and `BIT(1)`: 0 or 1.
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    /// `DECIMAL(p,s)` with p ≤ 38: exact, never rounded.
    Decimal {
        scale: i8,
    },
    /// Text: strings, `DECIMAL` wider than 38 digits, JSON, ENUM, SET.
    Text,
    Bytes,
    /// `BIT(n)`, n > 1: big-endian bytes as an unsigned integer.
    Bit,
    Date,
    Time,
    /// `DATETIME`: kept naive.
    DateTime,
    /// `TIMESTAMP`: read in a session whose time zone is UTC.
    Timestamp,
}

/// The Arrow type and decoder of a result-set column, or `None` when its type is not mapped
/// (yet). `TINYINT(1)` is a boolean when `tinyint1_as_bool`.
pub(super) fn map_column(col: &mysql_async::Column, tinyint1_as_bool: bool) -> Option<(DataType, Decode)> {
    use ColumnType::*;
    let flags = col.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = col.character_set() == BINARY_CHARSET;
    let int = |signed: (DataType, Decode), unsigned_: (DataType, Decode)| if unsigned { unsigned_ } else { signed };
    Some(match col.column_type() {
        MYSQL_TYPE_TINY if tinyint1_as_bool && col.column_length() == 1 && !unsigned => {
            (DataType::Boolean, Decode::Bool)
        }
        MYSQL_TYPE_TINY => int((DataType::Int8, Decode::I8), (DataType::UInt8, Decode::U8)),
        MYSQL_TYPE_SHORT => int((DataType::Int16, Decode::I16), (DataType::UInt16, Decode::U16)),
        MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG => int((DataType::Int32, Decode::I32), (DataType::UInt32, Decode::U32)),
        MYSQL_TYPE_LONGLONG => int((DataType::Int64, Decode::I64), (DataType::UInt64, Decode::U64)),
        MYSQL_TYPE_YEAR => (DataType::Int16, Decode::I16),
        MYSQL_TYPE_FLOAT => (DataType::Float32, Decode::F32),
        MYSQL_TYPE_DOUBLE => (DataType::Float64, Decode::F64),
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
            // Display length = precision, plus one for the point, plus one for the sign.
            let scale = col.decimals();
            let precision = col.column_length() as i64 - i64::from(scale > 0) - i64::from(!unsigned);
            match u8::try_from(precision) {
                Ok(p @ 1..=38) if scale <= p => (
                    DataType::Decimal128(p, scale as i8),
                    Decode::Decimal { scale: scale as i8 },
                ),
                _ => (DataType::Utf8, Decode::Text),
            }
        }
        MYSQL_TYPE_BIT if col.column_length() == 1 => (DataType::Boolean, Decode::Bool),
        MYSQL_TYPE_BIT => (DataType::UInt64, Decode::Bit),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => (DataType::Date32, Decode::Date),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => (DataType::Time64(TimeUnit::Microsecond), Decode::Time),
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => {
            (DataType::Timestamp(TimeUnit::Microsecond, None), Decode::DateTime)
        }
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => (
            DataType::Timestamp(TimeUnit::Microsecond, Some(etl_core::UTC.into())),
            Decode::Timestamp,
        ),
        MYSQL_TYPE_JSON | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => (DataType::Utf8, Decode::Text),
        MYSQL_TYPE_STRING if flags.intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) => {
            (DataType::Utf8, Decode::Text)
        }
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => {
            if binary {
                (DataType::Binary, Decode::Bytes)
            } else {
                (DataType::Utf8, Decode::Text)
            }
        }
        _ => return None,
    })
}

/// The server's name of a column type, for errors.
pub(super) fn type_name(col: &mysql_async::Column) -> String {
    let t = format!("{:?}", col.column_type());
    let t = t.trim_start_matches("MYSQL_TYPE_").to_lowercase();
    if col.flags().contains(ColumnFlags::UNSIGNED_FLAG) {
        format!("{t} unsigned")
    } else {
        t
    }
}

/// A column being decoded.
pub(super) enum Builder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder, bool),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder, bool),
}

fn wrong(v: &Value) -> String {
    format!("unexpected value {v:?}")
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => i64::try_from(*u).map_err(|_| format!("{u} is out of range")),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| wrong(v)),
        _ => Err(wrong(v)),
    }
}

fn uint(v: &Value) -> Result<u64, String> {
    match v {
        Value::UInt(u) => Ok(*u),
        Value::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is out of range")),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| wrong(v)),
        _ => Err(wrong(v)),
    }
}

fn narrow<T: TryFrom<i64>>(v: &Value) -> Result<T, String> {
    let i = int(v)?;
    T::try_from(i).map_err(|_| format!("{i} is out of range"))
}

fn unarrow<T: TryFrom<u64>>(v: &Value) -> Result<T, String> {
    let u = uint(v)?;
    T::try_from(u).map_err(|_| format!("{u} is out of range"))
}

/// Days since 1970-01-01 of a calendar date; zero dates (`0000-00-00`) are an error.
fn days(y: u16, m: u8, d: u8) -> Result<i64, String> {
    let date = NaiveDate::from_ymd_opt(y.into(), m.into(), d.into())
        .ok_or_else(|| {
            format!("{y:04}-{m:02}-{d:02} is not a calendar date (read zero dates as NULL with MySqlSource::with_zero_dates_as_null)")
        })?;
    Ok(i64::from(date.num_days_from_ce()) - 719_163)
}

use chrono::Datelike as _;

impl Builder {
    pub(super) fn new(plan: &ColumnPlan, capacity: usize) -> Self {
        match plan.kind {
            Decode::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            Decode::I8 => Builder::I8(Int8Builder::with_capacity(capacity)),
            Decode::I16 => Builder::I16(Int16Builder::with_capacity(capacity)),
            Decode::I32 => Builder::I32(Int32Builder::with_capacity(capacity)),
            Decode::I64 => Builder::I64(Int64Builder::with_capacity(capacity)),
            Decode::U8 => Builder::U8(UInt8Builder::with_capacity(capacity)),
            Decode::U16 => Builder::U16(UInt16Builder::with_capacity(capacity)),
            Decode::U32 => Builder::U32(UInt32Builder::with_capacity(capacity)),
            Decode::U64 => Builder::U64(UInt64Builder::with_capacity(capacity), false),
            Decode::Bit => Builder::U64(UInt64Builder::with_capacity(capacity), true),
            Decode::F32 => Builder::F32(Float32Builder::with_capacity(capacity)),
            Decode::F64 => Builder::F64(Float64Builder::with_capacity(capacity)),
            Decode::Decimal { scale } => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity).with_data_type(plan.data_type.clone()),
                scale,
            ),
            Decode::Text => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            Decode::Bytes => Builder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Decode::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            Decode::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Decode::DateTime => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            Decode::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), true),
        }
    }

    /// Appends one value (`NULL` or `None`: a null; a zero date too when `zero_dates_as_null`).
    pub(super) fn append(&mut self, v: Option<Value>, zero_dates_as_null: bool) -> Result<(), String> {
        let v = match v {
            None | Some(Value::NULL) => {
                self.append_null();
                return Ok(());
            }
            // `0000-00-00`, or a date with a zero month or day, as legacy MySQL data keeps.
            Some(Value::Date(_, m, d, ..)) if zero_dates_as_null && (m == 0 || d == 0) => {
                self.append_null();
                return Ok(());
            }
            Some(v) => v,
        };
        match self {
            Builder::Bool(b) => match int(&v).or_else(|_| bit(&v).map(|u| u as i64))? {
                0 => b.append_value(false),
                1 => b.append_value(true),
                i => {
                    return Err(format!(
                        "{i} is not a boolean (read TINYINT(1) as an integer with MySqlSource::with_tinyint1_as_bool(false))"
                    ));
                }
            },
            Builder::I8(b) => b.append_value(narrow(&v)?),
            Builder::I16(b) => b.append_value(narrow(&v)?),
            Builder::I32(b) => b.append_value(narrow(&v)?),
            Builder::I64(b) => b.append_value(int(&v)?),
            Builder::U8(b) => b.append_value(unarrow(&v)?),
            Builder::U16(b) => b.append_value(unarrow(&v)?),
            Builder::U32(b) => b.append_value(unarrow(&v)?),
            Builder::U64(b, is_bit) => b.append_value(if *is_bit { bit(&v)? } else { uint(&v)? }),
            Builder::F32(b) => match v {
                Value::Float(f) => b.append_value(f),
                Value::Double(f) => b.append_value(f as f32),
                other => return Err(wrong(&other)),
            },
            Builder::F64(b) => match v {
                Value::Double(f) => b.append_value(f),
                Value::Float(f) => b.append_value(f.into()),
                other => return Err(wrong(&other)),
            },
            Builder::Decimal(b, scale) => match &v {
                Value::Bytes(t) => b.append_value(decimal_scaled(t, *scale)?),
                Value::Int(_) | Value::UInt(_) => {
                    let i = i128::from(int(&v)?);
                    b.append_value(i * 10i128.pow(*scale as u32))
                }
                other => return Err(wrong(other)),
            },
            Builder::Text(b) => match v {
                Value::Bytes(t) => b.append_value(std::str::from_utf8(&t).map_err(|e| e.to_string())?),
                Value::Int(i) => b.append_value(i.to_string()),
                Value::UInt(u) => b.append_value(u.to_string()),
                Value::Float(f) => b.append_value(f.to_string()),
                Value::Double(f) => b.append_value(f.to_string()),
                other => return Err(wrong(&other)),
            },
            Builder::Bytes(b) => match v {
                Value::Bytes(t) => b.append_value(t),
                other => return Err(wrong(&other)),
            },
            Builder::Date(b) => match v {
                Value::Date(y, m, d, ..) => b.append_value(days(y, m, d)? as i32),
                other => return Err(wrong(&other)),
            },
            Builder::Time(b) => match v {
                Value::Time(neg, d, h, m, s, us) => {
                    let t = (((i64::from(d) * 24 + i64::from(h)) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us);
                    if neg || t >= US_PER_DAY {
                        let sign = if neg { "-" } else { "" };
                        return Err(format!(
                            "TIME {sign}{}:{m:02}:{s:02} is not a time of day (cast it in a query)",
                            d * 24 + u32::from(h)
                        ));
                    }
                    b.append_value(t)
                }
                other => return Err(wrong(&other)),
            },
            Builder::Ts(b, _) => match v {
                Value::Date(y, mo, d, h, mi, s, us) => {
                    let secs = i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                    b.append_value(days(y, mo, d)? * US_PER_DAY + secs * 1_000_000 + i64::from(us))
                }
                other => return Err(wrong(&other)),
            },
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::U8(b) => b.append_null(),
            Builder::U16(b) => b.append_null(),
            Builder::U32(b) => b.append_null(),
            Builder::U64(b, _) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Decimal(b, _) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Ts(b, _) => b.append_null(),
        }
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::U16(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b, _) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Ts(b, tz) => {
                let a = b.finish();
                Arc::new(if *tz { a.with_timezone(etl_core::UTC) } else { a })
            }
        }
    }
}

/// A `BIT(n)` value: big-endian bytes.
fn bit(v: &Value) -> Result<u64, String> {
    match v {
        Value::Bytes(b) if b.len() <= 8 => Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))),
        other => Err(wrong(other)),
    }
}

/// Decimal text (`-123.45`) as an integer scaled by 10^scale; an error rather than a rounding.
pub(super) fn decimal_scaled(text: &[u8], scale: i8) -> Result<i128, String> {
    let err = || format!("`{}` is not a decimal of scale {scale}", String::from_utf8_lossy(text));
    let (neg, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int_part, frac) = match body.iter().position(|c| *c == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    if int_part.is_empty() && frac.is_empty() {
        return Err(err());
    }
    let scale = scale.max(0) as usize;
    // Extra fractional digits are allowed only when they are zeros.
    if frac.len() > scale && frac[scale..].iter().any(|c| *c != b'0') {
        return Err(err());
    }
    let mut acc: i128 = 0;
    let digits = int_part
        .iter()
        .chain(frac.iter().take(scale))
        .chain(std::iter::repeat_n(&b'0', scale.saturating_sub(frac.len())));
    for c in digits {
        if !c.is_ascii_digit() {
            return Err(err());
        }
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(c - b'0')))
            .ok_or_else(err)?;
    }
    Ok(if neg { -acc } else { acc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(decimal_scaled(b"-123.45", 2).unwrap(), -12_345);
        assert_eq!(decimal_scaled(b"7", 3).unwrap(), 7_000);
        assert_eq!(decimal_scaled(b"0.5", 3).unwrap(), 500);
        assert_eq!(decimal_scaled(b"1.2300", 2).unwrap(), 123);
        assert!(decimal_scaled(b"1.239", 2).is_err(), "never rounds");
        assert!(decimal_scaled(b"1e5", 2).is_err());
        assert!(decimal_scaled(b"", 2).is_err());
    }

    #[test]
    fn dates_count_days_from_1970() {
        assert_eq!(days(1970, 1, 1).unwrap(), 0);
        assert_eq!(days(1969, 12, 31).unwrap(), -1);
        assert!(days(0, 0, 0).unwrap_err().contains("zero date"));
    }
}
