//! The window of one read: from the stored position to the high-water mark taken in the
//! read's snapshot, and the predicate that reads it.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use etl_core::Low;
use etl_core::kit::sql::Dialect;
use etl_core::kit::window;
use etl_core::{CursorValue, Extract, ExtractStats, Position, ReadRequest, TableSpec};

use super::Counts;

/// The window of one read, from the stored position and the high-water mark taken in the
/// read's snapshot.
#[derive(Debug)]
pub(crate) struct Window {
    /// The mode reads incrementally and the spec has cursor columns.
    pub incremental: bool,
    /// The lower end.
    pub low: Low,
    /// The high-water mark.
    pub high: Option<CursorValue>,
    /// Nothing can be new: the high-water mark has not moved past the stored cursor.
    pub nothing_new: bool,
    /// A chunked read: its row limit.
    pub limit: Option<usize>,
    /// A chunked read: the key of the last row read at `low`.
    pub key: Option<Vec<CursorValue>>,
    /// The high-water mark was held below the greatest cursor in the snapshot, so even a
    /// first run's read needs its upper bound.
    pub capped: bool,
}

impl Window {
    pub(crate) fn new(req: &ReadRequest<'_>, high: Option<CursorValue>, capped: bool) -> Window {
        let spec = req.spec;
        let incremental = req.mode.reads_incrementally() && !spec.cursor.is_empty();
        let low = if incremental {
            window::window_low(spec, req.from, high.as_ref())
        } else {
            Low::Start
        };
        let limit = req.limit.filter(|_| incremental);
        let key = req.from.and_then(|p| p.key.clone()).filter(|_| limit.is_some());
        // With a key, rows at the stored cursor value itself may be left to read.
        let nothing_new = incremental
            && key.is_none()
            && spec.lookback.is_none()
            && req.from.is_some()
            && match (&low, &high) {
                (Low::After(l), Some(h)) => h <= l,
                (Low::Start, _) => false,
                (_, None) => true,
                (Low::AnyCursor, Some(_)) => false,
            };
        Window {
            incremental,
            low,
            high,
            nothing_new,
            limit,
            key,
            capped,
        }
    }

    /// The `WHERE` text of the read and its `ORDER BY … LIMIT` suffix, in `dialect` with
    /// bounds bound to `params` (or literals when `None`). `TRUE` when the whole table is
    /// read.
    pub(crate) fn predicate(
        &self,
        dialect: Dialect,
        spec: &TableSpec,
        params: Option<&mut Vec<CursorValue>>,
    ) -> (String, String) {
        match self.limit {
            Some(n) => dialect.chunk_window(
                &spec.cursor[0],
                &spec.primary_key,
                self.low.value().map(|l| (l, self.key.as_deref())),
                self.high.as_ref(),
                n,
                params,
            ),
            None if self.filtered() => (
                dialect.window_predicate(&spec.cursor, &self.low, self.high.as_ref(), params),
                String::new(),
            ),
            None => ("TRUE".to_string(), String::new()),
        }
    }

    /// The read needs a predicate. Without a lower bound, and with the high-water mark the
    /// maximum within the read's own snapshot, it does not: the window is the whole table.
    pub(crate) fn filtered(&self) -> bool {
        self.incremental && (self.bounded_below() || self.capped)
    }

    /// The window has a lower end: a stored position, an initial window, or a chunk.
    fn bounded_below(&self) -> bool {
        self.low.is_bounded() || self.limit.is_some()
    }

    /// Whether the read counts, in its snapshot, the rows whose cursor columns are all NULL:
    /// a filtered read leaves them out, which [`etl_core::NullCursors::Fail`] refuses and
    /// the report counts otherwise (a whole read streams them, and the runner sees them).
    pub(crate) fn counts_null_cursors(&self) -> bool {
        self.incremental && self.bounded_below()
    }

    /// Whether `counts` asks for a count of this read.
    pub(crate) fn wants_count(&self, counts: Counts) -> bool {
        match counts {
            Counts::Always => true,
            Counts::WholeReads => !(self.incremental && self.bounded_below()),
            Counts::Never => false,
        }
    }

    /// The position the run reaches.
    pub(crate) fn position(&self) -> Position {
        Position {
            cursor: self.high.clone(),
            files: Default::default(),
            key: None,
        }
    }

    /// The answer when nothing is new.
    pub(crate) fn empty(&self, schema: SchemaRef, stats: Arc<ExtractStats>) -> Extract {
        Extract {
            schema,
            stream: Box::pin(futures::stream::empty()),
            high: self.position(),
            stats,
            no_new_data: true,
        }
    }
}
