//! A store-wide memory cap. wasmtime's `StoreLimits` caps each linear memory separately; a
//! component holds several memories (the Python runtime has two), so this sums them all.

use wasmtime::ResourceLimiter;

/// Table elements are pointers; this bounds tables to a few MiB whatever the memory cap.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Raised from `memory_growing` so the guest traps at once instead of limping on.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: {requested} bytes requested, limit {limit}")]
pub struct MemoryLimitExceeded {
    pub requested: usize,
    pub limit: usize,
}

#[derive(Debug)]
pub struct SensorLimiter {
    limit: usize,
    memory_bytes: usize,
    /// Set when a growth was refused, so the failure is reported as `memory limit` even when
    /// the guest turns the refusal into an error of its own.
    pub exceeded: bool,
}

impl SensorLimiter {
    pub fn new(limit: usize) -> Self {
        Self { limit, memory_bytes: 0, exceeded: false }
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for SensorLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.memory_bytes.saturating_sub(current) + desired;
        if requested > self.limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded { requested, limit: self.limit }.into());
        }
        self.memory_bytes = requested;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
