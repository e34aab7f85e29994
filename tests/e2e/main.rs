//! End-to-end tests: real compiled Python and JS components (built once by `make components`,
//! compiled once into the shared artifact cache), real HTTP servers, real files, and the real
//! `attune-host` binary. One test binary, because linking is slow on two cores.

// Tests state their expectations with unwrap/expect; a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod author_host;
mod bounds;
mod cli;
mod cluster;
mod contract;
mod contract_api;
mod docs;
mod faults;
mod host;
mod hosts;
mod instances;
mod limits;
mod namespaces;
mod parity;
mod pipeline;
mod policy;
mod recording;
mod replays;
mod serve;
mod service;
mod sources;
mod store;
mod supervisor;
mod support;
mod timers;
mod tutorial;
