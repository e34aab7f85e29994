//! A sensor's view of its key/value state during one call. Writes are held as a pending delta
//! and handed to the caller only when the call succeeds, so the caller can commit them together
//! with that poll's payloads: a cursor never runs ahead of what was stored.

use std::collections::BTreeMap;

/// Key -> new value, or `None` for a deletion.
pub type StateDelta = BTreeMap<String, Option<String>>;

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_KEYS: usize = 1_000;

#[derive(Debug, Default)]
pub struct StateView {
    committed: BTreeMap<String, String>,
    pending: StateDelta,
}

impl StateView {
    pub fn new(committed: BTreeMap<String, String>) -> Self {
        Self { committed, pending: StateDelta::new() }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        match self.pending.get(key) {
            Some(value) => value.clone(),
            None => self.committed.get(key).cloned(),
        }
    }

    pub fn set(&mut self, key: String, value: String) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!("state key must be 1 to {MAX_KEY_BYTES} bytes"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("state value for `{key}` is {} bytes (limit {MAX_VALUE_BYTES})", value.len()));
        }
        if self.get(&key).is_none() && self.keys().len() >= MAX_KEYS {
            return Err(format!("state is full ({MAX_KEYS} keys)"));
        }
        self.pending.insert(key, Some(value));
        Ok(())
    }

    pub fn delete(&mut self, key: String) {
        self.pending.insert(key, None);
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.committed.keys().filter(|k| !self.pending.contains_key(*k)).cloned().collect();
        keys.extend(self.pending.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.clone()));
        keys.sort();
        keys
    }

    /// Applies the pending writes to the committed view and returns them for persisting.
    pub fn take_delta(&mut self) -> StateDelta {
        let delta = std::mem::take(&mut self.pending);
        apply_delta(&mut self.committed, &delta);
        delta
    }

    /// Forgets the pending writes of a failed call.
    pub fn discard_delta(&mut self) {
        self.pending.clear();
    }
}

pub fn apply_delta(state: &mut BTreeMap<String, String>, delta: &StateDelta) {
    for (key, value) in delta {
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writes_shadow_committed_until_taken() {
        let mut view = StateView::new(BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));
        view.set("a".into(), "10".into()).unwrap();
        view.delete("b".into());
        view.set("c".into(), "3".into()).unwrap();
        assert_eq!(view.get("a").as_deref(), Some("10"));
        assert_eq!(view.get("b"), None);
        assert_eq!(view.keys(), vec!["a", "c"]);
        view.discard_delta();
        assert_eq!(view.get("b").as_deref(), Some("2"));
        view.set("a".into(), "11".into()).unwrap();
        let delta = view.take_delta();
        assert_eq!(delta.len(), 1);
        assert_eq!(view.get("a").as_deref(), Some("11"));
    }

    #[test]
    fn oversized_values_are_refused() {
        let mut view = StateView::default();
        assert!(view.set("k".into(), "x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(view.set(String::new(), "x".into()).is_err());
    }
}
