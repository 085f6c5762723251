//! The keyring vault: one file holding the wrapped master key(s) and the encrypted API keys.
//!
//! Key hierarchy (see `docs/design.md` and `docs/vault-format.md`):
//! - a random 256-bit master key encrypts every API key (through an HKDF subkey) and
//!   authenticates the whole file (through another);
//! - each unlocker wraps the master key under HKDF(ECDH with the token ‖ Argon2id of the
//!   passphrase), so neither the token nor the passphrase alone opens it.
//!
//! This module knows tokens only through [`crate::token::Token`] and nothing of the network.

pub mod crypto;
pub mod format;
pub mod store;

use std::path::{Path, PathBuf};

use p256::PublicKey;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::debug;

use crate::secret::{ApiKey, MasterKey, Passphrase, Pin, StretchedPassphrase};
use crate::token::{Token, TokenError};
use crypto::{CryptoError, KdfCost};
pub use format::{Document, SystemEntry, TokenRecord, Unlocker};
pub use store::KeyringLock;

/// Errors of the vault layer. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "there is no keyring at {path}.\nCreate one with: nasring init --name NAME --token URI"
    )]
    NoKeyring { path: String },
    #[error(
        "a keyring already exists at {path}.\n\
         Use it as it is, choose another file with --vault, or remove it with nasring reset."
    )]
    AlreadyExists { path: String },
    #[error("the file is not a nasring keyring.\nCheck the --vault path or NASRING_VAULT.")]
    NotAKeyring,
    #[error(
        "the keyring was written by a newer nasring (format version {version}).\n\
         Upgrade nasring to open it; nothing was changed."
    )]
    NewerFormat { version: u32 },
    #[error(
        "the keyring file is damaged: {detail}.\n\
         Nothing was changed. Restore it from a backup copy; nasring never repairs it by dropping data."
    )]
    Corrupt { detail: String },
    #[error(
        "wrong passphrase or wrong token: the keyring did not open.\n\
         Check the passphrase and that the token is the one enrolled (nasring info)."
    )]
    WrongPassphraseOrToken,
    #[error(
        "the keyring file has been altered since nasring last wrote it; no key was used.\n\
         Restore it from a backup copy and find out who changed it."
    )]
    Tampered,
    #[error(
        "this token is not enrolled in keyring \"{keyring}\" (its key is {fingerprint}).\n\
         Use an enrolled token: nasring info lists them."
    )]
    TokenNotEnrolled {
        keyring: String,
        fingerprint: String,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(
        "there is no system named \"{name}\" in the keyring.\nnasring list shows the systems."
    )]
    NoSuchSystem { name: String },
    #[error(
        "a system named \"{name}\" is already in the keyring.\n\
         Choose another name, or replace its key with --replace."
    )]
    SystemExists { name: String },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: String, reason: String },
    #[error("another nasring process has held the keyring for a minute.\nWait for it to finish, then try again.")]
    Busy,
    #[error("{action} failed: {detail}")]
    Io { action: String, detail: String },
}

impl VaultError {
    /// True when the user's passphrase, PIN or token was refused.
    pub fn is_refusal(&self) -> bool {
        match self {
            VaultError::WrongPassphraseOrToken | VaultError::TokenNotEnrolled { .. } => true,
            VaultError::Token(e) => e.is_refusal(),
            _ => false,
        }
    }
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn random_id(bytes: usize) -> String {
    let raw: [u8; 16] = crypto::random_bytes();
    hex::encode(&raw[..bytes.min(16)])
}

fn invalid(what: &str, reason: impl Into<String>) -> VaultError {
    VaultError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Checks a keyring or system name: printable, not empty, at most 64 characters.
pub fn check_name(what: &str, name: &str) -> Result<(), VaultError> {
    if name.trim().is_empty() {
        return Err(invalid(what, "it is empty"));
    }
    if name.chars().count() > 64 {
        return Err(invalid(what, "it is longer than 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(what, "it contains control characters"));
    }
    if name.starts_with('-') {
        return Err(invalid(what, "it starts with '-'"));
    }
    Ok(())
}

/// The keyring file at one path.
#[derive(Clone, Debug)]
pub struct Vault {
    path: PathBuf,
}

impl Vault {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn no_keyring(&self) -> VaultError {
        VaultError::NoKeyring {
            path: self.path.display().to_string(),
        }
    }

    /// Reads the keyring for display, under a shared lock. Nothing is authenticated yet.
    pub fn load(&self) -> Result<Sealed, VaultError> {
        let _lock = store::lock(&self.path, false)?;
        let bytes = store::read(&self.path)?.ok_or_else(|| self.no_keyring())?;
        Sealed::parse(&bytes)
    }

    /// Takes the exclusive lock and reads the keyring, for a command that will change it.
    pub fn load_for_update(&self) -> Result<(KeyringLock, Sealed), VaultError> {
        let lock = store::lock(&self.path, true)?;
        let bytes = store::read(&self.path)?.ok_or_else(|| self.no_keyring())?;
        Ok((lock, Sealed::parse(&bytes)?))
    }

    /// Takes the exclusive lock for a new keyring; refuses if one exists.
    pub fn lock_for_create(&self) -> Result<KeyringLock, VaultError> {
        let lock = store::lock(&self.path, true)?;
        if store::read(&self.path)?.is_some() {
            return Err(VaultError::AlreadyExists {
                path: self.path.display().to_string(),
            });
        }
        Ok(lock)
    }

    /// Deletes the keyring file and every key in it. Needs no passphrase.
    pub fn reset(&self) -> Result<bool, VaultError> {
        let _lock = store::lock(&self.path, true)?;
        store::remove(&self.path)
    }

    pub fn is_private(&self) -> bool {
        store::is_private(&self.path)
    }
}

/// A keyring as read from disk: parsed, not yet authenticated.
pub struct Sealed {
    file: format::ParsedFile,
}

impl Sealed {
    pub fn parse(bytes: &[u8]) -> Result<Self, VaultError> {
        let file = format::parse(bytes)?;
        validate(&file.document)?;
        Ok(Self { file })
    }

    /// The keyring's contents as stored. Not authenticated until [`Sealed::open`].
    pub fn document(&self) -> &Document {
        &self.file.document
    }

    /// The unlocker enrolled for a token with this public key.
    pub fn unlocker_for(&self, key: &PublicKey) -> Option<&Unlocker> {
        let encoded = format::b64(p256::EncodedPoint::from(key).as_bytes());
        self.file
            .document
            .unlockers
            .iter()
            .find(|u| u.token.public_key == encoded)
    }

    /// Opens the keyring with a token and the passphrase. The token is logged in with `pin`
    /// if the unlocker has a separate PIN, else with the passphrase. One key agreement, one
    /// Argon2id, whatever the number of systems. The whole file is authenticated before
    /// anything else is decrypted.
    pub fn open(
        self,
        token: &mut dyn Token,
        passphrase: &Passphrase,
        pin: Option<&Pin>,
    ) -> Result<OpenKeyring, VaultError> {
        let token_key = token.public_key()?;
        let unlocker =
            self.unlocker_for(&token_key)
                .cloned()
                .ok_or_else(|| VaultError::TokenNotEnrolled {
                    keyring: self.file.document.name.clone(),
                    fingerprint: crate::token::fingerprint(&token_key),
                })?;
        let pin = match (unlocker.token.separate_pin, pin) {
            (true, Some(pin)) => pin.clone(),
            (true, None) => {
                return Err(invalid(
                    "the PIN",
                    "this token needs its own PIN (--pin-file)",
                ))
            }
            (false, _) => Pin::from(passphrase),
        };
        token.login(&pin)?;
        let stretched = stretch(&self.file.document, passphrase)?;
        let ephemeral = decode_point("ephemeral_public_key", &unlocker.ephemeral_public_key)?;
        let shared = token.agree(&ephemeral)?;
        debug!(unlocker = %unlocker.id, "token agreed; unwrapping the master key");
        let keyring_id = keyring_id_bytes(&self.file.document)?;
        let kek = crypto::token_wrapping_key(
            &keyring_id,
            &unlocker.id,
            &shared,
            &stretched,
            &ephemeral,
            &token_key,
        );
        let master = unwrap_master(&keyring_id, &unlocker, &kek)?;
        self.verify(&keyring_id, &master)?;
        Ok(OpenKeyring {
            document: self.file.document,
            keyring_id,
            master,
            stretched,
        })
    }

    fn verify(&self, keyring_id: &[u8], master: &MasterKey) -> Result<(), VaultError> {
        let mac_key = crypto::document_mac_key(keyring_id, master);
        if crypto::mac_matches(&mac_key, &self.file.signed, &self.file.mac) {
            Ok(())
        } else {
            Err(VaultError::Tampered)
        }
    }
}

fn stretch(doc: &Document, passphrase: &Passphrase) -> Result<StretchedPassphrase, VaultError> {
    let salt = format::unb64("kdf.salt", &doc.kdf.salt)?;
    let cost = KdfCost {
        memory_kib: doc.kdf.memory_kib,
        iterations: doc.kdf.iterations,
        parallelism: doc.kdf.parallelism,
    };
    crypto::stretch_passphrase(passphrase, &salt, cost).map_err(|_| VaultError::Corrupt {
        detail: "its key-derivation parameters are out of range".into(),
    })
}

fn unwrap_master(
    keyring_id: &[u8],
    unlocker: &Unlocker,
    kek: &crate::secret::WrappingKey,
) -> Result<MasterKey, VaultError> {
    let nonce = format::unb64("unlocker nonce", &unlocker.nonce)?;
    let wrapped = format::unb64("wrapped_master_key", &unlocker.wrapped_master_key)?;
    let aad = unlocker_aad(keyring_id, &unlocker.id);
    let plain = crypto::open(kek, &nonce, &wrapped, &aad)
        .map_err(|_| VaultError::WrongPassphraseOrToken)?;
    MasterKey::from_slice(&plain).ok_or(VaultError::WrongPassphraseOrToken)
}

/// Associated data of an unlocker's wrapped master key.
pub fn unlocker_aad(keyring_id: &[u8], unlocker_id: &str) -> Vec<u8> {
    crypto::bind_fields(crypto::AAD_UNLOCKER, &[keyring_id, unlocker_id.as_bytes()])
}

/// Associated data of a system's encrypted API key: its identity and where it may go.
pub fn entry_aad(keyring_id: &[u8], e: &SystemEntry) -> Vec<u8> {
    let key_id = e.api_key_id.map(|i| i.to_string()).unwrap_or_default();
    crypto::bind_fields(
        crypto::AAD_ENTRY,
        &[
            keyring_id,
            e.id.as_bytes(),
            e.name.as_bytes(),
            e.url.as_bytes(),
            e.username.as_bytes(),
            e.tls.as_bytes(),
            key_id.as_bytes(),
            e.api_key_name.as_deref().unwrap_or("").as_bytes(),
        ],
    )
}

fn keyring_id_bytes(doc: &Document) -> Result<Vec<u8>, VaultError> {
    hex::decode(&doc.keyring_id)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| VaultError::Corrupt {
            detail: "its keyring id is malformed".into(),
        })
}

fn decode_point(field: &str, text: &str) -> Result<PublicKey, VaultError> {
    let raw = format::unb64(field, text)?;
    PublicKey::from_sec1_bytes(&raw).map_err(|_| VaultError::Corrupt {
        detail: format!("{field} is not a valid P-256 point"),
    })
}

/// Structural checks that need no key: ids unique, points valid, names sane.
fn validate(doc: &Document) -> Result<(), VaultError> {
    let corrupt = |d: &str| VaultError::Corrupt { detail: d.into() };
    keyring_id_bytes(doc)?;
    if doc.kdf.algorithm != "argon2id" {
        return Err(corrupt("its key-derivation algorithm is unknown"));
    }
    if doc.unlockers.is_empty() {
        return Err(corrupt("it has no unlocker"));
    }
    let mut ids = std::collections::HashSet::new();
    for u in &doc.unlockers {
        if !ids.insert(&u.id) || u.kind != "token" {
            return Err(corrupt("its unlockers are malformed"));
        }
        decode_point("ephemeral_public_key", &u.ephemeral_public_key)?;
        decode_point("token public_key", &u.token.public_key)?;
    }
    let mut names = std::collections::HashSet::new();
    for s in &doc.systems {
        if !ids.insert(&s.id) || !names.insert(&s.name) {
            return Err(corrupt("two systems share a name or id"));
        }
    }
    Ok(())
}

/// The description of a new system; its API key is passed separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSystem {
    pub name: String,
    pub url: String,
    pub username: String,
    pub tls: String,
    pub api_key_id: Option<u64>,
    pub api_key_name: Option<String>,
    pub api_key_expires_at: Option<String>,
}

/// What enrolling a token needs to know about it.
#[derive(Clone, Debug)]
pub struct TokenEnrolment {
    pub backend: String,
    pub uri: String,
    pub label: String,
    pub serial: Option<String>,
    pub public_key: PublicKey,
    pub separate_pin: bool,
    /// The token's proof that the key was made inside it, as checked at enrolment.
    pub attestation: Option<String>,
}

/// An authenticated, open keyring. Holds the master key until dropped.
pub struct OpenKeyring {
    document: Document,
    keyring_id: Vec<u8>,
    master: MasterKey,
    stretched: StretchedPassphrase,
}

impl OpenKeyring {
    /// A new keyring with one token unlocker. Nothing is written until [`OpenKeyring::save`].
    pub fn create(
        name: &str,
        passphrase: &Passphrase,
        cost: KdfCost,
        token: &TokenEnrolment,
    ) -> Result<Self, VaultError> {
        check_name("the keyring name", name)?;
        let keyring_id = crypto::random_bytes::<16>().to_vec();
        let salt: [u8; 16] = crypto::random_bytes();
        let stretched = crypto::stretch_passphrase(passphrase, &salt, cost).map_err(|_| {
            invalid(
                "the key-derivation cost",
                "it is below the minimum or too large",
            )
        })?;
        let created = now();
        let mut keyring = OpenKeyring {
            document: Document {
                keyring_id: hex::encode(&keyring_id),
                name: name.to_string(),
                created_at: created.clone(),
                updated_at: created,
                kdf: format::KdfRecord {
                    algorithm: "argon2id".into(),
                    memory_kib: cost.memory_kib,
                    iterations: cost.iterations,
                    parallelism: cost.parallelism,
                    salt: format::b64(&salt),
                },
                unlockers: Vec::new(),
                systems: Vec::new(),
            },
            keyring_id,
            master: MasterKey::generate(),
            stretched,
        };
        keyring.enrol_token(token)?;
        Ok(keyring)
    }

    pub fn document(&self) -> &Document {
        &self.document
    }

    pub fn name(&self) -> &str {
        &self.document.name
    }

    pub fn systems(&self) -> &[SystemEntry] {
        &self.document.systems
    }

    pub fn system(&self, name: &str) -> Result<&SystemEntry, VaultError> {
        self.document
            .systems
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| VaultError::NoSuchSystem { name: name.into() })
    }

    /// Adds an unlocker for a token from its public key alone: the token need not be present.
    pub fn enrol_token(&mut self, token: &TokenEnrolment) -> Result<String, VaultError> {
        let encoded = format::b64(p256::EncodedPoint::from(&token.public_key).as_bytes());
        if self
            .document
            .unlockers
            .iter()
            .any(|u| u.token.public_key == encoded)
        {
            return Err(invalid(
                "the token",
                "it is already enrolled in this keyring",
            ));
        }
        let id = random_id(4);
        let (shared, ephemeral) = crypto::enrol_ephemeral(&token.public_key);
        let kek = crypto::token_wrapping_key(
            &self.keyring_id,
            &id,
            &shared,
            &self.stretched,
            &ephemeral,
            &token.public_key,
        );
        let (nonce, wrapped) = crypto::seal(
            &kek,
            self.master.expose(),
            &unlocker_aad(&self.keyring_id, &id),
        );
        self.document.unlockers.push(Unlocker {
            id: id.clone(),
            kind: "token".into(),
            added_at: now(),
            token: TokenRecord {
                backend: token.backend.clone(),
                uri: token.uri.clone(),
                label: token.label.clone(),
                serial: token.serial.clone(),
                public_key: encoded,
                separate_pin: token.separate_pin,
                attestation: token.attestation.clone(),
            },
            ephemeral_public_key: format::b64(p256::EncodedPoint::from(&ephemeral).as_bytes()),
            nonce: format::b64(&nonce),
            wrapped_master_key: format::b64(&wrapped),
        });
        Ok(id)
    }

    /// Stores a new system and its API key. Refuses a name already present.
    pub fn add_system(&mut self, new: NewSystem, key: &ApiKey) -> Result<(), VaultError> {
        check_name("the system name", &new.name)?;
        if self.document.systems.iter().any(|s| s.name == new.name) {
            return Err(VaultError::SystemExists { name: new.name });
        }
        let created = now();
        let entry = self.seal_entry(random_id(8), new, key, created)?;
        self.document.systems.push(entry);
        Ok(())
    }

    /// Replaces the key and details of a system already present; returns the old entry.
    pub fn replace_system(
        &mut self,
        new: NewSystem,
        key: &ApiKey,
    ) -> Result<SystemEntry, VaultError> {
        let index = self
            .document
            .systems
            .iter()
            .position(|s| s.name == new.name)
            .ok_or_else(|| VaultError::NoSuchSystem {
                name: new.name.clone(),
            })?;
        let old = self.document.systems[index].clone();
        let entry = self.seal_entry(random_id(8), new, key, old.created_at.clone())?;
        self.document.systems[index] = entry;
        Ok(old)
    }

    fn seal_entry(
        &self,
        id: String,
        new: NewSystem,
        key: &ApiKey,
        created: String,
    ) -> Result<SystemEntry, VaultError> {
        let mut entry = SystemEntry {
            id,
            name: new.name,
            url: new.url,
            username: new.username,
            tls: new.tls,
            api_key_id: new.api_key_id,
            api_key_name: new.api_key_name,
            api_key_expires_at: new.api_key_expires_at,
            created_at: created,
            updated_at: now(),
            nonce: String::new(),
            ciphertext: String::new(),
        };
        let key_enc = crypto::entry_key(&self.keyring_id, &self.master);
        let (nonce, ct) = crypto::seal(
            &key_enc,
            key.expose().as_bytes(),
            &entry_aad(&self.keyring_id, &entry),
        );
        entry.nonce = format::b64(&nonce);
        entry.ciphertext = format::b64(&ct);
        Ok(entry)
    }

    pub fn remove_system(&mut self, name: &str) -> Result<SystemEntry, VaultError> {
        let index = self
            .document
            .systems
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| VaultError::NoSuchSystem { name: name.into() })?;
        Ok(self.document.systems.remove(index))
    }

    /// Takes the keyring as it is on disk now, after other processes may have changed it,
    /// checking it with the master key already held: no token operation, no passphrase.
    /// Fails with [`VaultError::Tampered`] if the file is not this keyring any more.
    pub fn refresh(&mut self, sealed: Sealed) -> Result<(), VaultError> {
        if sealed.file.document.keyring_id != self.document.keyring_id {
            return Err(VaultError::Tampered);
        }
        sealed.verify(&self.keyring_id, &self.master)?;
        self.document = sealed.file.document;
        Ok(())
    }

    /// Changes how a system's certificate is trusted; its key is sealed again, since the
    /// trust is bound to it.
    pub fn set_tls(&mut self, name: &str, tls: String) -> Result<(), VaultError> {
        let key = self.api_key(name)?;
        let old = self.system(name)?.clone();
        let new = NewSystem {
            name: old.name,
            url: old.url,
            username: old.username,
            tls,
            api_key_id: old.api_key_id,
            api_key_name: old.api_key_name,
            api_key_expires_at: old.api_key_expires_at,
        };
        self.replace_system(new, &key).map(|_| ())
    }

    /// Decrypts one system's API key.
    pub fn api_key(&self, name: &str) -> Result<ApiKey, VaultError> {
        let entry = self.system(name)?;
        let key_enc = crypto::entry_key(&self.keyring_id, &self.master);
        let nonce = format::unb64("entry nonce", &entry.nonce)?;
        let ct = format::unb64("entry ciphertext", &entry.ciphertext)?;
        let plain = crypto::open(&key_enc, &nonce, &ct, &entry_aad(&self.keyring_id, entry))
            .map_err(|_: CryptoError| VaultError::Tampered)?;
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Tampered)?;
        Ok(ApiKey::new(text.to_string()))
    }

    /// Writes the keyring atomically, authenticated under the master key. The caller holds
    /// the exclusive lock, which `_lock` proves.
    pub fn save(&mut self, vault: &Vault, _lock: &KeyringLock) -> Result<(), VaultError> {
        self.document.updated_at = now();
        let signed = format::signed_bytes(&self.document)?;
        let mac = crypto::mac(
            &crypto::document_mac_key(&self.keyring_id, &self.master),
            &signed,
        );
        store::write_atomic(vault.path(), &format::with_mac(signed, &mac))
    }
}
