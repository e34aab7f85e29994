//! The pipeline assembled: store, event generator, rules, group commit, bus and outbox relay.
//! `serve`, the tests and the benchmarks all start the same thing.

use std::sync::Arc;

use attune_bus::routing::{RULE_CREATED, RULE_DELETED, RULE_DISABLED, RULE_ENABLED, RULE_UPDATED};
use attune_bus::{AmqpBus, AmqpOptions, Bus, DEFAULT_EXCHANGE, InProcessBus, Relay, RelayOptions, RelayStats};
use attune_rules::{CompiledRule, RuleSpec};
use attune_timers::{Scheduler, SchedulerConfig, SchedulerHandle, SystemClock, TimerSpec, is_timer_trigger};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::{MeasuredBus, Metrics};
use crate::pack::Pack;
use crate::pipeline::{IngestError, Ingested, Pipeline, Source};
use crate::sandbox::{SensorFailure, SensorInstance};
use crate::store::{GroupCommitter, Store, StoreError, StoreOutbox, StoredRule};
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
}

impl AppConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self { database_url: database_url.into(), amqp_url: None, exchange: DEFAULT_EXCHANGE.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] attune_bus::BusError),
    #[error(transparent)]
    Schema(#[from] crate::pipeline::BadSchema),
    #[error(transparent)]
    Rule(#[from] attune_rules::RuleError),
    #[error(transparent)]
    Timer(#[from] attune_timers::TimerError),
    #[error("timer scheduler: {0}")]
    Scheduler(#[from] attune_timers::SchedulerError),
    #[error("stored rule `{rule_ref}` no longer parses: {message}")]
    StoredRule { rule_ref: String, message: String },
}

/// Compiles a stored rule and makes it active: in the matcher index, and for an enabled timer
/// rule as a running timer (whose stored state decides what was missed meanwhile, by its
/// misfire policy); a disabled timer rule's timer is stopped.
async fn activate_stored(pipeline: &Pipeline, timers: &SchedulerHandle, stored: StoredRule) -> Result<(), AppError> {
    let spec = RuleSpec::from_json(stored.spec)
        .map_err(|e| AppError::StoredRule { rule_ref: stored.rule_ref.clone(), message: e.to_string() })?;
    let rule = Arc::new(attune_rules::compile(spec)?);
    if is_timer_trigger(rule.trigger()) {
        if rule.enabled() {
            let params = serde_json::Value::Object(rule.trigger_params().clone());
            timers.upsert(rule.rule_ref(), TimerSpec::parse(rule.trigger(), &params)?).await?;
        } else {
            timers.remove(rule.rule_ref()).await?;
        }
    }
    pipeline.upsert_rule(rule);
    Ok(())
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
    pub pipeline: Arc<Pipeline>,
    pub bus: Arc<dyn Bus>,
    /// The in-process bus, when that is the bus (to subscribe to it).
    pub in_process: Option<InProcessBus>,
    /// One scheduler for every timer rule.
    pub timers: SchedulerHandle,
    /// Notified after every rule change (the sensor supervisor follows it).
    pub rules_changed: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    relay: JoinHandle<RelayStats>,
    stop_relay: oneshot::Sender<()>,
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
        let pipeline = Arc::new(Pipeline::new(packs, committer, relay.notifier(), metrics.clone())?);
        let timers = Scheduler::start(
            Arc::new(StoreTimers(store.clone())),
            Arc::new(PipelineFires { pipeline: pipeline.clone(), metrics: metrics.clone() }),
            Arc::new(SystemClock),
            SchedulerConfig::default(),
        );
        for stored in store.rules().await? {
            activate_stored(&pipeline, &timers, stored).await?;
        }
        let (stop_relay, stopped) = oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        let rules_changed = Arc::new(Notify::new());
        Ok(Self { store, pipeline, bus, in_process, timers, rules_changed, metrics, relay, stop_relay })
    }

    /// Compiles, stores and activates a rule; it applies to the next payload, and a timer rule's
    /// timer starts, changes or stops at once.
    pub async fn put_rule(&self, spec: RuleSpec) -> Result<Arc<CompiledRule>, AppError> {
        let rule = Arc::new(attune_rules::compile(spec)?);
        let timer = if is_timer_trigger(rule.trigger()) {
            let params = serde_json::Value::Object(rule.trigger_params().clone());
            Some(TimerSpec::parse_new(rule.trigger(), &params, attune_rules::chrono::Utc::now())?)
        } else {
            None
        };
        let stored = StoredRule {
            rule_ref: rule.rule_ref().to_string(),
            pack_ref: Some(rule.pack().to_string()),
            trigger_ref: rule.trigger().to_string(),
            enabled: rule.enabled(),
            spec: serde_json::to_value(rule.spec()).map_err(StoreError::Json)?,
        };
        let before = self.pipeline.rule(rule.rule_ref());
        self.store.upsert_rule(&stored).await?;
        self.pipeline.upsert_rule(rule.clone());
        let change = match before.map(|b| b.enabled()) {
            None => RULE_CREATED,
            Some(was) if was != rule.enabled() && rule.enabled() => RULE_ENABLED,
            Some(was) if was != rule.enabled() => RULE_DISABLED,
            Some(_) => RULE_UPDATED,
        };
        self.announce(change, rule.rule_ref(), Some(&stored.spec)).await;
        match timer {
            Some(timer) if rule.enabled() => self.timers.upsert(rule.rule_ref(), timer).await?,
            Some(_) => {
                self.timers.remove(rule.rule_ref()).await?;
            }
            None => {}
        }
        self.rules_changed.notify_one();
        Ok(rule)
    }

    /// Brings the active rules (matcher index and timers) in line with the store, which other
    /// hosts sharing it may have changed, and tells the sensor supervisor when something
    /// changed. Returns the number of rules added, changed or removed.
    pub async fn sync_rules(&self) -> Result<usize, AppError> {
        let stored = self.store.rules().await?;
        let mut changed = 0;
        let stored_refs: std::collections::HashSet<String> = stored.iter().map(|r| r.rule_ref.clone()).collect();
        for row in stored {
            let current = self.pipeline.rule(&row.rule_ref);
            if current.is_some_and(|rule| serde_json::to_value(rule.spec()).ok().as_ref() == Some(&row.spec)) {
                continue;
            }
            activate_stored(&self.pipeline, &self.timers, row).await?;
            changed += 1;
        }
        for rule_ref in self.pipeline.rule_refs() {
            if !stored_refs.contains(&rule_ref) {
                self.pipeline.remove_rule(&rule_ref);
                // The host that deleted the rule deletes its timer state.
                self.timers.remove(&rule_ref).await?;
                changed += 1;
            }
        }
        if changed > 0 {
            self.rules_changed.notify_one();
        }
        Ok(changed)
    }

    /// Installs the pack rules (`rules/*.yaml`) that are not stored yet; rules changed through
    /// the API since are left as they are.
    pub async fn install_pack_rules(&self, packs: &[Pack]) -> Result<(), AppError> {
        let stored: Vec<String> = self.store.rules().await?.into_iter().map(|r| r.rule_ref).collect();
        for rule in packs.iter().flat_map(|p| &p.rules) {
            if !stored.contains(&rule.spec.rule_ref) {
                self.put_rule(rule.spec.clone()).await?;
                tracing::info!(rule = %rule.spec.rule_ref, file = %rule.file.display(), "installed pack rule");
            }
        }
        Ok(())
    }

    /// Deletes a rule; it stops applying at once. Returns whether it existed.
    pub async fn delete_rule(&self, rule_ref: &str) -> Result<bool, AppError> {
        let existed = self.store.delete_rule(rule_ref).await?;
        self.pipeline.remove_rule(rule_ref);
        self.timers.purge(rule_ref).await?;
        if existed {
            self.announce(RULE_DELETED, rule_ref, None).await;
        }
        self.rules_changed.notify_one();
        Ok(existed)
    }

    /// Enables or disables a stored rule. Returns `None` when there is no such rule.
    pub async fn set_rule_enabled(&self, rule_ref: &str, enabled: bool) -> Result<Option<Arc<CompiledRule>>, AppError> {
        let Some(stored) = self.store.rules().await?.into_iter().find(|r| r.rule_ref == rule_ref) else {
            return Ok(None);
        };
        let mut spec = RuleSpec::from_json(stored.spec)
            .map_err(|e| AppError::StoredRule { rule_ref: rule_ref.to_string(), message: e.to_string() })?;
        spec.enabled = enabled;
        self.put_rule(spec).await.map(Some)
    }

    /// Publishes a rule change (`rule.*`) through the outbox, so other hosts and executors hear
    /// of it even if the broker is down right now. The change itself is already stored.
    async fn announce(&self, routing_key: &str, rule_ref: &str, spec: Option<&serde_json::Value>) {
        let at = crate::store::now_micros();
        let message = attune_bus::Message::new(
            routing_key,
            crate::pipeline::derived_id(at, &format!("{routing_key}\0{rule_ref}\0{at}")),
            serde_json::json!({"rule": rule_ref, "change": routing_key, "spec": spec, "at": at}),
        );
        if let Err(e) = self.pipeline.publish(vec![message]).await {
            tracing::error!(rule = rule_ref, "rule change stored but not queued for the bus: {e}");
        }
    }

    /// Polls `sensor` once and feeds what it emitted, with its state writes, into the pipeline.
    /// When the pipeline refuses the batch, the sensor's state goes back to what is stored, so
    /// its cursor does not run ahead of the events.
    pub async fn poll_sensor(&self, sensor: &mut SensorInstance) -> Result<Ingested, PollError> {
        let output = sensor.poll().await?;
        let spec = sensor.spec();
        let source = Source::Sensor { sensor_ref: spec.sensor_ref.clone(), triggers: spec.triggers.clone() };
        let payloads = output.payloads.into_iter().map(|p| (p.trigger, p.payload)).collect();
        let sensor_ref = spec.sensor_ref.clone();
        match self.pipeline.ingest(&source, payloads, Some((sensor_ref.clone(), output.state))).await {
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

    /// Stops the relay after it flushed what it could (bounded by its shutdown flush time).
    pub async fn shutdown(self) -> RelayStats {
        self.timers.shutdown().await;
        let _ = self.stop_relay.send(());
        self.relay.await.unwrap_or_default()
    }
}
