//! The pipeline assembled: store, pack catalog, pipeline, rule service, timers, group commit,
//! bus and outbox relay. `serve`, the tests and the benchmarks all start the same thing.

use std::sync::Arc;
use std::time::Duration;

use attune_bus::{AmqpBus, AmqpOptions, Bus, DEFAULT_EXCHANGE, InProcessBus, Relay, RelayOptions, RelayStats};
use attune_timers::{Scheduler, SchedulerConfig, SchedulerHandle, SystemClock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::Tokens;
use crate::catalog::{PackCatalog, SharedCatalog};
use crate::history::EventHistory;
use crate::metrics::{MeasuredBus, Metrics};
use crate::pack::Pack;
use crate::pipeline::{IngestError, Ingested, Pipeline, Source};
use crate::rules::{RuleChangeError, RuleService};
use crate::sandbox::{SensorFailure, SensorInstance};
use crate::store::{GroupCommitter, Store, StoreError, StoreOutbox};
use crate::timers::{PipelineFires, StoreTimers};

/// Capacity of each subscriber queue of the in-process bus.
const IN_PROCESS_BUS_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `sqlite://PATH` or `postgres://..`.
    pub database_url: String,
    /// RabbitMQ; `None` for the in-process bus.
    pub amqp_url: Option<String>,
    pub exchange: String,
    /// Events (with their enforcements) and published outbox rows older than this are deleted;
    /// `None` keeps everything.
    pub retention: Option<Duration>,
}

impl AppConfig {
    /// The in-process bus, keeping everything.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self { database_url: database_url.into(), amqp_url: None, exchange: DEFAULT_EXCHANGE.into(), retention: None }
    }
}

/// Rows one pruning transaction deletes at most: small enough not to hold the writer long.
const PRUNE_BATCH_ROWS: i64 = 1_000;

/// Deletes what is past `retention`, in small batches, every quarter of `retention` (between
/// 1 s and 1 min), until aborted.
async fn prune_forever(store: Arc<dyn Store>, retention: Duration) {
    let retention_micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    let period = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let before = crate::store::now_micros().saturating_sub(retention_micros);
        loop {
            match store.prune(before, PRUNE_BATCH_ROWS).await {
                Ok(pruned) if pruned.full(PRUNE_BATCH_ROWS) => tokio::task::yield_now().await,
                Ok(pruned) => {
                    tracing::debug!(?pruned, "pruned what is past retention");
                    break;
                }
                Err(e) => {
                    tracing::warn!("cannot prune what is past retention: {e}");
                    break;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] attune_bus::BusError),
    #[error(transparent)]
    Schema(#[from] crate::catalog::BadSchema),
    #[error("rules: {0}")]
    Rules(#[from] RuleChangeError),
}

/// What one sensor poll fed into the pipeline, or why it did not.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Sensor(#[from] SensorFailure),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

#[derive(Debug)]
pub struct App {
    pub store: Arc<dyn Store>,
    /// What the loaded packs define; a pack reload replaces it.
    pub catalog: Arc<SharedCatalog>,
    pub pipeline: Arc<Pipeline>,
    /// Saves, deletes, enables and follows rules.
    pub rules: Arc<RuleService>,
    /// Stored events and enforcements, read side.
    pub history: EventHistory,
    /// API tokens: authenticating requests, managing tokens.
    pub tokens: Tokens,
    pub bus: Arc<dyn Bus>,
    /// The in-process bus, when that is the bus (to subscribe to it).
    pub in_process: Option<InProcessBus>,
    /// One scheduler for every timer rule.
    pub timers: SchedulerHandle,
    pub metrics: Arc<Metrics>,
    relay: JoinHandle<RelayStats>,
    stop_relay: oneshot::Sender<()>,
    /// Deletes what is past retention, when there is a retention.
    pruner: Option<JoinHandle<()>>,
}

impl App {
    /// Opens and migrates the store, connects the bus (lazily: a broker that is down only delays
    /// publishing, the outbox keeps everything), loads the stored rules and starts the relay.
    pub async fn start(config: &AppConfig, packs: &[Pack]) -> Result<Self, AppError> {
        let store = crate::store::open(&config.database_url).await?;
        store.migrate().await?;
        let (bus, in_process): (Arc<dyn Bus>, _) = match &config.amqp_url {
            Some(url) => (Arc::new(AmqpBus::new(url, AmqpOptions::with_exchange(config.exchange.clone()))?), None),
            None => {
                let bus = InProcessBus::new(IN_PROCESS_BUS_CAPACITY);
                (Arc::new(bus.clone()), Some(bus))
            }
        };
        let metrics = Arc::new(Metrics::new());
        let bus: Arc<dyn Bus> = Arc::new(MeasuredBus { inner: bus, metrics: metrics.clone() });
        let committer = GroupCommitter::start(store.clone());
        let outbox = StoreOutbox { store: store.clone(), committer: committer.clone() };
        let relay = Relay::new(outbox, bus.clone(), RelayOptions::default());
        let catalog = Arc::new(SharedCatalog::new(PackCatalog::new(packs.to_vec())?));
        let pipeline = Arc::new(Pipeline::new(catalog.clone(), committer, relay.notifier(), metrics.clone()));
        let timers = Scheduler::start(
            Arc::new(StoreTimers(store.clone())),
            Arc::new(PipelineFires { pipeline: pipeline.clone(), metrics: metrics.clone() }),
            Arc::new(SystemClock),
            SchedulerConfig::default(),
        );
        let rules = Arc::new(RuleService::new(store.clone(), pipeline.clone(), timers.clone(), catalog.clone()));
        rules.sync().await?;
        let (stop_relay, stopped) = oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        let history = EventHistory::new(store.clone());
        let tokens = Tokens::new(store.clone());
        let pruner = config.retention.map(|retention| tokio::spawn(prune_forever(store.clone(), retention)));
        Ok(Self {
            store,
            catalog,
            pipeline,
            rules,
            history,
            tokens,
            bus,
            in_process,
            timers,
            metrics,
            relay,
            stop_relay,
            pruner,
        })
    }

    /// Polls `sensor` once and feeds what it emitted, with its state writes, into the pipeline.
    /// When the pipeline refuses the batch, the sensor's state goes back to what is stored, so
    /// its cursor does not run ahead of the events.
    pub async fn poll_sensor(&self, sensor: &mut SensorInstance) -> Result<Ingested, PollError> {
        let output = sensor.poll().await?;
        let spec = sensor.spec();
        let source = Source::Sensor { sensor_ref: spec.sensor_ref.clone(), triggers: spec.triggers.clone() };
        let sensor_ref = spec.sensor_ref.clone();
        match self.pipeline.ingest(&source, output.payloads, Some((sensor_ref.clone(), output.state))).await {
            Ok(ingested) => Ok(ingested),
            Err(e) => {
                match self.store.sensor_state(&sensor_ref).await {
                    Ok(stored) => sensor.restore_state(stored),
                    Err(load) => {
                        tracing::error!(sensor = %sensor_ref, "cannot reload state after a refused poll: {load}")
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Whether the store answers the cheapest query (`GET /ready`).
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Outbox rows not yet published, written by any host sharing the store.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        self.store.outbox_backlog().await
    }

    /// Stops the relay after it flushed what it could (bounded by its shutdown flush time).
    pub async fn shutdown(self) -> RelayStats {
        if let Some(pruner) = &self.pruner {
            pruner.abort();
        }
        self.timers.shutdown().await;
        let _ = self.stop_relay.send(());
        self.relay.await.unwrap_or_default()
    }
}
