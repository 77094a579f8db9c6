//! Parquet files, read row group by row group.

use arrow::datatypes::Schema;
use etl_core::lake::parquet::ObjectReader;
use etl_core::{BatchStream, Error, Location, Result};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;

use super::{DecodeContext, FileTask};

fn err(file: &str, e: parquet::errors::ParquetError) -> Error {
    Error::Connector {
        connector: "files",
        message: format!("Parquet file `{file}`: {e}"),
        retryable: false,
    }
}

async fn builder(location: &Location, f: &FileTask) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    let reader = ObjectReader::new(location.store().clone(), f.meta.clone());
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| err(&f.rel, e))
}

/// A file's schema, from its footer.
pub(super) async fn schema(location: &Location, f: &FileTask) -> Result<Schema> {
    Ok(builder(location, f).await?.schema().as_ref().clone())
}

/// The batches of one Parquet file, reshaped to the table's schema.
pub(super) fn stream(location: Location, f: FileTask, ctx: DecodeContext) -> BatchStream {
    let start = async move {
        let s = builder(&location, &f)
            .await?
            .with_batch_size(ctx.batch_size)
            .build()
            .map_err(|e| err(&f.rel, e))?;
        let rel = f.rel.clone();
        Ok::<_, Error>(s.map_err(move |e| err(&rel, e)).map(move |b| {
            let b = etl_core::lake::formats::conform(&ctx.table, &b?, &ctx.schema)?;
            ctx.finish_batch(b)
        }))
    };
    Box::pin(
        futures::stream::once(start)
            .map(|r| match r {
                Ok(s) => s.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten(),
    )
}
