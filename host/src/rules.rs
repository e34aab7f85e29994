//! The rule service: the one owner of the rule lifecycle. It checks a rule before it is saved
//! (it compiles; its trigger exists and its `trigger_params` fit), stores it, makes it active
//! here (the matcher index; a timer rule's timer starts, changes or stops), announces the change
//! on the bus (`rule.*`, through the outbox), installs pack rules, and follows the changes other
//! hosts sharing the store make.
//!
//! The store is the truth: an announcement only tells other hosts to look again, so an old or
//! repeated message cannot undo a newer change, and after every (re)connect of the listener the
//! host re-reads everything, since messages may have been missed meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use attune_bus::Bus;
use attune_bus::routing::{RULE_CREATED, RULE_DELETED, RULE_DISABLED, RULE_ENABLED, RULE_UPDATED};
use attune_rules::{CompiledRule, RuleError, RuleSpec};
use attune_timers::{TimerSpec, is_timer_trigger};
use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use crate::catalog::{RuleRefusal, SharedCatalog};
use crate::pack::Pack;
use crate::pipeline::Pipeline;
use crate::store::{RulePage, RuleWrite, Store, StoreError, StoredRule};
use crate::timers::OwnedTimers;

/// Why a rule change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleChangeError {
    /// The rule does not compile (bad ref, operator, path, template, ..).
    #[error(transparent)]
    Invalid(#[from] RuleError),
    /// It names a trigger or an action nobody defines, `trigger_params` that do not fit its
    /// trigger, or a namespace that is not its to use.
    #[error(transparent)]
    Refused(#[from] RuleRefusal),
    #[error("rule `{0}` exists")]
    Exists(String),
    #[error("no rule `{0}`")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The change and its announcement could not be stored (nothing of it was).
    #[error("store: {0}")]
    Recorded(Arc<StoreError>),
    #[error("timer scheduler: {0}")]
    Scheduler(#[from] attune_timers::SchedulerError),
    #[error("stored rule `{rule_ref}` no longer parses: {message}")]
    Stored { rule_ref: String, message: String },
}

/// A rule that passed every check, ready to store.
#[derive(Debug)]
pub struct CheckedRule {
    pub rule: CompiledRule,
    /// The schedule of a timer rule.
    timer: Option<TimerSpec>,
}

/// See the module docs. One per host; shared by the API, `serve` and the tests.
#[derive(Debug)]
pub struct RuleService {
    store: Arc<dyn Store>,
    pipeline: Arc<Pipeline>,
    timers: Arc<OwnedTimers>,
    catalog: Arc<SharedCatalog>,
    /// Notified after every change applied here (the sensor supervisor follows it).
    changed: Arc<Notify>,
    /// One change at a time, so "create if absent" and "replace if present" cannot race.
    writes: Mutex<()>,
}

impl RuleService {
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Arc<Pipeline>,
        timers: Arc<OwnedTimers>,
        catalog: Arc<SharedCatalog>,
    ) -> Self {
        Self { store, pipeline, timers, catalog, changed: Arc::default(), writes: Mutex::new(()) }
    }

    /// Notified after every rule change that took effect on this host.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Checks `spec` as a save would, without saving it: used by saves and dry runs. The
    /// namespace is checked by [`Self::create`] and [`Self::replace`] (the API's saves).
    pub fn check(&self, spec: RuleSpec) -> Result<CheckedRule, RuleChangeError> {
        let rule = attune_rules::compile(spec)?;
        let catalog = self.catalog.current();
        let timer = catalog.check_rule_trigger(rule.trigger(), rule.trigger_params())?;
        catalog.check_action(rule.action_ref())?;
        Ok(CheckedRule { rule, timer })
    }

    /// [`Self::check`], and the ref lives in a loaded pack or the user namespace.
    fn check_new(&self, spec: RuleSpec) -> Result<CheckedRule, RuleChangeError> {
        self.catalog.current().check_rule_namespace(&spec.rule_ref)?;
        self.check(spec)
    }

    /// The stored rule with this ref, as saved.
    pub async fn get(&self, rule_ref: &str) -> Result<Option<StoredRule>, RuleChangeError> {
        Ok(self.store.rule(rule_ref).await?)
    }

    /// One page of stored rules, in ref order.
    pub async fn list(&self, page: &RulePage) -> Result<Vec<StoredRule>, RuleChangeError> {
        Ok(self.store.rules_page(page).await?)
    }

    /// Saves a new rule; refused when one with its ref exists, on this host or any other.
    pub async fn create(&self, spec: RuleSpec) -> Result<Arc<CompiledRule>, RuleChangeError> {
        let checked = self.check_new(spec)?;
        let _one = self.writes.lock().await;
        self.write(checked, true).await
    }

    /// Replaces an existing rule; refused when there is none.
    pub async fn replace(&self, spec: RuleSpec) -> Result<Arc<CompiledRule>, RuleChangeError> {
        let checked = self.check_new(spec)?;
        let _one = self.writes.lock().await;
        if self.get(checked.rule.rule_ref()).await?.is_none() {
            return Err(RuleChangeError::NotFound(checked.rule.rule_ref().into()));
        }
        self.write(checked, false).await
    }

    /// Saves a rule whether or not it exists. It applies to the next payload, and a timer
    /// rule's timer starts, changes or stops at once.
    pub async fn put(&self, spec: RuleSpec) -> Result<Arc<CompiledRule>, RuleChangeError> {
        let checked = self.check(spec)?;
        let _one = self.writes.lock().await;
        self.write(checked, false).await
    }

    /// Saves a rule, only if its ref is new when `create`
    /// ([`RuleChangeError::Exists`] otherwise), and applies it here.
    async fn write(
        &self,
        CheckedRule { rule, timer }: CheckedRule,
        create: bool,
    ) -> Result<Arc<CompiledRule>, RuleChangeError> {
        let rule = Arc::new(rule);
        let stored = StoredRule {
            rule_ref: rule.rule_ref().to_string(),
            pack_ref: Some(rule.pack().to_string()),
            trigger_ref: rule.trigger().to_string(),
            enabled: rule.enabled(),
            spec: serde_json::to_value(rule.spec()).map_err(StoreError::Json)?,
        };
        let before = if create { None } else { self.pipeline.rule(rule.rule_ref()).map(|b| b.enabled()) };
        let change = match before {
            None => RULE_CREATED,
            Some(was) if was != rule.enabled() && rule.enabled() => RULE_ENABLED,
            Some(was) if was != rule.enabled() => RULE_DISABLED,
            Some(_) => RULE_UPDATED,
        };
        let announcement = announcement(change, rule.rule_ref(), Some(&stored.spec));
        let rule_ref = stored.rule_ref.clone();
        let write = if create { RuleWrite::Create(stored) } else { RuleWrite::Upsert(stored) };
        if !self.pipeline.record_rules(vec![write], vec![announcement]).await.map_err(RuleChangeError::Recorded)? {
            return Err(RuleChangeError::Exists(rule_ref));
        }
        self.pipeline.upsert_rule(rule.clone());
        match timer {
            Some(timer) if rule.enabled() => self.timers.upsert(rule.rule_ref(), timer).await?,
            Some(_) => {
                self.timers.remove(rule.rule_ref()).await?;
            }
            None => {}
        }
        self.changed.notify_one();
        Ok(rule)
    }

    /// Deletes a rule; it stops applying at once. Returns whether it existed.
    pub async fn delete(&self, rule_ref: &str) -> Result<bool, RuleChangeError> {
        let _one = self.writes.lock().await;
        // Rule writes go through this service, one at a time: what it reads is what it deletes.
        let existed = self.store.rule(rule_ref).await?.is_some();
        let announcements = if existed { vec![announcement(RULE_DELETED, rule_ref, None)] } else { Vec::new() };
        self.pipeline
            .record_rules(vec![RuleWrite::Delete(rule_ref.into())], announcements)
            .await
            .map_err(RuleChangeError::Recorded)?;
        self.pipeline.remove_rule(rule_ref);
        self.timers.purge(rule_ref).await?;
        self.changed.notify_one();
        Ok(existed)
    }

    /// Enables or disables a stored rule. Returns `None` when there is no such rule.
    pub async fn set_enabled(
        &self,
        rule_ref: &str,
        enabled: bool,
    ) -> Result<Option<Arc<CompiledRule>>, RuleChangeError> {
        let _one = self.writes.lock().await;
        let Some(stored) = self.get(rule_ref).await? else {
            return Ok(None);
        };
        let mut spec = parse_stored(stored)?;
        spec.enabled = enabled;
        // A stored rule was checked when saved; its trigger may be gone since, which must not
        // keep it from being disabled.
        let rule = attune_rules::compile(spec)?;
        let timer = self.catalog.current().check_rule_trigger(rule.trigger(), rule.trigger_params()).ok().flatten();
        self.write(CheckedRule { rule, timer }, false).await.map(Some)
    }

    /// Installs the pack rules (`rules/*.yaml`) that are not stored yet; rules changed through
    /// the API since are left as they are. Hosts starting together install each rule once.
    pub async fn install_pack_rules(&self, packs: &[Pack]) -> Result<(), RuleChangeError> {
        let stored: HashSet<String> = self.store.rules().await?.into_iter().map(|r| r.rule_ref).collect();
        for rule in packs.iter().flat_map(|p| &p.rules) {
            if stored.contains(&rule.spec.rule_ref) {
                continue;
            }
            let checked = self.check(rule.spec.clone())?;
            let _one = self.writes.lock().await;
            match self.write(checked, true).await {
                Ok(_) => tracing::info!(rule = %rule.spec.rule_ref, file = %rule.file.display(), "installed pack rule"),
                // Another host installed it a moment ago; its announcement brings it here.
                Err(RuleChangeError::Exists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Brings the active rules (matcher index and timers) in line with the store, which other
    /// hosts sharing it may have changed. Returns the number of rules added, changed or removed.
    pub async fn sync(&self) -> Result<usize, RuleChangeError> {
        let stored = self.store.rules().await?;
        let mut changed = 0;
        let stored_refs: HashSet<String> = stored.iter().map(|r| r.rule_ref.clone()).collect();
        for row in stored {
            let current = self.pipeline.rule(&row.rule_ref);
            if current.is_some_and(|rule| serde_json::to_value(rule.spec()).ok().as_ref() == Some(&row.spec)) {
                continue;
            }
            self.activate(row).await?;
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
            self.changed.notify_one();
        }
        Ok(changed)
    }

    /// Follows `rule.*` on `bus`, resyncing from the store on each message, until aborted.
    pub fn follow(self: &Arc<Self>, bus: &dyn Bus) -> JoinHandle<()> {
        let mut deliveries = bus.listen("rule.*");
        let rules = self.clone();
        tokio::spawn(async move {
            while deliveries.recv().await.is_some() {
                // A burst (a pack installing its rules) becomes one resync.
                while deliveries.try_recv().is_ok() {}
                match rules.sync().await {
                    Ok(0) => {}
                    Ok(changed) => tracing::info!(changed, "rules changed by another host applied"),
                    Err(e) => tracing::warn!("cannot resync rules from the store: {e}"),
                }
            }
        })
    }

    /// Compiles a stored rule and makes it active: in the matcher index, and for an enabled timer
    /// rule as a running timer (whose stored state decides what was missed meanwhile, by its
    /// misfire policy); a disabled timer rule's timer is stopped.
    async fn activate(&self, stored: StoredRule) -> Result<(), RuleChangeError> {
        let rule = Arc::new(attune_rules::compile(parse_stored(stored)?)?);
        // In the matcher before its timer runs: an instant due at once (a fire missed while the
        // host was down) must find its rule, or its event would be stored without its action.
        self.pipeline.upsert_rule(rule.clone());
        if is_timer_trigger(rule.trigger()) {
            if rule.enabled() {
                let params = Value::Object(rule.trigger_params().clone());
                let timer = TimerSpec::parse(rule.trigger(), &params).map_err(|e| RuleChangeError::Stored {
                    rule_ref: rule.rule_ref().into(),
                    message: e.to_string(),
                })?;
                self.timers.upsert(rule.rule_ref(), timer).await?;
            } else {
                self.timers.remove(rule.rule_ref()).await?;
            }
        }
        Ok(())
    }
}

/// The message announcing a rule change (`rule.*`) on the bus. It is stored with the change
/// itself, in the outbox, so other hosts and executors hear of it even if the broker is down.
fn announcement(routing_key: &str, rule_ref: &str, spec: Option<&Value>) -> attune_bus::Message {
    let at = crate::store::now_micros();
    let body = serde_json::json!({"rule": rule_ref, "change": routing_key, "spec": spec, "at": at});
    crate::pipeline::announcement(routing_key, rule_ref, at, body)
}

fn parse_stored(stored: StoredRule) -> Result<RuleSpec, RuleChangeError> {
    RuleSpec::from_json(stored.spec)
        .map_err(|e| RuleChangeError::Stored { rule_ref: stored.rule_ref.clone(), message: e.to_string() })
}
