//! The commands' side: starting the agent, finding it, and asking it for keys.

use std::io::{BufReader, ErrorKind};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::protocol::{self, AgentStatus, Reply, Request, UnlockedSystem};
use super::server::{Handoff, StartLine};
use super::{check_private, socket_folder, socket_path, AgentError};

/// How long a command waits for the agent's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent's socket that has passed the ownership and mode checks.
pub struct Client {
    socket: PathBuf,
}

/// The agent of the keyring at `vault`, if one listens. A socket or folder that is not
/// private is refused, never used.
pub fn find(vault: &Path) -> Result<Option<Client>, AgentError> {
    let folder = match socket_folder() {
        Ok(f) => f,
        Err(AgentError::NoRuntimeDir) => return Ok(None),
        Err(e) => return Err(e),
    };
    let socket = socket_path(&folder, vault);
    if std::fs::symlink_metadata(&socket).is_err() {
        return Ok(None);
    }
    check_private(&folder, 0o700)?;
    check_private(&socket, 0o600)?;
    Ok(Some(Client { socket }))
}

impl Client {
    /// Sends one request; `None` if nobody listens any more (an agent that was killed).
    fn ask(&self, request: &Request) -> Result<Option<Reply>, AgentError> {
        let stream = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                return Ok(None)
            }
            Err(e) => return Err(AgentError::io(e)),
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(AgentError::io)?;
        let mut writer = stream.try_clone().map_err(AgentError::io)?;
        protocol::write_line(&mut writer, request)?;
        let reply: Reply =
            protocol::read_line(&mut BufReader::new(stream), protocol::MAX_REPLY_BYTES)?;
        checked(reply).map(Some)
    }

    pub fn status(&self) -> Result<Option<AgentStatus>, AgentError> {
        Ok(self.ask(&Request::Status {})?.and_then(|r| r.status))
    }

    /// One system's key and where it may go.
    pub fn key(&self, system: &str, command: &str) -> Result<Option<UnlockedSystem>, AgentError> {
        let request = Request::Key {
            system: system.into(),
            command: command.into(),
        };
        let systems = self.ask(&request)?.and_then(|r| r.systems);
        Ok(systems
            .and_then(|s| s.into_iter().next())
            .map(UnlockedSystem::from))
    }

    /// Every system with its key.
    pub fn all(&self, command: &str) -> Result<Option<Vec<UnlockedSystem>>, AgentError> {
        let request = Request::All {
            command: command.into(),
        };
        let systems = self.ask(&request)?.and_then(|r| r.systems);
        Ok(systems.map(|s| s.into_iter().map(UnlockedSystem::from).collect()))
    }

    /// Ends the agent; `false` if none was listening.
    pub fn lock(&self) -> Result<bool, AgentError> {
        Ok(self.ask(&Request::Lock {})?.is_some_and(|r| r.locked))
    }
}

fn checked(reply: Reply) -> Result<Reply, AgentError> {
    if reply.ok {
        return Ok(reply);
    }
    let kind = reply.kind.unwrap_or_default();
    let message = reply.error.unwrap_or_else(|| "no reason given".into());
    if kind == "not_same_user" {
        Err(AgentError::Refused { kind, message })
    } else {
        Err(AgentError::Failed { kind, message })
    }
}

/// Starts `nasring agent --serve`, hands it the master key over its standard input, and
/// waits until it listens. Returns its process id. Nothing secret is in its argv or
/// environment.
pub fn start(handoff: &Handoff) -> Result<u32, AgentError> {
    let exe = std::env::current_exe()
        .map_err(|e| AgentError::Start(format!("cannot find the nasring program: {e}")))?;
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if looks_secret(&name.to_string_lossy()) {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["agent", "--serve"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| AgentError::Start(format!("cannot run nasring agent: {e}")))?;
    let sent = match child.stdin.take() {
        Some(mut stdin) => handoff.write_to(&mut stdin),
        None => Err(AgentError::Start("no pipe to the agent".into())),
    };
    let started = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::Start("no pipe from the agent".into()))
        .and_then(|out| {
            protocol::read_line::<StartLine>(&mut BufReader::new(out), protocol::MAX_REQUEST_BYTES)
        });
    match (sent, started) {
        (Ok(()), Ok(StartLine { ready: true, .. })) => Ok(child.id()),
        (_, Ok(StartLine { error: Some(e), .. })) => {
            let _ = child.wait();
            Err(AgentError::Start(e))
        }
        (Err(e), _) | (_, Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(AgentError::Start(e.to_string()))
        }
        (Ok(()), Ok(_)) => Err(AgentError::Start("the agent said nothing".into())),
    }
}

/// Whether an environment variable's name suggests a secret (a CI job's passphrase
/// variable, say). The agent does not inherit those: it lives for hours and needs none.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    ["PASS", "PIN", "SECRET", "API_KEY", "PRIVATE"]
        .iter()
        .any(|word| name.contains(word))
        && !name.ends_with("_FILE")
}

/// Waits until process `pid` has ended (or is a zombie waiting to be reaped).
pub fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_running(pid)
}

fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_variables_are_not_inherited() {
        for name in [
            "NASRING_PASSPHRASE",
            "CI_PIN",
            "DEPLOY_SECRET",
            "NASRING_API_KEY",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "SOFTHSM2_CONF",
            "PATH",
            "NASRING_PASSPHRASE_FILE",
            "RUST_LOG",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
