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

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::app::{App, PollError};
use crate::pipeline::IngestError;
use crate::sandbox::{SensorEngine, SensorInstance, StartError};
use crate::sensor::SensorSpec;

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

/// What `GET /sensors` shows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SensorStatus {
    #[serde(rename = "ref")]
    pub sensor_ref: String,
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
    status: Arc<Mutex<SensorStatus>>,
    task: Option<JoinHandle<()>>,
}

/// Starts, stops and restarts sensors; see the module docs.
pub struct Supervisor {
    app: Arc<App>,
    engine: Arc<SensorEngine>,
    options: SupervisorOptions,
    sensors: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    pub fn new(
        app: Arc<App>,
        engine: Arc<SensorEngine>,
        specs: Vec<SensorSpec>,
        options: SupervisorOptions,
    ) -> Arc<Self> {
        let sensors = specs
            .into_iter()
            .map(|spec| {
                let status = SensorStatus {
                    sensor_ref: spec.sensor_ref.clone(),
                    triggers: spec.triggers.clone(),
                    state: SensorState::Idle,
                    last_error: None,
                    last_failure_reason: None,
                    consecutive_failures: 0,
                    polls: 0,
                    failures: 0,
                    events: 0,
                    fuel_used: 0,
                };
                let entry = Entry { spec: Arc::new(spec), status: Arc::new(Mutex::new(status)), task: None };
                (entry.spec.sensor_ref.clone(), entry)
            })
            .collect();
        Arc::new(Self { app, engine, options, sensors: Mutex::new(sensors) })
    }

    fn sensors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the sensors some enabled rule needs and stops the others. Call after every rule
    /// change; cheap when nothing changed.
    pub fn reconcile(&self) {
        let mut sensors = self.sensors();
        for entry in sensors.values_mut() {
            let wanted = entry.spec.triggers.iter().any(|t| self.app.pipeline.has_rules_for(t));
            let running = entry.task.as_ref().is_some_and(|t| !t.is_finished());
            let quarantined = lock(&entry.status).state == SensorState::Quarantined;
            if wanted && !running && !quarantined {
                entry.task = Some(self.spawn(entry));
            } else if !wanted && running {
                if let Some(task) = entry.task.take() {
                    task.abort();
                }
                lock(&entry.status).state = SensorState::Idle;
            }
        }
    }

    /// Lifts a quarantine (or restarts a running sensor) with a fresh instance.
    /// Returns false for an unknown sensor.
    pub fn restart(&self, sensor_ref: &str) -> bool {
        {
            let mut sensors = self.sensors();
            let Some(entry) = sensors.get_mut(sensor_ref) else { return false };
            if let Some(task) = entry.task.take() {
                task.abort();
            }
            let mut status = lock(&entry.status);
            status.state = SensorState::Idle;
            status.consecutive_failures = 0;
        }
        self.reconcile();
        true
    }

    pub fn statuses(&self) -> Vec<SensorStatus> {
        let mut all: Vec<SensorStatus> = self.sensors().values().map(|e| lock(&e.status).clone()).collect();
        all.sort_by(|a, b| a.sensor_ref.cmp(&b.sensor_ref));
        all
    }

    pub fn stop_all(&self) {
        for entry in self.sensors().values_mut() {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
        }
    }

    fn spawn(&self, entry: &Entry) -> JoinHandle<()> {
        let (app, engine, spec, status) =
            (self.app.clone(), self.engine.clone(), entry.spec.clone(), entry.status.clone());
        lock(&status).state = SensorState::Running;
        let options = self.options;
        tokio::spawn(async move { run_sensor(app, engine, spec, status, options).await })
    }
}

fn lock(status: &Mutex<SensorStatus>) -> std::sync::MutexGuard<'_, SensorStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

/// The poll loop of one sensor, until quarantined or aborted.
async fn run_sensor(
    app: Arc<App>,
    engine: Arc<SensorEngine>,
    spec: Arc<SensorSpec>,
    status: Arc<Mutex<SensorStatus>>,
    options: SupervisorOptions,
) {
    let sensor_ref = spec.sensor_ref.clone();
    let mut sensor: Option<SensorInstance> = None;
    let mut backoff = options.backoff_initial;
    loop {
        let outcome = match sensor.as_mut() {
            Some(sensor) => match app.poll_sensor(sensor).await {
                Ok(ingested) => Ok((ingested.event_ids.len(), sensor.last_fuel_used())),
                Err(e) => Err((e.to_string(), failure_reason(&e).to_string())),
            },
            None => match start(&app, &engine, &spec).await {
                Ok(started) => {
                    sensor = Some(started);
                    continue;
                }
                Err(message) => Err((message, "start_failed".to_string())),
            },
        };
        let delay = {
            let mut status = lock(&status);
            status.polls += 1;
            match outcome {
                Ok((events, fuel)) => {
                    status.events += events as u64;
                    status.fuel_used += fuel;
                    status.consecutive_failures = 0;
                    status.state = SensorState::Running;
                    backoff = options.backoff_initial;
                    jittered(spec.poll_interval)
                }
                Err((message, reason)) => {
                    status.failures += 1;
                    status.consecutive_failures += 1;
                    tracing::warn!(sensor = %sensor_ref, reason = %reason, failures = status.consecutive_failures, "poll failed: {message}");
                    status.last_error = Some(message);
                    status.last_failure_reason = Some(reason);
                    if status.consecutive_failures >= options.quarantine_after {
                        status.state = SensorState::Quarantined;
                        let after = options.quarantine_after;
                        tracing::error!(sensor = %sensor_ref, "sensor quarantined after {after} consecutive failures");
                        return;
                    }
                    status.state = SensorState::BackingOff;
                    let delay = backoff;
                    backoff = (backoff * 2).min(options.backoff_max);
                    delay
                }
            }
        };
        tokio::time::sleep(delay).await;
    }
}

fn failure_reason(error: &PollError) -> &'static str {
    match error {
        PollError::Sensor(failure) => failure.reason(),
        PollError::Ingest(IngestError::Rejected(_)) => "payload_rejected",
        PollError::Ingest(IngestError::Store(_)) => "store_error",
    }
}

async fn start(app: &App, engine: &Arc<SensorEngine>, spec: &Arc<SensorSpec>) -> Result<SensorInstance, String> {
    let state = app.store.sensor_state(&spec.sensor_ref).await.map_err(|e| e.to_string())?;
    SensorInstance::start(engine, spec.clone(), state).await.map_err(|e| match e {
        StartError::Load(e) => e.to_string(),
        StartError::Failed(failure) => failure.to_string(),
    })
}

/// The interval plus up to 10% of random jitter.
fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    interval + interval.mul_f64(f64::from(nanos % 1000) / 10_000.0)
}
