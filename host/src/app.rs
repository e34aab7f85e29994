//! The pipeline assembled: store, pack catalog, pipeline, rule service, timers, group commit,
//! bus and outbox relay. `serve`, the tests and the benchmarks all start the same thing.

use std::sync::Arc;
use std::time::Duration;

use attune_bus::{AmqpBus, AmqpOptions, Bus, DEFAULT_EXCHANGE, InProcessBus, Relay, RelayOptions, RelayStats};
use attune_timers::{Scheduler, SchedulerConfig, SystemClock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::Tokens;
use crate::catalog::{PackCatalog, SharedCatalog};
use crate::history::EventHistory;
use crate::membership::{JoinError, Membership};
use crate::metrics::{MeasuredBus, Metrics};
use crate::pack::Pack;
use crate::pipeline::{IngestError, Ingested, Pipeline, Source};
use crate::rules::{RuleChangeError, RuleService};
use crate::sandbox::{SensorFailure, SensorInstance};
use crate::store::{Fence, GroupCommitter, SensorStatusRecord, StatusWrite, Store, StoreError, StoreOutbox};
use crate::timers::{OwnedTimers, PipelineFires, StoreTimers};

/// Capacity of each subscriber queue of the in-process bus.
const IN_PROCESS_BUS_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `sqlite://PATH` or `postgres://..`.
    pub database_url: String,
    /// RabbitMQ; `None` for the in-process bus.
    pub amqp_url: Option<String>,
    pub exchange: String,
    /// This host among those sharing the store (spec section 7): unique among live hosts.
    pub host_id: String,
    /// The API address this host announces to the others (`GET /hosts`); empty when none.
    pub listen: String,
    /// Events (with their enforcements) and published outbox rows older than this are deleted;
    /// `None` keeps everything.
    pub retention: Option<Duration>,
}

impl AppConfig {
    /// The in-process bus, keeping everything, under a host id of its own.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            amqp_url: None,
            exchange: DEFAULT_EXCHANGE.into(),
            host_id: new_host_id(),
            listen: String::new(),
            retention: None,
        }
    }
}

/// A fresh host id: `host-` and the 12 random hex digits that end a UUIDv7.
pub fn new_host_id() -> String {
    format!("host-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
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

/// Each pack's ref and content fingerprint, as hosts compare their copies.
pub fn pack_fingerprints(packs: &[Pack]) -> Vec<(String, String)> {
    packs.iter().map(|p| (p.manifest.pack_ref.clone(), p.content_fingerprint())).collect()
}

/// Routing key of a host's note that it released work (or left): the others run a round at once
/// instead of at their next one.
const HOST_RELEASED: &str = "host.released";

async fn announce_release(membership: &Membership, pipeline: &Pipeline) {
    let host = membership.host_id();
    let at = crate::store::now_micros();
    let message = crate::pipeline::announcement(HOST_RELEASED, host, at, serde_json::json!({"host": host}));
    if let Err(e) = pipeline.announce(message).await {
        tracing::warn!("cannot tell the other hosts of released work (they take it at their next round): {e}");
    }
}

async fn announce_releases(membership: Arc<Membership>, pipeline: Arc<Pipeline>) {
    loop {
        membership.released().await;
        announce_release(&membership, &pipeline).await;
    }
}

async fn follow_releases(
    membership: Arc<Membership>,
    mut deliveries: tokio::sync::mpsc::Receiver<attune_bus::Delivery>,
) {
    while let Some(delivery) = deliveries.recv().await {
        if let attune_bus::Delivery::Message(message) = delivery
            && message.body.to_value()["host"].as_str() != Some(membership.host_id())
        {
            membership.wake();
        }
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
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// The owner's side of a sensor poll: the sensor's fence, and its status once the poll is
/// stored (from the payloads stored and the fuel used), written in the same transaction.
pub struct PollOwner<'a> {
    pub fence: Fence,
    pub status_after: &'a (dyn Fn(usize, u64) -> SensorStatusRecord + Send + Sync),
}

impl std::fmt::Debug for PollOwner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollOwner").field("fence", &self.fence).finish_non_exhaustive()
    }
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
    /// The timer rules, run by one scheduler while this host owns them.
    pub timers: Arc<OwnedTimers>,
    /// This host's lease and what it owns among the hosts sharing the store.
    pub membership: Arc<Membership>,
    /// Renews the lease and moves ownership; tells the other hosts when this one released work,
    /// and runs a round when another did.
    membership_tasks: [JoinHandle<()>; 3],
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
        let metrics = Arc::new(Metrics::new());
        let sqlite_file = config.database_url.strip_prefix("sqlite://").map(std::path::Path::new);
        let membership =
            Membership::join(store.clone(), &config.host_id, &config.listen, sqlite_file, metrics.clone()).await?;
        // The copy a host starts with is the one registered last: hosts restarted one by one on a
        // new copy hand the packs' sensors over to each other as they come back.
        membership.set_packs(pack_fingerprints(packs), true);
        let (bus, in_process): (Arc<dyn Bus>, _) = match &config.amqp_url {
            Some(url) => (Arc::new(AmqpBus::new(url, AmqpOptions::with_exchange(config.exchange.clone()))?), None),
            None => {
                let bus = InProcessBus::new(IN_PROCESS_BUS_CAPACITY);
                (Arc::new(bus.clone()), Some(bus))
            }
        };
        let bus: Arc<dyn Bus> = Arc::new(MeasuredBus { inner: bus, metrics: metrics.clone() });
        let committer = GroupCommitter::start(store.clone(), &config.host_id);
        let outbox = StoreOutbox::new(store.clone(), committer.clone(), config.host_id.clone());
        let relay = Relay::new(outbox, bus.clone(), RelayOptions::default());
        let catalog = Arc::new(SharedCatalog::new(PackCatalog::new(packs.to_vec())?));
        let pipeline = Arc::new(Pipeline::new(catalog.clone(), committer, relay.notifier(), metrics.clone()));
        let scheduler = Scheduler::start(
            Arc::new(StoreTimers { store: store.clone(), membership: membership.clone() }),
            Arc::new(PipelineFires {
                pipeline: pipeline.clone(),
                membership: membership.clone(),
                metrics: metrics.clone(),
            }),
            Arc::new(SystemClock),
            SchedulerConfig::default(),
        );
        let timers = OwnedTimers::new(scheduler, membership.clone(), store.clone());
        let rules = Arc::new(RuleService::new(store.clone(), pipeline.clone(), timers.clone(), catalog.clone()));
        rules.sync().await?;
        // Rules are in the matcher: only now may this host take timers (and so fire them).
        membership.tick().await;
        let membership_tasks = [
            tokio::spawn(membership.clone().run()),
            tokio::spawn(announce_releases(membership.clone(), pipeline.clone())),
            tokio::spawn(follow_releases(membership.clone(), bus.listen(HOST_RELEASED))),
        ];
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
            membership,
            membership_tasks,
            metrics,
            relay,
            stop_relay,
            pruner,
        })
    }

    /// Polls `sensor` once and feeds what it emitted, with its state writes, into the pipeline.
    /// When the pipeline refuses the batch, the sensor's state goes back to what is stored, so
    /// its cursor does not run ahead of the events.
    /// With an `owner`, the poll is stored only while this host owns the sensor, together with
    /// the sensor's status after it.
    pub async fn poll_sensor(
        &self,
        sensor: &mut SensorInstance,
        owner: Option<PollOwner<'_>>,
    ) -> Result<Ingested, PollError> {
        let output = sensor.poll().await?;
        let spec = sensor.spec();
        let source = Source::Sensor { sensor_ref: spec.sensor_ref.clone(), triggers: spec.triggers.clone() };
        let sensor_ref = spec.sensor_ref.clone();
        let state = Some((sensor_ref.clone(), output.state));
        let stored = match owner {
            Some(PollOwner { fence, status_after }) => {
                let status = status_after(output.payloads.len(), sensor.last_fuel_used());
                let statuses = vec![StatusWrite::Snapshot(status)];
                self.pipeline.ingest_owned(&source, output.payloads, state, fence, statuses).await
            }
            None => self.pipeline.ingest(&source, output.payloads, state).await,
        };
        match stored {
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

    /// Gives up everything this host owns and tells the other hosts, so they take it at once.
    pub async fn leave(&self) {
        if self.membership.leave().await {
            announce_release(&self.membership, &self.pipeline).await;
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

    /// Stops the timers, gives up everything this host owns (other hosts take it over at once),
    /// then stops the relay after it flushed what it could (bounded by its shutdown flush time).
    pub async fn shutdown(self) -> RelayStats {
        if let Some(pruner) = &self.pruner {
            pruner.abort();
        }
        self.timers.shutdown().await;
        self.leave().await;
        for task in &self.membership_tasks {
            task.abort();
        }
        let _ = self.stop_relay.send(());
        self.relay.await.unwrap_or_default()
    }
}
