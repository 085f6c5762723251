//! The simulated middleware methods, independent of the protocol that carries them: access
//! rules, per-connection sessions, and dispatch to the method implementations.

mod api_key;
mod auth;
mod dashboard;
pub mod error;
pub mod params;
pub mod query;

pub use api_key::issued_entry;

use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::Value;

use crate::profile::{ApiFlavor, Release};
use crate::system::{lock, System, User};
use error::{CallFailure, CallResult, EBUSY};

/// Facts about the transport of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

impl Conn {
    pub fn transport(&self) -> &'static str {
        if self.tls {
            "tls"
        } else {
            "plain"
        }
    }

    /// The middleware's `secure_transport`: TLS, or a loopback peer (unless the system is told
    /// to distrust loopback for tests).
    pub fn is_secure(&self, system: &System) -> bool {
        self.tls || (self.peer.ip().is_loopback() && !system.treat_loopback_as_insecure)
    }
}

/// How a session authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey { id: u64, name: String },
    Password,
    TwoFactor,
    Token,
}

impl CredentialKind {
    /// The middleware's credential type names.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::ApiKey { .. } => "API_KEY",
            CredentialKind::Password => "LOGIN_PASSWORD",
            CredentialKind::TwoFactor => "LOGIN_TWOFACTOR",
            CredentialKind::Token => "TOKEN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub kind: CredentialKind,
}

/// A password login waiting for its one-time code.
#[derive(Debug, Clone)]
pub struct PendingOtp {
    pub username: String,
    pub failures: u32,
}

/// The authentication state of one connection.
#[derive(Debug, Default)]
pub struct Session {
    pub credential: Option<Credential>,
    pub pending_otp: Option<PendingOtp>,
}

/// Which protocol carries the call; the legacy socket offers fewer methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    JsonRpc,
    Legacy,
}

/// Everything a method implementation may look at.
pub struct Ctx<'a> {
    pub system: &'a System,
    pub session: &'a Mutex<Session>,
    pub conn: Conn,
    pub api: ApiFlavor,
    pub front: Front,
}

impl Ctx<'_> {
    pub fn credential(&self) -> Option<Credential> {
        lock(self.session).credential.clone()
    }

    /// The account behind the session's credential.
    fn caller(&self) -> Option<(Credential, &User)> {
        let credential = self.credential()?;
        let user = self.system.user(&credential.username)?;
        Some((credential, user))
    }

    async fn fail_delay(&self) {
        if !self.system.fail_delay.is_zero() {
            tokio::time::sleep(self.system.fail_delay).await;
        }
    }
}

/// Who may call a method.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Before login too (login methods, `core.ping`, `auth.mechanism_choices`).
    Public,
    /// Any authenticated session.
    Authenticated,
    /// An authenticated session holding one of these roles.
    Roles(&'static [&'static str]),
}

const API_KEY_WRITERS: &[&str] = &["READONLY_ADMIN", "API_KEY_WRITE"];

fn access(front: Front, release: &Release, method: &str) -> Option<Access> {
    let jsonrpc = front == Front::JsonRpc && release.has_jsonrpc();
    let rule = match method {
        "core.ping" | "auth.login" | "auth.login_with_api_key" | "auth.login_with_token" => {
            Access::Public
        }
        "auth.login_ex" | "auth.login_ex_continue" | "auth.mechanism_choices" if jsonrpc => {
            Access::Public
        }
        "auth.logout" | "auth.me" | "auth.generate_token" => Access::Authenticated,
        "system.info" => Access::Roles(&["READONLY_ADMIN"]),
        "pool.query" => Access::Roles(&["POOL_READ"]),
        "alert.list" => Access::Roles(&["ALERT_LIST_READ"]),
        "api_key.query" | "api_key.get_instance" if jsonrpc => Access::Roles(&["API_KEY_READ"]),
        "api_key.create" | "api_key.update" | "api_key.delete" if jsonrpc => {
            Access::Roles(API_KEY_WRITERS)
        }
        "api_key.my_keys" if jsonrpc => Access::Roles(&["READONLY_ADMIN", "API_KEY_READ"]),
        _ => return None,
    };
    Some(rule)
}

/// Whether the method exists for this protocol and release.
pub fn exists(front: Front, release: &Release, method: &str) -> bool {
    access(front, release, method).is_some()
}

/// Checks access and runs the method.
pub async fn call(ctx: &Ctx<'_>, method: &str, params: &[Value]) -> CallResult {
    let rule = access(ctx.front, &ctx.system.release, method).ok_or_else(|| {
        CallFailure::call(error::ENOMETHOD, format!("Method {method:?} not found"))
    })?;
    authorize(ctx, method, rule).await?;
    match method {
        "core.ping" => params::check_count(params, &[]).map(|()| Value::from("pong")),
        m if m.starts_with("auth.") => auth::call(ctx, m, params).await,
        m if m.starts_with("api_key.") => api_key::call(ctx, m, params),
        m => dashboard::call(ctx, m, params),
    }
}

async fn authorize(ctx: &Ctx<'_>, method: &str, rule: Access) -> Result<(), CallFailure> {
    let caller = ctx.caller();
    match (rule, caller) {
        (Access::Public, None) => {
            if ctx.system.rate_limited(ctx.conn.peer.ip(), method) {
                ctx.fail_delay().await;
                return Err(CallFailure::call(EBUSY, "Rate Limit Exceeded"));
            }
            Ok(())
        }
        (Access::Public, Some(_)) | (Access::Authenticated, Some(_)) => Ok(()),
        (_, None) => Err(CallFailure::not_authenticated()),
        (Access::Roles(roles), Some((_, user))) => {
            if roles.iter().any(|r| user.has_role(r)) {
                Ok(())
            } else {
                Err(CallFailure::not_authorized())
            }
        }
    }
}

/// What the call log records about a call: the credential kind it presents (logins) or the
/// session's, and the API key id if one is involved. Never a secret.
pub fn describe(
    method: &str,
    params: &[Value],
    session: Option<&Credential>,
) -> (Option<String>, Option<u64>) {
    let key_id = |key: Option<&Value>| {
        key.and_then(Value::as_str)
            .and_then(crate::keystore::KeyStore::id_of)
    };
    match method {
        "auth.login_ex" | "auth.login_ex_continue" => {
            let data = params.first();
            let mechanism = data
                .and_then(|d| d.get("mechanism"))
                .and_then(Value::as_str);
            let kind = match mechanism {
                Some("API_KEY_PLAIN") => "API_KEY",
                Some("PASSWORD_PLAIN") => "LOGIN_PASSWORD",
                Some("OTP_TOKEN") => "LOGIN_TWOFACTOR",
                Some("TOKEN_PLAIN") => "TOKEN",
                Some(_) => "UNKNOWN",
                None => "NONE",
            };
            (
                Some(kind.to_string()),
                key_id(data.and_then(|d| d.get("api_key"))),
            )
        }
        "auth.login_with_api_key" => (Some("API_KEY".into()), key_id(params.first())),
        "auth.login" => (Some("LOGIN_PASSWORD".into()), None),
        "auth.login_with_token" => (Some("TOKEN".into()), None),
        _ => match session {
            Some(c) => {
                let id = match &c.kind {
                    CredentialKind::ApiKey { id, .. } => Some(*id),
                    _ => None,
                };
                (Some(c.kind.as_str().to_string()), id)
            }
            None => (None, None),
        },
    }
}

/// The log outcome of a call: the login response type, or `ok` / `error <code>`.
pub fn outcome(result: &CallResult) -> String {
    match result {
        Ok(value) => match value.get("response_type").and_then(Value::as_str) {
            Some(kind) => kind.to_string(),
            None if value.is_boolean() => value.to_string(),
            None => "ok".to_string(),
        },
        Err(failure) => format!("error {}", failure.rpc_code().0),
    }
}
