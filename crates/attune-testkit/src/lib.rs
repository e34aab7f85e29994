//! Shared by the integration tests of the bus and the host: broker URL, unique names, a direct
//! consumer, a cuttable TCP proxy; and [`cluster`], real `attune-host serve` processes sharing
//! one database (the host's cluster tests and failover benchmark). Test code: panics are its
//! failure reports.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_debug_implementations)]

pub mod cluster;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attune_bus::CONTENT_TYPE_JSON;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// `test-<random>`, unique per call.
pub fn unique_name() -> String {
    format!("test-{:016x}", rand::random::<u64>())
}

/// Connects directly to the broker, retrying for up to 10 s (it may still be starting).
/// Panics with a clear message when it stays unreachable: these tests never skip.
pub async fn broker() -> Connection {
    let url = amqp_url();
    let started = Instant::now();
    loop {
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(connection) => return connection,
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!(
                "RabbitMQ is not reachable at AMQP_URL={url:?}: {error}. These integration tests need a real broker \
                 (start it with `rabbitmq-server -detached`, or point AMQP_URL at one); they do not skip."
            ),
        }
    }
}

/// Declares `exchange` as the bus does (durable topic; idempotent), so a test can bind to it
/// before the bus connects.
pub async fn declare_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// What a consumer saw for one delivery.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub body: serde_json::Value,
}

/// A consumer on its own direct connection: an exclusive queue bound to `exchange` with `pattern`.
pub struct Collector {
    pub channel: Channel,
    received: Arc<Mutex<Vec<Received>>>,
    _connection: Connection,
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn bind(exchange: &str, pattern: &str) -> Self {
        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        declare_exchange(&channel, exchange).await;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let properties = &delivery.properties;
                    let body = serde_json::from_slice(&delivery.data)
                        .unwrap_or_else(|e| serde_json::Value::String(format!("not JSON: {e}")));
                    received.lock().unwrap().push(Received {
                        routing_key: delivery.routing_key.to_string(),
                        message_id: properties.message_id().as_ref().map(ToString::to_string),
                        content_type: properties.content_type().as_ref().map(ToString::to_string),
                        delivery_mode: *properties.delivery_mode(),
                        body,
                    });
                }
            }
        });
        Self { channel, received, _connection: connection, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until `done(received)` holds, at most `limit`; returns whether it did.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let started = Instant::now();
        loop {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deletes the test exchange.
    pub async fn delete_exchange(&self, exchange: &str) {
        let _ = self.channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks the AMQP properties every bus message must carry.
pub fn assert_well_formed(received: &Received) {
    assert_eq!(received.content_type.as_deref(), Some(CONTENT_TYPE_JSON), "{received:?}");
    assert_eq!(received.delivery_mode, Some(2), "not persistent: {received:?}");
    assert!(received.message_id.is_some(), "no message_id: {received:?}");
}

/// Counts deliveries per message_id.
pub fn count_by_id(received: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in received {
        *counts.entry(r.message_id.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

/// A TCP proxy in front of the broker that the test can cut and take down.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<ProxyShared>,
    task: JoinHandle<()>,
}

struct ProxyShared {
    down: AtomicBool,
    accepted: AtomicUsize,
    cuts: AtomicUsize,
    /// Client-to-broker bytes still forwarded before an armed cut fires (`i64::MAX` = disarmed).
    budget: AtomicI64,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl ProxyShared {
    fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared {
            down: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            budget: AtomicI64::new(i64::MAX),
            connections: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if shared.down.load(Ordering::SeqCst) {
                        drop(client); // refused: the client sees EOF during the handshake
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else { continue };
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let to_client = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let to_server = tokio::spawn({
                        let shared = Arc::clone(&shared);
                        async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match client_read.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                let before = shared.budget.fetch_sub(n as i64, Ordering::SeqCst);
                                if before <= n as i64 {
                                    // Armed cut: forward only what fits, then drop every connection.
                                    let allowed = usize::try_from(before.max(0)).unwrap_or(0);
                                    let _ = server_write.write_all(&buf[..allowed]).await;
                                    shared.budget.store(i64::MAX, Ordering::SeqCst);
                                    shared.down.store(true, Ordering::SeqCst);
                                    shared.cut();
                                    return;
                                }
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                    let mut connections = shared.connections.lock().unwrap();
                    if shared.down.load(Ordering::SeqCst) {
                        // Cut while this connection was being opened: it does not outlive the cut.
                        to_client.abort();
                        to_server.abort();
                        continue;
                    }
                    connections.extend([to_client, to_server]);
                }
            }
        });
        Self { addr, shared, task }
    }

    /// Arms a cut mid-stream: after `bytes` more client-to-broker bytes, every connection is
    /// dropped (possibly inside a frame) and the proxy goes down (see [`set_down`](Self::set_down)).
    pub fn cut_after(&self, bytes: i64) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
    }

    /// Cuts now: every proxied connection is dropped and the proxy goes down (new connections
    /// are closed right after accept) until [`set_down(false)`](Self::set_down).
    pub fn cut_now(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.cut();
    }

    /// Cuts so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// While down, new connections are closed right after accept.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Connections proxied so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// `AMQP_URL` with host and port replaced by the proxy's.
    pub fn url(&self) -> String {
        let uri: AMQPUri = amqp_url().parse().unwrap();
        let vhost = uri.vhost.replace('%', "%25").replace('/', "%2f");
        format!(
            "amqp://{}:{}@{}:{}/{}",
            uri.authority.userinfo.username,
            uri.authority.userinfo.password,
            self.addr.ip(),
            self.addr.port(),
            vhost
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.cut();
    }
}

/// The broker's socket address from `AMQP_URL`.
pub async fn broker_addr() -> SocketAddr {
    let uri: AMQPUri = amqp_url().parse().unwrap();
    tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port)).await.unwrap().next().unwrap()
}
