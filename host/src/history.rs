//! The event history, read side: stored events and enforcements, newest first, paged and
//! filtered, and the first answers recorded for repeatable requests. What `GET /events`,
//! `GET /events/{id}`, `GET /enforcements`, a dry run against a stored event and a replayed
//! request read; the pipeline alone writes them.

use std::sync::Arc;

pub use crate::store::{EnforcementRecord, EventRecord, ListFilter, ReplayRecord};
use crate::store::{Store, StoreError};

/// Reads stored events and enforcements. Cheap to clone (shares the store).
#[derive(Debug, Clone)]
pub struct EventHistory {
    store: Arc<dyn Store>,
}

impl EventHistory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A page of events, newest first (`filter.rule_ref` is ignored).
    pub async fn events(&self, filter: &ListFilter) -> Result<Vec<EventRecord>, StoreError> {
        self.store.events(filter).await
    }

    /// One event by id; `None` when there is none.
    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.store.event(id).await
    }

    /// A page of enforcements, newest first.
    pub async fn enforcements(&self, filter: &ListFilter) -> Result<Vec<EnforcementRecord>, StoreError> {
        self.store.enforcements(filter).await
    }

    /// The first answer recorded for `key` in `scope` (a webhook delivery, an idempotency key).
    pub async fn replay(&self, scope: &str, key: &str) -> Result<Option<ReplayRecord>, StoreError> {
        self.store.replay(scope, key).await
    }
}
