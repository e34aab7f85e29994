//! Rules by trigger, so an event only meets the rules on its own trigger.

use crate::rule::CompiledRule;
use std::collections::HashMap;
use std::sync::Arc;

/// All known rules, and the enabled ones grouped by trigger (each group sorted by rule ref).
///
/// A plain data structure: the host wraps it for concurrency (e.g. `ArcSwap<RuleIndex>` rebuilt
/// on change, or a `RwLock`). `upsert`/`remove` cost O(rules on the trigger); `rules_for` is one
/// hash lookup.
#[derive(Debug, Default, Clone)]
pub struct RuleIndex {
    by_ref: HashMap<String, Arc<CompiledRule>>,
    by_trigger: HashMap<String, Vec<Arc<CompiledRule>>>,
}

impl RuleIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the rule with this ref (its trigger or `enabled` may have changed).
    /// Returns the rule it replaced.
    pub fn upsert(&mut self, rule: Arc<CompiledRule>) -> Option<Arc<CompiledRule>> {
        let previous = self.remove(rule.rule_ref());
        if rule.enabled() {
            let group = self.by_trigger.entry(rule.trigger().to_owned()).or_default();
            let at = group.partition_point(|r| r.rule_ref() < rule.rule_ref());
            group.insert(at, Arc::clone(&rule));
        }
        self.by_ref.insert(rule.rule_ref().to_owned(), rule);
        previous
    }

    /// Removes the rule with this ref; returns it.
    pub fn remove(&mut self, rule_ref: &str) -> Option<Arc<CompiledRule>> {
        let rule = self.by_ref.remove(rule_ref)?;
        if let Some(group) = self.by_trigger.get_mut(rule.trigger()) {
            group.retain(|r| r.rule_ref() != rule_ref);
            if group.is_empty() {
                self.by_trigger.remove(rule.trigger());
            }
        }
        Some(rule)
    }

    /// The enabled rules on `trigger`, sorted by ref; empty when there are none.
    pub fn rules_for(&self, trigger: &str) -> &[Arc<CompiledRule>] {
        self.by_trigger.get(trigger).map_or(&[], Vec::as_slice)
    }

    /// The rule with this ref, enabled or not.
    pub fn get(&self, rule_ref: &str) -> Option<&Arc<CompiledRule>> {
        self.by_ref.get(rule_ref)
    }

    /// Every rule, enabled or not, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledRule>> {
        self.by_ref.values()
    }

    /// Number of rules, enabled or not.
    pub fn len(&self) -> usize {
        self.by_ref.len()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.by_ref.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RuleSpec, compile};
    use serde_json::json;

    fn rule(r: &str, trigger: &str, enabled: bool) -> Arc<CompiledRule> {
        let spec = RuleSpec::from_json(
            json!({"ref": r, "trigger": trigger, "enabled": enabled, "action": {"ref": "core.echo"}}),
        )
        .unwrap();
        Arc::new(compile(spec).unwrap())
    }

    fn refs(index: &RuleIndex, trigger: &str) -> Vec<String> {
        index.rules_for(trigger).iter().map(|r| r.rule_ref().to_owned()).collect()
    }

    #[test]
    fn groups_by_trigger_and_follows_changes() {
        let mut index = RuleIndex::new();
        assert!(index.is_empty() && index.rules_for("p.t").is_empty());
        index.upsert(rule("p.b", "p.t", true));
        index.upsert(rule("p.a", "p.t", true));
        index.upsert(rule("p.c", "p.u", true));
        index.upsert(rule("p.d", "p.t", false));
        assert_eq!(refs(&index, "p.t"), ["p.a", "p.b"]);
        assert_eq!(refs(&index, "p.u"), ["p.c"]);
        assert_eq!(index.len(), 4);
        assert!(index.get("p.d").is_some());

        // Moving a rule to another trigger, disabling and enabling.
        let old = index.upsert(rule("p.a", "p.u", true)).unwrap();
        assert_eq!(old.trigger(), "p.t");
        assert_eq!(refs(&index, "p.t"), ["p.b"]);
        assert_eq!(refs(&index, "p.u"), ["p.a", "p.c"]);
        index.upsert(Arc::new((*rule("p.b", "p.t", true)).clone().with_enabled(false)));
        assert!(index.rules_for("p.t").is_empty());
        index.upsert(rule("p.d", "p.t", true));
        assert_eq!(refs(&index, "p.t"), ["p.d"]);

        assert!(index.remove("p.c").is_some());
        assert!(index.remove("p.c").is_none());
        assert_eq!(refs(&index, "p.u"), ["p.a"]);
        assert_eq!(index.len(), 3);
        assert_eq!(index.iter().count(), 3);
    }
}
