//! `attune-host serve`: packs, pipeline, timers, sensors and the HTTP API in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, ApiState, PackControl, SensorControl, SensorInfo, WebhookSecrets};
use crate::app::{App, AppConfig};
use crate::catalog::PackCatalog;
use crate::pack::{Pack, PackError, load_dir};
use crate::sandbox::{EngineSettings, SensorEngine};
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
}

/// Reloads the packs directory into the running host; one reload at a time.
#[derive(Debug)]
struct PackReloader {
    dir: PathBuf,
    app: Arc<App>,
    supervisor: Arc<Supervisor>,
    running: tokio::sync::Mutex<()>,
}

#[async_trait::async_trait]
impl PackControl for PackReloader {
    async fn reload(&self) -> Result<(Vec<Pack>, SensorChanges), PackError> {
        let _one_at_a_time = self.running.lock().await;
        let packs = load_dir(&self.dir)?;
        let failed =
            |e: &dyn std::fmt::Display| PackError { file: self.dir.clone(), field: None, message: e.to_string() };
        let catalog = PackCatalog::new(packs.clone()).map_err(|e| failed(&e))?;
        let sensors = catalog.sensors().cloned().collect();
        self.app.catalog.replace(catalog);
        self.app.rules.install_pack_rules(&packs).await.map_err(|e| failed(&e))?;
        let changes = self.supervisor.replace_specs(sensors);
        self.supervisor.reconcile();
        tracing::info!(packs = packs.len(), ?changes, "packs reloaded");
        Ok((packs, changes))
    }
}

#[async_trait::async_trait]
impl SensorControl for Supervisor {
    fn list(&self) -> Vec<SensorInfo> {
        self.statuses()
    }

    async fn restart(&self, sensor_ref: &str) -> bool {
        Supervisor::restart(self, sensor_ref)
    }
}

/// Runs until `shutdown` resolves, then stops intake, lets in-flight polls finish, stops the
/// timers and flushes the outbox.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let packs = load_dir(&config.packs)?;
    tracing::info!(packs = packs.len(), dir = %config.packs.display(), "packs loaded");
    let app = Arc::new(App::start(&config.app, &packs).await?);
    app.rules.install_pack_rules(&packs).await?;
    if let Some(path) = app.tokens.bootstrap_admin(&config.data_dir).await? {
        tracing::info!(path = %path.display(), "created the first admin token (mode 0600); use it as `Authorization: Bearer <token>`");
    }

    let engine = SensorEngine::new(config.engine.clone())?;
    let sensors = app.catalog.current().sensors().cloned().collect();
    let supervisor = Supervisor::new(app.clone(), engine, sensors, config.supervisor);
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

    let reloader = PackReloader {
        dir: config.packs.clone(),
        app: app.clone(),
        supervisor: supervisor.clone(),
        running: tokio::sync::Mutex::new(()),
    };
    let state = ApiState::new(app.clone())
        .with_webhook_secrets(config.webhook_secrets.clone())
        .with_sensors(supervisor.clone())
        .with_pack_control(Arc::new(reloader));
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "API listening");
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await?;

    tracing::info!("shutting down: in-flight polls finish, then timers stop and the outbox is flushed");
    // Both hold the app: wait until they are gone so the pipeline can be shut down.
    for task in [follow, rule_sync] {
        task.abort();
        let _ = task.await;
    }
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
