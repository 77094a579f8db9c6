//! The connector kit: what a source or a sink needs beyond the contracts of the crate root.
//!
//! - [`sql`]: SQL dialects — identifier quoting, literals, the incremental window's predicate
//!   and a chunk's, the NULL-cursor count — so every database connector speaks one text.
//! - [`window`]: the lower end of an incremental read from a stored position, the
//!   [`crate::NullCursors`] rule, and the in-memory window filter of sources that read files.
//! - [`batch`]: Arrow helpers — a batch's highest cursor value, the rows past a value, masks
//!   and filters, and a cast whose error names the column.
//! - [`task`]: a spawned task aborted when its handle is dropped, so that dropping a stream
//!   cancels the work behind it.
//!
//! The lake's layout, its Parquet reader and the text formats are in [`crate::lake`]; the
//! conformance suite every connector runs is [`crate::conformance`] (feature `test-utils`).

pub mod batch;
pub mod sql;
pub mod task;
pub mod window;
