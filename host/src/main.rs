use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use attune_host::cli::{self, Cli, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("ATTUNE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        // Lines logged inside a sensor's task carry `"span": {"name": "sensor", "sensor": ref}`.
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_target(false).init(),
    }
    cli::run(cli).await
}
