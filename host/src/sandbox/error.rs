//! How a sensor can fail: at load time (`LoadError`) and at run time (`SensorFailure`).

use std::path::PathBuf;

/// The sensor could not be loaded: nothing of it ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a WebAssembly component (no `\\0asm` header)")]
    NotWasm { path: PathBuf },
    #[error("{path}: a core WebAssembly module, not a component; build sensors with the Attune SDK")]
    CoreModule { path: PathBuf },
    #[error("{path}: not an Attune sensor: it does not export `{expected}` (exports: {found})")]
    WrongWorld { path: PathBuf, expected: String, found: String },
    #[error("{path}: cannot be linked: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error("{path}: invalid component: {reason}")]
    Compile { path: PathBuf, reason: String },
    /// The language runtime refused the sensor's source (syntax error, no `poll`, ...).
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    #[error("{path}: the {language} runtime component is missing ({reason}); run `scripts/setup.sh`")]
    RuntimeMissing { path: PathBuf, language: &'static str, reason: String },
}

impl LoadError {
    /// Whether the sensor's code itself is at fault (it will not load on a retry either), as
    /// opposed to a file that could not be read or a missing language runtime.
    pub fn is_code_error(&self) -> bool {
        matches!(
            self,
            Self::NotWasm { .. }
                | Self::CoreModule { .. }
                | Self::WrongWorld { .. }
                | Self::Link { .. }
                | Self::Compile { .. }
                | Self::Source { .. }
        )
    }
}

/// A sensor call (`load`, `init` or `poll`) failed. Only this sensor is affected; after a trap
/// the next call runs on a fresh instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SensorFailure {
    #[error("out of fuel (limit {limit} per call)")]
    OutOfFuel { limit: u64 },
    #[error("memory limit ({limit_mib} MiB)")]
    MemoryLimit { limit_mib: u32 },
    #[error("deadline exceeded ({timeout_ms} ms)")]
    DeadlineExceeded { timeout_ms: u64 },
    #[error("trap: {0}")]
    Trap(String),
    /// The sensor's own code failed: an uncaught exception or a rejected source file.
    #[error("sensor error: {message}")]
    Sensor { message: String, traceback: Option<String> },
    #[error("payload too large: payload {index} is {size} bytes (limit {limit})")]
    PayloadTooLarge { index: usize, size: usize, limit: usize },
    #[error("too many payloads: {count} in one poll (limit {limit})")]
    TooManyPayloads { count: usize, limit: usize },
    #[error("bad payload: payload {index}: {reason}")]
    BadPayload { index: usize, reason: String },
    #[error("undeclared trigger: payload {index} is for `{trigger}`, sensor declares [{declared}]")]
    UndeclaredTrigger { index: usize, trigger: String, declared: String },
}

impl SensorFailure {
    /// A short, bounded label for metrics and status (`out_of_fuel`, `memory_limit`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::Trap(_) => "trap",
            Self::Sensor { .. } => "sensor_error",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::TooManyPayloads { .. } => "too_many_payloads",
            Self::BadPayload { .. } => "bad_payload",
            Self::UndeclaredTrigger { .. } => "undeclared_trigger",
        }
    }

    /// Whether the instance is unusable afterwards and must be replaced.
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            Self::OutOfFuel { .. } | Self::MemoryLimit { .. } | Self::DeadlineExceeded { .. } | Self::Trap(_)
        )
    }
}
