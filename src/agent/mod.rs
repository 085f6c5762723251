//! The agent: a process that holds one open keyring for a bounded time and hands its keys to
//! the same user's commands over a Unix socket.
//!
//! - [`server`]: the agent itself (`nasring agent --serve`), started by `nasring unlock`,
//!   which hands it the master key over a pipe.
//! - [`client`]: starting the agent and asking it for keys.
//! - [`protocol`]: the JSON lines spoken on the socket. No passphrase or PIN is ever in it.
//!
//! The socket lives in `$XDG_RUNTIME_DIR/nasring/` (a folder of mode 0700) and has mode 0600;
//! both must belong to the user, and the agent also checks every peer's uid.
//!
//! This room calls the vault, the token trait and the audit log; the command line calls it.

pub mod client;
mod harden;
pub mod protocol;
pub mod server;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long the agent stays without handing out a key, unless told otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the agent lives at most, unless told otherwise: a working day.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// What can go wrong between a command and the agent. No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "XDG_RUNTIME_DIR is not set, so there is no private folder for the agent's socket.\n\
         Log in through a session that sets it (systemd-logind does), or point it at a folder \
         only you can use; or pass --no-agent."
    )]
    NoRuntimeDir,
    #[error("{path} {problem}; the agent's socket is not used.\n{remedy}")]
    NotPrivate {
        path: String,
        problem: String,
        remedy: String,
    },
    #[error("the agent refused the request: {message}")]
    Refused { kind: String, message: String },
    #[error("{message}")]
    Failed { kind: String, message: String },
    #[error("talking to the agent failed: {0}.\nEnd it with nasring lock and unlock again.")]
    Io(String),
    #[error("the agent did not start: {0}")]
    Start(String),
}

impl AgentError {
    fn io(e: impl std::fmt::Display) -> Self {
        AgentError::Io(e.to_string())
    }
}

/// `$XDG_RUNTIME_DIR/nasring`, where the agents' sockets are.
pub fn socket_folder() -> Result<PathBuf, AgentError> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|dir| PathBuf::from(dir).join("nasring"))
        .ok_or(AgentError::NoRuntimeDir)
}

/// The socket of the agent for the keyring at `vault`: one agent per keyring file.
pub fn socket_path(folder: &Path, vault: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(vault)
        .or_else(|_| std::path::absolute(vault))
        .unwrap_or_else(|_| vault.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    folder.join(format!("agent-{}.sock", &hex::encode(digest)[..16]))
}

/// Makes the socket folder (mode 0700) if it is missing, then checks it.
pub fn make_socket_folder(folder: &Path) -> Result<(), AgentError> {
    if !folder.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(folder)
            .map_err(|e| AgentError::Start(format!("cannot make {}: {e}", folder.display())))?;
    }
    check_private(folder, 0o700)
}

/// Refuses a folder or socket that is not the user's own with exactly `mode`.
pub fn check_private(path: &Path, mode: u32) -> Result<(), AgentError> {
    let meta = std::fs::symlink_metadata(path).map_err(AgentError::io)?;
    let uid = nix::unistd::geteuid().as_raw();
    let actual = meta.permissions().mode() & 0o777;
    let not_private = |problem: String| AgentError::NotPrivate {
        path: path.display().to_string(),
        problem,
        remedy: format!(
            "Run nasring lock (or remove it), check who changed it, then unlock again; \
             it must be yours with mode {mode:o}."
        ),
    };
    if meta.file_type().is_symlink() {
        return Err(not_private("is a symbolic link".into()));
    }
    if meta.uid() != uid {
        return Err(not_private(format!(
            "belongs to uid {}, not to you (uid {uid})",
            meta.uid()
        )));
    }
    if actual != mode {
        return Err(not_private(format!("has mode {actual:o}, not {mode:o}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_per_keyring_file() {
        let folder = Path::new("/run/user/1/nasring");
        let a = socket_path(folder, Path::new("/nonexistent/a.nasring"));
        let b = socket_path(folder, Path::new("/nonexistent/b.nasring"));
        assert_ne!(a, b);
        assert!(a.starts_with(folder));
        assert_eq!(a, socket_path(folder, Path::new("/nonexistent/a.nasring")));
    }

    #[test]
    fn open_modes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("nasring");
        make_socket_folder(&folder).expect("made private");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = make_socket_folder(&folder).expect_err("0755 refused");
        assert!(err.to_string().contains("has mode 755"), "{err}");
    }
}
