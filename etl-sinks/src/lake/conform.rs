//! A run's batches against the table they go to: the schema each batch is written in, and
//! the table's columns after the run (the lake and Delta sinks share it).

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use etl_core::lake::formats::{self, MergePolicy};
use etl_core::{Error, LoadMode, Result};

/// Checks each batch of one run against the table's schema before the run.
#[derive(Debug)]
pub(crate) struct Conformer {
    table: String,
    /// How messages name the table's side ("the lake table").
    label: &'static str,
    mode: LoadMode,
    /// The table's schema before this run, when known.
    table_schema: Option<SchemaRef>,
    /// The schema of the run's first batch: every batch of a run has it.
    incoming: Option<SchemaRef>,
    /// The table's schema after this run.
    columns: Option<SchemaRef>,
    /// The schema batches are written in.
    written: Option<SchemaRef>,
}

impl Conformer {
    pub(crate) fn new(table: &str, label: &'static str, mode: LoadMode, table_schema: Option<SchemaRef>) -> Self {
        Conformer {
            table: table.to_string(),
            label,
            mode,
            table_schema,
            incoming: None,
            columns: None,
            written: None,
        }
    }

    /// The schema batches are written in (after the first batch).
    pub(crate) fn written(&self) -> Option<SchemaRef> {
        self.written.clone()
    }

    /// The table's columns after this run (after the first batch): the table's own, widened,
    /// plus the run's new ones; a replacing run's alone.
    pub(crate) fn columns(&self) -> Option<&SchemaRef> {
        self.columns.as_ref()
    }

    /// Checks a batch against the table: every batch of a run has the first one's schema; in
    /// an appending mode a column the table holds must keep its type or widen it safely (as the
    /// crawler allows), and one the table holds wider is written in the table's type, so the
    /// table's files stay readable together.
    ///
    /// # Errors
    /// [`Error::ColumnTypeConflict`] naming the column.
    pub(crate) fn conform(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        match &self.incoming {
            None => {
                let incoming = batch.schema();
                let written = match &self.table_schema {
                    Some(table) if !self.mode.replaces_target() => {
                        let merged = formats::merge_schemas(
                            &self.table,
                            table,
                            self.label,
                            &incoming,
                            "this run's rows",
                            MergePolicy::Strict,
                        )?;
                        let fields: Vec<Field> = incoming
                            .fields()
                            .iter()
                            .map(|f| match merged.field_with_name(f.name()) {
                                Ok(m) => f.as_ref().clone().with_data_type(m.data_type().clone()),
                                Err(_) => f.as_ref().clone(),
                            })
                            .collect();
                        self.columns = Some(merged);
                        Arc::new(Schema::new_with_metadata(fields, incoming.metadata().clone()))
                    }
                    _ => {
                        self.columns = Some(incoming.clone());
                        incoming.clone()
                    }
                };
                self.incoming = Some(incoming);
                self.written = Some(written);
            }
            Some(s) if s.fields() != batch.schema().fields() => {
                return Err(Error::ColumnTypeConflict {
                    table: self.table.clone(),
                    column: "*".into(),
                    expected: format!("the schema of the run's first batch: {s}"),
                    found: batch.schema().to_string(),
                });
            }
            Some(_) => {}
        }
        let schema = self.written.as_ref().expect("set above");
        if schema.fields() == batch.schema().fields() {
            Ok(batch)
        } else {
            formats::conform(&self.table, &batch, schema)
        }
    }
}
