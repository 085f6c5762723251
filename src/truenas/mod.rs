//! The TrueNAS client: JSON-RPC 2.0 over a verified TLS WebSocket (`wss://HOST/api/current`).
//!
//! TrueNAS revokes an API key that reaches it over a connection without TLS, so a password,
//! one-time code or API key is only ever written to a connection that is TLS-verified against
//! the [`TlsTrust`] the caller gave, or that is plain to a loopback address. That rule lives in
//! one function, `guard::check_may_send_secret`, which every login passes.
//!
//! Only TrueNAS 25.04 and later are supported: older systems have no JSON-RPC API and no
//! user-linked API keys.

mod auth;
mod card;
mod guard;
mod keys;
mod rpc;
mod session;
mod tls;
mod transport;
mod url;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use auth::PasswordLogin;
pub use card::{AlertCounts, PoolHealth, SystemCard};
pub use keys::{ApiKeyInfo, CreatedKey};
pub use session::Session;
pub use tls::{fetch_certificate, CertFingerprint, PresentedCertificate, TlsTrust};
pub use url::SystemUrl;

/// How long to wait and how much to accept from a NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the whole of name lookup, TCP connect, TLS handshake and WebSocket upgrade.
    pub connect_timeout: Duration,
    /// For one call, from sending the request to reading its reply.
    pub call_timeout: Duration,
    /// The largest message (and frame) accepted from the NAS.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            max_message_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The step that took too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Tls,
    Upgrade,
    Reply,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "while connecting",
            Phase::Tls => "during the TLS handshake",
            Phase::Upgrade => "during the WebSocket upgrade",
            Phase::Reply => "to a request",
        })
    }
}

/// What went wrong while talking to a NAS. No variant ever holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("This is not a TrueNAS address: {reason}.")]
    BadUrl { reason: String },
    #[error("{url} does not use TLS, and TrueNAS revokes an API key sent without TLS.")]
    InsecureUrl { url: String },
    #[error("This is not a SHA-256 certificate fingerprint: {reason}.")]
    BadFingerprint { reason: String },
    #[error("The CA certificate cannot be used: {detail}.")]
    BadCa { detail: String },
    #[error("The host name {host} was not found.")]
    NameNotFound { host: String },
    #[error("The NAS refused the connection.")]
    Refused,
    #[error("The NAS did not answer in time {phase}.")]
    TimedOut { phase: Phase },
    #[error("The NAS could not be reached: {detail}.")]
    Unreachable { detail: String },
    #[error("The NAS's certificate is not trusted: {detail}.")]
    TlsUntrusted { detail: String },
    #[error("The TLS handshake with the NAS failed: {detail}.")]
    TlsFailed { detail: String },
    #[error("The NAS presented certificate {presented}, not the pinned {expected}.")]
    PinMismatch {
        expected: CertFingerprint,
        presented: CertFingerprint,
    },
    #[error("The NAS did not accept the user name, password or one-time code.")]
    AuthFailed,
    #[error("The NAS rejected the API key: it was revoked, deleted or belongs to another user.")]
    KeyRejected,
    #[error("The API key has expired.")]
    KeyExpired,
    #[error("The account's password has expired.")]
    PasswordExpired,
    #[error("The account is not allowed to use the TrueNAS API.")]
    Denied,
    #[error("This NAS is a standby controller and points to {}.", urls.join(", "))]
    Redirect { urls: Vec<String> },
    #[error("This TrueNAS version is not supported: {detail}.")]
    UnsupportedVersion { detail: String },
    #[error("The NAS refused {method}: {reason}")]
    Rpc {
        method: String,
        code: i64,
        errname: Option<String>,
        reason: String,
    },
    #[error("The NAS has no API key with id {id}.")]
    KeyNotFound { id: u64 },
    #[error("The NAS sent something unexpected: {detail}.")]
    Protocol { detail: String },
}

impl ClientError {
    /// A stable word for scripts (`--json` output and exit codes).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::BadUrl { .. } => "bad_url",
            ClientError::InsecureUrl { .. } => "insecure_url",
            ClientError::BadFingerprint { .. } => "bad_fingerprint",
            ClientError::BadCa { .. } => "bad_ca",
            ClientError::NameNotFound { .. }
            | ClientError::Refused
            | ClientError::TimedOut { .. }
            | ClientError::Unreachable { .. } => "unreachable",
            ClientError::TlsUntrusted { .. } | ClientError::TlsFailed { .. } => "tls",
            ClientError::PinMismatch { .. } => "pin_mismatch",
            ClientError::AuthFailed => "auth_failed",
            ClientError::KeyRejected => "key_rejected",
            ClientError::KeyExpired => "key_expired",
            ClientError::PasswordExpired => "password_expired",
            ClientError::Denied => "denied",
            ClientError::Redirect { .. } => "redirect",
            ClientError::UnsupportedVersion { .. } => "unsupported_version",
            ClientError::Rpc { .. } => "rpc",
            ClientError::KeyNotFound { .. } => "key_not_found",
            ClientError::Protocol { .. } => "protocol",
        }
    }

    /// One line saying what to do, for the system called `system_name` in the keyring.
    pub fn remedy(&self, system_name: &str) -> String {
        let name = system_name;
        match self {
            ClientError::BadUrl { .. } => {
                "Give the address as https://HOST or https://HOST:PORT.".into()
            }
            ClientError::InsecureUrl { .. } => {
                "Use https:// (plain http:// is only allowed to this machine itself).".into()
            }
            ClientError::BadFingerprint { .. } => {
                "Give it as sha256: followed by 64 hex digits, as nasring add shows it.".into()
            }
            ClientError::BadCa { .. } => "Give a PEM file that holds the CA certificate.".into(),
            ClientError::NameNotFound { .. } => {
                format!("Check the host name of {name} and your DNS, or use its IP address.")
            }
            ClientError::Refused => {
                format!("Check that {name} is running and that the port is its HTTPS port.")
            }
            ClientError::TimedOut { .. } | ClientError::Unreachable { .. } => {
                format!("Check that {name} is on and reachable from here (network, VPN, firewall).")
            }
            ClientError::TlsUntrusted { .. } => format!(
                "Check the CA given for {name}, or pin its certificate: nasring trust {name}"
            ),
            ClientError::TlsFailed { .. } => {
                format!("Check that the address of {name} points at its HTTPS port.")
            }
            ClientError::PinMismatch { .. } => format!(
                "If the NAS's certificate was renewed on purpose, check the new fingerprint \
                 and run nasring trust {name}"
            ),
            ClientError::AuthFailed => {
                "Check the user name, password and code, then try again.".into()
            }
            ClientError::KeyRejected
            | ClientError::KeyExpired
            | ClientError::KeyNotFound { .. } => {
                format!("Replace it: nasring add {name} --replace")
            }
            ClientError::PasswordExpired => {
                format!("Set a new password in the web interface of {name}, then try again.")
            }
            ClientError::Denied => {
                format!("Give the user a privilege with API access on {name} (Credentials).")
            }
            ClientError::Redirect { .. } => {
                "Use the address of the active controller instead.".into()
            }
            ClientError::UnsupportedVersion { .. } => {
                format!("Upgrade {name} to TrueNAS 25.04 or later.")
            }
            ClientError::Rpc { .. } => {
                format!("Check the user's roles and the alerts on {name}, then try again.")
            }
            ClientError::Protocol { .. } => {
                "Please report this, with the TrueNAS version of the system.".into()
            }
        }
    }

    /// Replaces any copy of `secret` that the NAS echoed back in a reason or detail.
    fn without_secret(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let scrub = |text: String| text.replace(secret, "********");
        match self {
            ClientError::Rpc {
                method,
                code,
                errname,
                reason,
            } => ClientError::Rpc {
                method,
                code,
                errname,
                reason: scrub(reason),
            },
            ClientError::Protocol { detail } => ClientError::Protocol {
                detail: scrub(detail),
            },
            other => other,
        }
    }

    fn protocol(detail: impl Into<String>) -> Self {
        ClientError::Protocol {
            detail: detail.into(),
        }
    }
}
