//! A value refused where it stands, shared by the pack loader and the secrets it resolves.

/// A value refused by its schema or its rules: `field` is where (`trigger_params.url`,
/// `config.token`), `message` what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}
