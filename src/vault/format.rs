//! The keyring file's encoding: a magic line, one line of JSON, and a MAC line.
//!
//! ```text
//! nasring-keyring v1\n
//! {"keyring_id":…, …}\n
//! mac:<base64 of HMAC-SHA256 over the two lines above, newlines included>\n
//! ```
//! The MAC covers the exact bytes, so nothing in the file can change unnoticed, not even
//! white space. Parsing is strict: unknown fields, duplicate lines or trailing bytes are refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::VaultError;

pub const MAGIC: &str = "nasring-keyring";
pub const FORMAT_VERSION: u32 = 1;

/// The whole keyring, as stored. Secrets appear only as ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// 16 random bytes, hex: binds every derived key and ciphertext to this keyring.
    pub keyring_id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub kdf: KdfRecord,
    /// base64, 32 bytes: the passphrase key `P` masked with a key derived from the passphrase.
    pub masked_passphrase_key: String,
    pub unlockers: Vec<Unlocker>,
    pub systems: Vec<SystemEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfRecord {
    /// Always `argon2id` (version 0x13).
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// base64, 16 bytes.
    pub salt: String,
}

/// One way into the keyring: a copy of the master key, wrapped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unlocker {
    /// Short random hex id, unique in the keyring.
    pub id: String,
    /// `token` (passphrase and token together) or `recovery` (the recovery code alone).
    pub kind: String,
    pub added_at: String,
    /// The token, for `kind` = `token`; null otherwise.
    pub token: Option<TokenRecord>,
    /// base64 SEC1 uncompressed point of the key the recovery code stands for, for `kind` =
    /// `recovery`; null otherwise.
    pub recovery_public_key: Option<String>,
    /// base64 SEC1 uncompressed point (65 bytes) of the ephemeral key used at enrolment.
    pub ephemeral_public_key: String,
    /// base64, 12 bytes.
    pub nonce: String,
    /// base64 AES-256-GCM ciphertext and tag of the 32-byte master key (48 bytes).
    pub wrapped_master_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// `pkcs11` or `piv`.
    pub backend: String,
    /// The URI that finds the token again.
    pub uri: String,
    pub label: String,
    pub serial: Option<String>,
    /// base64 SEC1 uncompressed point of the token's key-agreement key.
    pub public_key: String,
    /// The token PIN is the passphrase (false) or a separate PIN (true).
    pub separate_pin: bool,
    /// How the token proved its key was made inside it, checked at enrolment (absent when
    /// it offered no proof).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}

/// One TrueNAS system and its API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEntry {
    /// Short random hex id, unique in the keyring; bound into the ciphertext.
    pub id: String,
    pub name: String,
    pub url: String,
    pub username: String,
    /// How the system's certificate is trusted: `sha256:HEX` (a pin), `ca:` and a PEM
    /// certificate authority, or `none` (plain loopback URLs only).
    pub tls: String,
    pub api_key_id: Option<u64>,
    pub api_key_name: Option<String>,
    pub api_key_expires_at: Option<String>,
    /// A key rotation that was started and not finished, so that a rerun can finish it.
    pub rotation: Option<PendingRotation>,
    pub created_at: String,
    pub updated_at: String,
    /// base64, 12 bytes.
    pub nonce: String,
    /// base64 AES-256-GCM ciphertext and tag of the API key.
    pub ciphertext: String,
}

/// What `rotate` wrote down before asking the NAS for a new key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRotation {
    /// The unique name the new key gets (or got) on the NAS: how an orphan is found.
    pub new_key_name: String,
    /// The id of the key being replaced, deleted on the NAS once the new key is stored.
    pub old_key_id: Option<u64>,
    pub started_at: String,
}

impl Unlocker {
    /// A name for people: the token's label, or "the recovery code".
    pub fn label(&self) -> &str {
        match &self.token {
            Some(t) => &t.label,
            None => "the recovery code",
        }
    }
}

/// A parsed file: the document, and the exact bytes the MAC covers.
pub struct ParsedFile {
    pub document: Document,
    pub signed: Vec<u8>,
    pub mac: Vec<u8>,
}

fn corrupt(what: impl Into<String>) -> VaultError {
    VaultError::Corrupt {
        detail: what.into(),
    }
}

pub fn parse(bytes: &[u8]) -> Result<ParsedFile, VaultError> {
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("it is not UTF-8 text"))?;
    let magic_end = text
        .find('\n')
        .ok_or_else(|| corrupt("it has no header line"))?;
    check_magic(&text[..magic_end])?;
    let body_end = magic_end
        + 1
        + text[magic_end + 1..]
            .find('\n')
            .ok_or_else(|| corrupt("it ends early"))?;
    let mac_line = text[body_end + 1..]
        .strip_suffix('\n')
        .ok_or_else(|| corrupt("its last line is incomplete"))?;
    let mac_b64 = mac_line
        .strip_prefix("mac:")
        .filter(|m| !m.contains('\n'))
        .ok_or_else(|| corrupt("its MAC line is malformed"))?;
    let mac = B64
        .decode(mac_b64)
        .map_err(|_| corrupt("its MAC is not base64"))?;
    let document: Document = serde_json::from_str(&text[magic_end + 1..body_end])
        .map_err(|e| corrupt(format!("its contents do not parse ({})", e.classify_text())))?;
    Ok(ParsedFile {
        document,
        signed: bytes[..=body_end].to_vec(),
        mac,
    })
}

trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    // The serde message may quote file contents; only its class is shown.
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected field or value",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

fn check_magic(line: &str) -> Result<(), VaultError> {
    let version = line
        .strip_prefix(MAGIC)
        .and_then(|v| v.strip_prefix(" v"))
        .ok_or(VaultError::NotAKeyring)?;
    match version.parse::<u32>() {
        Ok(FORMAT_VERSION) if version == FORMAT_VERSION.to_string() => Ok(()),
        Ok(v) if v > FORMAT_VERSION && version == v.to_string() => {
            Err(VaultError::NewerFormat { version: v })
        }
        _ => Err(corrupt("its header line is malformed")),
    }
}

/// The bytes the MAC covers, for a document about to be written.
pub fn signed_bytes(document: &Document) -> Result<Vec<u8>, VaultError> {
    let body = serde_json::to_vec(document).map_err(|e| VaultError::Io {
        action: "encoding the keyring".into(),
        detail: e.to_string(),
        remedy: "Please report this: nothing was written.",
    })?;
    let mut out = format!("{MAGIC} v{FORMAT_VERSION}\n").into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    Ok(out)
}

pub fn with_mac(mut signed: Vec<u8>, mac: &[u8]) -> Vec<u8> {
    signed.extend_from_slice(b"mac:");
    signed.extend_from_slice(B64.encode(mac).as_bytes());
    signed.push(b'\n');
    signed
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(field: &str, text: &str) -> Result<Vec<u8>, VaultError> {
    B64.decode(text)
        .map_err(|_| corrupt(format!("{field} is not base64")))
}
