//! The agent process (`nasring agent --serve`): reads the handoff on standard input, locks
//! its memory, listens on its socket, and ends after the idle timeout, at the end of its
//! lifetime, on `nasring lock`, on SIGTERM/SIGINT/SIGHUP, or when its token is removed.
//! Ending removes the socket and wipes the master key.
//!
//! It holds the master key, never a passphrase or PIN. For each request it reads the keyring
//! file, authenticates all of it with the master key and decrypts only the keys asked for, so
//! it serves the keyring as it is now (systems added, removed or re-trusted since the
//! unlock) and nothing that has been tampered with.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tracing::debug;
use zeroize::Zeroizing;

use super::protocol::{self, AgentStatus, Reply, Request, SystemWire, UnlockedSystem};
use super::{check_private, harden, make_socket_folder, AgentError};
use crate::audit::{self, Event};
use crate::secret::MasterKey;
use crate::token::{self, TokenUri};
use crate::vault::{ReadKeyring, Vault, VaultError};

/// How often the agent looks for its token.
const TOKEN_POLL: Duration = Duration::from_secs(1);
/// How many looks in a row must miss the token before the agent ends (one miss can be a
/// SoftHSM file being rewritten).
const TOKEN_MISSES: u32 = 2;
/// How long one client may take to send its request and read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `nasring unlock` hands to the agent over its standard input.
pub struct Handoff {
    pub vault: PathBuf,
    pub socket: PathBuf,
    /// The token the keyring was opened with; the agent ends when it is removed.
    pub token_uri: String,
    pub keyring_id: String,
    pub master_key: MasterKey,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffWire {
    vault: PathBuf,
    socket: PathBuf,
    token_uri: String,
    keyring_id: String,
    master_key: Zeroizing<String>,
    idle_timeout_seconds: u64,
    max_lifetime_seconds: u64,
}

impl Handoff {
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), AgentError> {
        let wire = HandoffWire {
            vault: self.vault.clone(),
            socket: self.socket.clone(),
            token_uri: self.token_uri.clone(),
            keyring_id: self.keyring_id.clone(),
            master_key: Zeroizing::new(hex::encode(self.master_key.expose())),
            idle_timeout_seconds: self.idle_timeout.as_secs(),
            max_lifetime_seconds: self.max_lifetime.as_secs(),
        };
        protocol::write_line(out, &wire)
    }

    fn read_from(input: &mut impl BufRead) -> Result<Self, AgentError> {
        let wire: HandoffWire = protocol::read_line(input, protocol::MAX_REQUEST_BYTES)?;
        let raw = Zeroizing::new(hex::decode(wire.master_key.as_bytes()).unwrap_or_default());
        let master_key = MasterKey::from_slice(&raw)
            .ok_or_else(|| AgentError::Start("the handoff holds no valid master key".into()))?;
        Ok(Self {
            vault: wire.vault,
            socket: wire.socket,
            token_uri: wire.token_uri,
            keyring_id: wire.keyring_id,
            master_key,
            idle_timeout: Duration::from_secs(wire.idle_timeout_seconds.max(1)),
            max_lifetime: Duration::from_secs(wire.max_lifetime_seconds.max(1)),
        })
    }
}

/// The first and only line the agent writes on its standard output.
#[derive(Serialize, Deserialize)]
pub struct StartLine {
    pub ready: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// Runs the agent; returns its exit code.
pub fn serve() -> i32 {
    match prepare() {
        Ok((handoff, listener_std, token_gone)) => {
            say_started(None);
            silence_stdout();
            let reason = run(handoff, listener_std, token_gone);
            debug!(reason, "agent ended");
            0
        }
        Err(e) => {
            say_started(Some(e.to_string()));
            1
        }
    }
}

type Prepared = (
    Handoff,
    std::os::unix::net::UnixListener,
    tokio::sync::mpsc::UnboundedReceiver<()>,
);

fn prepare() -> Result<Prepared, AgentError> {
    harden::protect_memory()?;
    let handoff = Handoff::read_from(&mut std::io::stdin().lock())?;
    // A session of its own, so the terminal's hang-up or Ctrl-C does not reach it.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let token_gone = watch_token(&handoff.token_uri)?;
    let listener = bind(&handoff.socket)?;
    Ok((handoff, listener, token_gone))
}

fn say_started(error: Option<String>) {
    let line = StartLine {
        ready: error.is_none(),
        error,
    };
    let _ = protocol::write_line(&mut std::io::stdout().lock(), &line);
}

/// After the start line nothing is written to the pipe of `nasring unlock`, which is gone.
fn silence_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Binds the socket in its private folder, replacing a stale socket of an agent that died.
fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener, AgentError> {
    let folder = socket
        .parent()
        .ok_or_else(|| AgentError::Start("the socket has no folder".into()))?;
    make_socket_folder(folder)?;
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(AgentError::Start(format!(
                "another agent already listens on {}",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
    }
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| AgentError::Start(format!("cannot listen on {}: {e}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| AgentError::Start(format!("cannot protect {}: {e}", socket.display())))?;
    check_private(socket, 0o600)?;
    listener.set_nonblocking(true).map_err(AgentError::io)?;
    Ok(listener)
}

/// Opens the token on a thread of its own and looks for it every second. The receiver gets
/// a message when the token has gone.
fn watch_token(uri: &str) -> Result<tokio::sync::mpsc::UnboundedReceiver<()>, AgentError> {
    let uri = TokenUri::parse(uri).map_err(|e| AgentError::Start(e.to_string()))?;
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let (gone_tx, gone_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut token = match token::open(&uri) {
            Ok(t) => t,
            Err(e) => {
                let _ = started_tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = started_tx.send(Ok(()));
        let mut misses = 0;
        while misses < TOKEN_MISSES && !gone_tx.is_closed() {
            std::thread::sleep(TOKEN_POLL);
            misses = if token.is_present() { 0 } else { misses + 1 };
        }
        let _ = gone_tx.send(());
    });
    match started_rx.recv() {
        Ok(Ok(())) => Ok(gone_rx),
        Ok(Err(e)) => Err(AgentError::Start(format!("the token is not there: {e}"))),
        Err(_) => Err(AgentError::Start("the token watch stopped".into())),
    }
}

fn run(
    handoff: Handoff,
    listener: std::os::unix::net::UnixListener,
    token_gone: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> &'static str {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(_) => return "the agent's runtime did not start",
    };
    runtime.block_on(async move {
        let mut agent = Agent::new(handoff);
        let reason = match UnixListener::from_std(listener) {
            Ok(listener) => agent.serve(listener, token_gone).await,
            Err(_) => "the socket could not be used",
        };
        agent.end(reason);
        reason
    })
}

struct Agent {
    handoff: Handoff,
    audit: PathBuf,
    started_at: OffsetDateTime,
    idle_until: Instant,
    ends: Instant,
    uid: u32,
}

fn stamp(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Agent {
    fn new(handoff: Handoff) -> Self {
        let now = Instant::now();
        Self {
            audit: audit::path_for(&handoff.vault),
            started_at: OffsetDateTime::now_utc(),
            idle_until: now + handoff.idle_timeout,
            ends: now + handoff.max_lifetime,
            uid: nix::unistd::geteuid().as_raw(),
            handoff,
        }
    }

    async fn serve(
        &mut self,
        listener: UnixListener,
        mut token_gone: tokio::sync::mpsc::UnboundedReceiver<()>,
    ) -> &'static str {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return "signals could not be watched";
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        if let Some(reason) = self.connection(stream) {
                            return reason;
                        }
                    }
                }
                _ = tokio::time::sleep_until(self.idle_until) => return "idle timeout",
                _ = tokio::time::sleep_until(self.ends) => return "maximum lifetime",
                _ = token_gone.recv() => return "token removed",
                _ = term.recv() => return "SIGTERM",
                _ = int.recv() => return "SIGINT",
                _ = hup.recv() => return "SIGHUP",
            }
        }
    }

    /// Serves one connection; returns why the agent must end, if it must.
    fn connection(&mut self, stream: tokio::net::UnixStream) -> Option<&'static str> {
        let peer = stream.peer_cred().ok()?;
        let pid = peer.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        let stream = stream.into_std().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
        let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
        let mut writer = stream.try_clone().ok()?;
        if peer.uid() != self.uid {
            self.refuse(&mut writer, peer.uid(), pid);
            return None;
        }
        let request = protocol::read_line(&mut BufReader::new(stream), protocol::MAX_REQUEST_BYTES);
        let (reply, end) = match request {
            Ok(request) => self.answer(request, pid),
            Err(e) => (Reply::failure("bad_request", e.to_string()), None),
        };
        let _ = protocol::write_line(&mut writer, &reply);
        end
    }

    fn refuse(&self, writer: &mut impl Write, uid: u32, pid: u32) {
        let event = Event::now("refused", "agent")
            .uid(uid)
            .pid(pid)
            .detail("the peer is another user");
        let _ = audit::append(&self.audit, &event);
        let reply = Reply::failure(
            "not_same_user",
            format!(
                "this agent serves only uid {}, and the peer is uid {uid}",
                self.uid
            ),
        );
        let _ = protocol::write_line(writer, &reply);
    }

    fn answer(&mut self, request: Request, pid: u32) -> (Reply, Option<&'static str>) {
        match request {
            Request::Status {} => (self.status(), None),
            Request::Key { system, command } => self.keys(Some(&system), &command, pid),
            Request::All { command } => self.keys(None, &command, pid),
            Request::Lock {} => {
                let _ = std::fs::remove_file(&self.handoff.socket);
                let reply = Reply {
                    ok: true,
                    locked: true,
                    ..Reply::default()
                };
                (reply, Some("nasring lock"))
            }
        }
    }

    fn open(&self) -> Result<ReadKeyring, VaultError> {
        Vault::at(&self.handoff.vault)
            .load()?
            .open_with_master_key(&self.handoff.keyring_id, &self.handoff.master_key)
    }

    fn status(&self) -> Reply {
        let keyring = self.open().ok();
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let at = |t: Instant| stamp(wall + t.saturating_duration_since(now));
        let status = AgentStatus {
            pid: std::process::id(),
            keyring: keyring
                .as_ref()
                .map(|k| k.name().to_string())
                .unwrap_or_default(),
            vault: self.handoff.vault.display().to_string(),
            token: self.handoff.token_uri.clone(),
            started_at: stamp(self.started_at),
            ends_at: at(self.ends),
            idle_ends_at: at(self.idle_until),
            idle_timeout_seconds: self.handoff.idle_timeout.as_secs(),
            max_lifetime_seconds: self.handoff.max_lifetime.as_secs(),
            systems: keyring.map_or(0, |k| k.systems().len()),
        };
        Reply {
            ok: true,
            status: Some(status),
            ..Reply::default()
        }
    }

    /// Hands out one key (`Some(name)`) or every key, and counts it as use.
    fn keys(
        &mut self,
        name: Option<&str>,
        command: &str,
        pid: u32,
    ) -> (Reply, Option<&'static str>) {
        let keyring = match self.open() {
            Ok(k) => k,
            Err(VaultError::NoKeyring { .. }) => {
                return (
                    Reply::failure("keyring_gone", "the keyring file is gone; the agent ends"),
                    Some("keyring file removed"),
                )
            }
            Err(e) => return (Reply::failure("keyring_changed", e.to_string()), None),
        };
        let systems: Vec<UnlockedSystem> = keyring
            .systems()
            .iter()
            .filter(|s| name.is_none_or(|n| n == s.name))
            .map(|s| {
                UnlockedSystem::from_entry(s, keyring.api_key(&self.handoff.master_key, s).ok())
            })
            .collect();
        if let (Some(name), true) = (name, systems.is_empty()) {
            let e = VaultError::NoSuchSystem { name: name.into() };
            return (Reply::failure("no_such_system", e.to_string()), None);
        }
        self.idle_until = Instant::now() + self.handoff.idle_timeout;
        let event = Event::now("key", "agent")
            .command(command)
            .system(name.unwrap_or("*"))
            .pid(pid);
        let _ = audit::append(&self.audit, &event);
        let reply = Reply {
            ok: true,
            systems: Some(systems.iter().map(SystemWire::from).collect()),
            ..Reply::default()
        };
        (reply, None)
    }

    /// Removes the socket, logs the lock and wipes the master key (by dropping it).
    fn end(self, reason: &str) {
        let _ = std::fs::remove_file(&self.handoff.socket);
        let event = Event::now("lock", "agent")
            .pid(std::process::id())
            .detail(reason);
        let _ = audit::append(&self.audit, &event);
        drop(self);
    }
}
