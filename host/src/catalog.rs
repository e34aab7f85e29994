//! What the loaded packs define, held once: their triggers (payload schemas compiled once,
//! parameter schemas), configs and sensors, with the core triggers. The pipeline, the rule
//! service, the API and the supervisor all read the one [`SharedCatalog`]; a pack reload
//! replaces it whole, and a reader keeps the snapshot it took for as long as it needs it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use attune_timers::{TimerSpec, is_timer_trigger};
use serde_json::{Map, Value};

use crate::pack::{
    CORE_ACTIONS, CORE_TRIGGERS, FieldError, Pack, TriggerManifest, USER_NAMESPACE, check_action,
    core_trigger_description, unknown_trigger,
};
use crate::sandbox::SensorSpec;

/// One trigger as the host knows it.
pub struct TriggerDef {
    pub trigger_ref: String,
    /// `core` or the pack that defines it.
    pub pack: String,
    pub description: String,
    /// The pack's manifest; `None` for a core trigger.
    pub manifest: Option<TriggerManifest>,
    /// `payload_schema`, compiled once.
    payload_check: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for TriggerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerDef").field("trigger_ref", &self.trigger_ref).finish_non_exhaustive()
    }
}

impl TriggerDef {
    pub fn payload_schema(&self) -> Option<&Value> {
        self.manifest.as_ref().and_then(|m| m.payload_schema.as_ref()).filter(|s| !s.is_null())
    }

    pub fn param_schema(&self) -> Option<&Value> {
        self.manifest.as_ref().and_then(|m| m.param_schema.as_ref()).filter(|s| !s.is_null())
    }
}

/// A trigger whose `payload_schema` is not a valid JSON Schema.
#[derive(Debug, Clone, thiserror::Error)]
#[error("trigger `{trigger}`: payload_schema: {message}")]
pub struct BadSchema {
    pub trigger: String,
    pub message: String,
}

/// A payload its trigger's `payload_schema` refuses: at most three problems and where they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("does not match the payload_schema of `{trigger}`: {errors}")]
pub struct PayloadMismatch {
    pub trigger: String,
    pub errors: String,
}

/// Why the catalog refuses a rule: what it names is not there, or not its to name. Each
/// `message` has a did-you-mean when a known name is close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleRefusal {
    #[error("{message}")]
    UnknownTrigger { trigger: String, message: String },
    /// The `trigger_params` do not fit the trigger (`field` is `trigger_params.<name>`).
    #[error("{0}")]
    Params(FieldError),
    #[error("{message}")]
    UnknownAction { message: String },
    /// The rule's ref is in no loaded pack and not in [`USER_NAMESPACE`], or in `core`.
    #[error("{message}")]
    Namespace { message: String },
}

/// The packs' definitions; see the module docs.
#[derive(Debug, Default)]
pub struct PackCatalog {
    packs: Vec<Pack>,
    /// Core triggers first, then each pack's in pack order.
    triggers: Vec<TriggerDef>,
    by_ref: HashMap<String, usize>,
}

impl PackCatalog {
    /// The core triggers and those of `packs`.
    pub fn new(packs: Vec<Pack>) -> Result<Self, BadSchema> {
        let mut triggers: Vec<TriggerDef> = CORE_TRIGGERS
            .iter()
            .map(|core| TriggerDef {
                trigger_ref: core.to_string(),
                pack: "core".into(),
                description: core_trigger_description(core).into(),
                manifest: None,
                payload_check: None,
            })
            .collect();
        for pack in &packs {
            for manifest in &pack.triggers {
                let payload_check = match manifest.payload_schema.as_ref().filter(|s| !s.is_null()) {
                    None => None,
                    Some(schema) => Some(
                        jsonschema::validator_for(schema)
                            .map_err(|e| BadSchema { trigger: manifest.trigger_ref.clone(), message: e.to_string() })?,
                    ),
                };
                triggers.push(TriggerDef {
                    trigger_ref: manifest.trigger_ref.clone(),
                    pack: pack.manifest.pack_ref.clone(),
                    description: manifest.description.clone(),
                    manifest: Some(manifest.clone()),
                    payload_check,
                });
            }
        }
        let by_ref = triggers.iter().enumerate().map(|(i, t)| (t.trigger_ref.clone(), i)).collect();
        Ok(Self { packs, triggers, by_ref })
    }

    pub fn packs(&self) -> &[Pack] {
        &self.packs
    }

    /// Core triggers first, then each pack's.
    pub fn triggers(&self) -> &[TriggerDef] {
        &self.triggers
    }

    pub fn trigger(&self, trigger_ref: &str) -> Option<&TriggerDef> {
        self.by_ref.get(trigger_ref).map(|&i| &self.triggers[i])
    }

    /// The config of pack `pack_ref` (`{}` when it has none), read by `{{ pack.config.* }}`.
    pub fn pack_config(&self, pack_ref: &str) -> &Value {
        static EMPTY: Value = Value::Null;
        self.packs.iter().find(|p| p.manifest.pack_ref == pack_ref).map_or(&EMPTY, |p| &p.manifest.config)
    }

    /// Every pack's sensors.
    pub fn sensors(&self) -> impl Iterator<Item = &SensorSpec> {
        self.packs.iter().flat_map(|p| &p.sensors)
    }

    /// A payload against the `payload_schema` of `trigger` (triggers without one accept
    /// anything). The pipeline and `sensor run` apply this same check.
    pub fn check_payload(&self, trigger: &str, payload: &Value) -> Result<(), PayloadMismatch> {
        let Some(schema) = self.trigger(trigger).and_then(|t| t.payload_check.as_ref()) else {
            return Ok(());
        };
        let errors: Vec<String> =
            schema.iter_errors(payload).take(3).map(|e| format!("{} at `{}`", e, e.instance_path())).collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(PayloadMismatch { trigger: trigger.to_string(), errors: errors.join("; ") })
    }

    /// Whether a rule may listen on `trigger` with `params`: the trigger exists, and the
    /// parameters fit its `param_schema` (a timer's are parsed into its schedule, returned).
    pub fn check_rule_trigger(
        &self,
        trigger: &str,
        params: &Map<String, Value>,
    ) -> Result<Option<TimerSpec>, RuleRefusal> {
        let Some(def) = self.trigger(trigger) else {
            let known = self.triggers.iter().map(|t| t.trigger_ref.as_str());
            return Err(RuleRefusal::UnknownTrigger {
                trigger: trigger.into(),
                message: unknown_trigger(trigger, known),
            });
        };
        if is_timer_trigger(trigger) {
            let spec = TimerSpec::parse_new(trigger, &Value::Object(params.clone()), attune_rules::chrono::Utc::now())
                .map_err(|e| RuleRefusal::Params(FieldError { field: e.field, message: e.message }))?;
            return Ok(Some(spec));
        }
        if let Some(manifest) = &def.manifest {
            manifest.check_params(params).map_err(RuleRefusal::Params)?;
        }
        Ok(None)
    }
}

impl PackCatalog {
    /// Every action a rule may name: the core ones and those the packs declare.
    pub fn actions(&self) -> impl Iterator<Item = &str> + Clone {
        CORE_ACTIONS
            .iter()
            .copied()
            .chain(self.packs.iter().flat_map(|p| p.actions.iter().map(|a| a.action_ref.as_str())))
    }

    /// Whether a rule may name `action`: a core action or one a loaded pack declares.
    pub fn check_action(&self, action: &str) -> Result<(), RuleRefusal> {
        check_action(action, self.actions()).map_err(|message| RuleRefusal::UnknownAction { message })
    }

    /// Whether a rule saved through the API may have `rule_ref`: it lives in a loaded pack or
    /// in [`USER_NAMESPACE`]; `core` belongs to the host.
    pub fn check_rule_namespace(&self, rule_ref: &str) -> Result<(), RuleRefusal> {
        let namespace = rule_ref.split_once('.').map_or(rule_ref, |(pack, _)| pack);
        if namespace == USER_NAMESPACE || self.packs.iter().any(|p| p.manifest.pack_ref == namespace) {
            return Ok(());
        }
        Err(RuleRefusal::Namespace {
            message: format!(
                "`{rule_ref}`: a rule lives in a loaded pack (`<pack>.<name>`) or in `{USER_NAMESPACE}.<name>`; there is no pack `{namespace}`"
            ),
        })
    }
}

/// The current [`PackCatalog`], replaced whole by a pack reload.
#[derive(Debug, Default)]
pub struct SharedCatalog(RwLock<Arc<PackCatalog>>);

impl SharedCatalog {
    pub fn new(catalog: PackCatalog) -> Self {
        Self(RwLock::new(Arc::new(catalog)))
    }

    /// A snapshot: unaffected by a reload that happens while it is held.
    pub fn current(&self) -> Arc<PackCatalog> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, catalog: PackCatalog) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}
