//! Transforms: per-batch functions applied between the source and the sink.
//!
//! Built in: [`Select`], [`Rename`], [`Cast`], [`Filter`], and [`lookup_join`] to join a
//! table to another by key; the runner also adds the
//! `etl_processed_at` column ([`add_processed_at`]) and keeps the latest row per key
//! ([`keep_latest`]) when the spec asks for them. Any type implementing [`Transform`] can be
//! added to a [`crate::TableSpec`].
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, StringArray, RecordBatch};
//! use arrow::datatypes::DataType;
//! use etl_core::transform::{Cast, Filter, Rename, Select, Transform};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(StringArray::from(vec!["1", "2", "3"])) as _),
//!     ("qty", Arc::new(Int64Array::from(vec![5, 0, 7])) as _),
//! ]).unwrap();
//! let b = Cast::new([("id", DataType::Int64)]).apply("t", batch).unwrap();
//! let b = Filter::new("qty > 0", |b| {
//!     let qty = b.column_by_name("qty").unwrap();
//!     Ok(arrow::compute::kernels::cmp::gt(qty, &Int64Array::new_scalar(0))?)
//! }).apply("t", b).unwrap();
//! let b = Rename::new([("qty", "quantity")]).apply("t", b).unwrap();
//! let b = Select::new(["quantity"]).apply("t", b).unwrap();
//! assert_eq!(b.num_rows(), 2);
//! assert_eq!(b.schema().field(0).name(), "quantity");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, TimestampMicrosecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::kit::batch::cast_column;

/// The name of the column the runner adds with the run's start time.
pub const PROCESSED_AT: &str = "etl_processed_at";

/// A function applied to every batch of a table.
pub trait Transform: fmt::Debug + Send + Sync {
    /// Transforms one batch of `table`.
    ///
    /// # Errors
    /// Should name the table and column at fault.
    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch>;

    /// The transform as data, when it is a built-in a configuration file can say (so that a
    /// pipeline built in code can be written back as a file); `None` for code.
    fn as_builtin(&self) -> Option<Builtin<'_>> {
        None
    }
}

/// A built-in transform as data ([`Transform::as_builtin`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Builtin<'a> {
    /// [`Select`] of these columns.
    Select(&'a [String]),
    /// [`Rename`] of these `(from, to)` pairs.
    Rename(&'a [(String, String)]),
    /// [`Cast`] of these columns.
    Cast(&'a [(String, DataType)]),
    /// [`Filter::not_null`] of this column.
    NotNull(&'a str),
}

fn index_of(table: &str, schema: &Schema, column: &str) -> Result<usize> {
    schema.index_of(column).map_err(|_| Error::ColumnNotFound {
        table: table.to_string(),
        column: column.to_string(),
    })
}

/// Keeps the named columns, in the given order.
#[derive(Debug, Clone)]
pub struct Select(Vec<String>);

impl Select {
    /// Selects `columns`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(columns: I) -> Self {
        Select(columns.into_iter().map(Into::into).collect())
    }
}

impl Transform for Select {
    fn as_builtin(&self) -> Option<Builtin<'_>> {
        Some(Builtin::Select(&self.0))
    }

    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch> {
        let idx = self
            .0
            .iter()
            .map(|c| index_of(table, &batch.schema(), c))
            .collect::<Result<Vec<_>>>()?;
        batch.project(&idx).map_err(|e| Error::arrow(table, e))
    }
}

/// Renames columns (`from` → `to`).
#[derive(Debug, Clone)]
pub struct Rename(Vec<(String, String)>);

impl Rename {
    /// Renames each `(from, to)` pair.
    pub fn new<I: IntoIterator<Item = (S, T)>, S: Into<String>, T: Into<String>>(pairs: I) -> Self {
        Rename(pairs.into_iter().map(|(a, b)| (a.into(), b.into())).collect())
    }
}

impl Transform for Rename {
    fn as_builtin(&self) -> Option<Builtin<'_>> {
        Some(Builtin::Rename(&self.0))
    }

    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (from, to) in &self.0 {
            let i = index_of(table, &schema, from)?;
            fields[i] = fields[i].clone().with_name(to.clone());
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        RecordBatch::try_new(schema, batch.columns().to_vec()).map_err(|e| Error::arrow(table, e))
    }
}

/// Casts columns to new types; a value that does not convert is an error naming the column.
#[derive(Debug, Clone)]
pub struct Cast(Vec<(String, DataType)>);

impl Cast {
    /// Casts each `(column, type)`.
    pub fn new<I: IntoIterator<Item = (S, DataType)>, S: Into<String>>(pairs: I) -> Self {
        Cast(pairs.into_iter().map(|(c, t)| (c.into(), t)).collect())
    }
}

impl Transform for Cast {
    fn as_builtin(&self) -> Option<Builtin<'_>> {
        Some(Builtin::Cast(&self.0))
    }

    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut cols = batch.columns().to_vec();
        for (name, to) in &self.0 {
            let i = index_of(table, &schema, name)?;
            cols[i] = cast_column(table, name, &cols[i], to)?;
            fields[i] = fields[i].clone().with_data_type(to.clone());
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        RecordBatch::try_new(schema, cols).map_err(|e| Error::arrow(table, e))
    }
}

type Predicate = dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, arrow::error::ArrowError> + Send + Sync;

/// Keeps the rows for which a predicate is true (NULL counts as false).
#[derive(Clone)]
pub struct Filter {
    name: String,
    predicate: Arc<Predicate>,
    /// The column of [`Filter::not_null`].
    not_null: Option<String>,
}

impl Filter {
    /// A filter described by `name` (for logs) computing a mask with Arrow kernels.
    pub fn new(
        name: impl Into<String>,
        predicate: impl Fn(&RecordBatch) -> std::result::Result<BooleanArray, arrow::error::ArrowError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Filter {
            name: name.into(),
            predicate: Arc::new(predicate),
            not_null: None,
        }
    }

    /// Keeps rows where `column` is not NULL.
    pub fn not_null(column: impl Into<String>) -> Self {
        let column = column.into();
        let name = format!("{column} IS NOT NULL");
        let of = column.clone();
        Filter {
            not_null: Some(column),
            ..Filter::new(name, move |b| {
                let c = b
                    .column_by_name(&of)
                    .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("column `{of}` not found")))?;
                arrow::compute::is_not_null(c)
            })
        }
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.name).finish()
    }
}

impl Transform for Filter {
    fn as_builtin(&self) -> Option<Builtin<'_>> {
        self.not_null.as_deref().map(Builtin::NotNull)
    }

    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch> {
        let mask = (self.predicate)(&batch).map_err(|e| Error::arrow(table, e))?;
        let mask = crate::kit::batch::nulls_false(mask);
        crate::kit::batch::filter_batch(table, &batch, &mask)
    }
}

/// Appends (or replaces) the `etl_processed_at` column, a UTC timestamp holding `at`.
///
/// # Errors
/// Only on internal Arrow errors.
pub fn add_processed_at(table: &str, batch: RecordBatch, at: DateTime<Utc>) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols = batch.columns().to_vec();
    let col: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_value(at.timestamp_micros(), batch.num_rows()).with_timezone(crate::UTC),
    );
    let field = Field::new(
        PROCESSED_AT,
        DataType::Timestamp(TimeUnit::Microsecond, Some(crate::UTC.into())),
        false,
    );
    match schema.index_of(PROCESSED_AT) {
        Ok(i) => {
            fields[i] = field;
            cols[i] = col;
        }
        Err(_) => {
            fields.push(field);
            cols.push(col);
        }
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    RecordBatch::try_new(schema, cols).map_err(|e| Error::arrow(table, e))
}

/// Keeps one row per key: the one with the greatest cursor (compared column by column, NULL
/// lowest), and among equal cursors the one that arrived last. Returns the kept rows in
/// arrival order and how many were collapsed.
///
/// # Memory
/// Holds the whole input (a run's window) at once.
///
/// # Errors
/// A missing key or cursor column.
pub fn keep_latest(
    table: &str,
    batches: &[RecordBatch],
    key: &[String],
    cursor: &[String],
) -> Result<(Option<RecordBatch>, u64)> {
    let Some(first) = batches.first() else {
        return Ok((None, 0));
    };
    if key.is_empty() {
        return Err(Error::config(format!(
            "table `{table}`: keep_latest needs a primary key"
        )));
    }
    let schema = first.schema();
    let all = arrow::compute::concat_batches(&schema, batches).map_err(|e| Error::arrow(table, e))?;
    let cols = |names: &[String]| -> Result<Vec<ArrayRef>> {
        names
            .iter()
            .map(|n| Ok(all.column(index_of(table, &schema, n)?).clone()))
            .collect()
    };
    let converter = |arrays: &[ArrayRef]| {
        RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())
            .map_err(|e| Error::arrow(table, e))
    };
    let key_cols = cols(key)?;
    let keys = converter(&key_cols)?
        .convert_columns(&key_cols)
        .map_err(|e| Error::arrow(table, e))?;
    let cur_cols = cols(cursor)?;
    let curs = if cur_cols.is_empty() {
        None
    } else {
        Some(
            converter(&cur_cols)?
                .convert_columns(&cur_cols)
                .map_err(|e| Error::arrow(table, e))?,
        )
    };
    let mut best: HashMap<arrow::row::Row<'_>, u32> = HashMap::with_capacity(all.num_rows());
    for i in 0..all.num_rows() {
        let k = keys.row(i);
        match best.get_mut(&k) {
            None => {
                best.insert(k, i as u32);
            }
            Some(j) => {
                let newer = match &curs {
                    Some(c) => c.row(i) >= c.row(*j as usize),
                    None => true,
                };
                if newer {
                    *j = i as u32;
                }
            }
        }
    }
    let collapsed = (all.num_rows() - best.len()) as u64;
    if collapsed == 0 {
        return Ok((Some(all), 0));
    }
    let mut idx: Vec<u32> = best.into_values().collect();
    idx.sort_unstable();
    let out = arrow::compute::take_record_batch(&all, &UInt32Array::from(idx)).map_err(|e| Error::arrow(table, e))?;
    Ok((Some(out), collapsed))
}

/// A left join of `left` to a lookup table `right` on equal values of the `on` columns
/// (present in both): every row of `left`, with the `take` columns of the `right` row whose
/// key matches (NULL when none does). A NULL key matches nothing.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, StringArray, RecordBatch};
/// use etl_core::transform::lookup_join;
///
/// let orders = RecordBatch::try_from_iter([
///     ("order_id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
///     ("customer_id", Arc::new(Int64Array::from(vec![10, 11, 99])) as _),
/// ]).unwrap();
/// let customers = RecordBatch::try_from_iter([
///     ("customer_id", Arc::new(Int64Array::from(vec![10, 11])) as _),
///     ("name", Arc::new(StringArray::from(vec!["ada", "alan"])) as _),
/// ]).unwrap();
/// let joined = lookup_join("orders", &orders, &[customers], &["customer_id"], &["name"]).unwrap();
/// let names = joined.column_by_name("name").unwrap();
/// assert_eq!(arrow::util::display::array_value_to_string(names, 1).unwrap(), "alan");
/// assert!(names.is_null(2)); // customer 99 is unknown
/// ```
///
/// # Memory
/// Holds `right` whole (a lookup table: customers, products), streams `left` batch by batch.
///
/// # Errors
/// A missing column; [`Error::Config`] when two rows of `right` share a key (the join would
/// multiply rows), naming the count.
pub fn lookup_join(
    table: &str,
    left: &RecordBatch,
    right: &[RecordBatch],
    on: &[&str],
    take: &[&str],
) -> Result<RecordBatch> {
    let lschema = left.schema();
    let Some(first) = right.first() else {
        return Err(Error::config(format!(
            "table `{table}`: lookup_join needs the lookup table's schema (no batch given)"
        )));
    };
    let rschema = first.schema();
    let all = arrow::compute::concat_batches(&rschema, right).map_err(|e| Error::arrow(table, e))?;
    let cols = |b: &RecordBatch, names: &[&str]| -> Result<Vec<ArrayRef>> {
        names
            .iter()
            .map(|n| Ok(b.column(index_of(table, &b.schema(), n)?).clone()))
            .collect()
    };
    let (lkeys, rkeys) = (cols(left, on)?, cols(&all, on)?);
    let rkeys: Vec<ArrayRef> = rkeys
        .iter()
        .zip(lkeys.iter().zip(on))
        .map(|(r, (l, name))| cast_column(table, name, r, l.data_type()))
        .collect::<Result<_>>()?;
    let conv = RowConverter::new(lkeys.iter().map(|a| SortField::new(a.data_type().clone())).collect())
        .map_err(|e| Error::arrow(table, e))?;
    let rrows = conv.convert_columns(&rkeys).map_err(|e| Error::arrow(table, e))?;
    let lrows = conv.convert_columns(&lkeys).map_err(|e| Error::arrow(table, e))?;
    let valid = |keys: &[ArrayRef], i: usize| keys.iter().all(|k| k.is_valid(i));
    let mut index: HashMap<arrow::row::Row<'_>, u32> = HashMap::with_capacity(all.num_rows());
    let mut duplicates = 0;
    for i in (0..all.num_rows()).filter(|i| valid(&rkeys, *i)) {
        if index.insert(rrows.row(i), i as u32).is_some() {
            duplicates += 1;
        }
    }
    if duplicates > 0 {
        return Err(Error::config(format!(
            "table `{table}`: the lookup table has {duplicates} rows whose key ({}) repeats an earlier row's",
            on.join(", ")
        )));
    }
    let idx: UInt32Array = (0..left.num_rows())
        .map(|i| {
            if valid(&lkeys, i) {
                index.get(&lrows.row(i)).copied()
            } else {
                None
            }
        })
        .collect();
    let mut fields: Vec<Field> = lschema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = left.columns().to_vec();
    for (name, col) in take.iter().zip(cols(&all, take)?) {
        fields.push(Field::new(*name, col.data_type().clone(), true));
        columns.push(arrow::compute::take(&col, &idx, None).map_err(|e| Error::arrow(table, e))?);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::arrow(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn batch(ids: Vec<i64>, ver: Vec<i64>, name: Vec<&str>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("ver", Arc::new(Int64Array::from(ver)) as ArrayRef),
            ("name", Arc::new(StringArray::from(name)) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn lookup_join_on_a_composite_key_with_nulls_and_duplicates() {
        let left = batch(vec![1, 2, 3], vec![1, 1, 2], vec!["x", "y", "z"]);
        // The lookup side's key types differ (Int32): cast to the left's.
        let right = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(arrow::array::Int32Array::from(vec![Some(1), Some(3), None])) as ArrayRef,
            ),
            ("ver", Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef),
            (
                "label",
                Arc::new(StringArray::from(vec!["one", "three", "null key"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let out = lookup_join("t", &left, std::slice::from_ref(&right), &["id", "ver"], &["label"]).unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&[out]).unwrap().to_string();
        assert_eq!(
            text,
            "+----+-----+------+-------+\n\
             | id | ver | name | label |\n\
             +----+-----+------+-------+\n\
             | 1  | 1   | x    | one   |\n\
             | 2  | 1   | y    |       |\n\
             | 3  | 2   | z    | three |\n\
             +----+-----+------+-------+"
        );
        let err = lookup_join("t", &left, &[right.clone(), right], &["id", "ver"], &["label"]).unwrap_err();
        assert!(err.to_string().contains("2 rows whose key (id, ver) repeats"), "{err}");
    }

    #[test]
    fn keep_latest_takes_greatest_cursor_then_last_arrival() {
        let a = batch(vec![1, 2, 3], vec![5, 1, 1], vec!["a5", "b1", "c1"]);
        let b = batch(vec![1, 2, 3], vec![4, 2, 1], vec!["a4", "b2", "c1-later"]);
        let (out, collapsed) = keep_latest("t", &[a, b], &["id".into()], &["ver".into()]).unwrap();
        let out = out.unwrap();
        assert_eq!(collapsed, 3);
        let text = arrow::util::pretty::pretty_format_batches(&[out]).unwrap().to_string();
        assert_eq!(
            text,
            "+----+-----+----------+\n| id | ver | name     |\n+----+-----+----------+\n| 1  | 5   | a5       |\n| 2  | 2   | b2       |\n| 3  | 1   | c1-later |\n+----+-----+----------+"
        );
    }

    #[test]
    fn cast_failure_names_the_column() {
        let b = RecordBatch::try_from_iter([("n", Arc::new(StringArray::from(vec!["1", "x"])) as ArrayRef)]).unwrap();
        let err = Cast::new([("n", DataType::Int64)])
            .apply("orders", b)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("orders") && err.contains("`n`") && err.contains("Int64"),
            "{err}"
        );
    }

    #[test]
    fn processed_at_is_appended_once() {
        let b = batch(vec![1], vec![1], vec!["a"]);
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = add_processed_at("t", b, t).unwrap();
        let b = add_processed_at("t", b, t).unwrap();
        assert_eq!(b.num_columns(), 4);
        assert_eq!(b.schema().field(3).name(), PROCESSED_AT);
    }
}
