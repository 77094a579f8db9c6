//! PostgreSQL: the connection every Postgres connector uses ([`PgConfig`], [`PgClient`]:
//! the connection string, TLS, timeouts, driver errors; feature `postgres-client`, which the
//! sinks build on without the source) and, with feature `postgres`, the source
//! ([`PostgresSource`]): `COPY (SELECT …) TO STDOUT (FORMAT binary)` decoded straight into
//! Arrow builders.
//!
//! # Reads
//! - A table (`public.orders`) or a query (`SELECT … JOIN …`, run by the database).
//! - Columns and types come from the database (a `LIMIT 0` prepare) before anything is read;
//!   a missing table is [`etl_core::Error::TableNotFound`], a missing cursor column
//!   [`etl_core::Error::ColumnNotFound`], a type not mapped yet an error naming table, column and type
//!   (or read as text with [`PostgresSource::with_unmapped_as_text`]).
//! - Incremental: the high-water mark is `max(cursor)` taken from the database when the read
//!   starts; the window `(low, high]` is pushed down into the `COPY`'s query, so an index on
//!   the cursor column makes a 1% delta read about 1% of the rows. `COPY` takes no bind
//!   parameters: the two bounds are rendered as typed literals from the stored watermark by
//!   [`etl_core::kit::sql::Dialect::literal`] (never from user text). Rows whose cursor is NULL
//!   follow the spec's [`etl_core::NullCursors`] rule: a filtered read counts them in its
//!   snapshot (no query when a cursor column is declared `NOT NULL`).
//! - Every call is bounded by [`etl_core::Timeouts`] ([`PostgresSource::with_timeouts`]); a
//!   statement that times out is cancelled on the server.
//! - The table's `count(*)` for the report runs on a second connection while the rows stream,
//!   on reads of the whole table only by default: counting a large table would read all of
//!   it and defeat a delta read ([`PostgresSource::with_counts`]). The window's count is the
//!   report's extracted count.
//!
//! - Chunked reads ([`etl_core::TableSpec::chunk_rows`]): `ORDER BY cursor, key LIMIT n`
//!   after the stored (cursor, key) pair, with a row comparison an index on (cursor, key)
//!   serves.
//! - Types: see the crate README; one-dimensional arrays of mapped types are Arrow lists.
//! - TLS (feature `tls`): with `sslmode=require` in the connection string, verified against
//!   the bundled Mozilla roots and [`PostgresSource::with_root_certificate`].
//!
//! # Memory
//! One batch of Arrow builders and one network chunk per connection: flat however large the
//! table.

mod conn;
#[cfg(feature = "postgres")]
mod copy;
#[cfg(feature = "postgres")]
mod source;
#[cfg(feature = "postgres")]
mod types;

pub use conn::{CopyOut, PgClient, PgConfig, pg_err};
#[cfg(feature = "postgres")]
pub use source::PostgresSource;

#[cfg(feature = "postgres")]
pub use crate::db::Counts;
