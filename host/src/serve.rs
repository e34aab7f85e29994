//! `attune-host serve`: packs, pipeline, timers, sensors and the HTTP API in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use attune_rules::RuleSpec;

use crate::api::{self, ApiState, SensorControl, SensorInfo, WebhookSecrets};
use crate::app::{App, AppConfig};
use crate::pack::{Pack, PackError};
use crate::sandbox::{EngineSettings, SensorEngine};
use crate::supervisor::{Supervisor, SupervisorOptions};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub app: AppConfig,
    pub listen: SocketAddr,
    pub packs: PathBuf,
    pub data_dir: PathBuf,
    pub engine: EngineSettings,
}

/// Every pack under `dir` (each subdirectory with a `pack.yaml`), in name order.
pub fn load_packs(dir: &Path) -> Result<Vec<Pack>, PackError> {
    let read = std::fs::read_dir(dir).map_err(|e| PackError {
        file: dir.to_path_buf(),
        field: None,
        message: e.to_string(),
    })?;
    let mut dirs: Vec<PathBuf> =
        read.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("pack.yaml").is_file()).collect();
    dirs.sort();
    dirs.iter().map(|d| Pack::load(d)).collect()
}

/// Installs each pack's `rules/*.yaml` that is not stored yet; rules changed through the API
/// since are left as they are.
async fn install_pack_rules(app: &App, packs: &[Pack]) -> anyhow::Result<()> {
    let stored: Vec<String> = app.store.rules().await?.into_iter().map(|r| r.rule_ref).collect();
    for pack in packs {
        let Ok(entries) = std::fs::read_dir(pack.dir.join("rules")) else { continue };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files.iter().filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))) {
            let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
            let spec = RuleSpec::from_yaml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if !stored.contains(&spec.rule_ref) {
                app.put_rule(spec).await.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                tracing::info!(rule = %file.display(), "installed pack rule");
            }
        }
    }
    Ok(())
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

/// Runs until `shutdown` resolves, then stops intake, stops the sensors and flushes the outbox.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let packs = load_packs(&config.packs)?;
    tracing::info!(packs = packs.len(), dir = %config.packs.display(), "packs loaded");
    let app = Arc::new(App::start(&config.app, &packs).await?);
    install_pack_rules(&app, &packs).await?;
    if let Some(path) = crate::auth::bootstrap_admin(app.store.as_ref(), &config.data_dir).await? {
        tracing::info!(path = %path.display(), "created the first admin token (mode 0600); use it as `Authorization: Bearer <token>`");
    }

    let engine = SensorEngine::new(config.engine.clone())?;
    let sensors: Vec<_> = packs.iter().flat_map(|p| p.sensors.iter().cloned()).collect();
    let supervisor = Supervisor::new(app.clone(), engine, sensors, SupervisorOptions::default());
    supervisor.reconcile();
    let follow = tokio::spawn({
        let (app, supervisor) = (app.clone(), supervisor.clone());
        async move {
            loop {
                app.rules_changed.notified().await;
                supervisor.reconcile();
            }
        }
    });

    let state = ApiState::new(app.clone())
        .with_packs(&packs)
        .with_webhook_secrets(WebhookSecrets::from_env())
        .with_sensors(supervisor.clone());
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "API listening");
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await?;

    tracing::info!("shutting down: sensors stop, the outbox is flushed");
    follow.abort();
    supervisor.stop_all();
    drop(supervisor);
    match Arc::try_unwrap(app) {
        Ok(app) => {
            app.shutdown().await;
        }
        Err(_) => tracing::warn!("the pipeline is still in use; the outbox relay was not flushed"),
    }
    Ok(())
}
