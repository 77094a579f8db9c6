//! Where a table's reads stopped: cursor values, positions, file bookmarks, the lower end of
//! a window, and the checkpoint a sink keeps with each commit.
//!
//! Every source, sink and watermark store speaks these types; they depend on nothing but the
//! load mode.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mode::LoadMode;

/// One value of a cursor column (or of a key column, for tie-breaking).
///
/// Values of different variants are not comparable; a cursor keeps its type from run to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum CursorValue {
    /// An integer cursor (a sequence, a version number, an epoch).
    Int(i64),
    /// A timestamp without time zone, microseconds kept.
    Timestamp(NaiveDateTime),
    /// A timestamp with time zone, in UTC.
    TimestampTz(DateTime<Utc>),
    /// A date.
    Date(NaiveDate),
    /// A text cursor (compared bytewise).
    Text(String),
}

impl PartialOrd for CursorValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        use CursorValue::*;
        match (self, other) {
            (Int(a), Int(b)) => a.partial_cmp(b),
            (Timestamp(a), Timestamp(b)) => a.partial_cmp(b),
            (TimestampTz(a), TimestampTz(b)) => a.partial_cmp(b),
            (Date(a), Date(b)) => a.partial_cmp(b),
            (Text(a), Text(b)) => a.partial_cmp(b),
            _ => None,
        }
    }
}

impl fmt::Display for CursorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CursorValue::Int(v) => write!(f, "{v}"),
            CursorValue::Timestamp(v) => write!(f, "{}", v.format("%Y-%m-%d %H:%M:%S%.f")),
            CursorValue::TimestampTz(v) => write!(f, "{}", v.format("%Y-%m-%d %H:%M:%S%.f%:z")),
            CursorValue::Date(v) => write!(f, "{v}"),
            CursorValue::Text(v) => f.write_str(v),
        }
    }
}

impl CursorValue {
    /// The larger of two optional values (`None` is smallest).
    pub fn max_opt(a: Option<CursorValue>, b: Option<CursorValue>) -> Option<CursorValue> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b > a { b } else { a }),
            (a, None) => a,
            (None, b) => b,
        }
    }
}

/// What a file looked like when it was read: a file bookmark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: DateTime<Utc>,
    /// The store's entity tag, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// Where a table's reads stopped: a cursor value and/or the files already read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The highest cursor value covered (the `high` of the last window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorValue>,
    /// Files already read, by path relative to the source location.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileMark>,
    /// With chunked reads ([`crate::TableSpec::chunk_rows`]): the primary key of the last row
    /// read at `cursor`; the next read starts after the (cursor, key) pair. `None`: every row
    /// at `cursor` was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<CursorValue>>,
}

impl Position {
    /// Whether the position says nothing (as for a first run).
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none() && self.files.is_empty() && self.key.is_none()
    }
}

/// What a sink records with each commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The committing run.
    pub run_id: String,
    /// The run of the watermark the committing run started from (`None` on a first run).
    pub parent_run_id: Option<String>,
    /// The mode of the run.
    pub mode: LoadMode,
    /// Where the run's read stopped: the watermark to store.
    pub position: Position,
    /// The exclusive lower bound the run read from.
    #[serde(default)]
    pub window_low: Option<CursorValue>,
    /// Rows written.
    pub rows: u64,
    /// When the sink committed.
    pub committed_at: DateTime<Utc>,
}

/// The lower end of an incremental window.
#[derive(Clone, Debug, PartialEq)]
pub enum Low {
    /// No watermark yet: the whole source (a first run).
    Start,
    /// A watermark that holds no cursor value (the rows read so far had none, under
    /// [`crate::NullCursors::WholeReadsOnly`]): every row with a cursor value is new.
    AnyCursor,
    /// Rows where any cursor column is past this value (exclusive).
    After(CursorValue),
}

impl Low {
    /// The value rows must be past, if any.
    pub fn value(&self) -> Option<&CursorValue> {
        match self {
            Low::After(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the window has a lower end at all (anything but a first run's whole read).
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Low::Start)
    }
}
