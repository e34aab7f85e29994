//! Native timers in the host: the scheduler of `attune-timers` with its state in the store and
//! its fires going through the same pipeline as sensor payloads, for their own rule only.
//!
//! Exactly one event per planned instant: the pipeline derives a timer event's id from (rule,
//! instant) and the store ignores a second insert of the same id, so a fire repeated after a
//! crash between "event stored" and "timer state saved" is a no-op.
//!
//! Several hosts: every enabled timer rule is wanted by [`OwnedTimers`], which runs it in the
//! scheduler only while this host owns it (see `membership.rs`); its fires and state saves carry
//! the timer's fence, so a host that lost the timer cannot store a fire or move its state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use attune_timers::{
    BoxError, Fire, FireSink, SchedulerError, SchedulerHandle, TimerSpec, TimerState, TimerStore, from_micros, micros,
};

use crate::membership::{Membership, Work};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Source};
use crate::store::{Fence, Store, TimerStateRecord, WorkKind};

/// A timer this host does not own (or no longer owns) cannot write.
#[derive(Debug, thiserror::Error)]
#[error("timer `{0}` is not this host's")]
struct NotOwned(String);

fn fence(membership: &Membership, rule_ref: &str) -> Result<Fence, NotOwned> {
    membership.fence(WorkKind::Timer, rule_ref).ok_or_else(|| NotOwned(rule_ref.to_string()))
}

/// `timer_state` rows through the store, saved under the timer's fence.
#[derive(Debug)]
pub struct StoreTimers {
    pub store: Arc<dyn Store>,
    pub membership: Arc<Membership>,
}

#[async_trait]
impl TimerStore for StoreTimers {
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError> {
        let Some(row) = self.store.timer_state(rule_ref).await? else { return Ok(None) };
        let at = |us: Option<i64>| us.and_then(from_micros);
        Ok(Some(TimerState {
            next_fire_at: at(row.next_fire_at),
            last_fire_at: at(row.last_fire_at),
            last_scheduled_at: at(row.last_scheduled_at),
            execution_count: u64::try_from(row.execution_count).unwrap_or(0),
        }))
    }

    async fn save(&self, rule_ref: &str, state: &TimerState) -> Result<(), BoxError> {
        let (next_fire_at, last_fire_at, last_scheduled_at) = state.micros();
        let execution_count = i64::try_from(state.execution_count).unwrap_or(i64::MAX);
        let row = TimerStateRecord { next_fire_at, last_fire_at, last_scheduled_at, execution_count };
        let fence = fence(&self.membership, rule_ref)?;
        if self.store.save_timer_state(rule_ref, &row, &fence).await? {
            Ok(())
        } else {
            self.membership.lost(&fence).await;
            Err(NotOwned(rule_ref.to_string()).into())
        }
    }

    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError> {
        Ok(self.store.delete_timer_state(rule_ref).await?)
    }
}

/// Fires become events of their timer trigger, matched against their own rule only.
#[derive(Debug)]
pub struct PipelineFires {
    pub pipeline: Arc<Pipeline>,
    pub membership: Arc<Membership>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl FireSink for PipelineFires {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        let source = Source::Timer { rule_ref: fire.rule_ref.to_string(), scheduled_at: micros(fire.scheduled_at) };
        let fence = fence(&self.membership, &fire.rule_ref)?;
        let payload = vec![(fire.trigger_ref.to_string(), fire.payload)];
        if let Err(e) = self.pipeline.ingest_owned(&source, payload, None, fence.clone(), Vec::new()).await {
            if matches!(e, crate::pipeline::IngestError::Fenced(_)) {
                self.membership.lost(&fence).await;
            }
            return Err(e.into());
        }
        let lateness = attune_rules::chrono::Utc::now() - fire.scheduled_at;
        self.metrics.timer_fired(lateness.to_std().unwrap_or_default());
        Ok(())
    }
}

/// The timer rules as the rule service sees them, run in the scheduler while this host owns them.
#[derive(Debug)]
pub struct OwnedTimers {
    scheduler: SchedulerHandle,
    membership: Arc<Membership>,
    store: Arc<dyn Store>,
    /// Every enabled timer rule's spec, owned here or not.
    specs: Mutex<HashMap<String, TimerSpec>>,
}

impl OwnedTimers {
    /// Timers for `membership`, which should tell the result of [`OwnedTimers::work`].
    pub fn new(scheduler: SchedulerHandle, membership: Arc<Membership>, store: Arc<dyn Store>) -> Arc<Self> {
        let timers = Arc::new(Self { scheduler, membership, store, specs: Mutex::default() });
        let work: Arc<dyn Work> = timers.clone();
        timers.membership.attach(WorkKind::Timer, Arc::downgrade(&work));
        timers
    }

    fn specs(&self) -> std::sync::MutexGuard<'_, HashMap<String, TimerSpec>> {
        self.specs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owned(&self, rule_ref: &str) -> bool {
        self.membership.fence(WorkKind::Timer, rule_ref).is_some()
    }

    /// A timer rule enabled or changed: it runs wherever it is owned (here, once acquired).
    pub async fn upsert(&self, rule_ref: &str, spec: TimerSpec) -> Result<(), SchedulerError> {
        self.specs().insert(rule_ref.to_string(), spec.clone());
        self.membership.want(WorkKind::Timer, rule_ref, true);
        if self.owned(rule_ref) { self.scheduler.upsert(rule_ref, spec).await } else { Ok(()) }
    }

    /// A timer rule disabled: its owner stops it, keeping its state (see
    /// [`SchedulerHandle::remove`]).
    pub async fn remove(&self, rule_ref: &str) -> Result<bool, SchedulerError> {
        self.specs().remove(rule_ref);
        self.membership.want(WorkKind::Timer, rule_ref, false);
        if self.owned(rule_ref) { self.scheduler.remove(rule_ref).await } else { Ok(false) }
    }

    /// A timer rule deleted: stopped, and its state deleted (by its owner if it runs here).
    pub async fn purge(&self, rule_ref: &str) -> Result<bool, SchedulerError> {
        self.specs().remove(rule_ref);
        self.membership.want(WorkKind::Timer, rule_ref, false);
        if self.owned(rule_ref) {
            return self.scheduler.purge(rule_ref).await;
        }
        if let Err(e) = self.store.delete_timer_state(rule_ref).await {
            tracing::warn!(rule = rule_ref, "cannot delete the state of a deleted timer rule: {e}");
        }
        Ok(false)
    }

    /// The state of a timer running on this host.
    pub async fn state(&self, rule_ref: &str) -> Result<Option<TimerState>, SchedulerError> {
        self.scheduler.state(rule_ref).await
    }

    /// Stops the scheduler (see [`SchedulerHandle::shutdown`]).
    pub async fn shutdown(&self) {
        self.scheduler.shutdown().await;
    }
}

#[async_trait]
impl Work for OwnedTimers {
    async fn start(&self, items: &[String]) {
        for rule_ref in items {
            // Told after a round that the watchdog may have overtaken: run only what is held.
            if !self.owned(rule_ref) {
                continue;
            }
            let Some(spec) = self.specs().get(rule_ref).cloned() else { continue };
            if let Err(e) = self.scheduler.upsert(rule_ref, spec).await {
                tracing::warn!(rule = %rule_ref, "cannot start an owned timer: {e}");
            }
        }
    }

    async fn stop(&self, items: &[String]) {
        for rule_ref in items {
            let _ = self.scheduler.release(rule_ref).await;
        }
    }
}
