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

    /// [`Self::validate_within`] the default ceiling, [`Limits::CEILING`].
    pub fn validate(&self) -> Result<(), String> {
        self.validate_within(&Self::CEILING)
    }

    /// Every limit must leave the sensor room to do something (zero is always a mistake) and
    /// stay under the host's `ceiling`, so no pack can claim the host.
    pub fn validate_within(&self, ceiling: &Limits) -> Result<(), String> {
        let limits = [
            ("fuel", self.fuel, ceiling.fuel),
            ("memory_mib", u64::from(self.memory_mib), u64::from(ceiling.memory_mib)),
            ("timeout_ms", self.timeout_ms, ceiling.timeout_ms),
            ("max_payload_bytes", self.max_payload_bytes as u64, ceiling.max_payload_bytes as u64),
            ("max_events_per_poll", self.max_events_per_poll as u64, ceiling.max_events_per_poll as u64),
        ];
        for (field, value, most) in limits {
            if value == 0 {
                return Err(format!("limits.{field} must be greater than 0"));
            }
            if value > most {
                return Err(format!("limits.{field} is {value}; the host allows at most {most}"));
            }
        }
        Ok(())
    }

    /// The most any sensor may ask for unless the host is configured otherwise
    /// ([`HostCeilings`]): 100 T fuel (more than the 60 s deadline lets a call burn, so the
    /// deadline governs), 2 GiB of memory, 60 s per call, 4 MiB per payload (the webhook and
    /// API limits are lower), 10,000 payloads a poll.
    pub const CEILING: Limits = Limits {
        fuel: 100_000_000_000_000,
        memory_mib: 2_048,
        timeout_ms: 60_000,
        max_payload_bytes: 4 << 20,
        max_events_per_poll: 10_000,
    };
}

/// Shortest `poll_interval` a sensor may have, in seconds, unless the host is configured
/// otherwise: 10 polls a second at most.
pub const MIN_POLL_INTERVAL_SECONDS: f64 = 0.1;

/// What a host lets any sensor ask for: the ceiling of each of its `limits` and the shortest
/// `poll_interval`. `serve` settings `max_fuel`, `max_memory_mib`, `max_timeout_ms`,
/// `max_payload_bytes`, `max_events_per_poll` and `min_poll_interval`; packs are checked
/// against them when they load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostCeilings {
    pub limits: Limits,
    /// Seconds.
    pub min_poll_interval: f64,
}

impl Default for HostCeilings {
    fn default() -> Self {
        Self { limits: Limits::CEILING, min_poll_interval: MIN_POLL_INTERVAL_SECONDS }
    }
}

impl HostCeilings {
    /// The shortest `min_poll_interval` a host may be given: below a millisecond the timer's own
    /// resolution, not the setting, would pace a sensor.
    pub const SHORTEST_POLL_INTERVAL: f64 = 0.001;

    /// Each ceiling must let some sensor run; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let ceilings = [
            ("max_fuel", self.limits.fuel),
            ("max_memory_mib", u64::from(self.limits.memory_mib)),
            ("max_timeout_ms", self.limits.timeout_ms),
            ("max_payload_bytes", self.limits.max_payload_bytes as u64),
            ("max_events_per_poll", self.limits.max_events_per_poll as u64),
        ];
        if let Some((setting, _)) = ceilings.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{setting}: must be greater than 0"));
        }
        let shortest = self.min_poll_interval;
        if !(shortest.is_finite() && shortest >= Self::SHORTEST_POLL_INTERVAL) {
            return Err(format!(
                "min_poll_interval: {shortest} is not a number of seconds of at least {}",
                Self::SHORTEST_POLL_INTERVAL
            ));
        }
        Ok(())
    }

    /// A sensor's `poll_interval`, in seconds: positive and no shorter than the host allows.
    pub fn check_poll_interval(&self, seconds: f64) -> Result<(), String> {
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err("must be a positive number of seconds".into());
        }
        if seconds < self.min_poll_interval {
            return Err(format!("{seconds} s is too short; the host polls at most every {} s", self.min_poll_interval));
        }
        Ok(())
    }
}
