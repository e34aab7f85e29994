//! Native timers (see the crate description).
