//! SQL text shared by every database connector: identifier quoting per dialect, the
//! incremental window's predicate, and the rendering of cursor values as typed literals where
//! a statement cannot take parameters (Postgres `COPY (SELECT …)`).

use crate::keys::{CONTENT_MODULUS, Content, ContentKind, KeySpace, WEIGHT_MODULUS, key_hash_sql};
use crate::position::CursorValue;
use crate::position::Low;

/// The parts of a possibly schema-qualified name: split at dots, except inside double quotes,
/// which a part holding a dot (or a quote, doubled) is written in.
///
/// ```
/// use etl_core::kit::sql::split_qualified;
/// assert_eq!(split_qualified("public.orders"), ["public", "orders"]);
/// assert_eq!(split_qualified(r#"sales."order.items""#), ["sales", "order.items"]);
/// assert_eq!(split_qualified(r#""say ""hi""""#), [r#"say "hi""#]);
/// ```
pub fn split_qualified(name: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = name.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("a part").push('"');
            }
            ('"', true) => quoted = false,
            ('.', false) => parts.push(String::new()),
            (c, _) => parts.last_mut().expect("a part").push(c),
        }
    }
    parts
}

/// Writes `parts` as one name [`split_qualified`] splits back: a part holding a dot or a
/// double quote is double-quoted.
///
/// ```
/// use etl_core::kit::sql::join_qualified;
/// assert_eq!(join_qualified(&["sales", "order.items"]), r#"sales."order.items""#);
/// ```
pub fn join_qualified(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            if p.contains(['.', '"']) {
                format!("\"{}\"", p.replace('"', "\"\""))
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
    /// Amazon Redshift (quoting and literals as Postgres; its own column types and
    /// statements in the Redshift sink).
    Redshift,
    /// Snowflake (identifiers quoted as Postgres; `\` escapes in string literals).
    Snowflake,
}

impl Dialect {
    /// `expr` as text, so that every driver reads the answer the same way.
    pub fn text(self, expr: &str) -> String {
        match self {
            Dialect::MySql => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS VARCHAR)"),
        }
    }

    /// The range of [`KeySpace`] key column `key` falls in.
    fn key_range(self, key: &str, space: &KeySpace) -> String {
        let (lo, w) = (space.lo, space.width);
        match self {
            Dialect::MySql => format!("(CAST({key} AS SIGNED) - ({lo})) DIV {w}"),
            Dialect::Snowflake => format!("FLOOR(({key} - ({lo})) / {w})"),
            Dialect::Postgres | Dialect::Redshift => format!("(CAST({key} AS BIGINT) - ({lo})) / {w}"),
        }
    }

    /// What a session runs before the key queries: Postgres plans its hash aggregate for a
    /// group per row and spills it to disk under the default `work_mem` (4 MB) although the
    /// ranges fit in a few, so more memory keeps it in one pass; and it runs a key query
    /// faster on one process than with parallel workers (the partial aggregates of 65 536
    /// ranges cost more than they save), which also leaves the other core to the other side;
    /// and it compiles a digest's per-row expressions (JIT, where the server has it and the
    /// query's cost passes `jit_above_cost`) rather than interpreting them: a content digest
    /// of 5M rows in two thirds of the time, whatever the server's default. Inlining is left
    /// to the server's `jit_inline_above_cost`, which such a digest passes: inlined, it
    /// compiles for 0.17 s rather than 0.06 s and runs 0.3 s faster.
    pub fn key_session(self) -> &'static [&'static str] {
        match self {
            Dialect::Postgres => &[
                "SET work_mem = '64MB'",
                "SET max_parallel_workers_per_gather = 0",
                "SET jit = on",
            ],
            _ => &[],
        }
    }

    /// The least and greatest value of key column `key` of `relation`, as text
    /// ([`crate::keys::KeyReader::key_bounds`]).
    ///
    /// ```
    /// use etl_core::kit::sql::Dialect;
    /// assert_eq!(Dialect::Postgres.key_bounds("t", "id"),
    ///            r#"SELECT CAST(min("id") AS VARCHAR), CAST(max("id") AS VARCHAR) FROM t"#);
    /// ```
    pub fn key_bounds(self, relation: &str, key: &str) -> String {
        let k = self.quote(key);
        format!(
            "SELECT {}, {} FROM {relation}",
            self.text(&format!("min({k})")),
            self.text(&format!("max({k})"))
        )
    }

    /// The least and greatest `key` of the rows of `relation` that `filter` keeps, as text,
    /// and with `count` their number: what a shard plan splits ([`crate::shard`]).
    pub fn split_bounds(self, relation: &str, key: &str, filter: &str, count: bool) -> String {
        let k = self.quote(key);
        let counted = if count {
            format!(", {}", self.text("count(*)"))
        } else {
            String::new()
        };
        format!(
            "SELECT {}, {}{counted} FROM {relation} WHERE {filter}",
            self.text(&format!("min({k})")),
            self.text(&format!("max({k})"))
        )
    }

    /// The mean size in bytes of the rows of `relation` that `filter` keeps, as text, from a
    /// sample of 10 000 of them: what a shard plan sized by bytes ([`crate::shard`]) takes
    /// (Postgres: each row's stored size; others: the length of its values as text).
    ///
    /// ```
    /// use etl_core::kit::sql::Dialect;
    /// assert_eq!(Dialect::Postgres.mean_row_bytes("t", &["a".into()], "true"),
    ///            r#"SELECT CAST(avg(pg_column_size(s.*)) AS VARCHAR) FROM (SELECT "a" FROM t WHERE true LIMIT 10000) s"#);
    /// ```
    pub fn mean_row_bytes(self, relation: &str, columns: &[String], filter: &str) -> String {
        let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
        let size = match self {
            Dialect::Postgres | Dialect::Redshift => "pg_column_size(s.*)".to_string(),
            Dialect::MySql | Dialect::Snowflake => format!("LENGTH(CONCAT_WS('', {}))", cols.join(", ")),
        };
        format!(
            "SELECT {} FROM (SELECT {} FROM {relation} WHERE {filter} LIMIT 10000) s",
            self.text(&format!("avg({size})")),
            cols.join(", ")
        )
    }

    /// The key column as a signed 64-bit integer.
    fn key_int(self, k: &str) -> String {
        match self {
            Dialect::MySql => format!("CAST({k} AS SIGNED)"),
            Dialect::Snowflake => k.to_string(),
            Dialect::Postgres | Dialect::Redshift => format!("CAST({k} AS BIGINT)"),
        }
    }

    /// Column `c` (quoted) as the integer its [`ContentKind`] values it by, NULL for NULL
    /// ([`crate::keys::content_hash`]); with `native`, the engine's own hash of the value
    /// where it has one ([`Content::native`]).
    ///
    /// ```
    /// use etl_core::keys::ContentKind;
    /// use etl_core::kit::sql::Dialect;
    /// assert_eq!(Dialect::Postgres.content_int(r#""price""#, ContentKind::Decimal(2), false),
    ///            r#"CAST(ROUND("price" * 100) AS BIGINT)"#);
    /// assert_eq!(Dialect::Postgres.content_int(r#""price""#, ContentKind::Decimal(2), true),
    ///            r#"CAST(hash_numeric("price") AS BIGINT)"#);
    /// assert_eq!(Dialect::MySql.content_int("`d`", ContentKind::Date, false), "DATEDIFF(`d`, '1970-01-01')");
    /// ```
    pub fn content_int(self, c: &str, kind: ContentKind, native: bool) -> String {
        use Dialect::{MySql, Postgres, Redshift, Snowflake};
        if let Some(h) = self.native_hash(c, kind, native) {
            return format!("CAST({h} AS BIGINT)");
        }
        match (kind, self) {
            (ContentKind::Integer, _) => self.key_int(c),
            (ContentKind::Boolean, _) => format!("(CASE WHEN {c} THEN 1 WHEN NOT {c} THEN 0 END)"),
            (ContentKind::Date, Postgres | Redshift) => format!("({c} - DATE '1970-01-01')"),
            (ContentKind::Date, MySql) => format!("DATEDIFF({c}, '1970-01-01')"),
            (ContentKind::Date, Snowflake) => format!("DATEDIFF(day, DATE '1970-01-01', {c})"),
            // `date_part` answers a double (exact to the microsecond until 2255), and costs
            // two thirds of `EXTRACT`'s numeric.
            (ContentKind::Timestamp(_), Postgres | Redshift) => {
                format!("CAST(date_part('epoch', {c}) * 1000000 AS BIGINT)")
            }
            (ContentKind::Timestamp(_), MySql) => {
                format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})")
            }
            (ContentKind::Timestamp(_), Snowflake) => format!("DATE_PART(EPOCH_MICROSECOND, {c})"),
            (ContentKind::Decimal(0), _) => self.key_int(&format!("ROUND({c})")),
            (ContentKind::Decimal(s), _) => self.key_int(&format!("ROUND({c} * 1{})", "0".repeat(s as usize))),
            (ContentKind::Float, _) => self.key_int(&format!("ROUND({c} * 1000000)")),
            (ContentKind::Text, Postgres) => {
                format!("CAST(CAST('x' || substr(md5(CAST({c} AS TEXT)), 1, 7) AS BIT(28)) AS BIGINT)")
            }
            (ContentKind::Text, Redshift) => format!("STRTOL(SUBSTRING(MD5({c}), 1, 7), 16)"),
            // The MD5 of the text's UTF-8 bytes, whatever the column's character set.
            (ContentKind::Text, MySql) => {
                format!("CAST(CONV(SUBSTRING(MD5(CONVERT(CAST({c} AS CHAR) USING utf8mb4)), 1, 7), 16, 10) AS SIGNED)")
            }
            // Digit by digit: what every Snowflake (and its emulator) computes alike.
            (ContentKind::Text, Snowflake) => {
                let digits: Vec<String> = (1..=7)
                    .map(|i| {
                        format!(
                            "(POSITION(SUBSTR(MD5({c}), {i}, 1) IN '0123456789abcdef') - 1) * {}",
                            16_i64.pow(7 - i)
                        )
                    })
                    .collect();
                format!("({})", digits.join(" + "))
            }
        }
    }

    /// The engine's own hash of column `c` (an `integer`), where `native` asks for it and the
    /// engine has one for the kind: Postgres's `hashint8`, `hash_numeric`, `hashfloat8`,
    /// `timestamp_hash`, `hashtext`.
    fn native_hash(self, c: &str, kind: ContentKind, native: bool) -> Option<String> {
        if !native || self != Dialect::Postgres {
            return None;
        }
        match kind {
            ContentKind::Integer => Some(format!("hashint8(CAST({c} AS BIGINT))")),
            ContentKind::Decimal(_) => Some(format!("hash_numeric({c})")),
            ContentKind::Float => Some(format!("hashfloat8(CAST({c} AS DOUBLE PRECISION))")),
            ContentKind::Timestamp(false) => Some(format!("timestamp_hash({c})")),
            ContentKind::Timestamp(true) => Some(format!("timestamp_hash({c} AT TIME ZONE 'UTC')")),
            // In the "C" collation: the hash of the text's bytes whatever the column's
            // collation (a nondeterministic one would hash its sort key), and without the
            // collation's lookup per value.
            ContentKind::Text => Some(format!(r#"hashtext(CAST({c} AS TEXT) COLLATE "C")"#)),
            ContentKind::Boolean | ContentKind::Date => None,
        }
    }

    /// The [`crate::keys::content_hash`] of a row, for key column `k` (quoted) and the
    /// `content` columns named as `name` maps them; `None` without content.
    fn content_sql(self, k: &str, content: &[Content], name: &dyn Fn(&str) -> String) -> Option<String> {
        let (weight, sum) = self.content_parts(k, content, name)?;
        Some(format!("{weight} * ({sum})"))
    }

    /// The two factors of [`crate::keys::content_hash`]: the key's weight and the weighted
    /// sum of the columns' values.
    fn content_parts(self, k: &str, content: &[Content], name: &dyn Fn(&str) -> String) -> Option<(String, String)> {
        if content.is_empty() {
            return None;
        }
        let q = CONTENT_MODULUS;
        let weight = format!("(ABS({} % {}) + 1)", self.key_int(k), WEIGHT_MODULUS);
        // Hashes of the engine's own are 32-bit: the weighted sum of up to 32 of them fits in
        // 64 bits and takes one remainder for the row, not one per column (a third of the
        // operations per row).
        if content.iter().all(|c| c.native) && self == Dialect::Postgres {
            let terms: Vec<String> = content
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let col = self.quote(&name(&c.name));
                    let v = self
                        .native_hash(&col, c.kind, true)
                        .unwrap_or_else(|| self.content_int(&col, c.kind, false));
                    format!("COALESCE({v} * CAST({} AS BIGINT), 0)", i + 1)
                })
                .collect();
            return Some((weight, format!("({}) % {q} + {q}", terms.join(" + "))));
        }
        let terms: Vec<String> = content
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = self.content_int(&self.quote(&name(&c.name)), c.kind, c.native);
                match i {
                    0 => format!("COALESCE(({v}) % {q} + {q}, 0)"),
                    _ => format!("COALESCE(({v}) % {q} + {q}, 0) * {}", i + 1),
                }
            })
            .collect();
        // 1 + …: a row of NULLs still weighs its key (`keys::content_hash`).
        Some((weight, format!("1 + {}", terms.join(" + "))))
    }

    /// Per range of `space`: the range, the count, the sum and the hash sum of key column
    /// `key` of `relation` — and the sum of the rows' content hashes of the `content`
    /// columns (found under the names `name` gives them) — as text
    /// ([`crate::keys::KeyReader::key_digests`]).
    ///
    /// ```
    /// use etl_core::keys::KeySpace;
    /// use etl_core::kit::sql::Dialect;
    /// let space = KeySpace { lo: 1, width: 100, ranges: 10 };
    /// assert_eq!(Dialect::MySql.key_digests("`t`", "id", &space, &[], &|c| c.to_string()),
    ///            "SELECT CAST(r AS CHAR), CAST(c AS CHAR), CAST(s AS CHAR), CAST(h AS CHAR) FROM \
    ///             (SELECT (CAST(`id` AS SIGNED) - (1)) DIV 100 AS r, count(*) AS c, sum(`id`) AS s, \
    ///             sum(((((CAST(`id` AS SIGNED) % 2147483647) * (CAST(`id` AS SIGNED) % 2147483647)) % 2147483647) \
    ///             * ((CAST(`id` AS SIGNED) % 2147483647) + 12345)) % 2147483647) AS h FROM `t` GROUP BY 1) d");
    /// ```
    pub fn key_digests(
        self,
        relation: &str,
        key: &str,
        space: &KeySpace,
        content: &[Content],
        name: &dyn Fn(&str) -> String,
    ) -> String {
        let k = self.quote(key);
        let Some((weight, sum)) = self.content_parts(&k, content, name) else {
            // Grouped by the integer range, cast to text only for the answer (grouping by
            // text costs twice as much).
            return format!(
                "SELECT {}, {}, {}, {} FROM (SELECT {} AS r, count(*) AS c, sum({k}) AS s, sum({}) AS h \
                 FROM {relation} GROUP BY 1) d",
                self.text("r"),
                self.text("c"),
                self.text("s"),
                self.text("h"),
                self.key_range(&k, space),
                key_hash_sql(&self.key_int(&k)),
            );
        };
        // With content, each row's weight and column sum are computed once, below the
        // aggregate (Postgres would inline the subquery and compute them twice but for
        // `OFFSET 0`): the range sums both the rows' hashes and their column sums, so a range
        // whose one row changed names it (`keys::changed_key`).
        let fence = if self == Dialect::Postgres { " OFFSET 0" } else { "" };
        // The aggregate is most of a Postgres digest's cost, about a tenth of it per sum (the
        // rows' expressions are a tenth in all). So with native hashes, whose column sums fit
        // an `integer` (below 2 Q < 2^31), the count and the sum of the keys' offsets in
        // their range are one sum of `integer`s (`2^30 + offset` a row: the count above bit
        // 30, the offsets below it while a range is narrower than 2^15) and the column sum
        // another, each with a `bigint` state kept by value (a `bigint` sum keeps a 128-bit
        // one by reference); the count and the key sum are unpacked per range.
        let native = self == Dialect::Postgres && content.iter().all(|c| c.native);
        let columns = if native {
            "sum(CAST(v AS INTEGER)) AS cv"
        } else {
            "sum(v) AS cv"
        };
        let (key, sums, count, key_sum) = if native && space.width < 1 << 15 {
            let (lo, w) = (space.lo, space.width);
            (
                format!("CAST(({} - ({lo})) % {w} + 1073741824 AS INTEGER)", self.key_int(&k)),
                format!("sum(k) AS p, sum(w * v) AS ch, {columns}"),
                "p >> 30".to_string(),
                format!(
                    "CAST(p & 1073741823 AS NUMERIC) + CAST(p >> 30 AS NUMERIC) * (({lo}) + CAST(r AS NUMERIC) * {w})"
                ),
            )
        } else {
            (
                self.key_int(&k),
                format!("count(*) AS c, sum(k) AS s, sum(w * v) AS ch, {columns}"),
                "c".to_string(),
                "s".to_string(),
            )
        };
        format!(
            "SELECT {}, {}, {}, {}, {}, {} FROM (SELECT r, {sums} FROM (SELECT {} AS r, {key} AS k, {weight} AS w, \
             {sum} AS v FROM {relation}{fence}) x GROUP BY r) d",
            self.text("r"),
            self.text(&count),
            self.text(&key_sum),
            self.text("0"),
            self.text("ch"),
            self.text("cv"),
            self.key_range(&k, space),
        )
    }

    /// The keys of `relation` in the given ranges of `space` — with their rows' content
    /// hashes of the `content` columns — as text ([`crate::keys::KeyReader::keys_in`]).
    pub fn keys_in(
        self,
        relation: &str,
        key: &str,
        space: &KeySpace,
        ranges: &[i64],
        content: &[Content],
        name: &dyn Fn(&str) -> String,
    ) -> String {
        let list: Vec<String> = ranges.iter().map(i64::to_string).collect();
        let k = self.quote(key);
        let range = self.key_range(&k, space);
        self.key_rows(relation, key, &range, &list, content, name)
    }

    /// The given keys of `relation`, with their rows' content hashes of the `content`
    /// columns, as text ([`crate::keys::KeyReader::keys_of`]).
    pub fn keys_of(
        self,
        relation: &str,
        key: &str,
        keys: &[i64],
        content: &[Content],
        name: &dyn Fn(&str) -> String,
    ) -> String {
        let list: Vec<String> = keys.iter().map(i64::to_string).collect();
        self.key_rows(relation, key, &self.quote(key), &list, content, name)
    }

    /// `SELECT key [, row hash] FROM relation WHERE <of> IN (<list>)`, as text.
    fn key_rows(
        self,
        relation: &str,
        key: &str,
        of: &str,
        list: &[String],
        content: &[Content],
        name: &dyn Fn(&str) -> String,
    ) -> String {
        let k = self.quote(key);
        let hash = match self.content_sql(&k, content, name) {
            Some(sql) => format!(", {}", self.text(&format!("({sql})"))),
            None => String::new(),
        };
        format!(
            "SELECT {}{hash} FROM {relation} WHERE {of} IN ({})",
            self.text(&k),
            list.join(", ")
        )
    }

    /// `k BETWEEN lo AND hi OR …` over inclusive key intervals, for key column `key`: the
    /// predicate of a read of key ranges ([`crate::ReadRequest::keys`]).
    pub fn key_intervals(self, key: &str, intervals: &[(i64, i64)]) -> String {
        let k = self.quote(key);
        let singles: Vec<String> = intervals
            .iter()
            .filter(|(lo, hi)| lo == hi)
            .map(|(lo, _)| lo.to_string())
            .collect();
        let mut parts: Vec<String> = intervals
            .iter()
            .filter(|(lo, hi)| lo != hi)
            .map(|(lo, hi)| format!("{k} BETWEEN {lo} AND {hi}"))
            .collect();
        if !singles.is_empty() {
            parts.push(format!("{k} IN ({})", singles.join(", ")));
        }
        format!("({})", parts.join(" OR "))
    }

    /// Deletes the rows of `table` whose key column `key` holds one of `keys`.
    pub fn delete_keys(self, table: &str, key: &str, keys: &[i64]) -> String {
        let list: Vec<String> = keys.iter().map(i64::to_string).collect();
        format!("DELETE FROM {table} WHERE {} IN ({})", self.quote(key), list.join(", "))
    }

    /// Marks the unmarked rows of `table` whose key column `key` holds one of `keys`: column
    /// `marker` (quoted here) set to the current time ([`crate::Deletes::mark`]).
    pub fn mark_keys(self, table: &str, key: &str, marker: &str, keys: &[i64]) -> String {
        let list: Vec<String> = keys.iter().map(i64::to_string).collect();
        let m = self.quote(marker);
        format!(
            "UPDATE {table} SET {m} = CURRENT_TIMESTAMP WHERE {} IN ({}) AND {m} IS NULL",
            self.quote(key),
            list.join(", ")
        )
    }

    /// Quotes one identifier: `"a""b"` for Postgres, `` `a``b` `` for MySQL.
    ///
    /// ```
    /// use etl_core::kit::sql::Dialect;
    /// assert_eq!(Dialect::Postgres.quote("order"), r#""order""#);
    /// assert_eq!(Dialect::Postgres.quote(r#"a"b"#), r#""a""b""#);
    /// assert_eq!(Dialect::MySql.quote("a`b"), "`a``b`");
    /// ```
    pub fn quote(self, ident: &str) -> String {
        let q = match self {
            Dialect::Postgres | Dialect::Redshift | Dialect::Snowflake => '"',
            Dialect::MySql => '`',
        };
        let mut out = String::with_capacity(ident.len() + 2);
        out.push(q);
        for c in ident.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        out
    }

    /// Quotes a possibly schema-qualified name, part by part (`public.orders` →
    /// `"public"."orders"`; see [`split_qualified`] for names holding dots).
    ///
    /// ```
    /// use etl_core::kit::sql::Dialect;
    /// assert_eq!(Dialect::Postgres.quote_qualified("public.orders"), r#""public"."orders""#);
    /// assert_eq!(Dialect::MySql.quote_qualified(r#"shop."order.items""#), "`shop`.`order.items`");
    /// ```
    pub fn quote_qualified(self, name: &str) -> String {
        split_qualified(name)
            .iter()
            .map(|p| self.quote(p))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A string literal with quotes doubled (`'it''s'`).
    pub fn string_literal(self, s: &str) -> String {
        let body = match self {
            Dialect::Postgres | Dialect::Redshift => s.replace('\'', "''"),
            Dialect::MySql | Dialect::Snowflake => s.replace('\\', "\\\\").replace('\'', "''"),
        };
        format!("'{body}'")
    }

    /// A cursor value as a typed literal, for statements that cannot take parameters.
    ///
    /// ```
    /// use etl_core::{CursorValue, kit::sql::Dialect};
    /// let t = chrono::NaiveDate::from_ymd_opt(2025, 7, 24).unwrap().and_hms_micro_opt(1, 5, 23, 5).unwrap();
    /// assert_eq!(Dialect::Postgres.literal(&CursorValue::Timestamp(t)), "'2025-07-24 01:05:23.000005'::timestamp");
    /// // Text stays untyped, so it compares as the column's type (varchar, uuid, …).
    /// assert_eq!(Dialect::Postgres.literal(&CursorValue::Text("o'k".into())), "'o''k'");
    /// ```
    pub fn literal(self, v: &CursorValue) -> String {
        let (text, pg_type) = match v {
            CursorValue::Int(i) => return i.to_string(),
            CursorValue::Timestamp(t) => (t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(), "timestamp"),
            CursorValue::TimestampTz(t) => (t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(), "timestamptz"),
            CursorValue::Date(d) => (d.to_string(), "date"),
            CursorValue::Text(s) => return self.string_literal(s),
        };
        match self {
            Dialect::Postgres | Dialect::Redshift | Dialect::Snowflake => {
                format!("{}::{pg_type}", self.string_literal(&text))
            }
            Dialect::MySql => self.string_literal(&text),
        }
    }
    /// A bound of a statement: `?` (MySQL) or `$n` (Postgres) pushed onto `params`, or a
    /// typed literal when `params` is `None`.
    fn bound(self, v: &CursorValue, params: &mut Option<&mut Vec<CursorValue>>) -> String {
        match params {
            Some(p) => {
                p.push(v.clone());
                match self {
                    Dialect::Postgres | Dialect::Redshift => format!("${}", p.len()),
                    Dialect::MySql | Dialect::Snowflake => "?".to_string(),
                }
            }
            None => self.literal(v),
        }
    }

    /// The `WHERE` text of an incremental window over the cursor `columns`: any of them past
    /// `low`, none past `high`. A NULL column is never past `high`, so a row whose first
    /// change column is still NULL is new when another column is past `low`. Rows whose
    /// cursor columns are all NULL are inside only a window from [`Low::Start`] (see
    /// [`crate::NullCursors`]); [`Low::AnyCursor`] takes every row with a cursor value up to
    /// `high`. Bounds are parameters pushed onto `params` in order, or typed literals when
    /// `params` is `None`.
    ///
    /// ```
    /// use etl_core::{CursorValue, Low, kit::sql::Dialect};
    /// let cols = ["created_at".to_string(), "updated_at".to_string()];
    /// let mut params = Vec::new();
    /// let low = Low::After(CursorValue::Int(5));
    /// let sql = Dialect::MySql.window_predicate(&cols, &low, Some(&CursorValue::Int(9)), Some(&mut params));
    /// assert_eq!(sql, "(`created_at` > ? OR `updated_at` > ?) AND (`created_at` <= ? OR `created_at` IS NULL) \
    ///                   AND (`updated_at` <= ? OR `updated_at` IS NULL)");
    /// assert_eq!(params.len(), 4);
    /// assert_eq!(Dialect::Postgres.window_predicate(&cols[..1], &Low::Start, Some(&CursorValue::Int(9)), None),
    ///            r#"("created_at" <= 9 OR "created_at" IS NULL)"#);
    /// assert_eq!(Dialect::Postgres.window_predicate(&cols[..1], &Low::AnyCursor, Some(&CursorValue::Int(9)), None),
    ///            r#""created_at" <= 9"#);
    /// ```
    pub fn window_predicate(
        self,
        columns: &[String],
        low: &Low,
        high: Option<&CursorValue>,
        mut params: Option<&mut Vec<CursorValue>>,
    ) -> String {
        let mut parts = Vec::new();
        match low {
            Low::After(low) => {
                let any: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} > {}", self.quote(c), self.bound(low, &mut params)))
                    .collect();
                parts.push(format!("({})", any.join(" OR ")));
            }
            // One column's `<= high` below excludes its NULLs already.
            Low::AnyCursor if columns.len() > 1 || high.is_none() => {
                let any: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} IS NOT NULL", self.quote(c)))
                    .collect();
                parts.push(format!("({})", any.join(" OR ")));
            }
            _ => {}
        }
        if let Some(high) = high {
            for c in columns {
                let c = self.quote(c);
                let b = self.bound(high, &mut params);
                // A NULL in one cursor column must not hide a row another column makes new.
                parts.push(if low.is_bounded() && columns.len() == 1 {
                    format!("{c} <= {b}")
                } else {
                    format!("({c} <= {b} OR {c} IS NULL)")
                });
            }
        }
        if parts.is_empty() {
            "TRUE".to_string()
        } else {
            parts.join(" AND ")
        }
    }

    /// The query that counts the rows of `relation` whose cursor `columns` are all NULL.
    ///
    /// ```
    /// use etl_core::kit::sql::Dialect;
    /// let cols = ["created_at".to_string(), "updated_at".to_string()];
    /// assert_eq!(Dialect::MySql.null_cursor_count("`t`", &cols),
    ///            "SELECT count(*) FROM `t` WHERE `created_at` IS NULL AND `updated_at` IS NULL");
    /// ```
    pub fn null_cursor_count(self, relation: &str, columns: &[String]) -> String {
        let all: Vec<String> = columns.iter().map(|c| format!("{} IS NULL", self.quote(c))).collect();
        format!("SELECT count(*) FROM {relation} WHERE {}", all.join(" AND "))
    }

    /// The `WHERE` text and the `ORDER BY … LIMIT` suffix of one chunk of a chunked read:
    /// rows after the (cursor, key) pair `after` (or after the cursor value alone, when no
    /// key is known), up to `high`, in (cursor, key) order. Rows whose cursor is NULL are
    /// never in a chunk.
    ///
    /// ```
    /// use etl_core::{CursorValue, kit::sql::Dialect};
    /// let keys = ["id".to_string()];
    /// let key = [CursorValue::Int(7)];
    /// let (w, order) = Dialect::Postgres.chunk_window(
    ///     "ts", &keys, Some((&CursorValue::Int(5), Some(&key[..]))), Some(&CursorValue::Int(9)), 1000, None);
    /// assert_eq!(w, r#"("ts", "id") > (5, 7) AND "ts" <= 9"#);
    /// assert_eq!(order, r#" ORDER BY "ts", "id" LIMIT 1000"#);
    /// ```
    pub fn chunk_window(
        self,
        cursor: &str,
        keys: &[String],
        after: Option<(&CursorValue, Option<&[CursorValue]>)>,
        high: Option<&CursorValue>,
        limit: usize,
        mut params: Option<&mut Vec<CursorValue>>,
    ) -> (String, String) {
        let c = self.quote(cursor);
        let quoted: Vec<String> = keys.iter().map(|k| self.quote(k)).collect();
        let mut parts = Vec::new();
        match after {
            Some((low, Some(key))) if key.len() == keys.len() => {
                let values: Vec<String> = std::iter::once(low)
                    .chain(key)
                    .map(|v| self.bound(v, &mut params))
                    .collect();
                parts.push(format!("({c}, {}) > ({})", quoted.join(", "), values.join(", ")));
            }
            Some((low, _)) => parts.push(format!("{c} > {}", self.bound(low, &mut params))),
            None => {}
        }
        match high {
            Some(h) => parts.push(format!("{c} <= {}", self.bound(h, &mut params))),
            None => parts.push("FALSE".to_string()),
        }
        (
            parts.join(" AND "),
            format!(" ORDER BY {c}, {} LIMIT {limit}", quoted.join(", ")),
        )
    }
}
