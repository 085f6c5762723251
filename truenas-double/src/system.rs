//! The run-time state of one simulated system: accounts, API keys, TLS identity, mode, the
//! call log, and the small tables behind tokens and rate limits.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::config::{AlertConfig, Mode, PoolConfig, SystemConfig};
use crate::keystore::KeyStore;
use crate::profile::Release;
use crate::tls::{self, Identity, TlsError};
use crate::totp;

/// How many log entries a system keeps; older ones are dropped.
const LOG_CAPACITY: usize = 10_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Locks a mutex, carrying on with the data if another thread panicked while holding it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A local account of a simulated system.
pub struct User {
    pub username: String,
    password: Option<Zeroizing<String>>,
    otp_secret: Option<Zeroizing<Vec<u8>>>,
    pub roles: Vec<String>,
    pub full_name: String,
    pub uid: u32,
}

impl User {
    pub fn password_matches(&self, presented: &str) -> bool {
        self.password.as_ref().is_some_and(|p| {
            p.len() == presented.len() && bool::from(p.as_bytes().ct_eq(presented.as_bytes()))
        })
    }

    pub fn has_two_factor(&self) -> bool {
        self.otp_secret.is_some()
    }

    pub fn otp_matches(&self, code: &str, window: u64) -> bool {
        let now = (now_ms() / 1000) as u64;
        self.otp_secret
            .as_ref()
            .is_some_and(|s| totp::verify(s, code, now, window))
    }

    /// The current code, for tests of two-factor logins.
    pub fn current_otp(&self) -> Option<String> {
        let now = (now_ms() / 1000) as u64;
        self.otp_secret
            .as_ref()
            .map(|s| totp::code_at(s, now, totp::DIGITS))
    }

    /// Whether the account may use the API at all (has a privilege with roles).
    pub fn has_api_access(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Whether the account's roles grant `role`, with the middleware's inclusions: FULL_ADMIN
    /// grants everything, READONLY_ADMIN every `*_READ`, and `X_WRITE` grants `X_READ`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| {
            held == "FULL_ADMIN"
                || held == role
                || (role.ends_with("_READ") && held == "READONLY_ADMIN")
                || role
                    .strip_suffix("_READ")
                    .is_some_and(|base| held.strip_suffix("_WRITE") == Some(base))
        })
    }

    pub fn is_full_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "FULL_ADMIN")
    }
}

/// The mode and the added latency, switched together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeState {
    pub mode: Mode,
    pub latency_ms: u64,
}

/// One line of the call log. Holds method names and credential kinds, never secrets.
#[derive(Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub at_ms: i64,
    /// `tls` or `plain`.
    pub transport: &'static str,
    pub peer: String,
    /// `http` (a request line), `call` (JSON-RPC), `legacy_call` (`/websocket`) or `rest`.
    pub kind: &'static str,
    /// The JSON-RPC method, or `GET /path` for HTTP requests.
    pub method: String,
    /// The credential kind presented (logins) or the session's (other calls).
    pub credential: Option<String>,
    /// The API key id involved, when the credential is an API key.
    pub key_id: Option<u64>,
    /// `SUCCESS`, `AUTH_ERR`, ... for logins, `ok` or `error <code>` otherwise.
    pub outcome: String,
}

/// What a caller logs; the system adds the sequence number and time.
pub struct LogRecord<'a> {
    pub transport: &'static str,
    pub peer: String,
    pub kind: &'static str,
    pub method: &'a str,
    pub credential: Option<String>,
    pub key_id: Option<u64>,
    pub outcome: String,
}

/// A token from `auth.generate_token` or a 26 reconnect token.
pub struct AuthToken {
    pub username: String,
    pub expires: Instant,
    pub single_use: bool,
}

/// Counters shown by the control API.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub requests: AtomicU64,
}

pub struct System {
    pub name: String,
    pub hostname: String,
    pub release: Release,
    pub serves_tls: bool,
    pub serves_plain: bool,
    pub treat_loopback_as_insecure: bool,
    pub redirect_urls: Option<Vec<String>>,
    pub fail_delay: Duration,
    pub rate_limit: bool,
    pub otp_window: u64,
    pub pools: Vec<PoolConfig>,
    pub alerts: Vec<AlertConfig>,
    pub users: Vec<User>,
    pub boot_ms: i64,
    pub boot_id: String,
    state_dir: PathBuf,
    pub keys: Mutex<KeyStore>,
    identity: RwLock<Arc<Identity>>,
    mode: watch::Sender<ModeState>,
    log: Mutex<(u64, VecDeque<LogEntry>)>,
    pub tokens: Mutex<HashMap<String, AuthToken>>,
    rate: Mutex<HashMap<(IpAddr, String), VecDeque<Instant>>>,
    pub counters: Counters,
    /// Bound ports (TLS, plain); 0 until first bound, then kept across offline periods.
    pub ports: Mutex<(u16, u16)>,
    pub listener_tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A system could not be set up.
#[derive(Debug)]
pub enum SetupError {
    Version(crate::profile::UnknownVersion),
    Tls(TlsError),
    Keys(PathBuf, std::io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Version(e) => write!(f, "{e}"),
            SetupError::Tls(e) => write!(f, "{e}"),
            SetupError::Keys(path, e) => {
                write!(f, "cannot read the API keys in {}: {e}", path.display())
            }
        }
    }
}

impl std::error::Error for SetupError {}

impl System {
    /// Builds a system from its configuration; certificate and keys live in `state_dir`.
    pub fn new(config: &SystemConfig, state_dir: &Path) -> Result<Self, SetupError> {
        let release = Release::parse(&config.version).map_err(SetupError::Version)?;
        let identity = tls::load_or_create(state_dir).map_err(SetupError::Tls)?;
        let keys_path = state_dir.join("keys.json");
        let keys =
            KeyStore::open(Some(keys_path.clone())).map_err(|e| SetupError::Keys(keys_path, e))?;
        let users = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| build_user(u, i))
            .collect();
        let mode = ModeState {
            mode: config.mode,
            latency_ms: config.latency_ms,
        };
        Ok(System {
            name: config.name.clone(),
            hostname: config
                .hostname
                .clone()
                .unwrap_or_else(|| config.name.clone()),
            release,
            serves_tls: config.tls,
            serves_plain: config.plain,
            treat_loopback_as_insecure: config.treat_loopback_as_insecure,
            redirect_urls: config.redirect_urls.clone().filter(|u| !u.is_empty()),
            fail_delay: Duration::from_millis(config.fail_delay_ms),
            rate_limit: config.rate_limit,
            otp_window: config.otp_window,
            pools: config.pools.clone(),
            alerts: config.alerts.clone(),
            users,
            boot_ms: now_ms(),
            boot_id: random_uuid(),
            state_dir: state_dir.to_path_buf(),
            keys: Mutex::new(keys),
            identity: RwLock::new(Arc::new(identity)),
            mode: watch::Sender::new(mode),
            log: Mutex::new((0, VecDeque::new())),
            tokens: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            ports: Mutex::new((config.port, config.plain_port)),
            listener_tasks: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the certificate with a new self-signed one; new handshakes use it at once.
    pub fn rotate_certificate(&self) -> Result<Arc<Identity>, TlsError> {
        let fresh = Arc::new(tls::create(&self.state_dir)?);
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    pub fn mode(&self) -> ModeState {
        *self.mode.borrow()
    }

    pub fn subscribe_mode(&self) -> watch::Receiver<ModeState> {
        self.mode.subscribe()
    }

    pub fn replace_mode(&self, state: ModeState) -> ModeState {
        self.mode.send_replace(state)
    }

    pub fn log(&self, record: LogRecord<'_>) {
        let mut guard = lock(&self.log);
        let (next, entries) = &mut *guard;
        *next += 1;
        entries.push_back(LogEntry {
            seq: *next,
            at_ms: now_ms(),
            transport: record.transport,
            peer: record.peer,
            kind: record.kind,
            method: record.method.to_string(),
            credential: record.credential,
            key_id: record.key_id,
            outcome: record.outcome,
        });
        if entries.len() > LOG_CAPACITY {
            entries.pop_front();
        }
    }

    pub fn log_entries(&self) -> Vec<LogEntry> {
        lock(&self.log).1.iter().cloned().collect()
    }

    pub fn clear_log(&self) -> usize {
        let mut guard = lock(&self.log);
        let cleared = guard.1.len();
        guard.1.clear();
        cleared
    }

    /// Counts an unauthenticated call; true when the middleware's limit (20 calls per method
    /// and peer address in 60 s) is exceeded and rate limiting is on.
    pub fn rate_limited(&self, peer: IpAddr, method: &str) -> bool {
        if !self.rate_limit {
            return false;
        }
        let now = Instant::now();
        let mut table = lock(&self.rate);
        let calls = table.entry((peer, method.to_string())).or_default();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            calls.pop_front();
        }
        calls.push_back(now);
        calls.len() > 20
    }

    /// Issues a token for `username`, valid for `ttl`.
    pub fn issue_token(&self, username: &str, ttl: Duration, single_use: bool) -> String {
        let token = random_token();
        let record = AuthToken {
            username: username.to_string(),
            expires: Instant::now() + ttl,
            single_use,
        };
        lock(&self.tokens).insert(token.clone(), record);
        token
    }

    /// Redeems a token: the owner's username if it is valid. Single-use tokens are removed.
    pub fn redeem_token(&self, token: &str) -> Option<String> {
        let mut tokens = lock(&self.tokens);
        let valid = tokens.get(token).filter(|t| t.expires > Instant::now())?;
        let username = valid.username.clone();
        if valid.single_use {
            tokens.remove(token);
        }
        Some(username)
    }

    pub fn ports(&self) -> (u16, u16) {
        *lock(&self.ports)
    }
}

fn build_user(config: &crate::config::UserConfig, index: usize) -> User {
    User {
        username: config.username.clone(),
        password: config.password.clone().map(Zeroizing::new),
        otp_secret: config
            .otp_secret
            .as_deref()
            .and_then(totp::decode_base32)
            .map(Zeroizing::new),
        roles: config.roles.clone(),
        full_name: config
            .full_name
            .clone()
            .unwrap_or_else(|| config.username.clone()),
        uid: config.uid.unwrap_or(3000 + index as u32),
    }
}

/// A random version-4 UUID in its usual text form.
pub fn random_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_token() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn user(roles: &[&str]) -> User {
        build_user(
            &UserConfig {
                username: "u".into(),
                password: Some("pw".into()),
                otp_secret: None,
                roles: roles.iter().map(|r| r.to_string()).collect(),
                full_name: None,
                uid: None,
            },
            0,
        )
    }

    #[test]
    fn role_inclusions() {
        assert!(user(&["FULL_ADMIN"]).has_role("API_KEY_WRITE"));
        assert!(user(&["READONLY_ADMIN"]).has_role("POOL_READ"));
        assert!(!user(&["READONLY_ADMIN"]).has_role("API_KEY_WRITE"));
        assert!(user(&["API_KEY_WRITE"]).has_role("API_KEY_READ"));
        assert!(!user(&["API_KEY_READ"]).has_role("POOL_READ"));
        assert!(!user(&[]).has_api_access());
    }

    #[test]
    fn password_check() {
        let u = user(&["FULL_ADMIN"]);
        assert!(u.password_matches("pw"));
        assert!(!u.password_matches("pw2"));
        assert!(!u.password_matches(""));
    }

    #[test]
    fn uuid_shape() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
