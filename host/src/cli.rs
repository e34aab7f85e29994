//! The `attune-host` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::capabilities::{AllowedHosts, GrantedPaths};
use crate::catalog::PackCatalog;
use crate::config::{CeilingArgs, ServeArgs};
use crate::limits::HostCeilings;
use crate::pack::{Pack, load_sensor_manifest_in_pack};
use crate::pipeline::Rejected;
use crate::recording::{RECORDING_FILE, Recorder, Recording, Replayed, StepKind, replay};
use crate::sandbox::SensorSpec;
use crate::sandbox::{
    EngineSettings, Grants, InstanceFeed, SensorEngine, SensorFailure, SensorInstance, TriggerInstance,
};
use crate::sandbox::{Redactions, SensorPayload};
use crate::secrets::Secrets;
use crate::state_file::StateFile;
use crate::store::Store;
use crate::watch::Watch;

/// Exit code for a sensor that failed while running, or a command that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for input that could not be used at all (bad file, bad manifest, bad flag).
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "attune-host", version, about = "Runs Attune event sensors as sandboxed WebAssembly components")]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ATTUNE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with sensors.
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Work with rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Apply pending database migrations.
    Migrate(DatabaseArgs),
    /// Work with native timers.
    #[command(subcommand)]
    Timer(TimerCommand),
    /// Run the service: packs, sensors, timers, the event pipeline and the HTTP API.
    Serve(Box<ServeArgs>),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work with packs.
    #[command(subcommand)]
    Pack(PackCommand),
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Check a pack (or each pack in a packs directory) as `serve` would, and load each
    /// sensor's code without running `init` or `poll`: manifests, `config` against
    /// `config_schema`, rule triggers (core ones and those of the packs around) and their
    /// `trigger_params` against `param_schema`, syntax errors, a missing `poll`, imports the
    /// runtime lacks. Every error is printed, naming the file and the field; exit 2 when any.
    /// Sensor limits and poll intervals are held to the ceilings `serve` would apply, from the
    /// same flags, `ATTUNE_*` variables and config file; each `{{ secret.NAME }}` must be set
    /// (`ATTUNE_SECRET_<NAME>`, or the config file's `secrets:`), as `serve` requires, though its
    /// value is not used.
    Validate {
        /// A pack directory (with a pack.yaml), or a directory of packs.
        dir: PathBuf,
        /// The `serve` config file whose ceilings (`max_*`, `min_poll_interval`) and `secrets:`
        /// apply (a secret only has to be set; its value is not used); its other settings are
        /// not used here.
        #[arg(long, env = "ATTUNE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        ceilings: CeilingArgs,
        /// Compiled-artifact cache directory.
        #[arg(long, env = "ATTUNE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Directory holding the shared language runtimes (python.wasm, javascript.wasm).
        #[arg(long, env = "ATTUNE_RUNTIMES_DIR")]
        runtimes_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// What the token may do: `readonly` reads, `admin` everything, `sensor` only
        /// `POST /events` for its `--trigger`s.
        #[arg(long)]
        scope: crate::auth::Scope,
        /// A name for the token, shown by `token list`.
        #[arg(long, default_value = "cli")]
        name: String,
        /// For `sensor` tokens: a trigger it may post events for (repeatable).
        #[arg(long = "trigger")]
        triggers: Vec<String>,
        /// Expiry: RFC 3339, or a duration such as `90d`.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TimerCommand {
    /// Print the next planned instants of an interval, cron or one-shot timer, one RFC 3339 line
    /// each, in the timer's time zone.
    Preview {
        /// The rule's `trigger_params` as JSON, e.g. '{"expression": "0 9 * * 1-5", "timezone": "Europe/Paris"}'.
        trigger_params: String,
        /// Start after this instant (RFC 3339; default now).
        #[arg(long)]
        after: Option<String>,
        /// How many instants to print.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Evaluate a rule against a payload and explain every condition. Exit 0 when it matches,
    /// 1 when it does not, 2 on a bad rule or payload.
    Test {
        /// The rule (YAML or JSON).
        rule: PathBuf,
        /// The payload (JSON).
        payload: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` or `postgres://..`.
    #[arg(long, env = "ATTUNE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// The embedded default store.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/attune.db";

#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// Run one sensor alone: one JSON payload per line on stdout, diagnostics on stderr. The
    /// `{{ secret.NAME }}` of its config come from `ATTUNE_SECRET_<NAME>`, else the `secrets:` of
    /// the settings file `ATTUNE_CONFIG` names, as for `serve`.
    Run(Box<RunArgs>),
    /// Replay recordings made with `sensor run --record` into the sensor's current code, in the
    /// real sandbox; fails on the first difference in host calls, state writes or payloads.
    Test(TestArgs),
    /// A sensor's state store, in the database `serve` uses.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the sensor's stored state as one JSON line: `{"sensor": REF, "state": {KEY: VALUE}}`.
    Show {
        /// The sensor's ref (`pack.name`).
        sensor: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Delete every key of the sensor's stored state. A `serve` running the sensor on this
    /// database restarts it from the empty state once its outbox relay publishes the reset
    /// (about a second).
    Reset {
        /// The sensor's ref (`pack.name`).
        sensor: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Recording directories (each holding a recording.json), or directories whose
    /// subdirectories are recordings.
    #[arg(required = true)]
    pub recordings: Vec<PathBuf>,
    /// Compiled-artifact cache directory.
    #[arg(long, env = "ATTUNE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Directory holding the shared language runtimes (python.wasm, javascript.wasm).
    #[arg(long, env = "ATTUNE_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// A pack directory, a sensor .yaml, or a .py, .js or .wasm file.
    pub target: PathBuf,
    /// Sensor config as a JSON object, merged over the manifest's `config`.
    #[arg(long)]
    pub config: Option<String>,
    /// Number of polls; 0 polls until interrupted.
    #[arg(long, default_value_t = 1)]
    pub polls: u64,
    /// Milliseconds between polls (default: the manifest's poll_interval, 1 s for bare files).
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Which sensor of a pack with several.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Fuel (wasm instructions, roughly) each call may burn (default: the manifest's
    /// `limits.fuel`, else 1000000000).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory the sensor may hold, in MiB (default: the manifest's `limits.memory_mib`, else 64).
    #[arg(long)]
    pub memory_mib: Option<u32>,
    /// Wall-clock deadline of each call, in milliseconds (default: the manifest's
    /// `limits.timeout_ms`, else 2000).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Allow HTTP to this host (repeatable), in addition to the manifest's.
    #[arg(long = "allow-http", value_name = "HOST")]
    pub allow_http: Vec<String>,
    /// Grant read-only access to this directory (repeatable), in addition to the manifest's.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,
    /// Where the sensor's state store lives (default: data/sensor-state/<sensor ref>.json).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Print `{"trigger": .., "payload": ..}` per line instead of the bare payload (and
    /// `"rule"` when the payload is for one rule instance).
    #[arg(long)]
    pub envelope: bool,
    /// A trigger instance the sensor serves, as `trigger_params` JSON checked against the
    /// trigger's `param_schema` (repeatable; named `local.instance_1`, ... on the sensor's first
    /// trigger). Without it the sensor serves the enabled rules its pack ships for its triggers.
    #[arg(long = "instance", value_name = "JSON")]
    pub instances: Vec<String>,
    /// Record every host call of the run (HTTP, clock, state, files, instances, log) and the
    /// payloads into DIR/recording.json, for `sensor test DIR`.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Run again whenever a file of the target (its pack directory, or the file) changes.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: a shell command to run before each run, e.g. `npm run build` for a built
    /// component; a failing build is reported and the run waits for the next change.
    #[arg(long, value_name = "COMMAND", requires = "watch")]
    pub build: Option<String>,
    /// Compiled-artifact cache directory.
    #[arg(long, env = "ATTUNE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Directory holding the shared language runtimes (python.wasm, javascript.wasm).
    #[arg(long, env = "ATTUNE_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,
}

/// A failure reported on stderr with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    fn bad_input(message: impl ToString) -> Self {
        Self { code: EXIT_BAD_INPUT, message: message.to_string() }
    }
}

pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Sensor(SensorCommand::Run(args)) if args.watch => sensor_watch(*args).await,
        Command::Sensor(SensorCommand::Run(args)) => sensor_run(*args).await,
        Command::Sensor(SensorCommand::Test(args)) => sensor_test(args).await,
        Command::Sensor(SensorCommand::State(command)) => sensor_state(command).await,
        Command::Rule(RuleCommand::Test { rule, payload }) => return rule_test(&rule, &payload),
        Command::Migrate(args) => migrate(&args.database_url).await,
        Command::Timer(TimerCommand::Preview { trigger_params, after, count }) => {
            timer_preview(&trigger_params, after.as_deref(), count)
        }
        Command::Serve(args) => serve(args.print_config, *args).await,
        Command::Token(command) => token(command).await,
        Command::Pack(PackCommand::Validate { dir, config, ceilings, cache_dir, runtimes_dir }) => {
            let settings = crate::config::resolve_ceilings(config.as_deref(), &ceilings)
                .and_then(|ceilings| Ok((ceilings, crate::config::resolve_secrets(config.as_deref())?)));
            match settings {
                Ok((ceilings, secrets)) => {
                    return pack_validate(&dir, &ceilings, &secrets, engine_settings(cache_dir, runtimes_dir)).await;
                }
                Err(e) => Err(CliError::bad_input(e)),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Resolves what `sensor run` should run, with command-line overrides applied.
pub fn resolve_target(args: &RunArgs) -> Result<SensorSpec, CliError> {
    resolve_target_with_triggers(args).map(|(spec, _)| spec)
}

/// [`resolve_target`], with the catalog of the sensor's pack (only the core triggers for a bare
/// file): the triggers whose `payload_schema` its payloads must match, and the pack's rules.
pub fn resolve_target_with_triggers(args: &RunArgs) -> Result<(SensorSpec, PackCatalog), CliError> {
    let target = &args.target;
    let (mut spec, pack) = if target.is_dir() {
        let pack = Pack::load(target).map_err(CliError::bad_input)?;
        (pick_sensor(&pack, args.sensor.as_deref())?, Some(pack))
    } else if matches!(target.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
        let (pack, spec) = load_sensor_manifest_in_pack(target).map_err(CliError::bad_input)?;
        (spec, Some(pack))
    } else if target.is_file() {
        (SensorSpec::from_file(target).map_err(CliError::bad_input)?, None)
    } else {
        return Err(CliError::bad_input(format!("{}: no such file or directory", target.display())));
    };

    let limits = &mut spec.limits;
    limits.fuel = args.fuel.unwrap_or(limits.fuel);
    limits.memory_mib = args.memory_mib.unwrap_or(limits.memory_mib);
    limits.timeout_ms = args.timeout_ms.unwrap_or(limits.timeout_ms);
    limits.validate().map_err(CliError::bad_input)?;

    let extra_hosts =
        AllowedHosts::parse(&args.allow_http).map_err(|e| CliError::bad_input(format!("--allow-http: {e}")))?;
    let extra_paths = GrantedPaths::resolve(&args.allow_path, Path::new("."))
        .map_err(|e| CliError::bad_input(format!("--allow-path: {e}")))?;
    spec.grants =
        Arc::new(Grants { http: spec.grants.http.with(&extra_hosts), paths: spec.grants.paths.with(&extra_paths) });

    if let Some(config) = &args.config {
        let overrides: Value =
            serde_json::from_str(config).map_err(|e| CliError::bad_input(format!("--config: {e}")))?;
        let Value::Object(overrides) = overrides else {
            return Err(CliError::bad_input("--config: must be a JSON object"));
        };
        if let Value::Object(config) = &mut spec.config {
            config.extend(overrides);
        }
    }
    let catalog = PackCatalog::new(pack.into_iter().collect()).map_err(CliError::bad_input)?;
    Ok((spec, catalog))
}

/// The instances `sensor run` hands the sensor: those given with `--instance`, else the
/// enabled rules of its pack on its triggers.
fn run_instances(args: &RunArgs, spec: &SensorSpec, catalog: &PackCatalog) -> Result<InstanceFeed, CliError> {
    if args.instances.is_empty() {
        let rules = catalog.packs().iter().flat_map(|p| &p.rules).map(|r| &r.spec);
        let instances = rules
            .filter(|r| r.enabled && spec.triggers.contains(&r.trigger))
            .map(|r| TriggerInstance {
                rule: r.rule_ref.clone(),
                trigger: r.trigger.clone(),
                params: Value::Object(r.trigger_params.clone()),
            })
            .collect();
        return Ok(InstanceFeed::new(instances));
    }
    let trigger = spec.triggers.first().ok_or_else(|| {
        CliError::bad_input("--instance: the sensor declares no trigger; run it from its pack or manifest")
    })?;
    let mut instances = Vec::new();
    for (i, text) in args.instances.iter().enumerate() {
        let params = match serde_json::from_str(text) {
            Ok(Value::Object(params)) => params,
            Ok(_) => return Err(CliError::bad_input(format!("--instance {text}: must be a JSON object"))),
            Err(e) => return Err(CliError::bad_input(format!("--instance {text}: {e}"))),
        };
        catalog
            .check_rule_trigger(trigger, &params)
            .map_err(|e| CliError::bad_input(format!("--instance {text}: {e}")))?;
        instances.push(TriggerInstance {
            rule: format!("local.instance_{}", i + 1),
            trigger: trigger.clone(),
            params: Value::Object(params),
        });
    }
    Ok(InstanceFeed::new(instances))
}

fn pick_sensor(pack: &Pack, wanted: Option<&str>) -> Result<SensorSpec, CliError> {
    let refs: Vec<&str> = pack.sensors.iter().map(|s| s.sensor_ref.as_str()).collect();
    let dir = pack.dir.display().to_string();
    match wanted {
        Some(wanted) => pack
            .sensors
            .iter()
            .find(|s| s.sensor_ref == wanted || s.sensor_ref.split_once('.').is_some_and(|(_, name)| name == wanted))
            .cloned()
            .ok_or_else(|| CliError::bad_input(format!("{dir}: no sensor `{wanted}` (sensors: {})", refs.join(", ")))),
        None => match pack.sensors.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(CliError::bad_input(format!("{dir}: the pack has no sensors"))),
            _ => Err(CliError::bad_input(format!(
                "{dir}: several sensors, pick one with --sensor ({})",
                refs.join(", ")
            ))),
        },
    }
}

/// The engine settings from the environment, with the command's directories over them.
fn engine_settings(cache_dir: Option<PathBuf>, runtimes_dir: Option<PathBuf>) -> EngineSettings {
    let mut settings = EngineSettings::from_env();
    settings.cache_dir = cache_dir.unwrap_or(settings.cache_dir);
    settings.runtimes_dir = runtimes_dir.unwrap_or(settings.runtimes_dir);
    settings
}

fn start_engine(settings: EngineSettings) -> Result<Arc<SensorEngine>, CliError> {
    SensorEngine::new(settings).map_err(|e| CliError::bad_input(format!("cannot start the engine: {e:#}")))
}

pub(crate) async fn sensor_run(args: RunArgs) -> Result<(), CliError> {
    // Payloads are checked against their trigger's `payload_schema` as `serve` checks them.
    let (spec, catalog) = resolve_target_with_triggers(&args)?;
    let instances = run_instances(&args, &spec, &catalog)?;
    let spec = Arc::new(spec);
    // Before anything is written: an unset secret is bad input.
    let (resolved, redactions) = with_secrets(&spec, &args.target)?;
    let engine = start_engine(engine_settings(args.cache_dir.clone(), args.runtimes_dir.clone()))?;

    let state_path = args
        .state_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/sensor-state").join(format!("{}.json", spec.sensor_ref)));
    let mut state = StateFile::open(&state_path).map_err(|e| CliError::bad_input(format!("{e:#}")))?;
    let mut recorder = match &args.record {
        Some(dir) => {
            let overrides = args.config.as_deref().map(serde_json::from_str).transpose().ok().flatten();
            Some(
                Recorder::create(dir, &args.target, &spec, overrides, &instances, state.state(), redactions)
                    .map_err(CliError::bad_input)?,
            )
        }
        None => None,
    };
    let tape = recorder.as_ref().map(Recorder::tape);
    let mut record = |call: StepKind, outcome: Result<&[SensorPayload], &CliError>| match recorder.as_mut() {
        Some(recorder) => recorder.step(call, outcome.map_err(|e| e.message.as_str())).map_err(CliError::bad_input),
        None => Ok(()),
    };

    let sensor_ref = spec.sensor_ref.clone();
    let failed = |failure: SensorFailure| sensor_failed(&sensor_ref, failure);
    let started = SensorInstance::start_taped(&engine, resolved, state.state().clone(), instances, tape).await;
    let mut sensor = match started {
        Ok(sensor) => sensor,
        Err(crate::sandbox::StartError::Load(e)) => return Err(CliError::bad_input(e)),
        Err(crate::sandbox::StartError::Failed(failure)) => {
            let error = failed(failure);
            record(StepKind::Start, Err(&error))?;
            return Err(error);
        }
    };
    record(StepKind::Start, Ok(&[]))?;

    let interval = args.interval_ms.map_or(spec.poll_interval, std::time::Duration::from_millis);
    let mut stdout = std::io::stdout().lock();
    let mut done = 0u64;
    loop {
        let output = match sensor.poll().await {
            Ok(output) => output,
            Err(failure) => {
                let error = failed(failure);
                record(StepKind::Poll, Err(&error))?;
                return Err(error);
            }
        };
        record(StepKind::Poll, Ok(&output.payloads))?;
        // A poll with a payload `serve` would refuse prints nothing and commits no state.
        for (index, p) in output.payloads.iter().enumerate() {
            catalog
                .check_payload(&p.trigger, &p.payload)
                .map_err(|mismatch| Rejected::Schema { index, mismatch })
                .map_err(|rejected| CliError { code: EXIT_FAILED, message: format!("{sensor_ref}: {rejected}") })?;
        }
        for p in &output.payloads {
            let line = if args.envelope {
                let mut envelope = serde_json::json!({"trigger": p.trigger, "payload": p.payload});
                if let Some(rule) = &p.rule {
                    envelope["rule"] = rule.clone().into();
                }
                envelope.to_string()
            } else {
                p.payload.to_string()
            };
            writeln!(stdout, "{line}").map_err(CliError::bad_input)?;
        }
        stdout.flush().map_err(CliError::bad_input)?;
        state.commit(&output.state).map_err(|e| CliError::bad_input(format!("{e:#}")))?;
        tracing::debug!(sensor = %spec.sensor_ref, payloads = output.payloads.len(), fuel = output.fuel_used, "poll done");
        done += 1;
        if args.polls != 0 && done >= args.polls {
            if let Some(dir) = &args.record {
                eprintln!("recorded {done} polls into {}", dir.join(RECORDING_FILE).display());
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// `sensor run --watch`: the run again on every change of the target's files (the recording
/// and the state file excepted), after `--build` if given.
async fn sensor_watch(args: RunArgs) -> Result<(), CliError> {
    let root = if args.target.is_dir() {
        args.target.clone()
    } else {
        // A sensor manifest lives in its pack's `sensors/`; a bare file in its own directory.
        let parent = args.target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match parent.file_name() {
            Some(name) if name == "sensors" && parent.parent().is_some_and(|p| p.join("pack.yaml").is_file()) => {
                parent.parent().unwrap_or(parent).to_path_buf()
            }
            _ => parent.to_path_buf(),
        }
    };
    let ignored = args.record.iter().chain(args.state_file.iter()).cloned().collect();
    let watch = Watch { root, ignored, build: args.build.clone() };
    watch
        .run(|| {
            let args = RunArgs { watch: false, build: None, ..args.clone() };
            async move { sensor_run(args).await.map_err(|e| e.message) }
        })
        .await;
    Ok(())
}

/// `sensor test`: every recording given (or found one level down), replayed; a line per
/// recording, and the failures counted.
async fn sensor_test(args: TestArgs) -> Result<(), CliError> {
    let engine = start_engine(engine_settings(args.cache_dir.clone(), args.runtimes_dir.clone()))?;
    let mut dirs = Vec::new();
    for dir in &args.recordings {
        if dir.join(RECORDING_FILE).is_file() {
            dirs.push(dir.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| CliError::bad_input(format!("{}: {e}", dir.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join(RECORDING_FILE).is_file())
            .collect();
        if found.is_empty() {
            return Err(CliError::bad_input(format!(
                "{}: no {RECORDING_FILE} here nor in a subdirectory (make one with `sensor run --record {}`)",
                dir.display(),
                dir.display()
            )));
        }
        found.sort();
        dirs.extend(found);
    }
    let mut failures = 0;
    for dir in &dirs {
        match replay_one(&engine, dir).await {
            Ok(replayed) => println!(
                "ok: {}: {} polls, {} host calls, {} payloads replayed",
                dir.display(),
                replayed.polls,
                replayed.host_calls,
                replayed.payloads
            ),
            Err(e) => {
                failures += 1;
                eprintln!("FAILED: {}: {e}", dir.display());
            }
        }
    }
    match failures {
        0 => Ok(()),
        n => Err(CliError { code: EXIT_FAILED, message: format!("{n} of {} recordings differ", dirs.len()) }),
    }
}

async fn replay_one(engine: &Arc<SensorEngine>, dir: &Path) -> Result<Replayed, String> {
    let recording = Recording::read(dir)?;
    let args = RunArgs {
        target: recording.target_from(dir),
        config: recording.config.as_ref().map(Value::to_string),
        sensor: Some(recording.sensor.clone()),
        ..RunArgs::default()
    };
    let (spec, catalog) = resolve_target_with_triggers(&args).map_err(|e| e.message)?;
    let sensor_ref = spec.sensor_ref.clone();
    let describe = |failure: &SensorFailure| sensor_failed(&sensor_ref, failure.clone()).message;
    replay(engine, Arc::new(spec), &catalog, &recording, describe).await
}

/// What the sensor's instance is given: `spec` with the `{{ secret.NAME }}` of its config
/// resolved from the secrets `serve` would hold (`ATTUNE_SECRET_<NAME>`, the settings file of
/// `ATTUNE_CONFIG`); and, for a recording, each secret used with its reference. The spec printed,
/// recorded or stored keeps the references (and `sensor test` hands them to the sensor as its
/// secrets, so a replay needs none).
fn with_secrets(spec: &SensorSpec, target: &Path) -> Result<(Arc<SensorSpec>, Redactions), CliError> {
    let settings = std::env::var_os("ATTUNE_CONFIG").map(PathBuf::from);
    let secrets = crate::config::resolve_secrets(settings.as_deref()).map_err(CliError::bad_input)?;
    let config =
        secrets.resolve(&spec.config).map_err(|e| CliError::bad_input(format!("{}: {e}", target.display())))?;
    Ok((Arc::new(SensorSpec { config, ..spec.clone() }), secrets.redactions(&spec.config)))
}

/// `<sensor>: <reason>`, with the sensor's traceback below when it has one.
fn sensor_failed(sensor_ref: &str, failure: SensorFailure) -> CliError {
    let mut message = format!("{sensor_ref}: {failure}");
    if let SensorFailure::Sensor { traceback: Some(traceback), .. } = &failure {
        message.push('\n');
        message.push_str(traceback.trim_end());
    }
    CliError { code: EXIT_FAILED, message }
}

fn rule_test(rule: &Path, payload: &Path) -> ExitCode {
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("error: {}: {e}", path.display()));
    let outcome = match (read(rule), read(payload)) {
        (Ok(rule_text), Ok(payload_text)) => {
            attune_rules::rule_test(&rule_text, &rule.display().to_string(), &payload_text)
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if outcome.exit_code == EXIT_BAD_INPUT {
        eprint!("{}", outcome.text);
    } else {
        print!("{}", outcome.text);
    }
    ExitCode::from(outcome.exit_code)
}

async fn migrate(database_url: &str) -> Result<(), CliError> {
    let store =
        crate::store::open(database_url).await.map_err(|e| CliError::bad_input(format!("{database_url}: {e}")))?;
    store.migrate().await.map_err(|e| CliError { code: EXIT_FAILED, message: format!("{database_url}: {e}") })?;
    eprintln!("migrations applied to {database_url}");
    Ok(())
}

fn timer_preview(trigger_params: &str, after: Option<&str>, count: usize) -> Result<(), CliError> {
    let lines = attune_timers::preview_lines(trigger_params, after, count).map_err(CliError::bad_input)?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// A pack directory, or a directory of packs: each is loaded and checked as `serve` would,
/// and each sensor's code is loaded in the sandbox (without `init` or `poll`). Every error is
/// printed as an `error:` line, then their count; packs without any get an `ok` line on stdout.
async fn pack_validate(dir: &Path, ceilings: &HostCeilings, secrets: &Secrets, settings: EngineSettings) -> ExitCode {
    let bad_input = |message: &dyn std::fmt::Display| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let validation = match crate::pack::validate_with(dir, ceilings) {
        Ok(validation) => validation,
        Err(e) => return bad_input(&e),
    };
    if validation.reports.is_empty() {
        return bad_input(&format!("{}: no pack.yaml here nor in any subdirectory", dir.display()));
    }
    if !validation.neighbours.is_empty() {
        let packs: Vec<String> = validation
            .neighbours
            .iter()
            .map(|p| format!("{} ({} triggers)", p.manifest.pack_ref, p.triggers.len()))
            .collect();
        eprintln!("note: rules may also use the triggers of the packs beside it: {}", packs.join(", "));
    }
    let has_sensors = validation.reports.iter().filter_map(|r| r.pack.as_ref()).any(|p| !p.sensors.is_empty());
    let engine = match has_sensors.then(|| start_engine(settings)).transpose() {
        Ok(engine) => engine,
        Err(e) => return bad_input(&e.message),
    };
    let mut failed = 0usize;
    for report in &validation.reports {
        let mut errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        // A secret must be set as `serve` needs it, though its value is not used here.
        errors.extend(report.pack.iter().flat_map(|p| p.unset_secrets(secrets)).map(|e| e.to_string()));
        if let (Some(pack), Some(engine)) = (&report.pack, &engine) {
            for sensor in &pack.sensors {
                if let Err(e) = SensorInstance::check(engine, sensor).await {
                    errors.push(sensor_check_error(sensor, e));
                }
            }
        }
        for error in &errors {
            eprintln!("error: {error}");
        }
        failed += errors.len();
        let Some(pack) = report.pack.as_ref().filter(|_| errors.is_empty()) else { continue };
        println!(
            "{} {}: ok ({} triggers, {} sensors, {} rules)",
            pack.manifest.pack_ref,
            pack.manifest.version,
            pack.triggers.len(),
            pack.sensors.len(),
            pack.rules.len()
        );
    }
    if failed == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("{failed} error{} in {}", if failed == 1 { "" } else { "s" }, dir.display());
    ExitCode::from(EXIT_BAD_INPUT)
}

/// What `serve` would report for a sensor that does not load, naming the file: the load error
/// names the code file; a failure while loading gets it in front.
fn sensor_check_error(sensor: &SensorSpec, error: crate::sandbox::StartError) -> String {
    match error {
        crate::sandbox::StartError::Load(e) => e.to_string(),
        crate::sandbox::StartError::Failed(failure) => {
            format!("{}: {}: {failure}", sensor.code.path().display(), sensor.sensor_ref)
        }
    }
}

async fn serve(print_config: bool, args: ServeArgs) -> Result<(), CliError> {
    let config = crate::config::resolve(args).map_err(CliError::bad_input)?;
    if print_config {
        let text = crate::config::printed(&config).map_err(CliError::bad_input)?;
        print!("{text}");
        return Ok(());
    }
    crate::serve::serve(config, shutdown_signal())
        .await
        .map_err(|e| CliError { code: EXIT_FAILED, message: format!("{e:#}") })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The store at `--database-url`, migrated.
async fn open_store(db: &DatabaseArgs) -> Result<Arc<dyn Store>, CliError> {
    let url = &db.database_url;
    let store = crate::store::open(url).await.map_err(|e| CliError::bad_input(format!("{url}: {e}")))?;
    store.migrate().await.map_err(|e| CliError::bad_input(format!("{url}: {e}")))?;
    Ok(store)
}

async fn token(command: TokenCommand) -> Result<(), CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError { code: EXIT_FAILED, message: e.to_string() };
    let open = async |db: &DatabaseArgs| Ok::<_, CliError>(crate::auth::Tokens::new(open_store(db).await?));
    match command {
        TokenCommand::Create { scope, name, triggers, expires, db } => {
            let tokens = open(&db).await?;
            let expires_at = expires
                .map(|e| crate::auth::parse_expiry(&e, crate::store::now_micros()))
                .transpose()
                .map_err(|e| CliError::bad_input(format!("--expires: {e}")))?;
            let (token, info) = tokens.create(&name, scope, triggers, expires_at).await.map_err(|e| failed(&e))?;
            eprintln!("created token {} ({:?}); it is shown only once:", info.id, info.scope);
            println!("{token}");
        }
        TokenCommand::List { db } => {
            let tokens = open(&db).await?;
            for info in tokens.list().await.map_err(|e| failed(&e))? {
                println!("{}", serde_json::to_string(&info).map_err(|e| failed(&e))?);
            }
        }
        TokenCommand::Revoke { id, db } => {
            let tokens = open(&db).await?;
            if !tokens.revoke(&id).await.map_err(|e| failed(&e))? {
                return Err(CliError::bad_input(format!("no token `{id}`")));
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// `sensor state show|reset`: on the store directly, as `GET` and `DELETE /sensors/{ref}/state`
/// do through a host. A sensor the store knows nothing of (no state, no status) is refused, with
/// the closest ref it knows.
async fn sensor_state(command: StateCommand) -> Result<(), CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError { code: EXIT_FAILED, message: e.to_string() };
    let (StateCommand::Show { sensor, db } | StateCommand::Reset { sensor, db }) = &command;
    let store = open_store(db).await?;
    let stored = store.sensor_state(sensor).await.map_err(|e| failed(&e))?;
    if stored.is_empty() && store.sensor_status(sensor).await.map_err(|e| failed(&e))?.is_none() {
        let statuses = store.sensor_statuses().await.map_err(|e| failed(&e))?;
        let hint = crate::pack::did_you_mean(sensor, statuses.iter().map(|s| s.sensor_ref.as_str()))
            .map(|close| format!("; did you mean `{close}`?"))
            .unwrap_or_default();
        return Err(CliError::bad_input(format!("{}: no sensor `{sensor}` has run here{hint}", db.database_url)));
    }
    match command {
        StateCommand::Show { sensor, .. } => {
            let shown = crate::api::SensorStateOut { sensor, state: stored };
            println!("{}", serde_json::to_string(&shown).map_err(|e| failed(&e))?);
        }
        StateCommand::Reset { sensor, .. } => {
            // A `serve` running the sensor hears of it through the outbox, written in the same
            // commit; with no host live there is nobody to tell (a host starting later reads the
            // cleared state).
            let live = !store.live_hosts().await.map_err(|e| failed(&e))?.is_empty();
            let announcement = live.then(|| crate::supervisor::state_reset_announcement(&sensor, "cli"));
            let keys = stored.len();
            let reset = crate::store::Commit {
                sensor_ref: Some(sensor.clone()),
                state: crate::store::cleared(stored),
                outbox: announcement.into_iter().collect(),
                ..Default::default()
            };
            store.write(&[reset], None).await.map_err(|e| failed(&e))?;
            eprintln!("reset the state of {sensor} ({keys} key{} deleted)", if keys == 1 { "" } else { "s" });
        }
    }
    Ok(())
}
