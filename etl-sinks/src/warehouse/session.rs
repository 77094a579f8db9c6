//! One connection to a SQL warehouse, as the shared commit sequence and checkpoints use it:
//! statements, a count, a first cell as text, and values bound (Postgres, Redshift) or
//! rendered as escaped literals (Snowflake's REST API takes no parameters).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
#[cfg(feature = "snowflake")]
use etl_core::kit::sql::Dialect;
use etl_core::{Error, Result};

/// A value of a statement: bound as a parameter where the driver takes them, else rendered as
/// an escaped literal.
#[derive(Clone, Debug)]
pub(crate) enum SqlValue {
    Text(String),
    Timestamp(DateTime<Utc>),
}

#[cfg(feature = "snowflake")]
impl SqlValue {
    /// The value as a literal of `dialect`.
    fn literal(&self, dialect: Dialect) -> String {
        match self {
            SqlValue::Text(s) => dialect.string_literal(s),
            SqlValue::Timestamp(t) => dialect.literal(&etl_core::CursorValue::TimestampTz(*t)),
        }
    }
}

/// `sql` with its placeholders `$1`, `$2`, … replaced by `values` as literals, in one pass:
/// a value's text is never read again (a `$1` inside a checkpoint's JSON stays), nor is text
/// inside the statement's own quotes.
///
/// # Panics
/// On a placeholder without a value: the statements are this crate's own.
#[cfg(feature = "snowflake")]
pub(crate) fn inline(dialect: Dialect, sql: &str, values: &[SqlValue]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) => {
                let mut n = 0usize;
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    n = n * 10 + d.to_digit(10).unwrap_or(0) as usize;
                    chars.next();
                }
                out.push_str(&values[n - 1].literal(dialect));
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// What a warehouse sink does on its connection. Errors name the table the session is for.
#[async_trait]
pub(crate) trait Session: Send + Sync {
    /// The table the session writes (in errors).
    fn table(&self) -> &str;

    /// Runs one statement with `values` for its placeholders `$1`, `$2`, …; the rows it
    /// touched.
    async fn exec_with(&self, sql: &str, values: &[SqlValue]) -> Result<u64>;

    /// Runs a compare-and-swap statement: the rows it touched, or `None` when another
    /// transaction got there first (a unique or serialization violation the driver reports as
    /// such).
    async fn exec_unless_raced(&self, sql: &str, values: &[SqlValue]) -> Result<Option<u64>>;

    /// The first cell of a query's first row as text (`None`: no row, or NULL), with `values`
    /// for its placeholders.
    async fn text_with(&self, sql: &str, values: &[SqlValue]) -> Result<Option<String>>;

    /// Every row of a statement, each cell as text (the statement casts to text).
    async fn rows(&self, sql: &str) -> Result<etl_core::keys::Cells>;

    /// Runs one statement without values; the rows it touched.
    async fn exec(&self, sql: &str) -> Result<u64> {
        self.exec_with(sql, &[]).await
    }

    /// The first cell as a count (a `SELECT count(*) …`).
    async fn count(&self, sql: &str) -> Result<u64> {
        let text = self.text_with(sql, &[]).await?.unwrap_or_else(|| "0".into());
        text.trim()
            .parse::<f64>()
            .map(|n| n as u64)
            .map_err(|_| Error::Connector {
                connector: "warehouse",
                message: format!("table `{}`: expected a count, got `{text}`", self.table()),
                retryable: false,
            })
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use etl_connectors::postgres::PgClient;
    use tokio_postgres::error::SqlState;
    use tokio_postgres::types::{ToSql, Type};

    fn params(values: &[SqlValue]) -> Vec<Box<dyn ToSql + Sync + Send>> {
        values
            .iter()
            .map(|v| -> Box<dyn ToSql + Sync + Send> {
                match v {
                    SqlValue::Text(s) => Box::new(s.clone()),
                    SqlValue::Timestamp(t) => Box::new(*t),
                }
            })
            .collect()
    }

    fn refs(owned: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
        owned.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }

    #[async_trait]
    impl Session for PgClient {
        fn table(&self) -> &str {
            PgClient::table(self)
        }

        async fn exec_with(&self, sql: &str, values: &[SqlValue]) -> Result<u64> {
            let owned = params(values);
            self.call(self.execute(sql, &refs(&owned))).await
        }

        async fn exec_unless_raced(&self, sql: &str, values: &[SqlValue]) -> Result<Option<u64>> {
            let owned = params(values);
            match self.timed(self.execute(sql, &refs(&owned))).await? {
                Ok(n) => Ok(Some(n)),
                Err(e)
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) =>
                {
                    Ok(None)
                }
                Err(e) => Err(self.err()(e)),
            }
        }

        async fn rows(&self, sql: &str) -> Result<etl_core::keys::Cells> {
            self.text_rows(sql).await
        }

        async fn text_with(&self, sql: &str, values: &[SqlValue]) -> Result<Option<String>> {
            let owned = params(values);
            let Some(row) = self.call(self.query_opt(sql, &refs(&owned))).await? else {
                return Ok(None);
            };
            let err = self.err();
            let ty = row.columns().first().map(|c| c.type_().clone());
            Ok(match ty {
                Some(Type::INT2) => row.try_get::<_, Option<i16>>(0).map_err(err)?.map(|v| v.to_string()),
                Some(Type::INT4) => row.try_get::<_, Option<i32>>(0).map_err(err)?.map(|v| v.to_string()),
                Some(Type::INT8) => row.try_get::<_, Option<i64>>(0).map_err(err)?.map(|v| v.to_string()),
                // Text of any other type: the caller casts (`::text`) where it needs one.
                _ => row.try_get::<_, Option<String>>(0).map_err(err)?,
            })
        }
    }
}

#[cfg(all(test, feature = "snowflake"))]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_literals_once() {
        let values = [
            SqlValue::Text("it's $2".into()),
            SqlValue::Text("b".into()),
            SqlValue::Text("x".into()),
        ];
        let mut ten: Vec<SqlValue> = (1..=10).map(|i| SqlValue::Text(format!("v{i}"))).collect();
        ten[0] = SqlValue::Text("first".into());
        assert_eq!(
            inline(
                Dialect::Snowflake,
                "SELECT $1, $2 WHERE a = '$3' AND \"$3\" = $3",
                &values
            ),
            "SELECT 'it''s $2', 'b' WHERE a = '$3' AND \"$3\" = 'x'"
        );
        assert_eq!(inline(Dialect::Snowflake, "$10 $1", &ten), "'v10' 'first'");
    }
}
