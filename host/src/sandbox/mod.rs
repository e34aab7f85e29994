//! The sandbox: one wasmtime `Engine` for every sensor, compiled components cached on disk and
//! in memory, and one `Store` per sensor instance with fuel, memory and wall-clock limits.

mod bindings;
mod cache;
mod ctx;
mod error;
mod instance;
mod instances;
mod limiter;
mod spec;
mod state;
mod tape;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, OptLevel};

pub use ctx::Grants;
pub use error::{LoadError, SensorFailure};
pub use instance::{PollOutput, SensorInstance, SensorPayload, StartError};
pub use instances::{InstanceFeed, TriggerInstance};
pub use spec::SensorSpec;
pub use state::{StateDelta, apply_delta};
pub use tape::{HostCall, Redactions, Tape, TapeStep, redact_value};

use bindings::{SourceRuntime, guest, source_loader};
use cache::{ArtifactCache, CacheMiss};
use ctx::SensorCtx;

/// How often the epoch advances; wall-clock deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where compiled artifacts are kept between runs.
    pub cache_dir: PathBuf,
    /// Where the shared language runtimes (`python.wasm`, `javascript.wasm`) are.
    pub runtimes_dir: PathBuf,
    /// A running sensor yields to the async executor after this much fuel, so one looping sensor
    /// cannot starve the others on the same thread. 1 M fuel is ~60 µs of Python.
    pub fuel_yield_interval: u64,
}

impl EngineSettings {
    /// Defaults: `$ATTUNE_CACHE_DIR` or `~/.cache/attune/components`; `$ATTUNE_RUNTIMES_DIR` or
    /// `build/runtimes` next to the working directory or the `attune-host` executable.
    pub fn from_env() -> Self {
        let cache_dir = std::env::var_os("ATTUNE_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            home.join(".cache/attune/components")
        });
        let runtimes_dir =
            std::env::var_os("ATTUNE_RUNTIMES_DIR").map(PathBuf::from).unwrap_or_else(default_runtimes_dir);
        Self { cache_dir, runtimes_dir, fuel_yield_interval: 1_000_000 }
    }
}

/// `build/runtimes` in the working directory, else in the checkout the executable was built in
/// (`<repo>/target/<profile>/attune-host`).
fn default_runtimes_dir() -> PathBuf {
    let local = PathBuf::from("build/runtimes");
    if local.is_dir() {
        return local;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().find(|dir| dir.join("build/runtimes").is_dir()).map(Path::to_path_buf))
        .map_or(local, |repo| repo.join("build/runtimes"))
}

/// What a sensor's code is: source for a shared language runtime, or its own component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorCode {
    Python(PathBuf),
    JavaScript(PathBuf),
    Component(PathBuf),
}

impl SensorCode {
    /// Picks the kind from the file extension: `.py`, `.js`/`.mjs`, `.wasm`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "py" => Some(Self::Python(path.to_path_buf())),
            "js" | "mjs" => Some(Self::JavaScript(path.to_path_buf())),
            "wasm" => Some(Self::Component(path.to_path_buf())),
            _ => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Python(p) | Self::JavaScript(p) | Self::Component(p) => p,
        }
    }
}

/// A component ready to instantiate, shared by every sensor that uses it.
pub(crate) struct Prepared {
    pre: InstancePre<SensorCtx>,
    guest: guest::GuestIndices,
    /// Present for the language runtimes, which load sensor source before `init`.
    loader: Option<source_loader::GuestIndices>,
    /// The component's content hash: the runtime's, in the keys of compiled sources.
    content_hash: String,
}

/// The sandbox runtime. Create one per process and share it (it is cheap to clone the `Arc`).
pub struct SensorEngine {
    engine: Engine,
    linker: Linker<SensorCtx>,
    cache: ArtifactCache,
    settings: EngineSettings,
    http_client: reqwest::Client,
    /// One slot per component path, so concurrent starts of sensors sharing a component wait for
    /// a single compile instead of each running their own.
    prepared: Mutex<HashMap<PathBuf, Arc<OnceCell<Arc<Prepared>>>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for SensorEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorEngine").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl SensorEngine {
    pub fn new(settings: EngineSettings) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Per-call instruction budget; also drives the async yields that keep sensors fair.
        config.consume_fuel(true);
        // Wall-clock deadlines, checked at loop headers and function entries.
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        // The language runtimes import WASI; the context each store gets is locked down
        // (no env, args, preopens or sockets), see `SensorInstance`.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        SourceRuntime::add_to_linker::<_, HasSelf<SensorCtx>>(&mut linker, |ctx| ctx)?;

        let http_client = reqwest::Client::builder()
            // Redirects could lead outside the allow-list; sensors see the 3xx instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("attune-host/", env!("CARGO_PKG_VERSION")))
            .build()?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        let cache = ArtifactCache::new(settings.cache_dir.clone(), &engine);
        Ok(Arc::new(Self { engine, linker, cache, settings, http_client, prepared: Mutex::default(), ticker_stop }))
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The component behind `code`: the sensor's own, or the shared runtime for its language.
    fn component_path(&self, code: &SensorCode) -> (PathBuf, Option<&'static str>) {
        match code {
            SensorCode::Python(_) => (self.settings.runtimes_dir.join("python.wasm"), Some("python")),
            SensorCode::JavaScript(_) => (self.settings.runtimes_dir.join("javascript.wasm"), Some("javascript")),
            SensorCode::Component(path) => (path.clone(), None),
        }
    }

    /// Drops the prepared component of a sensor's own `.wasm` (its file changed), so the next
    /// start loads the new one. Shared language runtimes stay: sources are read at each start.
    pub fn forget(&self, code: &SensorCode) {
        if let SensorCode::Component(path) = code {
            self.prepared.lock().unwrap_or_else(|e| e.into_inner()).remove(path);
        }
    }

    /// Loads the component behind `code` ahead of the first sensor that needs it.
    pub async fn preload(self: &Arc<Self>, code: &SensorCode) -> Result<(), LoadError> {
        self.prepare(code).await.map(drop)
    }

    /// Compiles (or loads from cache) and links the component for `code`. Called once per
    /// component per process; later calls return the shared result.
    pub(crate) async fn prepare(self: &Arc<Self>, code: &SensorCode) -> Result<Arc<Prepared>, LoadError> {
        let (path, runtime) = self.component_path(code);
        let slot = {
            let mut slots = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(path.clone()).or_default().clone()
        };
        slot.get_or_try_init(|| async {
            let this = self.clone();
            let job_path = path.clone();
            let prepared = tokio::task::spawn_blocking(move || this.prepare_blocking(&job_path, runtime))
                .await
                .map_err(|e| LoadError::Compile { path: path.clone(), reason: e.to_string() })??;
            Ok(Arc::new(prepared))
        })
        .await
        .cloned()
    }

    fn prepare_blocking(&self, path: &Path, runtime: Option<&'static str>) -> Result<Prepared, LoadError> {
        let header = read_header(path).map_err(|source| match runtime {
            Some(language) => LoadError::RuntimeMissing { path: path.into(), language, reason: source.to_string() },
            None => LoadError::Read { path: path.into(), source },
        })?;
        check_header(path, &header)?;
        let (component, content_hash) = self.cache.load(&self.engine, path).map_err(|miss| match miss {
            CacheMiss::Read(source) => LoadError::Read { path: path.into(), source },
            CacheMiss::Compile(reason) => LoadError::Compile { path: path.into(), reason },
        })?;
        self.link(path, &component, runtime.is_some(), content_hash)
    }

    fn link(
        &self,
        path: &Path,
        component: &Component,
        is_runtime: bool,
        content_hash: String,
    ) -> Result<Prepared, LoadError> {
        let wrong_world = |expected: &str| {
            let ty = component.component_type();
            let found: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
            let found = if found.is_empty() { "nothing".into() } else { found.join(", ") };
            LoadError::WrongWorld { path: path.into(), expected: expected.into(), found }
        };
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link { path: path.into(), reason: format!("{e:#}") })?;
        let guest = guest::GuestIndices::new(&pre).map_err(|_| wrong_world("attune:sensor/guest@0.2.0"))?;
        let loader = if is_runtime {
            Some(source_loader::GuestIndices::new(&pre).map_err(|_| wrong_world("attune:sensor/source-loader@0.2.0"))?)
        } else {
            None
        };
        Ok(Prepared { pre, guest, loader, content_hash })
    }
}

impl Drop for SensorEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("attune-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("cannot start the epoch ticker; deadlines will not fire: {e}"));
}

fn read_header(path: &Path) -> std::io::Result<[u8; 8]> {
    use std::io::Read;
    let mut header = [0u8; 8];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut header)?;
    if n < header.len() {
        header[n..].fill(0);
    }
    Ok(header)
}

/// Components and core modules share the `\0asm` magic and differ in the layer field.
fn check_header(path: &Path, header: &[u8; 8]) -> Result<(), LoadError> {
    if &header[..4] != b"\0asm" {
        return Err(LoadError::NotWasm { path: path.into() });
    }
    if header[6..8] == [0, 0] {
        return Err(LoadError::CoreModule { path: path.into() });
    }
    Ok(())
}
