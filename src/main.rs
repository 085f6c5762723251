//! The `nasring` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use nasring::cli::{self, args::Cli, exit, prompt::Terminal};

fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    match cli::run(cli, &mut Terminal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nasring: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Quiet unless RUST_LOG says otherwise; logs go to stderr and never carry secrets.
fn init_logging() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
