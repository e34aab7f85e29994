//! Message bus: one narrow [`Bus`] interface with two backends, and the outbox relay.
//!
//! | backend | use | delivery |
//! | --- | --- | --- |
//! | [`InProcessBus`] | embedded default (`attune-host serve` without `--amqp-url`) | bounded queue per subscriber, topic-pattern subscriptions |
//! | [`AmqpBus`] | RabbitMQ via lapin | durable topic exchange (default [`DEFAULT_EXCHANGE`]), persistent JSON messages, publisher confirms, reconnect with backoff |
//!
//! Both can also [`listen`](Bus::listen) to a topic pattern (the host uses it for `rule.*`
//! changes made by other hosts).
//!
//! The pipeline never publishes directly: an enforcement is stored together with its outbox row,
//! and the [`Relay`] moves outbox rows to the bus, marking a row published only after the bus
//! confirmed it. Delivery is therefore *at least once*; consumers deduplicate on
//! [`Message::message_id`], which is stable across retries.
//!
//! Wiring (the host implements [`Outbox`] for its SQLite/PostgreSQL outbox table):
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use attune_bus::{Bus, InProcessBus, MemoryOutbox, Message, Relay, RelayOptions, routing};
//!
//! let bus = InProcessBus::new(1024);
//! let mut enforcements = bus.subscribe(routing::ENFORCEMENT_CREATED);
//! let outbox = Arc::new(MemoryOutbox::new());
//! let relay = Relay::new(Arc::clone(&outbox), Arc::new(bus) as Arc<dyn Bus>, RelayOptions::default());
//! let wake = relay.notifier();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(async move { relay.run(async { let _ = stopped.await; }).await });
//!
//! // In the transaction that stores an enforcement: write its outbox row, commit, then wake.
//! outbox.push(Message::new(routing::ENFORCEMENT_CREATED, "enforcement-1", serde_json::json!({"id": 1})));
//! wake.notify_one();
//!
//! assert_eq!(enforcements.recv().await.map(|m| m.message_id), Some("enforcement-1".to_owned()));
//! stop.send(()).unwrap();
//! assert_eq!(task.await.unwrap().published, 1);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

mod amqp;
mod memory;
mod outbox;

pub use amqp::{AmqpBus, AmqpOptions};
pub use memory::{DEFAULT_SEND_TIMEOUT, InProcessBus, topic_matches};
pub use outbox::{MemoryOutbox, Outbox, OutboxRow, Relay, RelayError, RelayOptions, RelayStats};

/// Name of the exchange the host publishes to unless configured otherwise.
pub const DEFAULT_EXCHANGE: &str = "attune.events";

/// Routing keys used by the host. Consumers bind with these (or topic patterns such as `rule.*`).
pub mod routing {
    /// An event was stored.
    pub const EVENT_CREATED: &str = "event.created";
    /// An enforcement was stored (rule matched an event).
    pub const ENFORCEMENT_CREATED: &str = "enforcement.created";
    /// A rule was created.
    pub const RULE_CREATED: &str = "rule.created";
    /// A rule was updated.
    pub const RULE_UPDATED: &str = "rule.updated";
    /// A rule was enabled.
    pub const RULE_ENABLED: &str = "rule.enabled";
    /// A rule was disabled.
    pub const RULE_DISABLED: &str = "rule.disabled";
    /// A rule was deleted.
    pub const RULE_DELETED: &str = "rule.deleted";
}

/// Content type of every message body.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// One message on the bus: a JSON body, routed by `routing_key`, identified by `message_id`.
///
/// `message_id` must be stable for the lifetime of the message (e.g. derived from the outbox row
/// or the enforcement id), because a retried publish carries the same id and consumers use it
/// to drop duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic routing key, e.g. [`routing::ENFORCEMENT_CREATED`].
    pub routing_key: String,
    /// Stable id, sent as the AMQP `message_id` property.
    pub message_id: String,
    /// JSON body, sent as `application/json`.
    pub body: Body,
}

impl Message {
    /// Builds a message.
    pub fn new(routing_key: impl Into<String>, message_id: impl Into<String>, body: impl Into<Body>) -> Self {
        Self { routing_key: routing_key.into(), message_id: message_id.into(), body: body.into() }
    }
}

/// A message's JSON body as text, serialized once where the message is made: stored, relayed and
/// published as these bytes, never parsed and serialized again on the way. Clones share the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Body(Arc<str>);

impl Body {
    /// `value` serialized.
    pub fn serialize(value: &impl Serialize) -> Result<Self, serde_json::Error> {
        Ok(Self(serde_json::to_string(value)?.into()))
    }

    /// Text that was a [`Body`] before it was stored (the outbox's `body` column): taken as is.
    pub fn from_stored(text: String) -> Self {
        Self(text.into())
    }

    /// Bytes from elsewhere (a broker delivery): checked to be one JSON value.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)?;
        // Valid JSON is valid UTF-8.
        Ok(Self(String::from_utf8_lossy(bytes).into()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The body parsed: for the few consumers that read fields of it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Body {
    fn from(value: serde_json::Value) -> Self {
        Self(value.to_string().into())
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A boxed, `Send` future, so that [`Bus`] stays dyn-compatible (`Arc<dyn Bus>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a [`Bus::listen`] receiver yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The subscription is (again) in place; anything published before may have been missed.
    Connected,
    /// A message matching the pattern.
    Message(Message),
}

/// Why a message was not confirmed by the bus. Every variant means "not known to be delivered":
/// the caller (the [`Relay`]) keeps the message and tries again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Configuration is unusable (e.g. a malformed AMQP URL). Retrying does not help.
    #[error("bus configuration: {0}")]
    Config(String),
    /// No broker connection could be opened within the bounded wait.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The connection or channel failed while the message was in flight; it may or may not have
    /// reached the broker.
    #[error("broker connection lost: {0}")]
    ConnectionLost(String),
    /// The broker negatively acknowledged the message (it was not stored).
    #[error("broker rejected (nack) the message")]
    Nacked,
    /// The broker returned the message as unroutable (only with [`AmqpOptions::mandatory`]).
    #[error("message returned as unroutable: {reply_code} {reply_text}")]
    Unroutable {
        /// AMQP reply code, e.g. 312 (NO_ROUTE).
        reply_code: u16,
        /// Broker's reply text, e.g. `NO_ROUTE`.
        reply_text: String,
    },
    /// No confirm arrived within the confirm timeout.
    #[error("no broker confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// An in-process subscriber's queue stayed full for the whole send timeout.
    #[error("in-process subscriber queue full for {0:?}")]
    Full(std::time::Duration),
}

/// The bus interface the host publishes through.
///
/// Implementations are cheap to share (`Arc<dyn Bus>`) and safe to call from several tasks at
/// once.
pub trait Bus: Send + Sync + fmt::Debug {
    /// Publishes `messages` and returns one result per message, in the same order.
    ///
    /// `Ok(())` means the backend took responsibility for that message (AMQP: the broker
    /// confirmed it; in-process: it was queued for every matching subscriber). Any `Err` means it
    /// must be published again later; a message may still have been delivered (for instance when
    /// the connection dropped after the broker received it), so retries can duplicate.
    ///
    /// Call semantics: may be called concurrently; completes in bounded time (the backend's
    /// connect wait plus confirm or send timeout), never waits forever; an empty slice returns an
    /// empty vector without I/O.
    fn publish_batch<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Vec<Result<(), BusError>>>;

    /// Health check for `/ready`: `Ok` if the bus can publish now.
    ///
    /// Call semantics: cheap when healthy (no I/O for an open connection); when disconnected it
    /// makes at most one connection attempt, bounded by the backend's connect timeout.
    fn ready(&self) -> BoxFuture<'_, Result<(), BusError>>;

    /// Listens for messages whose routing key matches the topic `pattern`, published from now
    /// on by any publisher on the same bus (with RabbitMQ: any host on the same exchange).
    ///
    /// The receiver first yields [`Delivery::Connected`], and again after every reconnect:
    /// messages published while disconnected are not delivered, so a listener resynchronises
    /// from its source of truth on `Connected`. Dropping the receiver ends the subscription.
    fn listen(&self, pattern: &str) -> tokio::sync::mpsc::Receiver<Delivery>;

    /// Publishes one message; shorthand for a one-element [`Bus::publish_batch`].
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.publish_batch(std::slice::from_ref(message))
                .await
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(BusError::Unavailable("backend returned no result".into())))
        })
    }
}
