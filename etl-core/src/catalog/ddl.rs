//! The DDL other engines need to read a crawled table (Athena, Hive).

use std::collections::BTreeSet;

use arrow::datatypes::{DataType, Field};

use super::model::{CrawledTable, PartitionValue, TableFormat};
use crate::error::{Error, Result};
use crate::kit::sql::Dialect;

/// Columns with their Hive type names, in order.
pub type HiveColumns = Vec<(String, String)>;

impl CrawledTable {
    /// The table's data columns and its partition keys, each with its Hive type name (what
    /// Athena DDL and the Glue Data Catalog take).
    ///
    /// # Errors
    /// [`Error::Config`] for a table without a schema; [`Error::ColumnTypeConflict`] for a
    /// column type Hive has no name for.
    pub fn hive_columns(&self) -> Result<(HiveColumns, HiveColumns)> {
        let schema = self.schema.as_ref().ok_or_else(|| {
            Error::config(format!(
                "table `{}`: DDL needs a schema ({:?} tables are not read yet)",
                self.name, self.format
            ))
        })?;
        let keys: BTreeSet<&str> = self.partition_keys.iter().map(|(k, _)| k.as_str()).collect();
        let columns = schema
            .fields()
            .iter()
            .filter(|f| !keys.contains(f.name().as_str()))
            .map(|f| Ok((f.name().clone(), hive_type(&self.name, f)?)))
            .collect::<Result<Vec<_>>>()?;
        let partition_keys = self
            .partition_keys
            .iter()
            .map(|(k, t)| Ok((k.clone(), hive_type(&self.name, &Field::new(k, t.clone(), true))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((columns, partition_keys))
    }

    /// Athena / Hive DDL for the table under `root_url` (the crawled prefix as `s3://…`):
    /// `CREATE EXTERNAL TABLE` and one `ALTER TABLE … ADD IF NOT EXISTS PARTITION` per
    /// partition, each statement ending with `;`. A Delta table is one statement, its
    /// location with `'table_type' = 'DELTA'` (Athena reads the rest from the log).
    ///
    /// # Errors
    /// [`Error::ColumnTypeConflict`] for a column type Hive has no name for.
    pub fn athena_ddl(&self, root_url: &str) -> Result<Vec<String>> {
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        let name = q(&self.name.replace('/', "_"));
        let root = root_url.trim_end_matches('/');
        if self.format == TableFormat::Delta {
            // Athena reads a Delta table's schema and partitions from its log.
            return Ok(vec![format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS {name}\nLOCATION '{root}/{}/'\nTBLPROPERTIES ('table_type' = 'DELTA');",
                self.name
            )]);
        }
        let (columns, keys) = self.hive_columns()?;
        let cols: Vec<String> = columns.iter().map(|(c, t)| format!("  {} {t}", q(c))).collect();
        let mut ddl = format!("CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{}\n)", cols.join(",\n"));
        if !keys.is_empty() {
            let parts: Vec<String> = keys.iter().map(|(k, t)| format!("{} {t}", q(k))).collect();
            ddl.push_str(&format!("\nPARTITIONED BY ({})", parts.join(", ")));
        }
        let stored = match self.format {
            TableFormat::Parquet | TableFormat::Delta => "STORED AS PARQUET".to_string(),
            TableFormat::Csv => "ROW FORMAT DELIMITED FIELDS TERMINATED BY ','\nSTORED AS TEXTFILE".to_string(),
            TableFormat::JsonLines => "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'".to_string(),
        };
        ddl.push_str(&format!("\n{stored}\nLOCATION '{root}/{}/'", self.name));
        if self.format == TableFormat::Csv {
            ddl.push_str("\nTBLPROPERTIES ('skip.header.line.count'='1')");
        }
        ddl.push(';');
        let mut out = vec![ddl];
        for p in &self.partitions {
            if p.values.is_empty() {
                continue;
            }
            let spec: Vec<String> = self
                .partition_keys
                .iter()
                .zip(&p.values)
                .map(|((k, _), v)| match v {
                    PartitionValue::Int(i) => format!("{} = {i}", q(k)),
                    other => format!("{} = {}", q(k), Dialect::Postgres.string_literal(&other.to_string())),
                })
                .collect();
            out.push(format!(
                "ALTER TABLE {name} ADD IF NOT EXISTS PARTITION ({}) LOCATION '{root}/{}/';",
                spec.join(", "),
                p.path
            ));
        }
        Ok(out)
    }
}

/// Hive's name of an Arrow type.
fn hive_type(table: &str, f: &Field) -> Result<String> {
    Ok(match f.data_type() {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::List(item) => format!("array<{}>", hive_type(table, item)?),
        other => {
            return Err(Error::ColumnTypeConflict {
                table: table.to_string(),
                column: f.name().clone(),
                expected: "a type Hive and Athena name".into(),
                found: other.to_string(),
            });
        }
    })
}
