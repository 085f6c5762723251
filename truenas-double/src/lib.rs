//! truenas-double: a simulation of the TrueNAS middleware's JSON-RPC 2.0 WebSocket API, with
//! the legacy socket and REST where the simulated release has them, fault modes, and a control
//! API for tests.
//!
//! The rooms: [`config`] and [`profile`] say what to simulate; [`system`] holds the state of
//! each system; [`api`] implements the methods; [`net`] carries them over TLS, JSON-RPC,
//! `/websocket` and REST; [`control`] lets tests steer it all.

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod keystore;
pub mod net;
pub mod profile;
pub mod system;
pub mod tls;
pub mod totp;

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;

use config::{DoubleConfig, Mode};
use control::Registry;
use system::System;

/// Why the double could not start.
#[derive(Debug)]
pub enum StartError {
    Config(String),
    Setup(String, system::SetupError),
    Bind(String, io::Error),
    StateDir(PathBuf, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(message) => f.write_str(message),
            StartError::Setup(name, e) => write!(f, "system {name}: {e}"),
            StartError::Bind(what, e) => write!(f, "cannot listen for {what} on 127.0.0.1: {e}"),
            StartError::StateDir(path, e) => {
                write!(f, "cannot use the state directory {}: {e}", path.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A running double: its systems and control address.
pub struct Running {
    pub registry: Arc<Registry>,
    pub control: SocketAddr,
}

impl Running {
    /// The ready line: control address, and each system's URLs and certificate.
    pub fn ready_line(&self) -> Value {
        let systems: Vec<Value> = self
            .registry
            .systems
            .iter()
            .map(|s| control::endpoints(s))
            .collect();
        json!({"control": self.control.to_string(), "systems": systems})
    }
}

/// Builds every system, binds every listener and the control API, and returns once all are
/// listening.
pub async fn start(
    config: &DoubleConfig,
    state_dir: &std::path::Path,
    control_port: u16,
) -> Result<Running, StartError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| StartError::StateDir(state_dir.to_path_buf(), e))?;
    let mut systems = Vec::with_capacity(config.systems.len());
    for system_config in &config.systems {
        let dir = state_dir.join(&system_config.name);
        let system = System::new(system_config, &dir)
            .map_err(|e| StartError::Setup(system_config.name.clone(), e))?;
        let system = Arc::new(system);
        net::bring_up(&system)
            .await
            .map_err(|e| StartError::Bind(format!("system {}", system.name), e))?;
        if system.mode().mode == Mode::Offline {
            net::bring_down(&system).await;
        }
        systems.push(system);
    }
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, control_port)))
        .await
        .map_err(|e| StartError::Bind("the control API".into(), e))?;
    let control = listener
        .local_addr()
        .map_err(|e| StartError::Bind("the control API".into(), e))?;
    let registry = Arc::new(Registry::new(systems));
    tokio::spawn(control::serve(listener, registry.clone()));
    Ok(Running { registry, control })
}

/// Prints the ready line on stdout as one line, and flushes it.
pub fn print_ready(running: &Running) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", running.ready_line())?;
    out.flush()
}
