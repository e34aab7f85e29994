//! Integration tests against a real RabbitMQ (one test binary: links once).
//!
//! Broker: `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`). An unreachable broker
//! fails every test with a message saying so; nothing is skipped. Every exchange is named
//! `test-<random>` and deleted at the end; queues are exclusive and vanish with their connection.
//!
//! Run: `cargo test -p attune-bus --test amqp -- --nocapture` (prints the throughput figure).

// The whole crate is test code; clippy.toml's test allowance covers only `#[test]` bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use attune_testkit as common;
mod fault;
mod listen;
mod publish;
mod throughput;
