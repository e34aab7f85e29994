//! `attune-host serve`: packs, pipeline, timers, sensors and the HTTP API in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, ApiState, PackControl, SensorControl, SensorInfo, WebhookSecrets};
use crate::app::{App, AppConfig};
use crate::catalog::PackCatalog;
use crate::pack::{Pack, PackError, load_dir_with, require_secrets};
use crate::sandbox::{EngineSettings, SensorEngine};
use crate::secrets::Secrets;
use crate::store::StoreError;
use crate::supervisor::{SensorChanges, Supervisor, SupervisorOptions};

/// How long a shutdown waits for sensors in the middle of a poll; a poll is bounded by its
/// sensor's `timeout_ms` (1 s by default), so this only cuts off a sensor configured longer.
const SENSOR_STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub app: AppConfig,
    pub listen: SocketAddr,
    pub packs: PathBuf,
    pub data_dir: PathBuf,
    pub engine: EngineSettings,
    pub supervisor: SupervisorOptions,
    pub webhook_secrets: WebhookSecrets,
    /// What `{{ secret.NAME }}` in pack and sensor config resolve to; a pack naming one not held
    /// does not load.
    pub secrets: Secrets,
    /// What the packs' sensors may ask for, checked when packs load and reload.
    pub ceilings: crate::limits::HostCeilings,
}

/// Reloads the packs directory into the running host; one reload at a time.
#[derive(Debug)]
struct PackReloader {
    dir: PathBuf,
    ceilings: crate::limits::HostCeilings,
    secrets: Secrets,
    app: Arc<App>,
    supervisor: Arc<Supervisor>,
    running: tokio::sync::Mutex<()>,
}

/// Routing key of a pack reload asked for on one host, which every other host then does too.
const PACK_RELOAD: &str = "pack.reload";

#[async_trait::async_trait]
impl PackControl for PackReloader {
    /// Reloads here, then announces it, so every host reloads its own copy of the packs.
    async fn reload(&self) -> Result<(Vec<Pack>, SensorChanges), PackError> {
        let reloaded = self.reload_here(true).await?;
        let origin = self.app.membership.host_id();
        let at = crate::store::now_micros();
        let announcement =
            crate::pipeline::announcement(PACK_RELOAD, origin, at, serde_json::json!({"origin": origin}));
        if let Err(e) = self.app.pipeline.announce(announcement).await {
            tracing::warn!("packs reloaded here, but the other hosts could not be told: {e}");
        }
        Ok(reloaded)
    }
}

impl PackReloader {
    /// Loads the packs directory again and applies it here; with `register`, this host's copies
    /// become the ones every host must hold to run their sensors.
    async fn reload_here(&self, register: bool) -> Result<(Vec<Pack>, SensorChanges), PackError> {
        let _one_at_a_time = self.running.lock().await;
        let packs = load_dir_with(&self.dir, &self.ceilings)?;
        require_secrets(&packs, &self.secrets)?;
        let failed =
            |e: &dyn std::fmt::Display| PackError { file: self.dir.clone(), field: None, message: e.to_string() };
        let catalog = PackCatalog::new(packs.clone()).map_err(|e| failed(&e))?;
        let sensors = catalog.sensors().cloned().collect();
        self.app.catalog.replace(catalog);
        self.app.rules.install_pack_rules(&packs).await.map_err(|e| failed(&e))?;
        self.app.membership.set_packs(crate::app::pack_fingerprints(&packs), register);
        let changes = self.supervisor.replace_specs(sensors);
        self.supervisor.reconcile();
        tracing::info!(packs = packs.len(), ?changes, "packs reloaded");
        Ok((packs, changes))
    }

    /// Reloads when another host announces a reload (`pack.reload`), until aborted.
    fn follow(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut deliveries = self.app.bus.listen(PACK_RELOAD);
        tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                let attune_bus::Delivery::Message(message) = delivery else { continue };
                if message.body.to_value()["origin"].as_str() == Some(self.app.membership.host_id()) {
                    continue;
                }
                if let Err(e) = self.reload_here(false).await {
                    tracing::error!("another host reloaded its packs; reloading this host's failed: {e}");
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl SensorControl for Supervisor {
    async fn list(&self) -> Result<Vec<SensorInfo>, StoreError> {
        self.statuses().await
    }

    async fn restart(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>> {
        Supervisor::restart(self, sensor_ref).await
    }

    async fn reset_state(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>> {
        Supervisor::reset_state(self, sensor_ref).await
    }
}

/// Runs until `shutdown` resolves, then stops intake, lets in-flight polls finish, stops the
/// timers and flushes the outbox.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let packs = load_dir_with(&config.packs, &config.ceilings)?;
    require_secrets(&packs, &config.secrets)?;
    tracing::info!(packs = packs.len(), dir = %config.packs.display(), "packs loaded");
    let app_config = AppConfig { listen: config.listen.to_string(), ..config.app.clone() };
    let app = Arc::new(App::start(&app_config, &packs).await?);
    app.rules.install_pack_rules(&packs).await?;
    if let Some(path) = app.tokens.bootstrap_admin(&config.data_dir).await? {
        tracing::info!(path = %path.display(), "created the first admin token (mode 0600); use it as `Authorization: Bearer <token>`");
    }

    let engine = SensorEngine::new(config.engine.clone())?;
    let sensors = app.catalog.current().sensors().cloned().collect();
    let supervisor = Supervisor::with_secrets(app.clone(), engine, sensors, config.supervisor, config.secrets.clone());
    supervisor.reconcile();
    let rule_sync = app.rules.follow(app.bus.as_ref());
    let follow = tokio::spawn({
        let (rules_changed, supervisor) = (app.rules.changed(), supervisor.clone());
        async move {
            loop {
                rules_changed.notified().await;
                supervisor.reconcile();
            }
        }
    });

    let restarts = supervisor.follow(app.bus.as_ref());
    let reloader = Arc::new(PackReloader {
        dir: config.packs.clone(),
        ceilings: config.ceilings,
        secrets: config.secrets.clone(),
        app: app.clone(),
        supervisor: supervisor.clone(),
        running: tokio::sync::Mutex::new(()),
    });
    let reloads = reloader.clone().follow();
    let state = ApiState::new(app.clone())
        .with_webhook_secrets(config.webhook_secrets.clone())
        .with_sensors(supervisor.clone())
        .with_pack_control(reloader);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "API listening");
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await?;

    tracing::info!("shutting down: in-flight polls finish, then timers stop and the outbox is flushed");
    // Both hold the app: wait until they are gone so the pipeline can be shut down.
    for task in [follow, rule_sync, restarts, reloads] {
        task.abort();
        let _ = task.await;
    }
    // Gives everything up first, so other hosts take over while the polls in flight end (their
    // writes are refused by the fence from now on).
    app.leave().await;
    supervisor.stop_all(SENSOR_STOP_GRACE).await;
    drop(supervisor);
    match Arc::try_unwrap(app) {
        Ok(app) => {
            let stats = app.shutdown().await;
            tracing::info!(published = stats.published, "stopped");
        }
        Err(_) => tracing::warn!("the pipeline is still in use; the outbox relay was not flushed"),
    }
    Ok(())
}
