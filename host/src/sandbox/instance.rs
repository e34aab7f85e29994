//! One live sensor: its store, its calls under limits, and replacement after a trap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::Instance;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::{guest, types};
use super::ctx::{GuestOutput, LogSink, SensorCtx};
use super::limiter::SensorLimiter;
use super::state::{StateDelta, StateView};
use super::tape::Tape;
use super::{EPOCH_TICK, InstanceFeed, LoadError, Prepared, SensorCode, SensorEngine, SensorFailure, TriggerInstance};
use crate::sandbox::SensorSpec;

/// One payload accepted from a poll, with its trigger resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPayload {
    /// Trigger ref; empty only for a bare source file run without a manifest.
    pub trigger: String,
    /// The rule instance the payload is for (only that rule sees it); `None` for every rule.
    pub rule: Option<String>,
    pub payload: Value,
}

/// What one successful poll produced.
#[derive(Debug, Default)]
pub struct PollOutput {
    pub payloads: Vec<SensorPayload>,
    /// State writes made during the poll, to be committed with its payloads.
    pub state: StateDelta,
    pub fuel_used: u64,
    pub elapsed: Duration,
}

struct Live {
    store: Store<SensorCtx>,
    guest: guest::Guest,
}

/// A sensor ready to poll. After a trap the instance is dropped and the next `poll` builds a
/// fresh one (`init` again, state carried over), so a trap costs one poll, not the sensor.
pub struct SensorInstance {
    engine: Arc<SensorEngine>,
    prepared: Arc<Prepared>,
    spec: Arc<SensorSpec>,
    /// Source text for the language runtimes, read once.
    source: Option<(String, String)>,
    /// The runtime's compiled form of `source`, once read from the cache or returned by `load`:
    /// a fresh instance after a trap loads it without touching the disk.
    compiled_source: Option<Vec<u8>>,
    log: Arc<LogSink>,
    /// The rules on the sensor's triggers, as its `instances.current` import reports them.
    instances: InstanceFeed,
    live: Option<Live>,
    /// The state as last committed, used to seed a fresh instance.
    committed: BTreeMap<String, String>,
    /// Fuel spent by the last call, whether or not it succeeded.
    last_fuel_used: u64,
    /// Where host calls are recorded or replayed from, if anywhere.
    tape: Option<Tape>,
}

impl std::fmt::Debug for SensorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorInstance")
            .field("sensor", &self.spec.sensor_ref)
            .field("live", &self.live.is_some())
            .finish()
    }
}

/// Why a sensor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Failed(#[from] SensorFailure),
}

impl SensorInstance {
    /// Loads the sensor's component, instantiates it, loads its source (runtimes) and runs `init`.
    /// The sensor's `instances` import reads `instances` (which its owner keeps current).
    pub async fn start(
        engine: &Arc<SensorEngine>,
        spec: Arc<SensorSpec>,
        state: BTreeMap<String, String>,
        instances: InstanceFeed,
    ) -> Result<Self, StartError> {
        Self::start_taped(engine, spec, state, instances, None).await
    }

    /// [`SensorInstance::start`], with every host call of every instance it makes recorded on
    /// `tape` or replayed from it (WASI's clock and randomness included).
    pub async fn start_taped(
        engine: &Arc<SensorEngine>,
        spec: Arc<SensorSpec>,
        state: BTreeMap<String, String>,
        instances: InstanceFeed,
        tape: Option<Tape>,
    ) -> Result<Self, StartError> {
        let mut instance = Self::open(engine, spec, state, instances).await?;
        instance.tape = tape;
        instance.ensure_live().await?;
        Ok(instance)
    }

    /// Loads the sensor's code as [`SensorInstance::start`] does (compile or load the
    /// component, instantiate it and, for the language runtimes, load the source, which
    /// catches a syntax error, a missing `poll` or an import the runtime lacks) without calling
    /// `init` or `poll`. `pack validate` checks every sensor with it.
    pub async fn check(engine: &Arc<SensorEngine>, spec: &SensorSpec) -> Result<(), StartError> {
        let spec = Arc::new(spec.clone());
        let mut instance = Self::open(engine, spec, BTreeMap::new(), InstanceFeed::default()).await?;
        instance.instantiate().await.map(drop)
    }

    /// The prepared component and the source text, with no instance yet.
    async fn open(
        engine: &Arc<SensorEngine>,
        spec: Arc<SensorSpec>,
        state: BTreeMap<String, String>,
        instances: InstanceFeed,
    ) -> Result<Self, LoadError> {
        let prepared = engine.prepare(&spec.code).await?;
        let source = match &spec.code {
            SensorCode::Python(path) | SensorCode::JavaScript(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
                let name =
                    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
                Some((name, text))
            }
            SensorCode::Component(_) => None,
        };
        let log = LogSink::new(spec.sensor_ref.as_str().into());
        Ok(Self {
            engine: engine.clone(),
            prepared,
            spec,
            source,
            compiled_source: None,
            log,
            instances,
            live: None,
            committed: state,
            last_fuel_used: 0,
            tape: None,
        })
    }

    pub fn spec(&self) -> &SensorSpec {
        &self.spec
    }

    /// Fuel spent by the most recent call, also when it failed.
    pub fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used
    }

    /// Resets the sensor's state to `committed` (what the store holds), e.g. after the pipeline
    /// refused the poll whose writes were already applied here.
    pub fn restore_state(&mut self, committed: BTreeMap<String, String>) {
        if let Some(live) = self.live.as_mut() {
            live.store.data_mut().state = StateView::new(committed.clone());
        }
        self.committed = committed;
    }

    /// Bytes of linear memory the live instance holds (0 when none is live).
    pub fn memory_bytes(&self) -> usize {
        self.live.as_ref().map_or(0, |live| live.store.data().limiter.memory_bytes())
    }

    /// Runs one poll under the sensor's limits and checks what it returned.
    pub async fn poll(&mut self) -> Result<PollOutput, SensorFailure> {
        self.ensure_live().await.map_err(|e| match e {
            StartError::Failed(failure) => failure,
            // The source was accepted when the sensor started and is held in memory.
            StartError::Load(e) => SensorFailure::Trap(e.to_string()),
        })?;
        let Some(live) = self.live.as_mut() else {
            return Err(SensorFailure::Trap("no live instance".into()));
        };
        let started = Instant::now();
        // A payload may name any instance the sensor could have seen during the call.
        let seen = self.instances.current();
        begin_call(&mut live.store, &self.spec, &self.log);
        let call = live.guest.call_poll(&mut live.store);
        let result = tokio::time::timeout(self.spec.limits_timeout(), call).await;
        let outcome = finish_call(result, &mut live.store, &self.spec);
        self.last_fuel_used = fuel_used(&live.store, &self.spec);
        let outcome = outcome.and_then(|payloads| self.check_payloads(payloads, &seen));
        let live = self.live.as_mut().ok_or_else(|| SensorFailure::Trap("no live instance".into()))?;
        match outcome {
            Ok(payloads) => {
                let state = live.store.data_mut().state.take_delta();
                super::apply_delta(&mut self.committed, &state);
                Ok(PollOutput { payloads, state, fuel_used: self.last_fuel_used, elapsed: started.elapsed() })
            }
            Err(failure) => {
                live.store.data_mut().state.discard_delta();
                if failure.is_trap() {
                    self.live = None;
                }
                Err(failure)
            }
        }
    }

    /// Builds a fresh instance if there is none: instantiate, `load` the source, `init`.
    async fn ensure_live(&mut self) -> Result<(), StartError> {
        if self.live.is_some() {
            return Ok(());
        }
        let (mut store, guest) = self.instantiate().await?;
        let spec = self.spec.clone();
        let config = spec.config.to_string();
        begin_call(&mut store, &spec, &self.log);
        let result = tokio::time::timeout(spec.limits_timeout(), guest.call_init(&mut store, &config)).await;
        let init = finish_call(result, &mut store, &spec);
        self.last_fuel_used = fuel_used(&store, &spec);
        init?;
        // Whatever `init` stored is kept: it ran to completion.
        let delta = store.data_mut().state.take_delta();
        super::apply_delta(&mut self.committed, &delta);
        self.live = Some(Live { store, guest });
        Ok(())
    }

    /// A fresh instance in a fresh store, with the sensor's source loaded (language runtimes);
    /// `init` is not called. A source the runtime refuses is a [`LoadError::Source`].
    async fn instantiate(&mut self) -> Result<(Store<SensorCtx>, guest::Guest), StartError> {
        let mut store = self.new_store();
        let spec = self.spec.clone();
        let instance = {
            begin_call(&mut store, &spec, &self.log);
            let result =
                tokio::time::timeout(spec.limits_timeout(), self.prepared.pre.instantiate_async(&mut store)).await;
            finish_call(result.map(|r| r.map(Ok)), &mut store, &spec)?
        };
        let guest =
            self.prepared.guest.load(&mut store, &instance).map_err(|e| SensorFailure::Trap(format!("{e:#}")))?;
        self.load_source(&mut store, &instance).await.map_err(|failure| match (failure, &self.spec.code) {
            (SensorFailure::Sensor { message, .. }, SensorCode::Python(path) | SensorCode::JavaScript(path)) => {
                let message = message.strip_prefix("Error: ").unwrap_or(&message).to_string();
                StartError::Load(LoadError::Source { path: path.clone(), message })
            }
            (failure, _) => StartError::Failed(failure),
        })?;
        Ok((store, guest))
    }

    async fn load_source(&mut self, store: &mut Store<SensorCtx>, instance: &Instance) -> Result<(), SensorFailure> {
        let (Some(loader), Some((name, text))) = (&self.prepared.loader, &self.source) else {
            return Ok(());
        };
        let loader = loader.load(&mut *store, instance).map_err(|e| SensorFailure::Trap(format!("{e:#}")))?;
        let cache = &self.engine.cache;
        let runtime = &self.prepared.content_hash;
        if self.compiled_source.is_none() {
            self.compiled_source = cache.compiled_source(runtime, name, text);
        }
        begin_call(store, &self.spec, &self.log);
        let call = loader.call_load(&mut *store, name, text, self.compiled_source.as_deref());
        let result = tokio::time::timeout(self.spec.limits_timeout(), call).await;
        let compiled = finish_call(result, store, &self.spec)?;
        if !compiled.is_empty() {
            cache.keep_compiled_source(runtime, name, text, &compiled);
            self.compiled_source = Some(compiled);
        }
        Ok(())
    }

    fn new_store(&self) -> Store<SensorCtx> {
        let output = GuestOutput(self.log.clone());
        // No env, args, preopens or network: WasiCtxBuilder grants none of them by default.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone()).stderr(output);
        if let Some(tape) = &self.tape {
            wasi.wall_clock(tape.clone())
                .secure_random(Tape::random())
                .insecure_random(Tape::random())
                .insecure_random_seed(u128::from(super::tape::RANDOM_SEED));
        }
        let wasi = wasi.build();
        let ctx = SensorCtx {
            wasi,
            table: Default::default(),
            limiter: SensorLimiter::new(self.spec.limits.memory_bytes()),
            state: StateView::new(self.committed.clone()),
            log: self.log.clone(),
            grants: self.spec.grants.clone(),
            instances: self.instances.clone(),
            http_client: self.engine.http_client.clone(),
            deadline: Instant::now(),
            tape: self.tape.clone(),
        };
        let mut store = Store::new(&self.engine.engine, ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        store.epoch_deadline_trap();
        if let Err(e) = store.fuel_async_yield_interval(Some(self.engine.settings.fuel_yield_interval)) {
            tracing::warn!(sensor = %self.spec.sensor_ref, "fuel yield interval not set: {e}");
        }
        store
    }

    fn check_payloads(
        &self,
        raw: Vec<types::Payload>,
        seen: &[TriggerInstance],
    ) -> Result<Vec<SensorPayload>, SensorFailure> {
        let limits = &self.spec.limits;
        if raw.len() > limits.max_events_per_poll {
            return Err(SensorFailure::TooManyPayloads { count: raw.len(), limit: limits.max_events_per_poll });
        }
        raw.into_iter()
            .enumerate()
            .map(|(index, p)| {
                if p.json.len() > limits.max_payload_bytes {
                    return Err(SensorFailure::PayloadTooLarge {
                        index,
                        size: p.json.len(),
                        limit: limits.max_payload_bytes,
                    });
                }
                let payload: Value = serde_json::from_str(&p.json)
                    .map_err(|e| SensorFailure::BadPayload { index, reason: format!("not JSON: {e}") })?;
                if !payload.is_object() {
                    return Err(SensorFailure::BadPayload { index, reason: "a payload must be a JSON object".into() });
                }
                let named = match &p.rule {
                    Some(rule) => Some(self.instance_trigger(index, rule, p.trigger.as_deref(), seen)?),
                    None => p.trigger.clone(),
                };
                let trigger = self.spec.resolve_trigger(named.as_deref()).map_err(|declared| {
                    SensorFailure::UndeclaredTrigger { index, trigger: p.trigger.clone().unwrap_or_default(), declared }
                })?;
                Ok(SensorPayload { trigger, rule: p.rule, payload })
            })
            .collect()
    }
}

impl SensorInstance {
    /// The trigger of the instance `rule` that payload `index` names: an instance the sensor
    /// saw, whose trigger agrees with the one the payload names, if any.
    fn instance_trigger(
        &self,
        index: usize,
        rule: &str,
        named: Option<&str>,
        seen: &[TriggerInstance],
    ) -> Result<String, SensorFailure> {
        let current = self.instances.current();
        let Some(instance) = seen.iter().chain(current.iter()).find(|i| i.rule == rule) else {
            let known: Vec<&str> = current.iter().map(|i| i.rule.as_str()).collect();
            return Err(SensorFailure::BadPayload {
                index,
                reason: format!("rule `{rule}` is not an instance of this sensor (instances: [{}])", known.join(", ")),
            });
        };
        match named {
            Some(trigger) if trigger != instance.trigger => Err(SensorFailure::BadPayload {
                index,
                reason: format!("rule `{rule}` is on trigger `{}`, not `{trigger}`", instance.trigger),
            }),
            _ => Ok(instance.trigger.clone()),
        }
    }
}

/// Arms the limits for one call: a full fuel tank, an epoch deadline and a fresh log budget.
fn begin_call(store: &mut Store<SensorCtx>, spec: &SensorSpec, log: &LogSink) {
    log.reset();
    let timeout = spec.limits_timeout();
    store.data_mut().deadline = Instant::now() + timeout;
    store.data_mut().limiter.exceeded = false;
    // Store::set_fuel only fails when fuel is not enabled, and the engine always enables it.
    let _ = store.set_fuel(spec.limits.fuel);
    let ticks = timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64;
    store.set_epoch_deadline(ticks.max(1));
}

fn fuel_used(store: &Store<SensorCtx>, spec: &SensorSpec) -> u64 {
    spec.limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0))
}

/// Names why a call failed. The memory flag is checked first: a refused growth surfaces as a
/// trap whose message varies by language runtime.
fn finish_call<T>(
    result: Result<wasmtime::Result<Result<T, types::SensorError>>, tokio::time::error::Elapsed>,
    store: &mut Store<SensorCtx>,
    spec: &SensorSpec,
) -> Result<T, SensorFailure> {
    store.data().log.end_call();
    let limits = &spec.limits;
    let memory_limit = SensorFailure::MemoryLimit { limit_mib: limits.memory_mib };
    match result {
        Err(_elapsed) => Err(SensorFailure::DeadlineExceeded { timeout_ms: limits.timeout_ms }),
        Ok(Err(_)) if store.data().limiter.exceeded => Err(memory_limit),
        Ok(Err(trap)) => Err(match trap.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => SensorFailure::OutOfFuel { limit: limits.fuel },
            Some(Trap::Interrupt) => SensorFailure::DeadlineExceeded { timeout_ms: limits.timeout_ms },
            _ => SensorFailure::Trap(trap_message(&trap)),
        }),
        Ok(Ok(Err(_))) if store.data().limiter.exceeded => Err(memory_limit),
        Ok(Ok(Err(e))) => Err(SensorFailure::Sensor { message: e.message, traceback: e.traceback }),
        Ok(Ok(Ok(value))) => Ok(value),
    }
}

/// The trap's own message, without the wasm backtrace wasmtime attaches as context.
fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    }
}
