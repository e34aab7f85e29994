//! Errors at the crate's boundary.

/// A `trigger_params` problem, naming the field: `trigger_params.timezone: unknown time zone
/// \`Europe/Pariss\``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TimerError {
    /// Dotted path of the offending field, e.g. `trigger_params.expression`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl TimerError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        TimerError { field: field.into(), message: message.into() }
    }

    /// An error in `trigger_params.<key>`.
    pub(crate) fn param(key: &str, message: impl Into<String>) -> Self {
        TimerError::new(format!("trigger_params.{key}"), message)
    }
}

/// Why a [`SchedulerHandle`](crate::SchedulerHandle) call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The scheduler task has stopped (shut down, or all handles dropped).
    #[error("timer scheduler is not running")]
    Stopped,
    /// The timer's stored state could not be read; the scheduler keeps retrying in the background
    /// and starts the timer once it can.
    #[error("timer state of `{rule_ref}` could not be loaded (retrying): {message}")]
    Store {
        /// The rule whose timer is waiting.
        rule_ref: String,
        /// The store's error.
        message: String,
    },
}
