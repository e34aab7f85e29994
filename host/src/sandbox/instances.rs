//! Trigger instances as a sensor sees them: the enabled rules on its triggers, each with its
//! `trigger_params` (the WIT `instances` interface). One sensor serves many instances, e.g. one
//! URL per rule; a payload may name the rule it is for.

use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::bindings::instances;
use super::ctx::SensorCtx;
use super::tape::HostCall;

/// One rule on one of the sensor's triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerInstance {
    pub rule: String,
    pub trigger: String,
    /// The rule's `trigger_params`, a JSON object checked against the trigger's `param_schema`.
    pub params: Value,
}

/// The current instances of one sensor. Written by whoever follows rule changes (the
/// supervisor, at once on every change); read by the sensor on every `instances.current` call and
/// when its payloads are checked. Cloning shares the feed.
#[derive(Debug, Clone, Default)]
pub struct InstanceFeed(Arc<RwLock<Arc<[TriggerInstance]>>>);

impl InstanceFeed {
    /// A feed holding `instances`.
    pub fn new(instances: Vec<TriggerInstance>) -> Self {
        let feed = Self::default();
        feed.set(instances);
        feed
    }

    /// Replaces the instances; sorted by rule ref, as the WIT promises.
    pub fn set(&self, mut instances: Vec<TriggerInstance>) {
        instances.sort_by(|a, b| a.rule.cmp(&b.rule));
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = instances.into();
    }

    pub fn current(&self) -> Arc<[TriggerInstance]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl instances::Host for SensorCtx {
    fn current(&mut self) -> wasmtime::Result<Vec<instances::Instance>> {
        let current = self.instances.current();
        self.taped(|| HostCall::Instances { rules: current.iter().map(|i| i.rule.clone()).collect() })?;
        Ok(current
            .iter()
            .map(|i| instances::Instance {
                rule: i.rule.clone(),
                trigger: i.trigger.clone(),
                params: i.params.to_string(),
            })
            .collect())
    }
}
