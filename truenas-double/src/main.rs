use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use truenas_double::cli::Cli;
use truenas_double::config::{self, DoubleConfig, GenerateOptions};

/// Exit codes: 0 after a signal, 1 when the double cannot start, 2 for usage errors (clap).
const EXIT_START_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => return fail(&message),
    };
    let (state_dir, temporary) = match &cli.state_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("truenas-double-{}", std::process::id())),
            true,
        ),
    };
    let running = match truenas_double::start(&config, &state_dir, cli.control_port).await {
        Ok(running) => running,
        Err(e) => {
            cleanup(&state_dir, temporary);
            return fail(&e.to_string());
        }
    };
    if let Err(e) = truenas_double::print_ready(&running) {
        cleanup(&state_dir, temporary);
        return fail(&format!("cannot write the ready line: {e}"));
    }
    wait_for_signal().await;
    cleanup(&state_dir, temporary);
    ExitCode::SUCCESS
}

fn load_config(cli: &Cli) -> Result<DoubleConfig, String> {
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return DoubleConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()));
    }
    let password = match &cli.password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    let options = GenerateOptions {
        count: cli.generate.unwrap_or(0),
        latency_ms: cli.latency_ms,
        blackhole_percent: cli.blackhole_percent,
        password,
        version: cli.nas_version.clone(),
        admin_user: cli.admin_user.clone(),
    };
    let config = config::generate(&options);
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(format!(
            "{} holds no password on its first line",
            path.display()
        ));
    }
    Ok(line.to_string())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn cleanup(state_dir: &PathBuf, temporary: bool) {
    if temporary {
        let _ = std::fs::remove_dir_all(state_dir);
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("truenas-double: {message}");
    ExitCode::from(EXIT_START_FAILED)
}
