//! Outbox relay: moves stored outbox rows to the bus, marking a row published only after the bus
//! confirmed it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Bus, BusError, Message};

/// One outbox row: the table's id (increasing in insertion order) and the message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Outbox table id; rows are relayed in increasing id order.
    pub id: i64,
    /// The message, with a stable `message_id`.
    pub message: Message,
}

/// Storage of outbox rows (SQLite and PostgreSQL in the host, [`MemoryOutbox`] in tests).
///
/// The relay is the only caller; run one relay per outbox table.
pub trait Outbox: Send + Sync {
    /// Storage error, reported by the relay with its source chain.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Returns up to `limit` rows not yet marked published, in increasing id order.
    ///
    /// Called once per relay batch; rows that failed to publish are returned again by later calls.
    fn fetch_unpublished(&self, limit: usize) -> impl Future<Output = Result<Vec<OutboxRow>, Self::Error>> + Send;

    /// Marks the given rows published (the bus confirmed them). `ids` is non-empty, contains only
    /// ids returned by `fetch_unpublished`, and may skip some of them (those not confirmed).
    /// Must be idempotent: marking an already-published row is not an error.
    fn mark_published(&self, ids: &[i64]) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<T: Outbox> Outbox for Arc<T> {
    type Error = T::Error;

    fn fetch_unpublished(&self, limit: usize) -> impl Future<Output = Result<Vec<OutboxRow>, Self::Error>> + Send {
        T::fetch_unpublished(self, limit)
    }

    fn mark_published(&self, ids: &[i64]) -> impl Future<Output = Result<(), Self::Error>> + Send {
        T::mark_published(self, ids)
    }
}

/// Why a relay round did not publish everything it fetched.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the outbox failed; nothing was published.
    #[error("reading the outbox failed")]
    Fetch(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The bus confirmed `count` messages but marking them failed; they will be published again
    /// (consumers drop the duplicates by `message_id`).
    #[error("marking {count} confirmed outbox rows published failed")]
    Mark {
        /// Confirmed messages whose rows stay unpublished.
        count: usize,
        /// The storage error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Some messages were not confirmed by the bus; the confirmed ones were marked published and
    /// the others stay in the outbox for the next round.
    #[error("{failed} of {attempted} outbox messages were not confirmed by the bus ({published} published)")]
    Publish {
        /// Messages in the batch.
        attempted: usize,
        /// Confirmed and marked published.
        published: usize,
        /// Not confirmed; left in the outbox.
        failed: usize,
        /// The first message's error.
        #[source]
        first: BusError,
    },
}

/// Relay settings. Every default is chosen for the host; see each field.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Rows fetched and published per round. Default 500 (one round of confirms on AMQP takes a
    /// few tens of milliseconds at that size).
    pub batch_size: usize,
    /// Fallback poll when no [`Relay::notifier`] wake-up arrives (rows written by another
    /// process, or a missed notify). Default 1 s.
    pub poll_interval: Duration,
    /// First pause after a failed round. Default 100 ms.
    pub backoff_initial: Duration,
    /// Cap of the doubling pause after consecutive failed rounds. Default 5 s.
    pub backoff_max: Duration,
    /// On shutdown, how long the relay keeps flushing remaining rows. Default 5 s.
    pub shutdown_flush: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_flush: Duration::from_secs(5),
        }
    }
}

/// Totals of a [`Relay::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Messages confirmed by the bus and marked published.
    pub published: u64,
    /// Rounds that ended in a [`RelayError`].
    pub failed_rounds: u64,
}

/// Outbox relay: publishes outbox rows through a [`Bus`] and marks confirmed rows published.
///
/// Guarantee: a row is marked published only after the bus confirmed its message; a nack, a
/// timeout or a lost connection leaves the row for the next round. Delivery is at least once
/// (a confirm lost with the connection, or a failed mark, republishes the same `message_id`).
/// Order follows outbox ids, except that a message that failed can be delivered after later ones.
pub struct Relay<O> {
    outbox: O,
    bus: Arc<dyn Bus>,
    options: RelayOptions,
    notify: Arc<Notify>,
}

impl<O> std::fmt::Debug for Relay<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("bus", &self.bus).field("options", &self.options).finish_non_exhaustive()
    }
}

impl<O: Outbox> Relay<O> {
    /// Creates a relay; nothing runs until [`run`](Self::run) or [`run_once`](Self::run_once).
    pub fn new(outbox: O, bus: Arc<dyn Bus>, options: RelayOptions) -> Self {
        Self { outbox, bus, options, notify: Arc::new(Notify::new()) }
    }

    /// Handle to wake the running relay at once: call `notify_one()` after committing a
    /// transaction that wrote outbox rows. A wake-up sent while the relay is busy is kept and
    /// handled after the current round, so none is lost.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Runs one round: fetches up to `batch_size` rows, publishes them, and marks the confirmed
    /// ones published. Returns how many were published (0 = outbox empty).
    ///
    /// Call semantics: not concurrently with another round on the same outbox (rows would be
    /// published twice); completes in bounded time (the bus bounds its waits).
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let rows =
            self.outbox.fetch_unpublished(self.options.batch_size).await.map_err(|e| RelayError::Fetch(Box::new(e)))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (ids, messages): (Vec<i64>, Vec<Message>) = rows.into_iter().map(|row| (row.id, row.message)).unzip();
        let results = self.bus.publish_batch(&messages).await;
        let mut confirmed = Vec::with_capacity(ids.len());
        let mut first_error = None;
        let mut failed = 0;
        for (index, &id) in ids.iter().enumerate() {
            match results.get(index) {
                Some(Ok(())) => confirmed.push(id),
                Some(Err(error)) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| error.clone());
                }
                None => {
                    failed += 1;
                    first_error.get_or_insert_with(|| BusError::Unavailable("bus returned too few results".into()));
                }
            }
        }
        if !confirmed.is_empty() {
            self.outbox
                .mark_published(&confirmed)
                .await
                .map_err(|e| RelayError::Mark { count: confirmed.len(), source: Box::new(e) })?;
        }
        match first_error {
            None => Ok(confirmed.len()),
            Some(first) => Err(RelayError::Publish { attempted: ids.len(), published: confirmed.len(), failed, first }),
        }
    }

    /// Relays until `shutdown` completes, then flushes what it can within
    /// [`RelayOptions::shutdown_flush`] and returns the totals.
    ///
    /// Loop: a full batch is followed at once by the next round; otherwise the relay sleeps until
    /// [`notifier`](Self::notifier) is notified or `poll_interval` passes. A failed round is logged
    /// and followed by a pause doubling from `backoff_initial` to `backoff_max`, reset by a
    /// successful round.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> RelayStats {
        let mut stats = RelayStats::default();
        let mut backoff = self.options.backoff_initial;
        tokio::pin!(shutdown);
        loop {
            let next = match self.run_once().await {
                Ok(published) => {
                    stats.published += published as u64;
                    backoff = self.options.backoff_initial;
                    if published >= self.options.batch_size { Next::Immediately } else { Next::Idle }
                }
                Err(error) => {
                    stats.failed_rounds += 1;
                    if let RelayError::Publish { published, .. } = &error {
                        stats.published += *published as u64;
                    }
                    tracing::warn!(error = %error, cause = %source_chain(&error), retry_in = ?backoff, "outbox relay round failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.options.backoff_max);
                    Next::Backoff(pause)
                }
            };
            match next {
                // More rows are likely waiting; still honour a shutdown that already fired.
                Next::Immediately => tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = std::future::ready(()) => {}
                },
                Next::Idle => tokio::select! {
                    () = &mut shutdown => break,
                    () = self.notify.notified() => {}
                    () = tokio::time::sleep(self.options.poll_interval) => {}
                },
                // A wake-up does not cut a backoff short (it stays stored for the next idle wait).
                Next::Backoff(pause) => tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                },
            }
        }
        self.flush(&mut stats).await;
        stats
    }

    async fn flush(&self, stats: &mut RelayStats) {
        let deadline = Instant::now() + self.options.shutdown_flush;
        loop {
            match tokio::time::timeout_at(deadline, self.run_once()).await {
                Ok(Ok(published)) => {
                    stats.published += published as u64;
                    if published < self.options.batch_size {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    stats.failed_rounds += 1;
                    tracing::warn!(error = %error, cause = %source_chain(&error), "outbox relay stopped with rows left for the next start");
                    return;
                }
                Err(_) => {
                    tracing::warn!(flush = ?self.options.shutdown_flush, "outbox relay flush timed out; rows left for the next start");
                    return;
                }
            }
        }
    }
}

enum Next {
    Immediately,
    Idle,
    Backoff(Duration),
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(error) = source {
        parts.push(error.to_string());
        source = error.source();
    }
    parts.join(": ")
}

/// In-memory [`Outbox`] for tests (here and in the host): rows in id order, never fails.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    rows: Mutex<MemoryRows>,
}

#[derive(Debug, Default)]
struct MemoryRows {
    next_id: i64,
    rows: BTreeMap<i64, (Message, bool)>,
    mark_calls: usize,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, MemoryRows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an unpublished row and returns its id (1, 2, 3, ...).
    pub fn push(&self, message: Message) -> i64 {
        let mut rows = self.rows();
        rows.next_id += 1;
        let id = rows.next_id;
        rows.rows.insert(id, (message, false));
        id
    }

    /// Number of rows not yet marked published.
    pub fn unpublished_count(&self) -> usize {
        self.rows().rows.values().filter(|(_, published)| !published).count()
    }

    /// Number of rows marked published.
    pub fn published_count(&self) -> usize {
        self.rows().rows.values().filter(|(_, published)| *published).count()
    }

    /// How many times `mark_published` was called.
    pub fn mark_calls(&self) -> usize {
        self.rows().mark_calls
    }
}

impl Outbox for MemoryOutbox {
    type Error = Infallible;

    async fn fetch_unpublished(&self, limit: usize) -> Result<Vec<OutboxRow>, Infallible> {
        Ok(self
            .rows()
            .rows
            .iter()
            .filter(|(_, (_, published))| !published)
            .take(limit)
            .map(|(&id, (message, _))| OutboxRow { id, message: message.clone() })
            .collect())
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), Infallible> {
        let mut rows = self.rows();
        rows.mark_calls += 1;
        for id in ids {
            if let Some(row) = rows.rows.get_mut(id) {
                row.1 = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxFuture, InProcessBus};
    use serde_json::json;
    use std::collections::HashSet;

    fn fill(outbox: &MemoryOutbox, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let id = format!("msg-{i}");
                outbox.push(Message::new("enforcement.created", id.clone(), json!({"i": i})));
                id
            })
            .collect()
    }

    /// Nacks every message whose id is in `fail_ids`; records the others as published.
    #[derive(Debug, Default)]
    struct FlakyBus {
        fail_ids: Mutex<HashSet<String>>,
        published: Mutex<Vec<String>>,
    }

    impl Bus for FlakyBus {
        fn publish_batch<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Vec<Result<(), BusError>>> {
            Box::pin(async move {
                let fail = self.fail_ids.lock().unwrap().clone();
                messages
                    .iter()
                    .map(|m| {
                        if fail.contains(&m.message_id) {
                            Err(BusError::Nacked)
                        } else {
                            self.published.lock().unwrap().push(m.message_id.clone());
                            Ok(())
                        }
                    })
                    .collect()
            })
        }

        fn ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
            Box::pin(async { Ok(()) })
        }

        fn listen(&self, _pattern: &str) -> tokio::sync::mpsc::Receiver<crate::Delivery> {
            tokio::sync::mpsc::channel(1).1
        }
    }

    #[tokio::test]
    async fn run_once_publishes_a_batch_and_marks_it() {
        let outbox = Arc::new(MemoryOutbox::new());
        let ids = fill(&outbox, 25);
        let bus = InProcessBus::new(100);
        let mut rx = bus.subscribe("#");
        let relay =
            Relay::new(Arc::clone(&outbox), Arc::new(bus), RelayOptions { batch_size: 10, ..Default::default() });
        assert_eq!(relay.run_once().await.unwrap(), 10);
        assert_eq!(relay.run_once().await.unwrap(), 10);
        assert_eq!(relay.run_once().await.unwrap(), 5);
        assert_eq!(relay.run_once().await.unwrap(), 0);
        assert_eq!(outbox.published_count(), 25);
        for id in ids {
            assert_eq!(rx.recv().await.map(|m| m.message_id), Some(id));
        }
    }

    #[tokio::test]
    async fn only_confirmed_rows_are_marked() {
        let outbox = Arc::new(MemoryOutbox::new());
        let ids = fill(&outbox, 6);
        let bus = Arc::new(FlakyBus::default());
        bus.fail_ids.lock().unwrap().extend(["msg-1".to_owned(), "msg-4".to_owned()]);
        let relay = Relay::new(Arc::clone(&outbox), bus.clone() as Arc<dyn Bus>, RelayOptions::default());
        match relay.run_once().await {
            Err(RelayError::Publish { attempted: 6, published: 4, failed: 2, first: BusError::Nacked }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(outbox.unpublished_count(), 2);
        let left: Vec<_> = outbox.fetch_unpublished(10).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec![2, 5]);
        bus.fail_ids.lock().unwrap().clear();
        assert_eq!(relay.run_once().await.unwrap(), 2);
        assert_eq!(outbox.unpublished_count(), 0);
        let published: HashSet<_> = bus.published.lock().unwrap().iter().cloned().collect();
        assert_eq!(published, ids.into_iter().collect());
    }

    #[tokio::test]
    async fn run_wakes_on_notify_backs_off_and_flushes_on_shutdown() {
        let outbox = Arc::new(MemoryOutbox::new());
        let bus = Arc::new(FlakyBus::default());
        let options = RelayOptions {
            batch_size: 4,
            poll_interval: Duration::from_secs(3600),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            ..Default::default()
        };
        let relay = Arc::new(Relay::new(Arc::clone(&outbox), bus.clone() as Arc<dyn Bus>, options));
        let notify = relay.notifier();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let relay = Arc::clone(&relay);
            async move {
                relay
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });

        // Wake-up: the poll interval is an hour, so only the notify can get these out quickly.
        tokio::time::sleep(Duration::from_millis(50)).await;
        fill(&outbox, 10);
        notify.notify_one();
        let waited = Instant::now();
        while outbox.unpublished_count() > 0 {
            assert!(waited.elapsed() < Duration::from_secs(5), "notify did not wake the relay");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Failures: rows stay until the bus recovers; the relay retries with backoff by itself.
        bus.fail_ids.lock().unwrap().insert("msg-10".to_owned());
        outbox.push(Message::new("event.created", "msg-10", json!({})));
        notify.notify_one();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(outbox.unpublished_count(), 1);
        bus.fail_ids.lock().unwrap().clear();
        let waited = Instant::now();
        while outbox.unpublished_count() > 0 {
            assert!(waited.elapsed() < Duration::from_secs(5), "relay did not retry after failures");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Shutdown flushes rows written without a notify.
        outbox.push(Message::new("event.created", "msg-11", json!({})));
        stop.send(()).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(outbox.unpublished_count(), 0);
        assert_eq!(stats.published, 12);
        assert!(stats.failed_rounds >= 2, "{stats:?}");
    }
}
