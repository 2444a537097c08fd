use anyhow::Context;
use clap::Parser;
use conductor_writer::cli::{self, Cli};
use std::io::IsTerminal;

fn main() {
    let cli = Cli::parse();
    let level = cli.log_level();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(cli::run(cli)));
    if let Err(e) = result {
        eprintln!("conductor-writer: {e:#}");
        std::process::exit(1);
    }
}
