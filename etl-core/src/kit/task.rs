//! Spawned work that never outlives its owner.

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};

/// A task spawned on the current tokio runtime and aborted when this handle is dropped, so
/// a dropped stream or a cancelled run leaves nothing running behind it.
#[derive(Debug)]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `future`.
    pub fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        AbortOnDrop(tokio::spawn(future))
    }

    /// Waits for the task's result.
    ///
    /// # Errors
    /// The task panicked or was aborted.
    pub async fn join(mut self) -> Result<T, JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
