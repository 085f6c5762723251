//! The command line.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// A simulation of the TrueNAS middleware API for tests, demos and benchmarks. Serves each
/// simulated system on its own 127.0.0.1 port, prints one JSON ready line on stdout, and runs
/// until SIGTERM or SIGINT.
#[derive(Debug, Parser)]
#[command(name = "truenas-double", version)]
#[command(group(ArgGroup::new("systems").required(true).args(["config", "generate"])))]
pub struct Cli {
    /// JSON file describing the systems.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Make N systems (nas1 .. nasN) with one full admin each, instead of reading a file.
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,

    /// With --generate: latency added before every reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, requires = "generate")]
    pub latency_ms: u64,

    /// With --generate: share of systems that start as a blackhole.
    #[arg(long, value_name = "PERCENT", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=100), requires = "generate")]
    pub blackhole_percent: u8,

    /// With --generate: file holding the admin password of every system (first line).
    /// Without it, password logins fail and keys come from the control API.
    #[arg(long, value_name = "FILE", requires = "generate")]
    pub password_file: Option<PathBuf>,

    /// With --generate: the simulated TrueNAS version.
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "25.10.1",
        requires = "generate"
    )]
    pub nas_version: String,

    /// With --generate: the admin account's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "truenas_admin",
        requires = "generate"
    )]
    pub admin_user: String,

    /// Where certificates, keys and API keys are kept, and reused on the next start.
    /// Without it, a temporary directory is used and removed at exit.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Port of the control API on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub control_port: u16,
}
