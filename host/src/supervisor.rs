//! Sensor supervisor: runs each sensor while at least one enabled rule uses one of its
//! triggers, polls it on its `poll_interval` (with a little jitter so sensors loaded together
//! do not poll in lockstep), and contains failures: after a trap or error the next poll runs on
//! a fresh instance after an exponential backoff; after `quarantine_after` consecutive failures
//! the sensor is quarantined with its reason until restarted through the API.
//!
//! One tokio task per running sensor; a sensor's poll is bounded by its own deadline, and fuel
//! yields keep a looping sensor from holding a worker thread, so a hostile sensor delays only
//! itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attune_bus::Delivery;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::{App, PollError, PollOwner};
use crate::membership::Work;
use crate::metrics::PollFailure;
use crate::pipeline::IngestError;
use crate::sandbox::SensorSpec;
use crate::sandbox::{InstanceFeed, SensorEngine, SensorInstance, StartError};
use crate::secrets::Secrets;
use crate::store::{Fence, Message, SensorStatusRecord, StatusWrite, StoreError, WorkKind, Written};

/// How failures are handled.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorOptions {
    /// Consecutive failures after which a sensor is quarantined. Default 5.
    pub quarantine_after: u32,
    /// First pause after a failure; doubles up to `backoff_max`. Default 1 s.
    pub backoff_initial: Duration,
    /// Default 60 s.
    pub backoff_max: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self { quarantine_after: 5, backoff_initial: Duration::from_secs(1), backoff_max: Duration::from_secs(60) }
    }
}

/// Routing key of a restart asked for on one host, which the sensor's owner carries out.
pub const SENSOR_RESTART: &str = "sensor.restart";

/// Routing key of a sensor state reset asked for on one host (or by `sensor state reset`):
/// the host running the sensor restarts it, clearing the state again once its instance stopped.
pub const SENSOR_STATE_RESET: &str = "sensor.state_reset";

/// The announcement of a state reset of `sensor_ref`, asked for by `origin` (a host id, or
/// `cli`), to be stored with the reset itself.
pub fn state_reset_announcement(sensor_ref: &str, origin: &str) -> Message {
    let body = serde_json::json!({"sensor": sensor_ref, "origin": origin});
    let about = format!("{sensor_ref}\0{origin}");
    crate::pipeline::announcement(SENSOR_STATE_RESET, &about, crate::store::now_micros(), body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SensorState {
    /// No enabled rule uses the sensor's triggers.
    Idle,
    Running,
    /// Failed; the next poll waits for the backoff.
    BackingOff,
    /// Failed `quarantine_after` times in a row; waits for a restart.
    Quarantined,
}

impl SensorState {
    /// The stored and shown word.
    pub const fn as_str(self) -> &'static str {
        match self {
            SensorState::Idle => "idle",
            SensorState::Running => "running",
            SensorState::BackingOff => "backing_off",
            SensorState::Quarantined => "quarantined",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => SensorState::Running,
            "backing_off" => SensorState::BackingOff,
            "quarantined" => SensorState::Quarantined,
            _ => SensorState::Idle,
        }
    }
}

/// What `GET /sensors` shows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SensorStatus {
    #[serde(rename = "ref")]
    pub sensor_ref: String,
    /// The host running it; `null` while no host owns it (no enabled rule needs it, or no host
    /// has taken it yet).
    pub owner: Option<String>,
    pub triggers: Vec<String>,
    pub state: SensorState,
    pub last_error: Option<String>,
    /// Named reason of the last failure (`out_of_fuel`, `memory_limit`, ...).
    pub last_failure_reason: Option<String>,
    pub consecutive_failures: u32,
    pub polls: u64,
    pub failures: u64,
    pub events: u64,
    pub fuel_used: u64,
}

struct Entry {
    spec: Arc<SensorSpec>,
    /// What the spec was loaded from (manifest and code); a pack reload restarts the sensor
    /// when it changes.
    fingerprint: String,
    status: Arc<Mutex<SensorStatus>>,
    /// The enabled rules on the sensor's triggers, as the running instance sees them.
    instances: InstanceFeed,
    task: Option<Running>,
    /// The ownership the running loop writes under.
    fence: Option<Fence>,
    /// A loop told to stop that may still be in its last poll; the next loop of this sensor
    /// starts only after it ended, so two instances never share the sensor's state.
    stopping: Option<JoinHandle<()>>,
}

impl Entry {
    fn new(spec: SensorSpec, fingerprint: String, stopping: Option<JoinHandle<()>>) -> Self {
        let status = Arc::new(Mutex::new(fresh_status(&spec)));
        Entry {
            spec: Arc::new(spec),
            fingerprint,
            status,
            instances: InstanceFeed::default(),
            task: None,
            fence: None,
            stopping,
        }
    }

    /// Tells the running loop to stop; returns the handle of the last loop (running or
    /// already stopping), to be awaited before another starts.
    fn stop_loop(&mut self) -> Option<JoinHandle<()>> {
        self.fence = None;
        self.task.take().map(Running::stop).or_else(|| self.stopping.take())
    }
}

/// A sensor's poll loop and the signal that ends it after its current poll.
struct Running {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Running {
    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the loop to end once its current poll is done; returns the task to await.
    fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

/// What a pack reload did to the sensors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SensorChanges {
    pub added: Vec<String>,
    /// Manifest or code changed: the running instance was replaced, its state kept.
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Starts, stops and restarts sensors; see the module docs.
pub struct Supervisor {
    app: Arc<App>,
    engine: Arc<SensorEngine>,
    options: SupervisorOptions,
    /// What `{{ secret.NAME }}` in sensor config resolve to, when an instance starts.
    secrets: Arc<Secrets>,
    sensors: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor holding no secrets: a sensor whose config names one is quarantined when it
    /// starts.
    pub fn new(
        app: Arc<App>,
        engine: Arc<SensorEngine>,
        specs: Vec<SensorSpec>,
        options: SupervisorOptions,
    ) -> Arc<Self> {
        Self::with_secrets(app, engine, specs, options, Secrets::default())
    }

    /// [`Supervisor::new`], resolving `{{ secret.NAME }}` in each sensor's config from `secrets`
    /// when an instance starts (and nowhere else).
    pub fn with_secrets(
        app: Arc<App>,
        engine: Arc<SensorEngine>,
        specs: Vec<SensorSpec>,
        options: SupervisorOptions,
        secrets: Secrets,
    ) -> Arc<Self> {
        let secrets = Arc::new(secrets);
        let supervisor = Arc::new(Self { app, engine, options, secrets, sensors: Mutex::default() });
        supervisor.replace_specs(specs);
        let work: Arc<dyn Work> = supervisor.clone();
        supervisor.app.membership.attach(WorkKind::Sensor, Arc::downgrade(&work));
        supervisor
    }

    fn sensors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the sensors of freshly loaded packs: new ones are added, removed ones stopped, and
    /// changed ones (manifest or code) stopped after their current poll and started again on the
    /// new spec with their stored state. Call [`reconcile`](Self::reconcile) afterwards.
    pub fn replace_specs(&self, specs: Vec<SensorSpec>) -> SensorChanges {
        let mut changes = SensorChanges::default();
        let mut sensors = self.sensors();
        let mut old: HashMap<String, Entry> = std::mem::take(&mut *sensors);
        for spec in specs {
            let fingerprint = spec.fingerprint();
            let sensor_ref = spec.sensor_ref.clone();
            let entry = match old.remove(&sensor_ref) {
                Some(entry) if entry.fingerprint == fingerprint => {
                    changes.unchanged.push(sensor_ref.clone());
                    entry
                }
                Some(mut entry) => {
                    changes.replaced.push(sensor_ref.clone());
                    self.engine.forget(&entry.spec.code);
                    Entry::new(spec, fingerprint, entry.stop_loop())
                }
                None => {
                    changes.added.push(sensor_ref.clone());
                    Entry::new(spec, fingerprint, None)
                }
            };
            sensors.insert(sensor_ref, entry);
        }
        for (sensor_ref, mut entry) in old {
            entry.stop_loop();
            self.app.metrics.quarantine_lifted(&sensor_ref);
            changes.removed.push(sensor_ref);
        }
        for list in [&mut changes.added, &mut changes.replaced, &mut changes.removed, &mut changes.unchanged] {
            list.sort();
        }
        changes
    }

    /// Runs the sensors some enabled rule needs and this host owns, stops the others, and hands
    /// each its current trigger instances (seen from its next call on). The sensors needed are
    /// offered to the membership, which decides who owns them. Call after every rule change
    /// and every change of ownership.
    pub fn reconcile(&self) {
        let membership = &self.app.membership;
        let mut sensors = self.sensors();
        let mut needed = std::collections::BTreeSet::new();
        for entry in sensors.values_mut() {
            let instances = self.app.pipeline.instances_for(&entry.spec.triggers);
            let wanted = !instances.is_empty();
            if wanted {
                needed.insert(entry.spec.sensor_ref.clone());
            }
            entry.instances.set(instances);
            let fence = membership.fence(WorkKind::Sensor, &entry.spec.sensor_ref).filter(|_| wanted);
            let running = entry.task.as_ref().is_some_and(|t| !t.is_finished());
            let mut status = lock(&entry.status);
            status.owner = membership.owner(WorkKind::Sensor, &entry.spec.sensor_ref);
            let quarantined = status.state == SensorState::Quarantined;
            drop(status);
            match fence {
                Some(fence) if !quarantined && (!running || entry.fence.as_ref() != Some(&fence)) => {
                    let previous = entry.stop_loop();
                    entry.task = Some(self.spawn(entry, previous, fence.clone()));
                    entry.fence = Some(fence);
                }
                None if running => {
                    entry.stopping = entry.stop_loop();
                    lock(&entry.status).state = SensorState::Idle;
                }
                _ => {}
            }
        }
        drop(sensors);
        membership.set_wanted(WorkKind::Sensor, needed);
    }

    /// Lifts a quarantine (or restarts a running sensor) with a fresh instance, wherever it runs:
    /// the stored status forgets its failures, and the restart is announced, in one commit; the
    /// owner restarts it. Returns false for a sensor no loaded pack defines.
    pub async fn restart(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>> {
        if !self.sensors().contains_key(sensor_ref) {
            return Ok(false);
        }
        let origin = self.app.membership.host_id().to_string();
        let at = crate::store::now_micros();
        let body = serde_json::json!({"sensor": sensor_ref, "origin": origin});
        let announcement = crate::pipeline::announcement(SENSOR_RESTART, &format!("{sensor_ref}\0{origin}"), at, body);
        let restart = vec![StatusWrite::Restart(sensor_ref.to_string())];
        self.app.pipeline.record_status(restart, vec![announcement], None).await?;
        self.restart_here(sensor_ref);
        Ok(true)
    }

    /// Follows restarts announced by other hosts (`sensor.restart`), until aborted. On every
    /// (re)connection, when announcements may have been missed, a quarantine this host holds in
    /// memory that the store no longer records is lifted too.
    /// State resets announced by other hosts or the command line (`sensor.state_reset`) are
    /// carried out here when this host runs the sensor.
    pub fn follow(self: &Arc<Self>, bus: &dyn attune_bus::Bus) -> JoinHandle<()> {
        let mut restarts = bus.listen(SENSOR_RESTART);
        let mut resets = bus.listen(SENSOR_STATE_RESET);
        let supervisor = self.clone();
        // The sensor an announcement from elsewhere is about.
        let from_elsewhere = |message: &Message, here: &str| {
            let body = message.body.to_value();
            let sensor_ref = body["sensor"].as_str().map(str::to_string);
            sensor_ref.filter(|_| body["origin"].as_str() != Some(here))
        };
        tokio::spawn(async move {
            let here = supervisor.app.membership.host_id().to_string();
            loop {
                tokio::select! {
                    delivery = restarts.recv() => match delivery {
                        None => return,
                        Some(Delivery::Connected) => supervisor.lift_quarantines_lifted_elsewhere().await,
                        Some(Delivery::Message(message)) => {
                            if let Some(sensor_ref) = from_elsewhere(&message, &here) {
                                supervisor.restart_here(&sensor_ref);
                            }
                        }
                    },
                    delivery = resets.recv() => match delivery {
                        None => return,
                        Some(Delivery::Connected) => {}
                        Some(Delivery::Message(message)) => {
                            if let Some(sensor_ref) = from_elsewhere(&message, &here) {
                                // Nothing to wait for: the reset was stored where it was asked.
                                drop(supervisor.reset_here(&sensor_ref, None));
                            }
                        }
                    },
                }
            }
        })
    }

    /// Clears a sensor's stored state (every key) and restarts it on a fresh instance, wherever
    /// it runs; its quarantine, if any, holds. On this host, the loop running the sensor ends
    /// first (after its poll in flight, which is stored), the state is cleared after it, and the
    /// next loop starts only then: no instance seeded with the old state writes after the reset.
    /// The reset is announced in the same commit, so a host running the sensor elsewhere does the
    /// same, clearing again what its poll in flight wrote. Returns false for a sensor no loaded
    /// pack defines.
    pub async fn reset_state(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>> {
        let announcement = state_reset_announcement(sensor_ref, self.app.membership.host_id());
        match self.reset_here(sensor_ref, Some(announcement)) {
            None => Ok(false),
            Some(cleared) => cleared.await.unwrap_or(Err(Arc::new(StoreError::Closed))).map(|()| true),
        }
    }

    /// Stops the loop running `sensor_ref` here, if any; once it has ended, clears the stored state
    /// (with `announcement` in the same commit) and lets the sensor start again. Without an
    /// announcement (a reset stored elsewhere), it does so only while this host runs the sensor,
    /// whose instance may have written the old state back since: a host that ran it before
    /// another took over must not clear what the new owner wrote. `None` when there is nothing to
    /// do.
    fn reset_here(
        &self,
        sensor_ref: &str,
        announcement: Option<Message>,
    ) -> Option<oneshot::Receiver<Result<(), Arc<StoreError>>>> {
        let (done, cleared) = oneshot::channel();
        {
            let mut sensors = self.sensors();
            let entry = sensors.get_mut(sensor_ref)?;
            let runs_here = entry.task.as_ref().is_some_and(|t| !t.is_finished());
            if announcement.is_none() && !runs_here {
                return None;
            }
            let previous = entry.stop_loop();
            let (app, sensor_ref) = (self.app.clone(), sensor_ref.to_string());
            // The sensor's next loop waits for this task (see `spawn`), so it starts from the
            // cleared state.
            entry.stopping = Some(tokio::spawn(async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                let result = clear_state(&app, &sensor_ref, announcement).await;
                if let Err(e) = &result {
                    tracing::warn!(sensor = %sensor_ref, "cannot reset the sensor's state: {e}");
                }
                let _ = done.send(result);
            }));
        }
        self.reconcile();
        Some(cleared)
    }

    async fn lift_quarantines_lifted_elsewhere(&self) {
        let quarantined: Vec<String> = self
            .sensors()
            .values()
            .filter(|e| lock(&e.status).state == SensorState::Quarantined)
            .map(|e| e.spec.sensor_ref.clone())
            .collect();
        for sensor_ref in quarantined {
            match self.app.store.sensor_status(&sensor_ref).await {
                Ok(Some(stored)) if stored.state == SensorState::Quarantined.as_str() => {}
                Ok(_) => self.restart_here(&sensor_ref),
                Err(e) => tracing::warn!(sensor = %sensor_ref, "cannot read the sensor's stored status: {e}"),
            }
        }
    }

    /// The restart on this host: a new instance if it runs the sensor, and the quarantine
    /// forgotten in memory either way.
    fn restart_here(&self, sensor_ref: &str) {
        {
            let mut sensors = self.sensors();
            let Some(entry) = sensors.get_mut(sensor_ref) else { return };
            entry.stopping = entry.stop_loop();
            let mut status = lock(&entry.status);
            status.state = SensorState::Idle;
            status.consecutive_failures = 0;
        }
        self.app.metrics.quarantine_lifted(sensor_ref);
        self.reconcile();
    }

    /// This host's working copy of every sensor's status: exact for the sensors it runs, and
    /// what it last knew of the others. For watching one host's supervisor (the API shows
    /// [`Supervisor::statuses`]).
    pub fn statuses_here(&self) -> Vec<SensorStatus> {
        let membership = &self.app.membership;
        let mut all: Vec<SensorStatus> = self
            .sensors()
            .values()
            .map(|e| SensorStatus {
                owner: membership.owner(WorkKind::Sensor, &e.spec.sensor_ref),
                ..lock(&e.status).clone()
            })
            .collect();
        all.sort_by(|a, b| a.sensor_ref.cmp(&b.sensor_ref));
        all
    }

    /// Every sensor of the loaded packs as the store has it (its owner writes it after every
    /// poll), with its live owner: every host answers the same.
    pub async fn statuses(&self) -> Result<Vec<SensorStatus>, StoreError> {
        let store = &self.app.store;
        let mut stored: HashMap<String, SensorStatusRecord> =
            store.sensor_statuses().await?.into_iter().map(|r| (r.sensor_ref.clone(), r)).collect();
        let live: Vec<String> = store.live_hosts().await?.into_iter().map(|h| h.id).collect();
        let owners: HashMap<String, String> = store
            .ownership(WorkKind::Sensor)
            .await?
            .into_iter()
            .filter_map(|row| Some((row.item, row.owner.filter(|o| live.contains(o))?)))
            .collect();
        let specs: Vec<Arc<SensorSpec>> = self.sensors().values().map(|e| e.spec.clone()).collect();
        let mut all: Vec<SensorStatus> = specs
            .iter()
            .map(|spec| {
                let mut status = fresh_status(spec);
                if let Some(record) = stored.remove(&spec.sensor_ref) {
                    status.absorb(record);
                }
                status.owner = owners.get(&spec.sensor_ref).cloned();
                // Only a live owner runs it: what its last owner stored as running is idle now.
                if status.owner.is_none() && status.state != SensorState::Quarantined {
                    status.state = SensorState::Idle;
                }
                status
            })
            .collect();
        all.sort_by(|a, b| a.sensor_ref.cmp(&b.sensor_ref));
        Ok(all)
    }

    /// Stops every sensor after its current poll (each bounded by its own deadline) and waits
    /// up to `grace` for them; what is still running then is aborted.
    pub async fn stop_all(&self, grace: Duration) {
        let tasks: Vec<JoinHandle<()>> = self.sensors().values_mut().filter_map(Entry::stop_loop).collect();
        let deadline = Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(?grace, "a sensor still polling at the end of the grace period was aborted");
                task.abort();
            }
        }
    }

    /// Starts the poll loop of `entry`, after `previous` (the loop it replaces, or a state reset)
    /// has ended.
    fn spawn(&self, entry: &Entry, previous: Option<JoinHandle<()>>, fence: Fence) -> Running {
        let (app, engine, spec, status, instances) =
            (self.app.clone(), self.engine.clone(), entry.spec.clone(), entry.status.clone(), entry.instances.clone());
        let (options, secrets) = (self.options, self.secrets.clone());
        lock(&status).state = SensorState::Running;
        let (stop, stopped) = watch::channel(false);
        let span = tracing::info_span!("sensor", sensor = %spec.sensor_ref);
        let task = tokio::spawn(
            async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                run_sensor(app, engine, spec, secrets, fence, status, instances, options, stopped).await;
            }
            .instrument(span),
        );
        Running { task, stop }
    }
}

impl SensorStatus {
    /// Takes the state and counters of a stored status.
    fn absorb(&mut self, record: SensorStatusRecord) {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.state = SensorState::parse(&record.state);
        self.last_error = record.last_error;
        self.last_failure_reason = record.last_failure_reason;
        self.consecutive_failures = u32::try_from(record.consecutive_failures).unwrap_or(u32::MAX);
        self.polls = count(record.polls);
        self.failures = count(record.failures);
        self.events = count(record.events);
        self.fuel_used = count(record.fuel_used);
    }

    /// A poll that stored `events` payloads, burning `fuel`.
    fn succeeded(&mut self, events: usize, fuel: u64) {
        self.polls += 1;
        self.events += events as u64;
        self.fuel_used += fuel;
        self.consecutive_failures = 0;
        self.state = SensorState::Running;
    }

    /// What the store keeps of it.
    fn record(&self) -> SensorStatusRecord {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        SensorStatusRecord {
            sensor_ref: self.sensor_ref.clone(),
            state: self.state.as_str().to_string(),
            last_error: self.last_error.clone(),
            last_failure_reason: self.last_failure_reason.clone(),
            consecutive_failures: i64::from(self.consecutive_failures),
            polls: count(self.polls),
            failures: count(self.failures),
            events: count(self.events),
            fuel_used: count(self.fuel_used),
        }
    }
}

fn fresh_status(spec: &SensorSpec) -> SensorStatus {
    SensorStatus {
        sensor_ref: spec.sensor_ref.clone(),
        owner: None,
        triggers: spec.triggers.clone(),
        state: SensorState::Idle,
        last_error: None,
        last_failure_reason: None,
        consecutive_failures: 0,
        polls: 0,
        failures: 0,
        events: 0,
        fuel_used: 0,
    }
}

fn lock(status: &Mutex<SensorStatus>) -> std::sync::MutexGuard<'_, SensorStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

/// The poll loop of one sensor, until quarantined or stopped, or until its fence no longer
/// holds. A stop waits for the poll in flight (bounded by the sensor's deadline), so what it
/// emitted is stored.
#[allow(clippy::too_many_arguments)]
async fn run_sensor(
    app: Arc<App>,
    engine: Arc<SensorEngine>,
    spec: Arc<SensorSpec>,
    secrets: Arc<Secrets>,
    fence: Fence,
    status: Arc<Mutex<SensorStatus>>,
    instances: InstanceFeed,
    options: SupervisorOptions,
    mut stop: watch::Receiver<bool>,
) {
    let sensor_ref = spec.sensor_ref.clone();
    let metrics = app.metrics.clone();
    let mut sensor: Option<SensorInstance> = None;
    let mut backoff = options.backoff_initial;
    let mut planned: Option<Instant> = None;
    // Goes on from the stored status (another host may have run the sensor): counters continue,
    // and a quarantine holds until a restart.
    let mut resumed = false;
    while !*stop.borrow() {
        if !resumed {
            match app.store.sensor_status(&sensor_ref).await {
                Ok(stored) => {
                    resumed = true;
                    let mut status = lock(&status);
                    if let Some(record) = stored {
                        let running = status.state;
                        status.absorb(record);
                        if status.state == SensorState::Quarantined {
                            tracing::info!("sensor stays quarantined, as stored");
                            return;
                        }
                        status.state = running;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the sensor's stored status: {e}");
                    let next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(options.backoff_max);
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
        }
        if let Some(planned) = planned {
            metrics.poll_late(&sensor_ref, Instant::now().saturating_duration_since(planned));
        }
        let started = Instant::now();
        // A stored poll stores the status after it in its own transaction: what `GET /sensors`
        // counts is what is stored.
        let status_after = |events: usize, fuel: u64| {
            let mut after = lock(&status).clone();
            after.succeeded(events, fuel);
            after.record()
        };
        let owner = PollOwner { fence: fence.clone(), status_after: &status_after };
        let outcome = match sensor.as_mut() {
            Some(running) => match app.poll_sensor(running, Some(owner)).await {
                Ok(ingested) => Ok((ingested.event_ids.len(), running.last_fuel_used())),
                Err(PollError::Ingest(IngestError::Fenced(fence))) => {
                    // Another host owns the sensor now and runs it from the stored state.
                    lock(&status).state = SensorState::Idle;
                    app.membership.lost(&fence).await;
                    return;
                }
                Err(e) => {
                    // The store did not take the poll, so it may not have given back the state
                    // either (`poll_sensor` reloads it from the store): the instance's state may
                    // have run ahead of what is stored, and its next poll would skip what this
                    // one emitted. The next poll runs on a fresh instance, seeded from the store.
                    let fault = if matches!(e, PollError::Ingest(IngestError::Store(_))) {
                        sensor = None;
                        Fault::Host
                    } else {
                        Fault::Sensor
                    };
                    Err(Failed { message: e.to_string(), reason: failure_reason(&e), trapped: is_trap(&e), fault })
                }
            },
            None => match start(&app, &engine, &spec, &secrets, &instances).await {
                Ok(started) => {
                    tracing::info!("sensor started");
                    sensor = Some(started);
                    planned = None;
                    continue;
                }
                Err((message, fault)) => {
                    let reason = if fault == Fault::Host { "store_error" } else { "start_failed" };
                    Err(Failed { message, reason, trapped: false, fault })
                }
            },
        };
        // The status to store after a failure (a stored poll stored it already).
        let (delay, failure_record) = {
            let mut status = lock(&status);
            match outcome {
                Ok((events, fuel)) => {
                    metrics.poll_succeeded(&sensor_ref, events, fuel, started.elapsed());
                    status.succeeded(events, fuel);
                    backoff = options.backoff_initial;
                    (jittered(spec.poll_interval), None)
                }
                Err(Failed { message, reason, trapped, fault }) => {
                    status.polls += 1;
                    status.failures += 1;
                    // The host's own faults (its store out of reach) back off but never quarantine:
                    // the sensor resumes by itself when the store is back.
                    if fault != Fault::Host {
                        status.consecutive_failures += 1;
                    }
                    let consecutive = status.consecutive_failures;
                    let failure = PollFailure { reason, trapped, consecutive, message: &message };
                    metrics.poll_failed(&sensor_ref, &failure, started.elapsed());
                    status.last_error = Some(message);
                    status.last_failure_reason = Some(reason.to_string());
                    if fault == Fault::Code || consecutive >= options.quarantine_after {
                        status.state = SensorState::Quarantined;
                        metrics.quarantined(&sensor_ref, consecutive);
                        // Recorded below, then the loop ends.
                        (Duration::ZERO, Some(status.record()))
                    } else {
                        status.state = SensorState::BackingOff;
                        let delay = backoff;
                        backoff = (backoff * 2).min(options.backoff_max);
                        (delay, Some(status.record()))
                    }
                }
            }
        };
        if let Some(record) = failure_record {
            let quarantined = record.state == SensorState::Quarantined.as_str();
            if !record_status(&app, record, &fence).await || quarantined {
                return;
            }
        }
        let next = Instant::now() + delay;
        planned = Some(next);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
    }
    let record = {
        let mut status = lock(&status);
        status.state = SensorState::Idle;
        status.record()
    };
    record_status(&app, record, &fence).await;
    tracing::info!("sensor stopped");
}

/// Stores what the loop knows of its sensor, under its fence. False when the fence no longer
/// holds (the loop must end); a store error is only logged (the next poll writes it again).
async fn record_status(app: &App, record: SensorStatusRecord, fence: &Fence) -> bool {
    match app.pipeline.record_status(vec![StatusWrite::Snapshot(record)], Vec::new(), Some(fence.clone())).await {
        Ok(Written::Fenced) => {
            app.membership.lost(fence).await;
            false
        }
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot store the sensor's status: {e}");
            true
        }
    }
}

/// Deletes every key of the sensor's stored state, with `announcement` in the same commit.
async fn clear_state(app: &App, sensor_ref: &str, announcement: Option<Message>) -> Result<(), Arc<StoreError>> {
    let stored = app.store.sensor_state(sensor_ref).await.map_err(Arc::new)?;
    if stored.is_empty() && announcement.is_none() {
        return Ok(());
    }
    app.pipeline.record_state(sensor_ref, crate::store::cleared(stored), announcement.into_iter().collect()).await
}

fn is_trap(error: &PollError) -> bool {
    matches!(error, PollError::Sensor(failure) if failure.is_trap())
}

fn failure_reason(error: &PollError) -> &'static str {
    match error {
        PollError::Sensor(failure) => failure.reason(),
        PollError::Ingest(IngestError::Rejected(_)) => "payload_rejected",
        PollError::Ingest(IngestError::Store(_)) => "store_error",
        PollError::Ingest(IngestError::Fenced(_)) => "fenced",
    }
}

#[async_trait::async_trait]
impl Work for Supervisor {
    async fn start(&self, _items: &[String]) {
        self.reconcile();
    }

    async fn stop(&self, _items: &[String]) {
        self.reconcile();
    }
}

/// Whose fault a failed poll or start is, which decides what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The sensor's: backs off, and quarantined after `quarantine_after` in a row.
    Sensor,
    /// Its code does not load (a syntax error, no `poll`, a missing import): it will not on a
    /// retry either, so it is quarantined at once, as `pack validate` refuses it.
    Code,
    /// The host's (its store out of reach): backs off, never quarantined for it.
    Host,
}

/// A failed poll or start.
struct Failed {
    message: String,
    reason: &'static str,
    trapped: bool,
    fault: Fault,
}

/// A fresh instance seeded from the stored state, its config's secrets resolved; on failure,
/// the message and whose fault.
async fn start(
    app: &App,
    engine: &Arc<SensorEngine>,
    spec: &Arc<SensorSpec>,
    secrets: &Secrets,
    instances: &InstanceFeed,
) -> Result<SensorInstance, (String, Fault)> {
    let state = app.store.sensor_state(&spec.sensor_ref).await.map_err(|e| (e.to_string(), Fault::Host))?;
    // Held by this instance alone: the spec the supervisor keeps, lists and fingerprints has the
    // references. A secret not held (packs naming one do not load) cannot appear by a retry.
    let config = secrets.resolve(&spec.config).map_err(|e| (e.to_string(), Fault::Code))?;
    let spec = Arc::new(SensorSpec { config, ..SensorSpec::clone(spec) });
    SensorInstance::start(engine, spec, state, instances.clone()).await.map_err(|e| match e {
        StartError::Load(e) if e.is_code_error() => (e.to_string(), Fault::Code),
        StartError::Load(e) => (e.to_string(), Fault::Sensor),
        StartError::Failed(failure) => (failure.to_string(), Fault::Sensor),
    })
}

/// The interval plus up to 10% of random jitter.
fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    interval + interval.mul_f64(f64::from(nanos % 1000) / 10_000.0)
}
