//! Arrow types as warehouse column types, per dialect, and the table definitions and new
//! columns built from them (quoting comes from [`etl_core::kit::sql::Dialect`]).

use arrow::datatypes::{DataType, Field};
use etl_core::kit::sql::Dialect;
use etl_core::{Error, Result};

/// The column type a warehouse table gets for an Arrow field.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] naming the table and column when the type has no mapping.
///
/// ```
/// use arrow::datatypes::{DataType, Field, TimeUnit};
/// use etl_core::kit::sql::Dialect;
/// let f = Field::new("paid_at", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true);
/// assert_eq!(etl_sinks::warehouse::column_type(Dialect::Postgres, "orders", &f).unwrap(), "timestamptz");
/// let f = Field::new("price", DataType::Decimal128(10, 2), true);
/// assert_eq!(etl_sinks::warehouse::column_type(Dialect::Postgres, "orders", &f).unwrap(), "numeric(10,2)");
/// ```
pub fn column_type(dialect: Dialect, table: &str, field: &Field) -> Result<String> {
    let unmapped = || Error::ColumnTypeConflict {
        table: table.to_string(),
        column: field.name().clone(),
        expected: format!("a type the {dialect:?} sink maps"),
        found: field.data_type().to_string(),
    };
    if dialect == Dialect::Snowflake {
        return Ok(match field.data_type() {
            DataType::Boolean => "boolean".into(),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => "number(38,0)".into(),
            DataType::UInt64 => "number(20,0)".into(),
            DataType::Float32 | DataType::Float64 => "float".into(),
            DataType::Decimal128(p, s) => format!("number({p},{s})"),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
            DataType::Binary | DataType::LargeBinary => "binary".into(),
            DataType::Date32 | DataType::Date64 => "date".into(),
            DataType::Time64(_) | DataType::Time32(_) => "time".into(),
            DataType::Timestamp(_, None) => "timestamp_ntz".into(),
            DataType::Timestamp(_, Some(_)) => "timestamp_tz".into(),
            _ => return Err(unmapped()),
        });
    }
    let redshift = dialect == Dialect::Redshift;
    Ok(match field.data_type() {
        // Redshift: text up to its limit of 65 535 bytes, bytes as VARBYTE, no intervals or
        // arrays.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if redshift => "varchar(65535)".into(),
        DataType::Binary | DataType::LargeBinary if redshift => "varbyte(1024000)".into(),
        DataType::Interval(_) | DataType::List(_) if redshift => return Err(unmapped()),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time64(_) | DataType::Time32(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::List(item) => format!("{}[]", column_type(dialect, table, item)?),
        _ => return Err(unmapped()),
    })
}

/// Whether a column of `existing` type (as the database names it) takes values of `wanted`
/// (as [`column_type`] names it) without loss.
pub(crate) fn compatible(existing: &str, wanted: &str) -> bool {
    let norm = |t: &str| {
        let t = t.trim().to_lowercase();
        match t.as_str() {
            "int2" => "smallint".to_string(),
            "int4" | "int" => "integer".to_string(),
            "int8" => "bigint".to_string(),
            "float4" => "real".to_string(),
            "float8" => "double precision".to_string(),
            "bool" => "boolean".to_string(),
            "timestamp without time zone" => "timestamp".to_string(),
            "timestamp with time zone" => "timestamptz".to_string(),
            "time without time zone" => "time".to_string(),
            "character varying" | "varchar" | "character" | "char" | "bpchar" | "string" => "text".to_string(),
            t if t.starts_with("varchar(") || t.starts_with("character varying(") => "text".to_string(),
            _ => t.replace(' ', ""),
        }
    };
    let (e, w) = (norm(existing), norm(wanted));
    if e == w || e == "text" && w == "text" {
        return true;
    }
    // Fixed point: enough integer digits and enough fraction digits.
    let fixed = |t: &str| -> Option<(i64, i64)> {
        let inner = t
            .strip_prefix("numeric(")
            .or_else(|| t.strip_prefix("number("))?
            .strip_suffix(')')?;
        let (p, s) = inner.split_once(',')?;
        Some((p.parse().ok()?, s.parse().ok()?))
    };
    if let (Some((pe, se)), Some((pw, sw))) = (fixed(&e), fixed(&w)) {
        return se >= sw && pe - se >= pw - sw;
    }
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        "numeric" => Some(4),
        _ => None,
    };
    // An integer fits a wider integer or an unbounded numeric.
    match (rank(&e), rank(&w)) {
        (Some(a), Some(b)) => a >= b,
        _ => e == "numeric" && w.starts_with("numeric") || e == "double precision" && w == "real",
    }
}

/// The `ALTER TABLE … ADD COLUMN` statements giving `target` the `fields` it lacks, given its
/// `existing` columns (name, type as the database names it); with `upper`, names are
/// upper-cased (Snowflake) and matched so.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] naming table, column and both types when an existing column
/// cannot take the field's values.
pub(crate) fn add_columns(
    dialect: Dialect,
    table_name: &str,
    target: &str,
    existing: &[(String, String)],
    fields: &arrow::datatypes::Fields,
    upper: bool,
) -> Result<Vec<String>> {
    let name = |n: &str| if upper { n.to_uppercase() } else { n.to_string() };
    let mut out = Vec::new();
    for f in fields {
        let wanted = column_type(dialect, table_name, f)?;
        match existing.iter().find(|(have, _)| *have == name(f.name())) {
            Some((_, have)) if !compatible(have, &wanted) => {
                return Err(Error::ColumnTypeConflict {
                    table: table_name.to_string(),
                    column: f.name().clone(),
                    expected: have.clone(),
                    found: wanted,
                });
            }
            Some(_) => {}
            None => out.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {wanted}",
                dialect.quote(&name(f.name()))
            )),
        }
    }
    Ok(out)
}

/// `CREATE TABLE` text for `fields`, with a primary key when `key` is not empty; with
/// `upper`, column names are upper-cased (Snowflake).
pub(crate) fn create_table(
    dialect: Dialect,
    table_name: &str,
    qualified: &str,
    fields: &[&Field],
    key: &[String],
    upper: bool,
) -> Result<String> {
    let id = |n: &str| {
        if upper {
            dialect.quote(&n.to_uppercase())
        } else {
            dialect.quote(n)
        }
    };
    let mut cols = fields
        .iter()
        .map(|f| Ok(format!("{} {}", id(f.name()), column_type(dialect, table_name, f)?)))
        .collect::<Result<Vec<_>>>()?;
    if !key.is_empty() {
        let k: Vec<String> = key.iter().map(|k| id(k)).collect();
        cols.push(format!("PRIMARY KEY ({})", k.join(", ")));
    }
    Ok(format!("CREATE TABLE {qualified} ({})", cols.join(", ")))
}

/// A time unit's microseconds per value.
#[cfg(feature = "postgres")]
pub(crate) fn micros_per(unit: &arrow::datatypes::TimeUnit) -> (i64, i64) {
    use arrow::datatypes::TimeUnit;
    match unit {
        TimeUnit::Second => (1_000_000, 1),
        TimeUnit::Millisecond => (1_000, 1),
        TimeUnit::Microsecond => (1, 1),
        TimeUnit::Nanosecond => (1, 1_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatible_types() {
        assert!(compatible("integer", "integer"));
        assert!(compatible("bigint", "integer"));
        assert!(!compatible("integer", "bigint"));
        assert!(compatible("character varying", "text"));
        assert!(compatible("character varying", "varchar(65535)"));
        assert!(compatible("TEXT", "varchar"));
        assert!(compatible("number(38,0)", "number(20,0)"));
        assert!(compatible("numeric(12,2)", "numeric(10,2)"));
        assert!(!compatible("number(38,0)", "number(12,2)"));
        assert!(!compatible("numeric(10,2)", "numeric(12,2)"));
        assert!(compatible("timestamp without time zone", "timestamp"));
        assert!(!compatible("timestamp without time zone", "timestamptz"));
        assert!(compatible("numeric", "numeric(10,2)"));
        assert!(!compatible("text", "integer"));
    }
}
