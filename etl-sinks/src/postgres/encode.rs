//! Arrow record batches encoded as `COPY … FROM STDIN (FORMAT binary)` rows, column by
//! column with one downcast per batch (no per-value boxing).

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray, LargeBinaryArray, LargeStringArray,
    StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, IntervalUnit};
use arrow::record_batch::RecordBatch;
use bytes::{BufMut, BytesMut};
use etl_core::{Error, Result};

/// Microseconds from 1970-01-01 to Postgres' epoch 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The header of a binary COPY stream.
pub(crate) fn header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
}

/// The trailer of a binary COPY stream.
pub(crate) fn trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// One column of a batch, downcast once.
enum Col<'a> {
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    Str(&'a StringArray),
    LargeStr(&'a LargeStringArray),
    Bin(&'a BinaryArray),
    LargeBin(&'a LargeBinaryArray),
    Date(&'a Date32Array),
    /// Microseconds (of a day, or since 1970) after converting the unit.
    Micros(ArrayRef, i64, i64),
    Timestamp(ArrayRef, i64, i64),
    Interval(&'a IntervalMonthDayNanoArray),
}

impl<'a> Col<'a> {
    fn new(table: &str, name: &str, a: &'a ArrayRef) -> Result<Col<'a>> {
        let unsupported = || Error::ColumnTypeConflict {
            table: table.to_string(),
            column: name.to_string(),
            expected: "a type the Postgres sink writes".to_string(),
            found: a.data_type().to_string(),
        };
        let as_i64 = |a: &ArrayRef| arrow::compute::cast(a, &DataType::Int64).map_err(|e| Error::arrow(table, e));
        Ok(match a.data_type() {
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Int8 => Col::I8(a.as_primitive()),
            DataType::Int16 => Col::I16(a.as_primitive()),
            DataType::Int32 => Col::I32(a.as_primitive()),
            DataType::Int64 => Col::I64(a.as_primitive()),
            DataType::UInt8 => Col::U8(a.as_primitive()),
            DataType::UInt16 => Col::U16(a.as_primitive()),
            DataType::UInt32 => Col::U32(a.as_primitive()),
            DataType::UInt64 => Col::U64(a.as_primitive()),
            DataType::Float32 => Col::F32(a.as_primitive()),
            DataType::Float64 => Col::F64(a.as_primitive()),
            DataType::Decimal128(_, s) => Col::Decimal(a.as_primitive(), *s),
            DataType::Utf8 => Col::Str(a.as_string()),
            DataType::LargeUtf8 => Col::LargeStr(a.as_string()),
            DataType::Binary => Col::Bin(a.as_binary()),
            DataType::LargeBinary => Col::LargeBin(a.as_binary()),
            DataType::Date32 => Col::Date(a.as_primitive()),
            DataType::Time64(u) | DataType::Time32(u) => {
                let (mul, div) = crate::warehouse::micros_per(u);
                Col::Micros(as_i64(a)?, mul, div)
            }
            DataType::Timestamp(u, _) => {
                let (mul, div) = crate::warehouse::micros_per(u);
                Col::Timestamp(as_i64(a)?, mul, div)
            }
            DataType::Interval(IntervalUnit::MonthDayNano) => Col::Interval(a.as_primitive()),
            _ => return Err(unsupported()),
        })
    }

    /// Appends row `i` as a length-prefixed field.
    fn put(&self, i: usize, buf: &mut BytesMut) {
        macro_rules! fixed {
            ($a:expr, $len:expr, $put:ident, $v:expr) => {{
                if $a.is_null(i) {
                    buf.put_i32(-1);
                } else {
                    buf.put_i32($len);
                    buf.$put($v);
                }
            }};
        }
        match self {
            Col::Bool(a) => fixed!(a, 1, put_u8, a.value(i) as u8),
            Col::I8(a) => fixed!(a, 2, put_i16, a.value(i).into()),
            Col::I16(a) => fixed!(a, 2, put_i16, a.value(i)),
            Col::U8(a) => fixed!(a, 2, put_i16, a.value(i).into()),
            Col::I32(a) => fixed!(a, 4, put_i32, a.value(i)),
            Col::U16(a) => fixed!(a, 4, put_i32, a.value(i).into()),
            Col::I64(a) => fixed!(a, 8, put_i64, a.value(i)),
            Col::U32(a) => fixed!(a, 8, put_i64, a.value(i).into()),
            Col::F32(a) => fixed!(a, 4, put_f32, a.value(i)),
            Col::F64(a) => fixed!(a, 8, put_f64, a.value(i)),
            Col::U64(a) => {
                if a.is_null(i) {
                    buf.put_i32(-1)
                } else {
                    numeric(buf, i128::from(a.value(i)), 0)
                }
            }
            Col::Decimal(a, s) => {
                if a.is_null(i) {
                    buf.put_i32(-1)
                } else {
                    numeric(buf, a.value(i), *s)
                }
            }
            Col::Str(a) => bytes(buf, a.is_valid(i).then(|| a.value(i).as_bytes())),
            Col::LargeStr(a) => bytes(buf, a.is_valid(i).then(|| a.value(i).as_bytes())),
            Col::Bin(a) => bytes(buf, a.is_valid(i).then(|| a.value(i))),
            Col::LargeBin(a) => bytes(buf, a.is_valid(i).then(|| a.value(i))),
            Col::Date(a) => fixed!(a, 4, put_i32, a.value(i) - PG_EPOCH_DAYS),
            Col::Micros(a, mul, div) => {
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                fixed!(a, 8, put_i64, a.value(i) * mul / div)
            }
            Col::Timestamp(a, mul, div) => {
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                fixed!(a, 8, put_i64, a.value(i) * mul / div - PG_EPOCH_US)
            }
            Col::Interval(a) => {
                if a.is_null(i) {
                    buf.put_i32(-1)
                } else {
                    let v = a.value(i);
                    buf.put_i32(16);
                    buf.put_i64(v.nanoseconds / 1000);
                    buf.put_i32(v.days);
                    buf.put_i32(v.months);
                }
            }
        }
    }
}

fn bytes(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => buf.put_i32(-1),
        Some(v) => {
            buf.put_i32(v.len() as i32);
            buf.put_slice(v);
        }
    }
}

/// A decimal `v × 10^-scale` in Postgres' binary numeric form: base-10000 digits, a weight
/// and a display scale.
fn numeric(buf: &mut BytesMut, v: i128, scale: i8) {
    let scale = scale.max(0) as u32;
    let neg = v < 0;
    let abs = v.unsigned_abs();
    let p = 10u128.pow(scale);
    let (mut int, frac) = (abs / p, abs % p);
    // Integer groups, least significant first.
    let mut int_groups = Vec::new();
    while int > 0 {
        int_groups.push((int % 10_000) as i16);
        int /= 10_000;
    }
    int_groups.reverse();
    // Fraction groups: pad the fraction to whole groups of four digits.
    let frac_len = scale.div_ceil(4);
    let mut frac_padded = frac * 10u128.pow(frac_len * 4 - scale);
    let mut frac_groups = vec![0i16; frac_len as usize];
    for g in frac_groups.iter_mut().rev() {
        *g = (frac_padded % 10_000) as i16;
        frac_padded /= 10_000;
    }
    let mut weight = int_groups.len() as i16 - 1;
    let mut digits: Vec<i16> = int_groups.into_iter().chain(frac_groups).collect();
    // Strip leading zero groups (moving the weight down) and trailing ones.
    let lead = digits.iter().take_while(|d| **d == 0).count();
    if lead == digits.len() {
        digits.clear();
        weight = 0;
    } else {
        digits.drain(..lead);
        weight -= lead as i16;
        while digits.last() == Some(&0) {
            digits.pop();
        }
    }
    buf.put_i32(8 + 2 * digits.len() as i32);
    buf.put_i16(digits.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if neg && !digits.is_empty() { 0x4000 } else { 0 });
    buf.put_u16(scale as u16);
    for d in digits {
        buf.put_i16(d);
    }
}

/// Appends every row of `batch` (its columns in order) to `buf`.
pub(crate) fn rows(table: &str, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
    let schema = batch.schema();
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| Col::new(table, f.name(), a))
        .collect::<Result<Vec<_>>>()?;
    let n = cols.len() as i16;
    for i in 0..batch.num_rows() {
        buf.put_i16(n);
        for c in &cols {
            c.put(i, buf);
        }
    }
    Ok(())
}

/// Whether the Postgres sink can write `dt`.
pub(crate) fn writable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Date32
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
            | DataType::Interval(IntervalUnit::MonthDayNano)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: i128, s: i8) -> Vec<u8> {
        let mut b = BytesMut::new();
        numeric(&mut b, v, s);
        b.to_vec()
    }

    #[test]
    fn numerics_encode_as_postgres_does() {
        // 12345.678: digits [1, 2345, 6780], weight 1, dscale 3.
        let mut want = vec![0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 3];
        for d in [1i16, 2345, 6780] {
            want.extend(d.to_be_bytes());
        }
        assert_eq!(enc(12_345_678, 3), want);
        // -0.000012 at scale 6: [1200] weight -2, negative.
        let mut want = vec![0, 0, 0, 10, 0, 1, 0xff, 0xfe, 0x40, 0, 0, 6];
        want.extend(1200i16.to_be_bytes());
        assert_eq!(enc(-12, 6), want);
        // Zero at scale 2: no digits.
        assert_eq!(enc(0, 2), vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]);
        // 10000: [1] weight 1 (trailing zero group stripped).
        assert_eq!(enc(10_000, 0), vec![0, 0, 0, 10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
    }
}
