//! Message bus (see the crate description).
