//! The `nasring` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use nasring::cli::{self, args::Cli, exit, prompt::Terminal};

fn main() -> ExitCode {
    nasring::secret::keep_out_of_core_dumps();
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

/// Libraries whose debug and trace lines quote whole WebSocket frames, TLS records or token
/// calls, which carry passwords and API keys: they never log below info, whatever RUST_LOG
/// asks for.
const QUOTE_PAYLOADS: [&str; 7] = [
    "tungstenite",
    "tokio_tungstenite",
    "rustls",
    "tokio_rustls",
    "cryptoki",
    "pcsc",
    "yubikey",
];

/// Quiet unless RUST_LOG says otherwise; logs go to stderr and never carry secrets.
fn init_logging() {
    let Ok(mut filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") else {
        return;
    };
    for target in QUOTE_PAYLOADS {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
