//! Native timers in the host: the scheduler of `attune-timers` with its state in the store and
//! its fires going through the same pipeline as sensor payloads, for their own rule only.
//!
//! Exactly one event per planned instant: the pipeline derives a timer event's id from (rule,
//! instant) and the store ignores a second insert of the same id, so a fire repeated after a
//! crash between "event stored" and "timer state saved" is a no-op.

use std::sync::Arc;

use async_trait::async_trait;
use attune_timers::{BoxError, Fire, FireSink, TimerState, TimerStore, from_micros, micros};

use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Source};
use crate::store::{Store, TimerStateRecord};

/// `timer_state` rows through the store.
#[derive(Debug)]
pub struct StoreTimers(pub Arc<dyn Store>);

#[async_trait]
impl TimerStore for StoreTimers {
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError> {
        let Some(row) = self.0.timer_state(rule_ref).await? else { return Ok(None) };
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
        Ok(self.0.save_timer_state(rule_ref, &row).await?)
    }

    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError> {
        Ok(self.0.delete_timer_state(rule_ref).await?)
    }
}

/// Fires become events of their timer trigger, matched against their own rule only.
#[derive(Debug)]
pub struct PipelineFires {
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl FireSink for PipelineFires {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        let source = Source::Timer { rule_ref: fire.rule_ref.to_string(), scheduled_at: micros(fire.scheduled_at) };
        self.pipeline.ingest(&source, vec![(fire.trigger_ref.to_string(), fire.payload)], None).await?;
        let lateness = attune_rules::chrono::Utc::now() - fire.scheduled_at;
        self.metrics.timer_fired(lateness.to_std().unwrap_or_default());
        Ok(())
    }
}
