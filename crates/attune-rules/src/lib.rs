//! Rule engine (see the crate description).
