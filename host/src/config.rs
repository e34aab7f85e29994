//! Settings of `attune-host serve`, from four layers: defaults < config file < `ATTUNE_*`
//! environment < command-line flags. Clap merges the last two (a flag wins over its variable);
//! this module puts the file under them and the defaults under everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::api::WebhookSecrets;
use crate::app::AppConfig;
use crate::sandbox::EngineSettings;
use crate::serve::ServeConfig;
use crate::supervisor::SupervisorOptions;

/// The config file (`--config`, `ATTUNE_CONFIG`): YAML, every key optional, unknown keys
/// rejected. Relative paths are relative to the file's directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub amqp_url: Option<String>,
    pub listen: Option<SocketAddr>,
    pub packs: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub runtimes_dir: Option<PathBuf>,
    pub quarantine_after: Option<u32>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    /// How long events, enforcements and published outbox rows are kept: `7d`, `12h`, .. or
    /// `off`.
    pub retention: Option<String>,
    /// Webhook secrets by trigger ref; an `ATTUNE_WEBHOOK_SECRET_<TRIGGER>` variable replaces
    /// the one given here for its trigger.
    pub webhook_secrets: Option<BTreeMap<String, String>>,
}

impl FileConfig {
    /// Reads `path`; the error names the file, and the key and line when one is to blame.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut config: Self = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in [&mut config.packs, &mut config.data_dir, &mut config.cache_dir, &mut config.runtimes_dir] {
            if let Some(dir) = dir.as_mut().filter(|d| d.is_relative()) {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }
}

/// Settings of `serve`. Each comes from its flag, else its `ATTUNE_*` variable, else the config
/// file, else the default shown (see [`crate::config`]).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML file with any of the settings below (keys as the flags, with `_`); unknown keys
    /// are an error. Relative paths in it are relative to the file.
    #[arg(long, env = "ATTUNE_CONFIG")]
    pub config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://..` [default: sqlite://<data dir>/attune.db]
    #[arg(long, env = "ATTUNE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ `amqp://..` [default: the in-process bus]
    #[arg(long, env = "ATTUNE_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// API address [default: 127.0.0.1:8080]
    #[arg(long, env = "ATTUNE_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory of packs, each subdirectory with a pack.yaml [default: sensors]
    #[arg(long, env = "ATTUNE_PACKS")]
    pub packs: Option<PathBuf>,
    /// Where the SQLite file and the first admin token go [default: data]
    #[arg(long, env = "ATTUNE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Compiled-component cache [default: ~/.cache/attune/components]
    #[arg(long, env = "ATTUNE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where python.wasm and javascript.wasm are [default: build/runtimes]
    #[arg(long, env = "ATTUNE_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,
    /// Consecutive failures before a sensor is quarantined [default: 5]
    #[arg(long, env = "ATTUNE_QUARANTINE_AFTER")]
    pub quarantine_after: Option<u32>,
    /// First backoff after a sensor failure, doubling [default: 1000]
    #[arg(long, env = "ATTUNE_BACKOFF_INITIAL_MS")]
    pub backoff_initial_ms: Option<u64>,
    /// Longest backoff [default: 60000]
    #[arg(long, env = "ATTUNE_BACKOFF_MAX_MS")]
    pub backoff_max_ms: Option<u64>,
    /// How long events, enforcements and published outbox rows are kept (`7d`, `12h`, .., or
    /// `off`); unpublished outbox rows are kept until published [default: 7d]
    #[arg(long, env = "ATTUNE_RETENTION")]
    pub retention: Option<String>,
    /// Print the effective settings (as a config file) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The effective settings: each from the flag or its variable, else the file, else the default.
pub fn resolve(args: ServeArgs) -> Result<ServeConfig, String> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
    let database_url = args
        .database_url
        .or(file.database_url)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("attune.db").display()));
    let mut engine = EngineSettings::from_env();
    engine.cache_dir = args.cache_dir.or(file.cache_dir).unwrap_or(engine.cache_dir);
    engine.runtimes_dir = args.runtimes_dir.or(file.runtimes_dir).unwrap_or(engine.runtimes_dir);
    let defaults = SupervisorOptions::default();
    let supervisor = SupervisorOptions {
        quarantine_after: args.quarantine_after.or(file.quarantine_after).unwrap_or(defaults.quarantine_after),
        backoff_initial: args
            .backoff_initial_ms
            .or(file.backoff_initial_ms)
            .map_or(defaults.backoff_initial, Duration::from_millis),
        backoff_max: args.backoff_max_ms.or(file.backoff_max_ms).map_or(defaults.backoff_max, Duration::from_millis),
    };
    if supervisor.quarantine_after == 0 {
        return Err("quarantine_after: must be at least 1".into());
    }
    let mut file_secrets = WebhookSecrets::new();
    for (trigger_ref, secret) in file.webhook_secrets.iter().flatten() {
        file_secrets.insert(trigger_ref, secret.as_bytes());
    }
    Ok(ServeConfig {
        webhook_secrets: file_secrets.overlaid_with(WebhookSecrets::from_env()),
        app: AppConfig {
            amqp_url: args.amqp_url.or(file.amqp_url),
            retention: retention(args.retention.or(file.retention).as_deref().unwrap_or(DEFAULT_RETENTION))?,
            ..AppConfig::new(database_url)
        },
        listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        packs: args.packs.or(file.packs).unwrap_or_else(|| PathBuf::from("sensors")),
        data_dir,
        engine,
        supervisor,
    })
}

/// The effective settings in the config file's own format (`serve --print-config`), with
/// passwords in URLs masked and webhook secrets left out.
pub fn to_file_config(config: &ServeConfig) -> FileConfig {
    FileConfig {
        database_url: Some(masked(&config.app.database_url)),
        amqp_url: config.app.amqp_url.as_deref().map(masked),
        listen: Some(config.listen),
        packs: Some(config.packs.clone()),
        data_dir: Some(config.data_dir.clone()),
        cache_dir: Some(config.engine.cache_dir.clone()),
        runtimes_dir: Some(config.engine.runtimes_dir.clone()),
        quarantine_after: Some(config.supervisor.quarantine_after),
        backoff_initial_ms: Some(config.supervisor.backoff_initial.as_millis() as u64),
        backoff_max_ms: Some(config.supervisor.backoff_max.as_millis() as u64),
        retention: Some(config.app.retention.map_or_else(|| "off".to_string(), |r| format!("{}s", r.as_secs()))),
        // Secrets are never printed.
        webhook_secrets: None,
    }
}

/// Events, enforcements and published outbox rows are kept a week unless configured otherwise.
pub const DEFAULT_RETENTION: &str = "7d";

/// `off`, or a duration such as `7d`.
fn retention(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    crate::duration::parse(text)
        .map(Some)
        .ok_or_else(|| format!("retention: `{text}` is not a duration such as `7d`, `12h` or `90m`, nor `off`"))
}

/// `scheme://user:secret@host..` -> `scheme://user:***@host..`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_string() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(masked("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(masked("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(masked("sqlite://data/attune.db"), "sqlite://data/attune.db");
    }
}
