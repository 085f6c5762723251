//! What the agent and its clients say on the socket: one JSON request line, one JSON reply
//! line, then the connection ends.
//!
//! A request never holds a passphrase or PIN; the agent has no use for either. A reply to a
//! key request holds the API key together with the system's name, URL, user name and TLS
//! trust as read from the authenticated keyring, so a client sends the key only where the
//! keyring says it may go.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AgentError;
use crate::secret::ApiKey;

/// The largest request the agent reads.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// The largest reply a client reads (every system of a large keyring).
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// What the agent holds and until when; hands out no key and is not counted as use.
    Status {},
    /// One system's key, for the command named (for the audit log).
    Key { system: String, command: String },
    /// Every system's key, for `status`, `unlock` and `api --all`.
    All { command: String },
    /// End the agent now.
    Lock {},
}

/// The agent's answer. Exactly one of `status`, `systems`, `locked` or `error` is set.
#[derive(Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Vec<SystemWire>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// A stable word: `not_same_user`, `no_such_system`, `keyring_changed`, `bad_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn failure(kind: &str, error: impl Into<String>) -> Self {
        Self {
            kind: Some(kind.into()),
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

/// The agent as `nasring agent --json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub keyring: String,
    pub vault: String,
    pub token: String,
    pub started_at: String,
    /// When the maximum lifetime ends it.
    pub ends_at: String,
    /// When it ends unless a key is handed out before.
    pub idle_ends_at: String,
    pub idle_timeout_seconds: u64,
    pub max_lifetime_seconds: u64,
    pub systems: usize,
}

/// A system as it travels on the socket. The key is wiped when the value is dropped.
#[derive(Serialize, Deserialize)]
pub struct SystemWire {
    pub name: String,
    pub url: String,
    pub username: String,
    pub tls: String,
    pub api_key_expires_at: Option<String>,
    pub api_key: Option<Zeroizing<String>>,
}

/// A system with its key, from the agent or from a keyring opened by the command itself.
/// The URL, user name and trust record come from the authenticated keyring.
pub struct UnlockedSystem {
    pub name: String,
    pub url: String,
    pub username: String,
    /// The vault's trust record (see `vault::SystemEntry::tls`).
    pub tls: String,
    pub api_key_expires_at: Option<String>,
    /// `None` when the stored key does not open.
    pub api_key: Option<ApiKey>,
}

impl UnlockedSystem {
    /// A system of an authenticated keyring, with its key as it opened.
    pub fn from_entry(entry: &crate::vault::SystemEntry, api_key: Option<ApiKey>) -> Self {
        UnlockedSystem {
            name: entry.name.clone(),
            url: entry.url.clone(),
            username: entry.username.clone(),
            tls: entry.tls.clone(),
            api_key_expires_at: entry.api_key_expires_at.clone(),
            api_key,
        }
    }
}

impl From<SystemWire> for UnlockedSystem {
    fn from(mut wire: SystemWire) -> Self {
        let api_key = wire
            .api_key
            .as_mut()
            .map(|text| ApiKey::new(std::mem::take(&mut **text)));
        Self {
            name: wire.name,
            url: wire.url,
            username: wire.username,
            tls: wire.tls,
            api_key_expires_at: wire.api_key_expires_at,
            api_key,
        }
    }
}

impl From<&UnlockedSystem> for SystemWire {
    fn from(s: &UnlockedSystem) -> Self {
        Self {
            name: s.name.clone(),
            url: s.url.clone(),
            username: s.username.clone(),
            tls: s.tls.clone(),
            api_key_expires_at: s.api_key_expires_at.clone(),
            api_key: s
                .api_key
                .as_ref()
                .map(|k| Zeroizing::new(k.expose().to_string())),
        }
    }
}

/// Writes one value as a JSON line from a buffer that is wiped afterwards.
pub fn write_line<T: Serialize>(out: &mut impl Write, value: &T) -> Result<(), AgentError> {
    let mut line = Zeroizing::new(serde_json::to_vec(value).map_err(AgentError::io)?);
    line.push(b'\n');
    out.write_all(&line).map_err(AgentError::io)?;
    out.flush().map_err(AgentError::io)
}

/// Reads one JSON line of at most `limit` bytes into a buffer that is wiped afterwards.
pub fn read_line<T: for<'de> Deserialize<'de>>(
    input: &mut impl BufRead,
    limit: u64,
) -> Result<T, AgentError> {
    let mut line = Zeroizing::new(Vec::new());
    std::io::Read::take(input, limit)
        .read_until(b'\n', &mut line)
        .map_err(AgentError::io)?;
    if line.last() != Some(&b'\n') {
        return Err(AgentError::Io(
            "the message ended early or is too long".into(),
        ));
    }
    serde_json::from_slice(&line).map_err(|e| {
        AgentError::Io(format!(
            "the message is not valid (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_and_strict() {
        let text = r#"{"op":"key","system":"nas1","command":"get"}"#;
        let parsed: Request = serde_json::from_str(text).expect("parse");
        assert_eq!(
            parsed,
            Request::Key {
                system: "nas1".into(),
                command: "get".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"lock","passphrase":"x"}"#).is_err());
    }

    #[test]
    fn a_key_survives_the_wire() {
        let system = UnlockedSystem {
            name: "nas1".into(),
            url: "https://127.0.0.1:1".into(),
            username: "admin".into(),
            tls: "loopback".into(),
            api_key_expires_at: None,
            api_key: Some(ApiKey::new("1-abc".into())),
        };
        let mut buf = Vec::new();
        write_line(&mut buf, &SystemWire::from(&system)).expect("write");
        let back: SystemWire =
            read_line(&mut std::io::Cursor::new(buf), MAX_REPLY_BYTES).expect("read");
        let back = UnlockedSystem::from(back);
        assert_eq!(back.api_key.expect("key").expose(), "1-abc");
        assert_eq!(back.url, system.url);
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut input = std::io::Cursor::new(vec![b' '; 100]);
        assert!(read_line::<Request>(&mut input, 10).is_err());
    }
}
