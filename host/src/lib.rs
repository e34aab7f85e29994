//! Attune sensor host: runs third-party event sensors as sandboxed WebAssembly components and
//! turns what they emit into events.

pub mod api;
pub mod app;
pub mod auth;
pub mod capabilities;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod console;
pub mod duration;
pub mod field;
pub mod history;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod pack;
pub mod pipeline;
pub mod recording;
pub mod rules;
pub mod sandbox;
pub mod secrets;
pub mod serve;
pub mod state_file;
pub mod store;
pub mod supervisor;
pub mod timers;
pub mod watch;
