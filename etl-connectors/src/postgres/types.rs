//! Postgres types → Arrow: the mapping, and decoders from the binary wire format straight
//! into Arrow builders (no per-row boxing).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListArray, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, IntervalMonthDayNano, TimeUnit};
use tokio_postgres::types::{Kind, Type};

/// Microseconds from 1970-01-01 to Postgres' epoch 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// How one column is read: the Arrow type, and whether the SELECT casts it to text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnPlan {
    pub name: String,
    pub data_type: DataType,
    pub kind: Decode,
    pub as_text: bool,
    /// The table column it reads (table oid, attribute number), when it reads one.
    pub origin: Option<(u32, i16)>,
}

impl ColumnPlan {
    /// The plan of a column of a mapped type.
    pub(super) fn new(name: &str, (data_type, kind): (DataType, Decode)) -> Self {
        ColumnPlan {
            name: name.to_string(),
            data_type,
            kind,
            as_text: false,
            origin: None,
        }
    }
}

/// The decoder of one column's binary values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decode {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric {
        scale: i8,
    },
    NumericText,
    Text,
    Jsonb,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    /// A one-dimensional array of elements decoded by the element type's decoder.
    List(Box<Decode>),
}

/// The Arrow type and decoder of a Postgres type with its type modifier, or `None` when it
/// is not mapped (yet).
pub(super) fn map_type(ty: &Type, typmod: i32) -> Option<(DataType, Decode)> {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some(etl_core::UTC.into()));
    Some(match *ty {
        Type::BOOL => (DataType::Boolean, Decode::Bool),
        Type::INT2 => (DataType::Int16, Decode::I16),
        Type::INT4 => (DataType::Int32, Decode::I32),
        Type::INT8 => (DataType::Int64, Decode::I64),
        Type::FLOAT4 => (DataType::Float32, Decode::F32),
        Type::FLOAT8 => (DataType::Float64, Decode::F64),
        Type::NUMERIC => {
            // typmod = ((precision << 16) | scale) + 4; -1 when unbounded.
            if typmod >= 4 {
                let precision = ((typmod - 4) >> 16) as u8;
                let scale = ((typmod - 4) & 0xffff) as i8;
                if (1..=38).contains(&precision) {
                    return Some((DataType::Decimal128(precision, scale), Decode::Numeric { scale }));
                }
            }
            // Unbounded (or wider than Decimal128): exact decimal text, never rounded.
            (DataType::Utf8, Decode::NumericText)
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::XML => {
            (DataType::Utf8, Decode::Text)
        }
        Type::JSONB => (DataType::Utf8, Decode::Jsonb),
        Type::BYTEA => (DataType::Binary, Decode::Bytes),
        Type::DATE => (DataType::Date32, Decode::Date),
        Type::TIME => (DataType::Time64(TimeUnit::Microsecond), Decode::Time),
        Type::TIMESTAMP => (DataType::Timestamp(TimeUnit::Microsecond, None), Decode::Timestamp),
        Type::TIMESTAMPTZ => (utc(), Decode::TimestampTz),
        Type::INTERVAL => (
            DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            Decode::Interval,
        ),
        Type::UUID => (DataType::Utf8, Decode::Uuid),
        _ => match ty.kind() {
            Kind::Enum(_) => (DataType::Utf8, Decode::Text),
            Kind::Domain(inner) => return map_type(inner, typmod),
            Kind::Array(element) => {
                let (item, decode) = map_type(element, typmod)?;
                if matches!(decode, Decode::List(_)) {
                    return None;
                }
                (
                    DataType::List(Arc::new(Field::new("item", item, true))),
                    Decode::List(Box::new(decode)),
                )
            }
            _ => return None,
        },
    })
}

/// A column being decoded.
pub(super) enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Numeric(Decimal128Builder, i8),
    Text(StringBuilder, Decode),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder, bool),
    Interval(IntervalMonthDayNanoBuilder),
    List(Box<ListBuilder>),
}

/// A list column: offsets and validity here, the elements in an inner builder.
pub(super) struct ListBuilder {
    field: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Builder,
}

impl ListBuilder {
    /// Appends one array in Postgres' binary format: dimensions, a NULL flag, the element
    /// type, each dimension's size and lower bound, then the elements.
    fn append(&mut self, v: &[u8]) -> Result<(), String> {
        let be = |i: usize| -> Result<i32, String> {
            v.get(i..i + 4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4")))
                .ok_or_else(|| "array value too short".to_string())
        };
        let ndim = be(0)?;
        let mut at = 12;
        let len = match ndim {
            0 => 0,
            1 => {
                at += 8;
                be(12)?
            }
            n => {
                return Err(format!(
                    "{n}-dimensional arrays are not supported (read the column as text)"
                ));
            }
        };
        for _ in 0..len {
            let l = be(at)?;
            at += 4;
            if l < 0 {
                self.values.append(None)?;
            } else {
                let e = v.get(at..at + l as usize).ok_or("array element too short")?;
                self.values.append(Some(e))?;
                at += l as usize;
            }
        }
        let last = *self.offsets.last().expect("offsets start at 0");
        self.offsets.push(last + len);
        self.nulls.append_non_null();
        Ok(())
    }

    fn append_null(&mut self) {
        let last = *self.offsets.last().expect("offsets start at 0");
        self.offsets.push(last);
        self.nulls.append_null();
    }

    fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        Arc::new(ListArray::new(
            self.field.clone(),
            OffsetBuffer::new(offsets.into()),
            self.values.finish(),
            self.nulls.finish(),
        ))
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, found {}", v.len()))
}

impl Builder {
    pub(super) fn new(plan: &ColumnPlan, capacity: usize) -> Self {
        match &plan.kind {
            Decode::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            Decode::I16 => Builder::I16(Int16Builder::with_capacity(capacity)),
            Decode::I32 => Builder::I32(Int32Builder::with_capacity(capacity)),
            Decode::I64 => Builder::I64(Int64Builder::with_capacity(capacity)),
            Decode::F32 => Builder::F32(Float32Builder::with_capacity(capacity)),
            Decode::F64 => Builder::F64(Float64Builder::with_capacity(capacity)),
            Decode::Numeric { scale } => Builder::Numeric(
                Decimal128Builder::with_capacity(capacity).with_data_type(plan.data_type.clone()),
                *scale,
            ),
            k @ (Decode::NumericText | Decode::Text | Decode::Jsonb | Decode::Uuid) => {
                Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16), k.clone())
            }
            Decode::Bytes => Builder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Decode::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            Decode::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Decode::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            Decode::TimestampTz => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), true),
            Decode::Interval => Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
            Decode::List(element) => {
                let DataType::List(field) = &plan.data_type else {
                    unreachable!("list plans have list types")
                };
                let inner = ColumnPlan::new(&plan.name, (field.data_type().clone(), element.as_ref().clone()));
                Builder::List(Box::new(ListBuilder {
                    field: field.clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(capacity),
                    values: Builder::new(&inner, capacity),
                }))
            }
        }
    }

    /// Appends one value in Postgres' binary format (`None`: NULL).
    pub(super) fn append(&mut self, v: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = v else {
            match self {
                Builder::Bool(b) => b.append_null(),
                Builder::I16(b) => b.append_null(),
                Builder::I32(b) => b.append_null(),
                Builder::I64(b) => b.append_null(),
                Builder::F32(b) => b.append_null(),
                Builder::F64(b) => b.append_null(),
                Builder::Numeric(b, _) => b.append_null(),
                Builder::Text(b, _) => b.append_null(),
                Builder::Bytes(b) => b.append_null(),
                Builder::Date(b) => b.append_null(),
                Builder::Time(b) => b.append_null(),
                Builder::Ts(b, _) => b.append_null(),
                Builder::Interval(b) => b.append_null(),
                Builder::List(b) => b.append_null(),
            }
            return Ok(());
        };
        match self {
            Builder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Builder::I16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Builder::I32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Builder::I64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::F32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Builder::F64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Builder::Numeric(b, scale) => b.append_value(numeric_scaled(v, *scale)?),
            Builder::Text(b, kind) => match kind {
                Decode::Text => b.append_value(std::str::from_utf8(v).map_err(|e| e.to_string())?),
                Decode::Jsonb => {
                    // Version byte 1, then the JSON text.
                    let body = v.strip_prefix(&[1]).ok_or("unknown jsonb version")?;
                    b.append_value(std::str::from_utf8(body).map_err(|e| e.to_string())?)
                }
                Decode::Uuid => {
                    let u = fixed::<16>(v)?;
                    b.append_value(uuid_text(&u))
                }
                _ => b.append_value(numeric_text(v)?),
            },
            Builder::Bytes(b) => b.append_value(v),
            Builder::Date(b) => {
                let d = i32::from_be_bytes(fixed(v)?);
                if d == i32::MAX || d == i32::MIN {
                    return Err("infinite date cannot be represented".into());
                }
                b.append_value(d + PG_EPOCH_DAYS)
            }
            Builder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::Ts(b, _) => {
                let us = i64::from_be_bytes(fixed(v)?);
                if us == i64::MAX || us == i64::MIN {
                    return Err("infinite timestamp cannot be represented".into());
                }
                b.append_value(us + PG_EPOCH_US)
            }
            Builder::Interval(b) => {
                let v = fixed::<16>(v)?;
                let us = i64::from_be_bytes(v[0..8].try_into().expect("8"));
                let days = i32::from_be_bytes(v[8..12].try_into().expect("4"));
                let months = i32::from_be_bytes(v[12..16].try_into().expect("4"));
                b.append_value(IntervalMonthDayNano::new(months, days, us * 1000))
            }
            Builder::List(b) => b.append(v)?,
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Numeric(b, _) => Arc::new(b.finish()),
            Builder::Text(b, _) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Ts(b, tz) => {
                let a = b.finish();
                Arc::new(if *tz { a.with_timezone(etl_core::UTC) } else { a })
            }
            Builder::Interval(b) => Arc::new(b.finish()),
            Builder::List(b) => b.finish(),
        }
    }
}

fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The parts of a binary numeric: sign, weight, display scale, base-10000 digits (as the
/// big-endian byte pairs that follow the header).
fn numeric_parts(v: &[u8]) -> Result<(bool, i16, u16, &[u8]), String> {
    if v.len() < 8 {
        return Err("numeric value too short".into());
    }
    let be16 = |i: usize| i16::from_be_bytes([v[i], v[i + 1]]);
    let ndigits = be16(0) as usize;
    let weight = be16(2);
    let sign = u16::from_be_bytes([v[4], v[5]]);
    let dscale = u16::from_be_bytes([v[6], v[7]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN cannot be represented as a decimal".into()),
        _ => return Err("infinite numeric cannot be represented as a decimal".into()),
    }
    if v.len() != 8 + 2 * ndigits {
        return Err("numeric value has a wrong length".into());
    }
    Ok((sign == 0x4000, weight, dscale, &v[8..]))
}

fn digits(d: &[u8]) -> impl Iterator<Item = i16> + '_ {
    d.chunks_exact(2).map(|p| i16::from_be_bytes([p[0], p[1]]))
}

/// A binary numeric as an integer scaled by 10^scale; an error rather than a rounding.
fn numeric_scaled(v: &[u8], scale: i8) -> Result<i128, String> {
    let (neg, weight, _, ds) = numeric_parts(v)?;
    let mut acc: i128 = 0;
    let overflow = || "numeric value does not fit Decimal128".to_string();
    for (i, d) in digits(ds).enumerate() {
        let exp = 4 * (weight as i32 - i as i32) + scale as i32;
        let d = d as i128;
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| d.checked_mul(p))
                .ok_or_else(overflow)?
        } else {
            let p = 10i128.checked_pow((-exp) as u32).ok_or_else(overflow)?;
            if d % p != 0 {
                return Err(format!("numeric value has more than {scale} decimal places"));
            }
            d / p
        };
        acc = acc.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if neg { -acc } else { acc })
}

/// A binary numeric as exact decimal text.
fn numeric_text(v: &[u8]) -> Result<String, String> {
    let (neg, weight, dscale, ds) = numeric_parts(v)?;
    let digits: Vec<i16> = digits(ds).collect();
    let digit = |g: i32| {
        if g >= 0 && (g as usize) < digits.len() {
            digits[g as usize]
        } else {
            0
        }
    };
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for g in 0..=weight as i32 {
            if g == 0 {
                let _ = write!(s, "{}", digit(g));
            } else {
                let _ = write!(s, "{:04}", digit(g));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut g = weight as i32 + 1;
        while frac.len() < dscale as usize {
            let _ = write!(frac, "{:04}", digit(g));
            g += 1;
        }
        frac.truncate(dscale as usize);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(neg: bool, weight: i16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend((if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.678 = [1, 2345, 6780] weight 1
        let v = numeric(false, 1, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_scaled(&v, 3).unwrap(), 12_345_678);
        assert_eq!(numeric_text(&v).unwrap(), "12345.678");
        let v = numeric(true, -2, 6, &[1200]); // -0.000012 = 1200 × 10000^-2
        assert_eq!(numeric_text(&v).unwrap(), "-0.000012");
        assert_eq!(numeric_scaled(&v, 6).unwrap(), -12);
        assert!(numeric_scaled(&v, 2).is_err(), "never rounds");
        let zero = numeric(false, 0, 0, &[]);
        assert_eq!(numeric_text(&zero).unwrap(), "0");
        assert_eq!(uuid_text(&[0xab; 16]), "abababab-abab-abab-abab-abababababab");
    }
}
