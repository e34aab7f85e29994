//! Per-sensor resource limits: one type, every knob with its default and the reason for it.

use serde::{Deserialize, Serialize};

/// Default largest payload, serialized: a sensor's `max_payload_bytes` unless its manifest says
/// otherwise, and the limit of each payload posted to `POST /api/v1/events`.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Hard limits applied to one sensor. A sensor that exceeds one is stopped with a named reason
/// (`out of fuel`, `memory limit`, `deadline exceeded`, `payload too large`, `too many payloads`)
/// and only that sensor is affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel (roughly: wasm instructions) for one `init` or `poll` call. A Python poll of a few
    /// payloads costs ~0.2 M and runs at ~18 G units/s, so the default allows ~50 ms of pure
    /// computation: generous for a sensor, small enough that a busy loop dies quickly.
    pub fuel: u64,
    /// Cap on all linear memories and tables of the sensor's instance together, in MiB. The
    /// Python runtime needs ~20 MiB to start; JS far less.
    pub memory_mib: u32,
    /// Wall-clock deadline for one call, including time spent in host calls such as HTTP.
    pub timeout_ms: u64,
    /// Largest serialized JSON payload accepted from the sensor.
    pub max_payload_bytes: usize,
    /// Most payloads accepted from one poll.
    pub max_events_per_poll: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 1_000_000_000,
            memory_mib: 64,
            timeout_ms: 2_000,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_events_per_poll: 1_000,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize) << 20
    }

    /// Every limit must leave the sensor room to do something; zero is always a mistake.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("fuel", self.fuel == 0),
            ("memory_mib", self.memory_mib == 0),
            ("timeout_ms", self.timeout_ms == 0),
            ("max_payload_bytes", self.max_payload_bytes == 0),
            ("max_events_per_poll", self.max_events_per_poll == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((field, _)) => Err(format!("limits.{field} must be greater than 0")),
            None => Ok(()),
        }
    }
}
