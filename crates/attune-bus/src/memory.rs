//! In-process bus: the embedded default. Bounded, with topic-pattern subscriptions.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::time::Instant;

use crate::{BoxFuture, Bus, BusError, Delivery, Message};

/// How long [`InProcessBus::publish_batch`](Bus::publish_batch) waits, per batch, for room in a
/// full subscriber queue before failing the remaining messages with [`BusError::Full`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// In-process bus with a bounded queue per subscriber.
///
/// Behaves like a topic exchange with one queue per subscription:
/// - [`subscribe`](Self::subscribe) binds a new queue of `capacity` messages with a topic pattern
///   (`*` = one word, `#` = zero or more words, as in AMQP);
/// - publishing with no matching subscriber succeeds and drops the message (an exchange with no
///   bound queue);
/// - publishing to a **full** queue waits (backpressure) until there is room, for at most the send
///   timeout per batch ([`DEFAULT_SEND_TIMEOUT`]); after that the remaining messages for that
///   queue fail with [`BusError::Full`] without waiting again. A message that failed for one
///   subscriber may already have been queued for others, so a retry can duplicate there;
/// - a dropped receiver unsubscribes.
///
/// Cloning is cheap and clones share the subscribers.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    send_timeout: Duration,
    subscribers: Mutex<Vec<Subscriber>>,
}

#[derive(Debug, Clone)]
struct Subscriber {
    pattern: String,
    sender: mpsc::Sender<Message>,
}

impl InProcessBus {
    /// Creates a bus whose subscriber queues hold `capacity` messages each (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self::with_send_timeout(capacity, DEFAULT_SEND_TIMEOUT)
    }

    /// Like [`new`](Self::new), with the per-batch wait for a full queue.
    pub fn with_send_timeout(capacity: usize, send_timeout: Duration) -> Self {
        Self { inner: Arc::new(Inner { capacity: capacity.max(1), send_timeout, subscribers: Mutex::new(Vec::new()) }) }
    }

    /// Subscribes to messages whose routing key matches `pattern` (`#` for all).
    ///
    /// Only messages published after this call are received. Dropping the receiver
    /// unsubscribes. The receiver's queue holds the bus capacity; a slow receiver slows
    /// publishers down (see the type's documentation).
    pub fn subscribe(&self, pattern: &str) -> mpsc::Receiver<Message> {
        let (sender, receiver) = mpsc::channel(self.inner.capacity);
        self.subscribers().push(Subscriber { pattern: pattern.to_owned(), sender });
        receiver
    }

    /// Number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        let mut subscribers = self.subscribers();
        subscribers.retain(|s| !s.sender.is_closed());
        subscribers.len()
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // The list is always left consistent, so a poisoned lock is still usable.
        self.inner.subscribers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn publish_all(&self, messages: &[Message]) -> Vec<Result<(), BusError>> {
        let subscribers = {
            let mut subscribers = self.subscribers();
            subscribers.retain(|s| !s.sender.is_closed());
            subscribers.clone()
        };
        let timeout = self.inner.send_timeout;
        let deadline = Instant::now() + timeout;
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let mut result = Ok(());
            for subscriber in subscribers.iter().filter(|s| topic_matches(&s.pattern, &message.routing_key)) {
                let sent = match subscriber.sender.try_send(message.clone()) {
                    Ok(()) => Ok(()),
                    // Unsubscribed meanwhile: like a deleted queue, not an error.
                    Err(TrySendError::Closed(_)) => Ok(()),
                    Err(TrySendError::Full(message)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            Err(BusError::Full(timeout))
                        } else {
                            match subscriber.sender.send_timeout(message, left).await {
                                Ok(()) | Err(SendTimeoutError::Closed(_)) => Ok(()),
                                Err(SendTimeoutError::Timeout(_)) => Err(BusError::Full(timeout)),
                            }
                        }
                    }
                };
                if sent.is_err() {
                    result = sent;
                }
            }
            results.push(result);
        }
        results
    }
}

impl Bus for InProcessBus {
    fn publish_batch<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Vec<Result<(), BusError>>> {
        Box::pin(self.publish_all(messages))
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }

    fn listen(&self, pattern: &str) -> mpsc::Receiver<Delivery> {
        let mut messages = self.subscribe(pattern);
        let (sender, receiver) = mpsc::channel(self.inner.capacity);
        tokio::spawn(async move {
            if sender.send(Delivery::Connected).await.is_err() {
                return;
            }
            while let Some(message) = messages.recv().await {
                if sender.send(Delivery::Message(message)).await.is_err() {
                    return;
                }
            }
        });
        receiver
    }
}

/// AMQP topic matching: words are separated by `.`, `*` matches exactly one word, `#` matches
/// zero or more words.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) => (*word == "*" || word == first) && matches_words(rest, key_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(key: &str, id: usize) -> Message {
        Message::new(key, format!("m-{id}"), json!({"n": id}))
    }

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("#", "event.created"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("event.*", "event.created"));
        assert!(!topic_matches("event.*", "event.created.x"));
        assert!(topic_matches("event.#", "event"));
        assert!(topic_matches("event.#", "event.created.x"));
        assert!(topic_matches("*.created", "enforcement.created"));
        assert!(!topic_matches("*.created", "rule.updated"));
        assert!(topic_matches("rule.#.deleted", "rule.deleted"));
        assert!(topic_matches("rule.#.deleted", "rule.a.b.deleted"));
        assert!(!topic_matches("enforcement.created", "event.created"));
    }

    #[tokio::test]
    async fn no_subscribers_succeeds() {
        let bus = InProcessBus::new(2);
        let messages: Vec<_> = (0..10).map(|i| msg("event.created", i)).collect();
        let results = bus.publish_batch(&messages).await;
        assert_eq!(results.len(), 10);
        assert!(results.iter().all(Result::is_ok));
        assert!(bus.ready().await.is_ok());
    }

    #[tokio::test]
    async fn subscribers_get_matching_messages_in_order() {
        let bus = InProcessBus::new(100);
        let mut all = bus.subscribe("#");
        let mut enforcements = bus.subscribe("enforcement.created");
        let messages: Vec<_> =
            (0..20).map(|i| msg(if i % 2 == 0 { "event.created" } else { "enforcement.created" }, i)).collect();
        assert!(bus.publish_batch(&messages).await.iter().all(Result::is_ok));
        for expected in &messages {
            assert_eq!(all.recv().await.as_ref(), Some(expected));
        }
        for expected in messages.iter().filter(|m| m.routing_key == "enforcement.created") {
            assert_eq!(enforcements.recv().await.as_ref(), Some(expected));
        }
        assert!(enforcements.try_recv().is_err());
        let dyn_bus: Arc<dyn Bus> = Arc::new(bus.clone());
        assert!(dyn_bus.publish(&msg("rule.created", 99)).await.is_ok());
        assert_eq!(all.recv().await.map(|m| m.message_id), Some("m-99".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_waits_then_fails_bounded() {
        let bus = InProcessBus::with_send_timeout(3, Duration::from_millis(200));
        let mut rx = bus.subscribe("#");
        let messages: Vec<_> = (0..5).map(|i| msg("event.created", i)).collect();
        let started = Instant::now();
        let results = bus.publish_batch(&messages).await;
        // 3 fit, the 4th waits the whole timeout, the 5th fails at once (batch deadline passed).
        assert!(results[..3].iter().all(Result::is_ok));
        assert_eq!(results[3], Err(BusError::Full(Duration::from_millis(200))));
        assert_eq!(results[4], Err(BusError::Full(Duration::from_millis(200))));
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        for i in 0..3 {
            assert_eq!(rx.recv().await.map(|m| m.message_id), Some(format!("m-{i}")));
        }
    }

    #[tokio::test]
    async fn full_queue_applies_backpressure_until_drained() {
        let bus = InProcessBus::with_send_timeout(2, Duration::from_secs(10));
        let mut rx = bus.subscribe("#");
        let consumer = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(m) = rx.recv().await {
                ids.push(m.message_id);
                if ids.len() == 50 {
                    break;
                }
            }
            ids
        });
        let messages: Vec<_> = (0..50).map(|i| msg("event.created", i)).collect();
        assert!(bus.publish_batch(&messages).await.iter().all(Result::is_ok));
        let ids = consumer.await.unwrap();
        assert_eq!(ids, (0..50).map(|i| format!("m-{i}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn dropped_receiver_unsubscribes() {
        let bus = InProcessBus::new(1);
        let rx = bus.subscribe("#");
        let mut kept = bus.subscribe("event.*");
        assert_eq!(bus.subscriber_count(), 2);
        drop(rx);
        assert_eq!(bus.subscriber_count(), 1);
        assert!(bus.publish(&msg("event.created", 1)).await.is_ok());
        assert_eq!(kept.recv().await.map(|m| m.message_id), Some("m-1".to_owned()));
    }
}
