//! Settings of `attune-host serve`, from four layers: defaults < config file < `ATTUNE_*`
//! environment < command-line flags. Clap merges the last two (a flag wins over its variable);
//! this module puts the file under them and the defaults under everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_bus::DEFAULT_EXCHANGE;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::api::WebhookSecrets;
use crate::app::{AppConfig, new_host_id};
use crate::limits::{HostCeilings, Limits};
use crate::sandbox::EngineSettings;
use crate::secrets::Secrets;
use crate::serve::ServeConfig;
use crate::supervisor::SupervisorOptions;

/// The config file (`--config`, `ATTUNE_CONFIG`): YAML, every key optional, unknown keys
/// rejected. Relative paths are relative to the file's directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub amqp_url: Option<String>,
    pub host_id: Option<String>,
    pub amqp_exchange: Option<String>,
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
    pub max_fuel: Option<u64>,
    pub max_memory_mib: Option<u32>,
    pub max_timeout_ms: Option<u64>,
    pub max_payload_bytes: Option<usize>,
    pub max_events_per_poll: Option<usize>,
    /// Seconds.
    pub min_poll_interval: Option<f64>,
    /// Webhook secrets by trigger ref; an `ATTUNE_WEBHOOK_SECRET_<TRIGGER>` variable replaces
    /// the one given here for its trigger.
    pub webhook_secrets: Option<BTreeMap<String, String>>,
    /// Secrets by name, for `{{ secret.NAME }}` in pack and sensor config (see
    /// [`crate::secrets`]); an `ATTUNE_SECRET_<NAME>` variable replaces the one given here.
    pub secrets: Option<BTreeMap<String, String>>,
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

    /// The file at `path`, or no settings at all.
    fn load_or_default(path: Option<&Path>) -> Result<Self, String> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }
}

/// Settings of `serve`. Each comes from its flag, else its `ATTUNE_*` variable, else the config
/// file, else the default shown (see [`crate::config`]).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML file with any of the settings below (keys as the flags, with `_`), and the maps
    /// `webhook_secrets: {TRIGGER: secret}` and `secrets: {NAME: value}` (what `{{ secret.NAME }}`
    /// in pack and sensor config resolves to); unknown keys are an error. Relative paths in it
    /// are relative to the file.
    #[arg(long, env = "ATTUNE_CONFIG")]
    pub config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://..` [default: sqlite://<data dir>/attune.db]
    #[arg(long, env = "ATTUNE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ `amqp://..` [default: the in-process bus]
    #[arg(long, env = "ATTUNE_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// This host's id among the hosts sharing one database: 1 to 64 of `A-Z a-z 0-9 . _ -`
    /// [default: the id in <data dir>/host-id, created there the first time]
    #[arg(long, env = "ATTUNE_HOST_ID")]
    pub host_id: Option<String>,
    /// The RabbitMQ topic exchange events and enforcements are published to [default:
    /// attune.events]
    #[arg(long, env = "ATTUNE_AMQP_EXCHANGE")]
    pub amqp_exchange: Option<String>,
    /// API address [default: 127.0.0.1:8080]
    #[arg(long, env = "ATTUNE_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory of packs, each subdirectory with a pack.yaml [default: sensors]
    #[arg(long, env = "ATTUNE_PACKS")]
    pub packs: Option<PathBuf>,
    /// Where the SQLite file, the host id and the first admin token go [default: data]
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
    /// First backoff after a sensor failure, in milliseconds, doubling after each failure
    /// [default: 1000]
    #[arg(long, env = "ATTUNE_BACKOFF_INITIAL_MS")]
    pub backoff_initial_ms: Option<u64>,
    /// Longest backoff, in milliseconds [default: 60000]
    #[arg(long, env = "ATTUNE_BACKOFF_MAX_MS")]
    pub backoff_max_ms: Option<u64>,
    /// How long events, enforcements and published outbox rows are kept (`7d`, `12h`, .., or
    /// `off`); unpublished outbox rows are kept until published [default: 7d]
    #[arg(long, env = "ATTUNE_RETENTION")]
    pub retention: Option<String>,
    #[command(flatten)]
    pub ceilings: CeilingArgs,
    /// Print the effective settings (as a config file) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// What any sensor may ask for, at most (`max_*`) or at least (`min_poll_interval`): the
/// settings `serve` and `pack validate` share.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// Most a sensor's `limits.fuel` may be, in fuel units [default: 100000000000000]
    #[arg(long, env = "ATTUNE_MAX_FUEL")]
    pub max_fuel: Option<u64>,
    /// Most a sensor's `limits.memory_mib` may be, in MiB [default: 2048]
    #[arg(long, env = "ATTUNE_MAX_MEMORY_MIB")]
    pub max_memory_mib: Option<u32>,
    /// Most a sensor's `limits.timeout_ms` may be, in milliseconds [default: 60000]
    #[arg(long, env = "ATTUNE_MAX_TIMEOUT_MS")]
    pub max_timeout_ms: Option<u64>,
    /// Most a sensor's `limits.max_payload_bytes` may be, in bytes [default: 4194304]
    #[arg(long, env = "ATTUNE_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Most a sensor's `limits.max_events_per_poll` may be [default: 10000]
    #[arg(long, env = "ATTUNE_MAX_EVENTS_PER_POLL")]
    pub max_events_per_poll: Option<usize>,
    /// Shortest `poll_interval` a sensor may have, in seconds (at least 0.001) [default: 0.1]
    #[arg(long, env = "ATTUNE_MIN_POLL_INTERVAL")]
    pub min_poll_interval: Option<f64>,
}

impl CeilingArgs {
    /// Each ceiling from its flag or variable, else `file`, else [`HostCeilings::default`].
    fn resolve(&self, file: &FileConfig) -> Result<HostCeilings, String> {
        let default = HostCeilings::default();
        let ceilings = HostCeilings {
            limits: Limits {
                fuel: self.max_fuel.or(file.max_fuel).unwrap_or(default.limits.fuel),
                memory_mib: self.max_memory_mib.or(file.max_memory_mib).unwrap_or(default.limits.memory_mib),
                timeout_ms: self.max_timeout_ms.or(file.max_timeout_ms).unwrap_or(default.limits.timeout_ms),
                max_payload_bytes: self
                    .max_payload_bytes
                    .or(file.max_payload_bytes)
                    .unwrap_or(default.limits.max_payload_bytes),
                max_events_per_poll: self
                    .max_events_per_poll
                    .or(file.max_events_per_poll)
                    .unwrap_or(default.limits.max_events_per_poll),
            },
            min_poll_interval: self.min_poll_interval.or(file.min_poll_interval).unwrap_or(default.min_poll_interval),
        };
        ceilings.validate()?;
        Ok(ceilings)
    }
}

/// The ceilings `serve` would apply with the same config file, environment and flags (for
/// `pack validate`).
pub fn resolve_ceilings(config: Option<&Path>, args: &CeilingArgs) -> Result<HostCeilings, String> {
    args.resolve(&FileConfig::load_or_default(config)?)
}

/// The secrets `serve` would hold with the same config file and environment (for `pack
/// validate`, which checks that each one a pack names is set, without using its value).
pub fn resolve_secrets(config: Option<&Path>) -> Result<Secrets, String> {
    secrets(&FileConfig::load_or_default(config)?)
}

/// The file's `secrets:`, each replaced by its `ATTUNE_SECRET_<NAME>` variable when set.
fn secrets(file: &FileConfig) -> Result<Secrets, String> {
    let from_file = file.secrets.as_ref().map(Secrets::from_map).transpose()?.unwrap_or_default();
    Ok(from_file.overlaid_with(Secrets::from_env()))
}

/// The effective settings: each from the flag or its variable, else the file, else the default.
pub fn resolve(args: ServeArgs) -> Result<ServeConfig, String> {
    let file = FileConfig::load_or_default(args.config.as_deref())?;
    let ceilings = args.ceilings.resolve(&file)?;
    let secrets = secrets(&file)?;
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
    let host_id = match args.host_id.or(file.host_id) {
        Some(id) => valid_host_id(&id)?,
        None => stable_host_id(&data_dir)?,
    };
    let exchange = amqp_exchange(args.amqp_exchange.or(file.amqp_exchange).unwrap_or_else(|| DEFAULT_EXCHANGE.into()))?;
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
        secrets,
        app: AppConfig {
            amqp_url: args.amqp_url.or(file.amqp_url),
            exchange,
            host_id,
            retention: retention(args.retention.or(file.retention).as_deref().unwrap_or(DEFAULT_RETENTION))?,
            ..AppConfig::new(database_url)
        },
        listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        packs: args.packs.or(file.packs).unwrap_or_else(|| PathBuf::from("sensors")),
        data_dir,
        engine,
        supervisor,
        ceilings,
    })
}

/// What `serve --print-config` prints: [`to_file_config`] as YAML, then the names of the
/// secrets held, as a comment (so the output still reads back as the same settings, and no value
/// is shown).
pub fn printed(config: &ServeConfig) -> Result<String, String> {
    let mut text = serde_yaml_ng::to_string(&to_file_config(config)).map_err(|e| e.to_string())?;
    let names: Vec<&str> = config.secrets.names().collect();
    if !names.is_empty() {
        text.push_str(&format!("# secrets (values never printed): {}\n", names.join(", ")));
    }
    Ok(text)
}

/// The effective settings in the config file's own format (`serve --print-config`), with
/// passwords in URLs masked and webhook and sensor secrets left out.
pub fn to_file_config(config: &ServeConfig) -> FileConfig {
    FileConfig {
        database_url: Some(masked(&config.app.database_url)),
        amqp_url: config.app.amqp_url.as_deref().map(masked),
        host_id: Some(config.app.host_id.clone()),
        amqp_exchange: Some(config.app.exchange.clone()),
        listen: Some(config.listen),
        packs: Some(config.packs.clone()),
        data_dir: Some(config.data_dir.clone()),
        cache_dir: Some(config.engine.cache_dir.clone()),
        runtimes_dir: Some(config.engine.runtimes_dir.clone()),
        quarantine_after: Some(config.supervisor.quarantine_after),
        backoff_initial_ms: Some(config.supervisor.backoff_initial.as_millis() as u64),
        backoff_max_ms: Some(config.supervisor.backoff_max.as_millis() as u64),
        retention: Some(config.app.retention.map_or_else(|| "off".to_string(), |r| format!("{}s", r.as_secs()))),
        max_fuel: Some(config.ceilings.limits.fuel),
        max_memory_mib: Some(config.ceilings.limits.memory_mib),
        max_timeout_ms: Some(config.ceilings.limits.timeout_ms),
        max_payload_bytes: Some(config.ceilings.limits.max_payload_bytes),
        max_events_per_poll: Some(config.ceilings.limits.max_events_per_poll),
        min_poll_interval: Some(config.ceilings.min_poll_interval),
        // Secrets are never printed.
        webhook_secrets: None,
        secrets: None,
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

/// Where a host keeps the id it made itself, under its data dir.
const HOST_ID_FILE: &str = "host-id";

/// 1 to 64 characters of `A-Z a-z 0-9 . _ -`: the id goes unquoted into logs, metrics and
/// the database.
fn valid_host_id(id: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(format!("host_id: `{id}` must be 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_` and `-`"));
    }
    Ok(id.to_string())
}

/// The id in `<data_dir>/host-id`, made and written there the first time, so a host keeps its
/// id across restarts. `serve --print-config` comes here too: it shows the id `serve` will
/// use, which it can only promise once the file exists, so printing may create it.
fn stable_host_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join(HOST_ID_FILE);
    let stored = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => valid_host_id(text.trim()).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("host_id: {}: {e}", path.display())),
    };
    if let Some(id) = stored(&path)? {
        return Ok(id);
    }
    let cannot_create = |e: std::io::Error| format!("host_id: cannot create {}: {e}", path.display());
    std::fs::create_dir_all(data_dir).map_err(cannot_create)?;
    // Written aside and linked into place: the file never holds part of an id, and of two hosts
    // starting at once on one data dir, the second gets the first's id rather than replacing it.
    let id = new_host_id();
    let temp = data_dir.join(format!(".{HOST_ID_FILE}.{}", std::process::id()));
    let linked = std::fs::write(&temp, format!("{id}\n")).and_then(|()| std::fs::hard_link(&temp, &path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            stored(&path)?.ok_or_else(|| format!("host_id: {} vanished as it was created", path.display()))
        }
        Err(e) => Err(cannot_create(e)),
    }
}

/// An AMQP exchange name: 1 to 255 bytes of `A-Z a-z 0-9 . _ : -`, outside the `amq.` names
/// the broker keeps for itself (declaring one is refused).
fn amqp_exchange(name: String) -> Result<String, String> {
    let valid =
        (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !valid {
        return Err(format!(
            "amqp_exchange: `{name}` must be 1 to 255 characters of A-Z, a-z, 0-9, `.`, `_`, `:` and `-`"
        ));
    }
    if name.starts_with("amq.") {
        return Err(format!("amqp_exchange: `{name}`: names starting with `amq.` are reserved by the broker"));
    }
    Ok(name)
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
    use clap::Parser;

    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(masked("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(masked("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(masked("sqlite://data/attune.db"), "sqlite://data/attune.db");
    }

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// `serve` settings from these flags over a data dir of the test's own (and whatever
    /// `ATTUNE_*` variables the test runs with, which these flags win over).
    fn resolved(data_dir: &Path, flags: &[&str]) -> Result<ServeConfig, String> {
        let data_dir = format!("--data-dir={}", data_dir.display());
        let argv = ["serve", data_dir.as_str()].into_iter().chain(flags.iter().copied());
        resolve(Serve::try_parse_from(argv).unwrap().args)
    }

    fn config_file(dir: &Path, text: &str) -> String {
        let file = dir.join("attune.yaml");
        std::fs::write(&file, text).unwrap();
        format!("--config={}", file.display())
    }

    #[test]
    fn the_host_id_is_made_once_and_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("not-yet");
        let first = resolved(&data, &[]).unwrap().app.host_id;
        let kept = std::fs::read_to_string(data.join("host-id")).unwrap();
        assert_eq!(kept.trim(), first);
        assert!(valid_host_id(&first).is_ok(), "{first}");
        assert_eq!(resolved(&data, &[]).unwrap().app.host_id, first, "reused, not made again");
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "no temp file left beside it");

        std::fs::write(data.join("host-id"), "  edge-1.eu_west\n").unwrap();
        assert_eq!(resolved(&data, &[]).unwrap().app.host_id, "edge-1.eu_west", "read back trimmed");
        let file = config_file(dir.path(), "host_id: from-file\n");
        assert_eq!(resolved(&data, &[&file]).unwrap().app.host_id, "from-file", "file over the kept id");
        let flag = resolved(&data, &[&file, "--host-id", "from-flag"]).unwrap();
        assert_eq!(flag.app.host_id, "from-flag", "flag over file");
        assert_eq!(std::fs::read_to_string(data.join("host-id")).unwrap(), "  edge-1.eu_west\n", "left alone");
    }

    #[test]
    fn bad_host_ids_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let longest = "h".repeat(64);
        assert_eq!(resolved(dir.path(), &["--host-id", &longest]).unwrap().app.host_id, longest);
        for bad in ["", "two words", "a/b", "hôte", &"h".repeat(65)] {
            let error = resolved(dir.path(), &[&format!("--host-id={bad}")]).unwrap_err();
            assert!(error.starts_with(&format!("host_id: `{bad}` must be 1 to 64 characters")), "{error}");
        }
        assert!(!dir.path().join("host-id").exists(), "a configured id is not kept");

        std::fs::write(dir.path().join("host-id"), "not an id\n").unwrap();
        let error = resolved(dir.path(), &[]).unwrap_err();
        let file = dir.path().join("host-id").display().to_string();
        assert!(error.starts_with(&format!("{file}: host_id: `not an id`")), "{error}");
    }

    #[test]
    fn the_exchange_defaults_to_attune_events_and_must_be_an_exchange_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolved(dir.path(), &[]).unwrap().app.exchange, DEFAULT_EXCHANGE);
        let file = config_file(dir.path(), "amqp_exchange: team-a:events.v1\n");
        assert_eq!(resolved(dir.path(), &[&file]).unwrap().app.exchange, "team-a:events.v1");
        let longest = "x".repeat(255);
        assert_eq!(resolved(dir.path(), &["--amqp-exchange", &longest]).unwrap().app.exchange, longest);
        for bad in ["", "two words", "a/b", "événements", &"x".repeat(256)] {
            let error = resolved(dir.path(), &[&format!("--amqp-exchange={bad}")]).unwrap_err();
            assert!(error.starts_with(&format!("amqp_exchange: `{bad}` must be 1 to 255 characters")), "{error}");
        }
        let error = resolved(dir.path(), &["--amqp-exchange", "amq.topic"]).unwrap_err();
        assert_eq!(error, "amqp_exchange: `amq.topic`: names starting with `amq.` are reserved by the broker");
    }

    #[test]
    fn ceilings_default_to_the_limits_ceiling_and_are_layered() {
        let dir = tempfile::tempdir().unwrap();
        let config = resolved(dir.path(), &[]).unwrap();
        assert_eq!(config.ceilings.limits, Limits::CEILING);
        assert_eq!(config.ceilings.min_poll_interval, crate::limits::MIN_POLL_INTERVAL_SECONDS);

        let file = config_file(dir.path(), "max_memory_mib: 512\nmax_fuel: 7\nmin_poll_interval: 0.5\n");
        let config = resolved(dir.path(), &[&file, "--max-fuel", "9", "--max-events-per-poll", "3"]).unwrap();
        let expected = Limits { memory_mib: 512, fuel: 9, max_events_per_poll: 3, ..Limits::CEILING };
        assert_eq!(config.ceilings, HostCeilings { limits: expected, min_poll_interval: 0.5 });

        // What --print-config prints reads back as the same settings.
        let printed = serde_yaml_ng::to_string(&to_file_config(&config)).unwrap();
        let again = resolved(dir.path(), &[&config_file(dir.path(), &printed)]).unwrap();
        assert_eq!(again.ceilings, config.ceilings);
        assert_eq!((again.app.host_id, again.app.exchange), (config.app.host_id, config.app.exchange));
    }

    #[test]
    fn secrets_come_from_the_file_and_the_environment_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = config_file(dir.path(), "secrets: {CONFIG_TEST_A: from-file-a, CONFIG_TEST_B: from-file-b}\n");
        let config = resolved(dir.path(), &[&file]).unwrap();
        let names: Vec<&str> = config.secrets.names().collect();
        assert!(names.contains(&"CONFIG_TEST_A") && names.contains(&"CONFIG_TEST_B"), "{names:?}");
        let resolved_value = config.secrets.resolve(&serde_json::json!("{{ secret.CONFIG_TEST_B }}")).unwrap();
        assert_eq!(resolved_value, "from-file-b");
        let printed = printed(&config).unwrap();
        assert!(!printed.contains("from-file"), "{printed}");
        assert!(
            printed.contains("# secrets (values never printed): ") && printed.contains("CONFIG_TEST_A"),
            "{printed}"
        );
        // Read back, the printed settings hold no secret (the names are a comment).
        let again = resolved(dir.path(), &[&config_file(dir.path(), &printed)]).unwrap();
        assert!(!again.secrets.contains("CONFIG_TEST_A"));

        let bad = config_file(dir.path(), "secrets: {not-a-name: x}\n");
        assert!(resolved(dir.path(), &[&bad]).unwrap_err().starts_with("secrets: `not-a-name`"));
    }

    #[test]
    fn bad_ceilings_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        for setting in ["max_fuel", "max_memory_mib", "max_timeout_ms", "max_payload_bytes", "max_events_per_poll"] {
            let flag = format!("--{}=0", setting.replace('_', "-"));
            assert_eq!(resolved(dir.path(), &[&flag]).unwrap_err(), format!("{setting}: must be greater than 0"));
        }
        for bad in ["0.0009", "0", "-1", "inf", "NaN"] {
            let error = resolved(dir.path(), &[&format!("--min-poll-interval={bad}")]).unwrap_err();
            assert!(error.starts_with("min_poll_interval: ") && error.ends_with("of at least 0.001"), "{error}");
        }
        let file = config_file(dir.path(), "min_poll_interval: 0.0001\n");
        assert!(resolved(dir.path(), &[&file]).unwrap_err().starts_with("min_poll_interval: "));
        assert_eq!(resolved(dir.path(), &["--min-poll-interval", "0.001"]).unwrap().ceilings.min_poll_interval, 0.001);
    }

    /// Packs are checked against the configured ceilings, lowered or raised, and the error names
    /// the field and the host's ceiling.
    #[test]
    fn configured_ceilings_decide_which_packs_load() {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("packs");
        let pack = packs.join("big");
        std::fs::create_dir_all(pack.join("triggers")).unwrap();
        std::fs::create_dir_all(pack.join("sensors")).unwrap();
        std::fs::write(pack.join("pack.yaml"), "ref: big\nversion: 1.0.0\n").unwrap();
        std::fs::write(pack.join("triggers/t.yaml"), "ref: t\n").unwrap();
        std::fs::write(pack.join("sensors/s.js"), "export function* poll() {}\n").unwrap();
        let sensor = |extra: &str| {
            let manifest = format!("ref: s\ntriggers: [big.t]\nruntime: javascript\nentry: s.js\n{extra}");
            std::fs::write(pack.join("sensors/s.yaml"), manifest).unwrap();
        };
        let load = |flags: &[&str]| {
            let config = resolved(&dir.path().join("data"), flags).unwrap();
            crate::pack::load_dir_with(&packs, &config.ceilings)
        };

        sensor("poll_interval: 1\nlimits: {memory_mib: 128}\n");
        assert!(load(&[]).is_ok());
        let error = load(&["--max-memory-mib", "64"]).unwrap_err();
        assert_eq!(error.file, pack.join("sensors/s.yaml"));
        assert_eq!(error.field.as_deref(), Some("limits"));
        assert_eq!(error.message, "limits.memory_mib is 128; the host allows at most 64");
        let error = load(&["--min-poll-interval", "5"]).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("poll_interval"));
        assert_eq!(error.message, "1 s is too short; the host polls at most every 5 s");

        sensor("poll_interval: 0.01\nlimits: {memory_mib: 4096}\n");
        let error = load(&[]).unwrap_err();
        assert_eq!(error.message, "0.01 s is too short; the host polls at most every 0.1 s");
        let error = load(&["--min-poll-interval", "0.01"]).unwrap_err();
        assert_eq!(error.message, "limits.memory_mib is 4096; the host allows at most 2048");
        assert!(load(&["--min-poll-interval", "0.01", "--max-memory-mib", "4096"]).is_ok(), "raised ceilings");
    }
}
