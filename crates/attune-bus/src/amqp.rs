//! RabbitMQ bus via lapin: durable topic exchange, persistent JSON, publisher confirms, reconnect
//! with bounded exponential backoff.
//!
//! Design:
//! - one connection and one confirm-mode channel (a *link*), opened lazily and shared by all
//!   publishers; the exchange is declared (durable, topic) on every new link;
//! - a batch is sent in two phases: all `basic.publish` frames are queued back to back (serialised
//!   per link so delivery tags match the frame order), then all confirms are awaited together,
//!   each bounded by [`AmqpOptions::confirm_timeout`]; many batches can await confirms at once;
//! - ack = `Ok`, nack = [`BusError::Nacked`], returned (with `mandatory`) = [`BusError::Unroutable`];
//! - any connection error or confirm timeout drops the link; the next publish (or `ready`)
//!   reconnects. Connection attempts back off exponentially (`backoff_initial` doubling up to
//!   `backoff_max`), the backoff state is shared across calls so a dead broker is not hammered, and
//!   a caller waits for a connection at most [`AmqpOptions::connect_wait`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::{Body, BoxFuture, Bus, BusError, CONTENT_TYPE_JSON, DEFAULT_EXCHANGE, Delivery, Message};

/// AMQP delivery mode 2: the broker writes the message to disk (with a durable queue).
const PERSISTENT: u8 = 2;

/// Settings of [`AmqpBus`]. Every default is chosen for the host; see each field.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// Exchange to declare (durable topic) and publish to. Default [`DEFAULT_EXCHANGE`].
    pub exchange: String,
    /// Publish with the `mandatory` flag: a message no queue is bound for comes back and fails
    /// with [`BusError::Unroutable`]. Default `false`: like the in-process bus, an exchange with
    /// no bound queue drops the message, which keeps the outbox moving before consumers exist.
    pub mandatory: bool,
    /// Bound on one connection attempt (TCP + AMQP handshake + channel + exchange declare).
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// How long a publish waits for a connection (covering several backoff attempts) before
    /// failing with [`BusError::Unavailable`]. Default 10 s.
    pub connect_wait: Duration,
    /// First delay between failed connection attempts. Default 100 ms.
    pub backoff_initial: Duration,
    /// Cap of the doubling delay between connection attempts. Default 5 s.
    pub backoff_max: Duration,
    /// How long a batch waits for the broker's confirms before failing the unconfirmed messages
    /// with [`BusError::ConfirmTimeout`] and dropping the link. Default 15 s.
    pub confirm_timeout: Duration,
    /// Connection name shown in the RabbitMQ management UI. Default `attune-host`.
    pub connection_name: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            exchange: DEFAULT_EXCHANGE.to_owned(),
            mandatory: false,
            connect_timeout: Duration::from_secs(5),
            connect_wait: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(15),
            connection_name: "attune-host".to_owned(),
        }
    }
}

impl AmqpOptions {
    /// Default options with another exchange name.
    pub fn with_exchange(exchange: impl Into<String>) -> Self {
        Self { exchange: exchange.into(), ..Self::default() }
    }
}

/// RabbitMQ implementation of [`Bus`]. See the module documentation for the design.
pub struct AmqpBus {
    uri: AMQPUri,
    options: AmqpOptions,
    state: Mutex<State>,
}

struct State {
    link: Option<Arc<Link>>,
    backoff: Duration,
    next_attempt: Instant,
    last_error: Option<String>,
}

/// One open connection with its confirm-mode channel.
struct Link {
    // Kept alive for the channel: dropping the connection closes it.
    connection: Connection,
    channel: Channel,
    /// Serialises the sending phase so confirm delivery tags follow frame order.
    send_lock: Mutex<()>,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("AmqpBus")
            .field("host", &self.uri.authority.host)
            .field("port", &self.uri.authority.port)
            .field("vhost", &self.uri.vhost)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AmqpBus {
    /// Creates the bus without any I/O; the first publish or [`Bus::ready`] connects.
    /// Use this when the host must start while the broker is down (the outbox keeps messages).
    ///
    /// Fails only on a malformed URL ([`BusError::Config`]).
    pub fn new(url: &str, options: AmqpOptions) -> Result<Self, BusError> {
        let uri: AMQPUri = url.parse().map_err(|e| BusError::Config(format!("invalid AMQP URL: {e}")))?;
        let backoff = options.backoff_initial;
        Ok(Self {
            uri,
            options,
            state: Mutex::new(State { link: None, backoff, next_attempt: Instant::now(), last_error: None }),
        })
    }

    /// Creates the bus and opens the first connection (declaring the exchange), waiting at most
    /// [`AmqpOptions::connect_wait`]. Fails with [`BusError::Unavailable`] when the broker cannot
    /// be reached in that time.
    pub async fn connect(url: &str, options: AmqpOptions) -> Result<Self, BusError> {
        let bus = Self::new(url, options)?;
        let deadline = Instant::now() + bus.options.connect_wait;
        bus.link(deadline, false).await?;
        Ok(bus)
    }

    /// The exchange this bus publishes to.
    pub fn exchange(&self) -> &str {
        &self.options.exchange
    }

    /// Returns the open link, reconnecting (with backoff) until `deadline`. With `single_attempt`
    /// (health checks) it never waits for the backoff and makes at most one attempt.
    async fn link(&self, deadline: Instant, single_attempt: bool) -> Result<Arc<Link>, BusError> {
        let mut state = timeout_at(deadline, self.state.lock())
            .await
            .map_err(|_| BusError::Unavailable("timed out waiting for a connection attempt in progress".into()))?;
        loop {
            if let Some(link) = &state.link {
                if link.is_open() {
                    return Ok(Arc::clone(link));
                }
                state.link = None;
            }
            let not_before = if single_attempt { Instant::now() } else { deadline };
            if state.next_attempt > not_before {
                return Err(self.unavailable(&state));
            }
            sleep_until(state.next_attempt).await;
            let budget = deadline.saturating_duration_since(Instant::now()).min(self.options.connect_timeout);
            if budget.is_zero() {
                return Err(self.unavailable(&state));
            }
            let result = match tokio::time::timeout(budget, self.open_link()).await {
                Ok(result) => result,
                Err(_) => Err(format!("connection attempt timed out after {budget:?}")),
            };
            match result {
                Ok(link) => {
                    if state.last_error.take().is_some() {
                        tracing::info!(exchange = %self.options.exchange, "reconnected to the AMQP broker");
                    }
                    state.backoff = self.options.backoff_initial;
                    let link = Arc::new(link);
                    state.link = Some(Arc::clone(&link));
                    return Ok(link);
                }
                Err(error) => {
                    tracing::warn!(error = %error, retry_in = ?state.backoff, "AMQP connection attempt failed");
                    state.last_error = Some(error);
                    state.next_attempt = Instant::now() + state.backoff;
                    state.backoff = (state.backoff * 2).min(self.options.backoff_max);
                    if single_attempt || Instant::now() >= deadline {
                        return Err(self.unavailable(&state));
                    }
                }
            }
        }
    }

    fn unavailable(&self, state: &State) -> BusError {
        BusError::Unavailable(format!(
            "cannot reach {}:{}: {}",
            self.uri.authority.host,
            self.uri.authority.port,
            state.last_error.as_deref().unwrap_or("no connection attempt fitted in the wait")
        ))
    }

    async fn open_link(&self) -> Result<Link, String> {
        let (connection, channel) = open_channel(&self.uri, &self.options).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirm.select: {e}"))?;
        Ok(Link { connection, channel, send_lock: Mutex::new(()) })
    }

    /// Forgets `link` if it is still the current one, so the next call reconnects.
    async fn drop_link(&self, link: &Arc<Link>) {
        let mut state = self.state.lock().await;
        if state.link.as_ref().is_some_and(|current| Arc::ptr_eq(current, link)) {
            state.link = None;
            tracing::warn!(exchange = %self.options.exchange, "AMQP link dropped; the next publish reconnects");
        }
    }

    async fn publish_all(&self, messages: &[Message]) -> Vec<Result<(), BusError>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let link = match self.link(Instant::now() + self.options.connect_wait, false).await {
            Ok(link) => link,
            Err(error) => return vec![Err(error); messages.len()],
        };
        let confirm_deadline = Instant::now() + self.options.confirm_timeout;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let options = BasicPublishOptions { mandatory: self.options.mandatory, ..BasicPublishOptions::default() };

        // Phase 1: queue every publish frame, in order.
        let timeout = self.options.confirm_timeout;
        let sent = {
            // Bounded: another batch holds the lock at most until its own confirm deadline.
            let Ok(_guard) = timeout_at(confirm_deadline, link.send_lock.lock()).await else {
                return vec![Err(BusError::ConfirmTimeout(timeout)); messages.len()];
            };
            join_all(messages.iter().map(|message| {
                let properties = BasicProperties::default()
                    .with_content_type(CONTENT_TYPE_JSON.into())
                    .with_delivery_mode(PERSISTENT)
                    .with_message_id(message.message_id.clone().into())
                    .with_timestamp(timestamp);
                timeout_at(
                    confirm_deadline,
                    link.channel.basic_publish(
                        self.options.exchange.clone().into(),
                        message.routing_key.clone().into(),
                        options,
                        message.body.as_str().as_bytes(),
                        properties,
                    ),
                )
            }))
            .await
        };

        // Phase 2: await all confirms together.
        let results = join_all(sent.into_iter().map(|sent| async move {
            let confirm = match sent {
                Ok(Ok(confirm)) => confirm,
                Ok(Err(error)) => return Err(BusError::ConnectionLost(error.to_string())),
                Err(_) => return Err(BusError::ConfirmTimeout(timeout)),
            };
            match timeout_at(confirm_deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                    Err(BusError::Unroutable {
                        reply_code: returned.reply_code,
                        reply_text: returned.reply_text.to_string(),
                    })
                }
                Ok(Ok(Confirmation::Nack(None))) => Err(BusError::Nacked),
                // Confirm mode is enabled on every link; treat the impossible like a lost link.
                Ok(Ok(Confirmation::NotRequested)) => {
                    Err(BusError::ConnectionLost("channel is not in confirm mode".into()))
                }
                Ok(Err(error)) => Err(BusError::ConnectionLost(error.to_string())),
                Err(_) => Err(BusError::ConfirmTimeout(timeout)),
            }
        }))
        .await;

        if results.iter().any(|r| matches!(r, Err(BusError::ConnectionLost(_) | BusError::ConfirmTimeout(_)))) {
            self.drop_link(&link).await;
        }
        results
    }
}

impl Bus for AmqpBus {
    fn publish_batch<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Vec<Result<(), BusError>>> {
        Box::pin(self.publish_all(messages))
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.link(Instant::now() + self.options.connect_timeout, true).await?;
            Ok(())
        })
    }

    /// On its own connection: an exclusive, auto-deleted queue bound to the exchange with
    /// `pattern`, re-created after every reconnect (with the publishers' backoff settings).
    fn listen(&self, pattern: &str) -> mpsc::Receiver<Delivery> {
        let (sender, receiver) = mpsc::channel(LISTEN_CAPACITY);
        let listener = Listener { uri: self.uri.clone(), options: self.options.clone(), pattern: pattern.to_owned() };
        tokio::spawn(async move {
            let mut backoff = listener.options.backoff_initial;
            loop {
                let error = listener.consume(&sender, &mut backoff).await;
                if sender.is_closed() {
                    return;
                }
                tracing::warn!(pattern = %listener.pattern, retry_in = ?backoff, "AMQP listener interrupted: {error}");
                tokio::select! {
                    () = sender.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(listener.options.backoff_max);
            }
        });
        receiver
    }
}

/// A new connection with one channel, the exchange declared (durable topic) on it.
async fn open_channel(uri: &AMQPUri, options: &AmqpOptions) -> Result<(Connection, Channel), String> {
    let properties = ConnectionProperties::default().with_connection_name(options.connection_name.clone().into());
    let connection = Connection::connect_uri(uri.clone(), properties).await.map_err(|e| format!("connect: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| format!("open channel: {e}"))?;
    channel
        .exchange_declare(
            options.exchange.clone().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declare exchange {:?}: {e}", options.exchange))?;
    Ok((connection, channel))
}

/// Queue size of a [`Bus::listen`] receiver; a full queue holds back the consumer (and the
/// broker then holds the messages).
const LISTEN_CAPACITY: usize = 1024;

struct Listener {
    uri: AMQPUri,
    options: AmqpOptions,
    pattern: String,
}

impl Listener {
    /// Connects, binds a fresh queue, says `Connected` and forwards deliveries until the
    /// connection fails (the error is returned) or the receiver is dropped.
    async fn consume(&self, sender: &mpsc::Sender<Delivery>, backoff: &mut Duration) -> String {
        // The connection lives as long as its consumer.
        let (_connection, mut consumer) =
            match tokio::time::timeout(self.options.connect_timeout, self.subscribe()).await {
                Ok(Ok(subscribed)) => subscribed,
                Ok(Err(error)) => return error,
                Err(_) => return format!("no connection within {:?}", self.options.connect_timeout),
            };
        *backoff = self.options.backoff_initial;
        if sender.send(Delivery::Connected).await.is_err() {
            return "receiver dropped".into();
        }
        loop {
            let next = tokio::select! {
                () = sender.closed() => return "receiver dropped".into(),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return error.to_string(),
                None => return "the broker cancelled the consumer".into(),
            };
            let body = Body::parse(&delivery.data)
                .unwrap_or_else(|e| serde_json::Value::String(format!("not JSON: {e}")).into());
            let id = delivery.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
            let message = Message::new(delivery.routing_key.to_string(), id, body);
            if sender.send(Delivery::Message(message)).await.is_err() {
                return "receiver dropped".into();
            }
        }
    }

    async fn subscribe(&self) -> Result<(Connection, lapin::Consumer), String> {
        let (connection, channel) = open_channel(&self.uri, &self.options).await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("declare queue: {e}"))?;
        channel
            .queue_bind(
                queue.name().clone(),
                self.options.exchange.clone().into(),
                self.pattern.clone().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("bind {:?}: {e}", self.pattern))?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume: {e}"))?;
        Ok((connection, consumer))
    }
}
