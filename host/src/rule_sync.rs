//! Keeps this host's rules in step with the store when other hosts sharing it change them.
//!
//! Every rule change is announced on the bus (`rule.*`, see [`App::put_rule`]). A host hearing
//! one re-reads the rules from the store, which stays the source of truth: the message only
//! says "look again", so an old or repeated message cannot undo a newer change. After each
//! (re)connect of the listener the host re-reads everything, since messages may have been
//! missed meanwhile. With the in-process bus this hears only the host's own changes, which are
//! already applied, so the resync finds nothing to do.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::app::App;

/// Follows `rule.*` on the bus until aborted.
pub fn follow(app: Arc<App>) -> JoinHandle<()> {
    let mut deliveries = app.bus.listen("rule.*");
    tokio::spawn(async move {
        while deliveries.recv().await.is_some() {
            // A burst (a pack installing its rules) becomes one resync.
            while deliveries.try_recv().is_ok() {}
            match app.sync_rules().await {
                Ok(0) => {}
                Ok(changed) => tracing::info!(changed, "rules changed by another host applied"),
                Err(e) => tracing::warn!("cannot resync rules from the store: {e}"),
            }
        }
    })
}
