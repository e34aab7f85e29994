//! Group commit: concurrent pipeline steps share one transaction instead of paying one each.
//! Each caller hands its [`Commit`] to the writer tasks and waits for the outcome; a free writer
//! takes everything queued (up to a cap) and writes it in one transaction.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Commit, Store, StoreError, Written};

/// Most commits written in one transaction.
const MAX_GROUP: usize = 512;
/// Commits waiting for the writer before callers are made to wait (backpressure).
const QUEUE: usize = 4_096;

type Pending = (Commit, oneshot::Sender<Result<Written, Arc<StoreError>>>);

#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts `store.writers()` writer tasks on the current tokio runtime. Each takes whatever is
    /// queued when it is free, so groups grow with the load. Outbox rows are written claimed by
    /// host `publisher`, whose relay publishes them.
    pub fn start(store: Arc<dyn Store>, publisher: &str) -> Self {
        let publisher: Arc<str> = publisher.into();
        let (queue, pending) = mpsc::channel::<Pending>(QUEUE);
        let pending = Arc::new(Mutex::new(pending));
        for _ in 0..store.writers().max(1) {
            let (store, pending, publisher) = (store.clone(), pending.clone(), publisher.clone());
            tokio::spawn(async move {
                let mut group = Vec::with_capacity(MAX_GROUP);
                while pending.lock().await.recv_many(&mut group, MAX_GROUP).await > 0 {
                    let (commits, waiters): (Vec<Commit>, Vec<_>) = group.drain(..).unzip();
                    let outcome = store.write(&commits, Some(&publisher)).await.map_err(Arc::new);
                    for (index, waiter) in waiters.into_iter().enumerate() {
                        let written = outcome.as_ref().map(|each| each.get(index).copied().unwrap_or(Written::Stored));
                        // A caller that stopped waiting does not need the outcome.
                        let _ = waiter.send(written.map_err(Arc::clone));
                    }
                }
            });
        }
        Self { queue }
    }

    /// Writes `commit` (together with whatever else is queued) and waits until it is durable;
    /// [`Written::Taken`] when its replay key was taken and nothing of it was written.
    pub async fn commit(&self, commit: Commit) -> Result<Written, Arc<StoreError>> {
        let (done, outcome) = oneshot::channel();
        self.queue.send((commit, done)).await.map_err(|_| Arc::new(StoreError::Closed))?;
        outcome.await.map_err(|_| Arc::new(StoreError::Closed))?
    }
}
