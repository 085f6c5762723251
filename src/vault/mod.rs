//! The keyring vault: one file holding the wrapped master key(s) and the encrypted API keys.
//!
//! Key hierarchy (see `docs/design.md` and `docs/vault-format.md`):
//! - a random 256-bit master key encrypts every API key (through an HKDF subkey) and
//!   authenticates the whole file (through another);
//! - each token unlocker wraps the master key under HKDF(ECDH with the token ‖ the passphrase
//!   key), and the passphrase key is stored masked under Argon2id of the passphrase, so
//!   neither the token nor the passphrase alone opens it, and the passphrase changes without
//!   any token;
//! - the recovery unlocker wraps it under HKDF(ECDH with the key the recovery code stands for).
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

use crate::secret::{
    ApiKey, MasterKey, Passphrase, PassphraseKey, Pin, RecoveryCode, SharedSecret,
    StretchedPassphrase,
};
use crate::token::{Token, TokenError};
use crypto::{CryptoError, KdfCost};
pub use format::{Document, PendingRotation, SystemEntry, TokenRecord, Unlocker};
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
    #[error(
        "the recovery code did not open keyring \"{keyring}\".\n\
         Check the code (32 letters and digits 2 to 7, dashes optional); an older code stops working when it is regenerated."
    )]
    WrongRecoveryCode { keyring: String },
    #[error(
        "unlocker {id} is not in keyring \"{keyring}\".\nnasring token list shows the unlockers and their ids."
    )]
    NoSuchUnlocker { id: String, keyring: String },
    #[error(
        "removing {what} would leave the keyring without a token.\n\
         Enrol another token first (nasring token add), then remove this one."
    )]
    LastToken { what: String },
    #[error(
        "the keyring was opened with the recovery code, so its passphrase is not known.\n\
         Set a passphrase while doing this (nasring asks for a new one)."
    )]
    NeedsPassphrase,
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
    #[error("{action} failed: {detail}.\n{remedy}")]
    Io {
        action: String,
        detail: String,
        remedy: &'static str,
    },
}

impl VaultError {
    /// True when the user's passphrase, PIN or token was refused.
    pub fn is_refusal(&self) -> bool {
        match self {
            VaultError::WrongPassphraseOrToken
            | VaultError::TokenNotEnrolled { .. }
            | VaultError::WrongRecoveryCode { .. } => true,
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
            .find(|u| u.token.as_ref().is_some_and(|t| t.public_key == encoded))
    }

    /// Opens the keyring with the recovery code alone. The passphrase stays unknown, so the
    /// open keyring cannot enrol a token until a passphrase is set ([`OpenKeyring::rekey`]).
    pub fn open_with_recovery_code(self, code: &RecoveryCode) -> Result<OpenKeyring, VaultError> {
        let wrong = || VaultError::WrongRecoveryCode {
            keyring: self.file.document.name.clone(),
        };
        let bytes = crypto::recovery_code_bytes(code).ok_or_else(wrong)?;
        let keyring_id = keyring_id_bytes(&self.file.document)?;
        let secret = crypto::recovery_secret_key(&keyring_id, &bytes);
        let public = secret.public_key();
        let encoded = format::b64(p256::EncodedPoint::from(&public).as_bytes());
        let unlocker = self
            .file
            .document
            .unlockers
            .iter()
            .find(|u| u.recovery_public_key.as_deref() == Some(encoded.as_str()))
            .cloned()
            .ok_or_else(wrong)?;
        let ephemeral = decode_point("ephemeral_public_key", &unlocker.ephemeral_public_key)?;
        let shared = crypto::agree_software(&secret, &ephemeral);
        let kek =
            crypto::recovery_wrapping_key(&keyring_id, &unlocker.id, &shared, &ephemeral, &public);
        let master = unwrap_master(&keyring_id, &unlocker, &kek).map_err(|_| wrong())?;
        self.verify(&keyring_id, &master)?;
        Ok(OpenKeyring {
            document: self.file.document,
            keyring_id,
            master,
            passphrase: None,
        })
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
        let record = unlocker
            .token
            .clone()
            .ok_or(VaultError::WrongPassphraseOrToken)?;
        let pin = match (record.separate_pin, pin) {
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
        let keyring_id = keyring_id_bytes(&self.file.document)?;
        let stretched = stretch(&self.file.document, passphrase)?;
        let masked = format::unb64(
            "masked_passphrase_key",
            &self.file.document.masked_passphrase_key,
        )?;
        let masked: [u8; 32] = masked.try_into().map_err(|_| VaultError::Corrupt {
            detail: "its masked passphrase key is not 32 bytes".into(),
        })?;
        let key = crypto::mask_passphrase_key(&keyring_id, &stretched, &masked);
        let ephemeral = decode_point("ephemeral_public_key", &unlocker.ephemeral_public_key)?;
        let shared = token.agree(&ephemeral)?;
        debug!(unlocker = %unlocker.id, "token agreed; unwrapping the master key");
        let kek = crypto::token_wrapping_key(
            &keyring_id,
            &unlocker.id,
            &shared,
            &key,
            &ephemeral,
            &token_key,
        );
        let master = unwrap_master(&keyring_id, &unlocker, &kek)?;
        self.verify(&keyring_id, &master)?;
        Ok(OpenKeyring {
            document: self.file.document,
            keyring_id,
            master,
            passphrase: Some(PassphraseState { stretched, key }),
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
    if format::unb64("masked_passphrase_key", &doc.masked_passphrase_key)?.len() != 32 {
        return Err(corrupt("its masked passphrase key is not 32 bytes"));
    }
    let mut ids = std::collections::HashSet::new();
    let mut recovery = 0;
    for u in &doc.unlockers {
        let shape_ok = match (u.kind.as_str(), &u.token, &u.recovery_public_key) {
            ("token", Some(t), None) => decode_point("token public_key", &t.public_key).is_ok(),
            ("recovery", None, Some(q)) => {
                recovery += 1;
                decode_point("recovery_public_key", q).is_ok()
            }
            _ => false,
        };
        if !ids.insert(&u.id) || !shape_ok {
            return Err(corrupt("its unlockers are malformed"));
        }
        decode_point("ephemeral_public_key", &u.ephemeral_public_key)?;
    }
    if recovery > 1 {
        return Err(corrupt("it has more than one recovery unlocker"));
    }
    if !doc.unlockers.iter().any(|u| u.kind == "token") {
        return Err(corrupt("it has no token unlocker"));
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

/// The passphrase's part of an open keyring: Argon2id of it, and the key it unmasks.
struct PassphraseState {
    stretched: StretchedPassphrase,
    key: PassphraseKey,
}

/// An authenticated, open keyring. Holds the master key until dropped.
pub struct OpenKeyring {
    document: Document,
    keyring_id: Vec<u8>,
    master: MasterKey,
    /// `None` when opened with the recovery code.
    passphrase: Option<PassphraseState>,
}

/// What to do with the passphrase when the keys are renewed ([`OpenKeyring::rekey`]).
pub enum PassphraseChange<'a> {
    /// Keep it: the keyring was opened with it.
    Keep,
    /// A new one, with its Argon2id cost.
    New(&'a Passphrase, KdfCost),
}

fn stretch_new(
    passphrase: &Passphrase,
    cost: KdfCost,
) -> Result<([u8; 16], StretchedPassphrase), VaultError> {
    let salt: [u8; 16] = crypto::random_bytes();
    let stretched = crypto::stretch_passphrase(passphrase, &salt, cost).map_err(|_| {
        invalid(
            "the key-derivation cost",
            "it is below the minimum or too large",
        )
    })?;
    Ok((salt, stretched))
}

fn kdf_record(cost: KdfCost, salt: &[u8]) -> format::KdfRecord {
    format::KdfRecord {
        algorithm: "argon2id".into(),
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
        parallelism: cost.parallelism,
        salt: format::b64(salt),
    }
}

fn encode_point(key: &PublicKey) -> String {
    format::b64(p256::EncodedPoint::from(key).as_bytes())
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
        let (salt, stretched) = stretch_new(passphrase, cost)?;
        let key = PassphraseKey::generate();
        let masked = crypto::mask_passphrase_key(&keyring_id, &stretched, key.expose());
        let created = now();
        let mut keyring = OpenKeyring {
            document: Document {
                keyring_id: hex::encode(&keyring_id),
                name: name.to_string(),
                created_at: created.clone(),
                updated_at: created,
                kdf: kdf_record(cost, &salt),
                masked_passphrase_key: format::b64(masked.expose()),
                unlockers: Vec::new(),
                systems: Vec::new(),
            },
            keyring_id,
            master: MasterKey::generate(),
            passphrase: Some(PassphraseState { stretched, key }),
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

    /// True when the keyring was opened with the recovery code (the passphrase is unknown).
    pub fn opened_with_recovery_code(&self) -> bool {
        self.passphrase.is_none()
    }

    /// The Argon2id cost the keyring uses now.
    pub fn kdf_cost(&self) -> KdfCost {
        KdfCost {
            memory_kib: self.document.kdf.memory_kib,
            iterations: self.document.kdf.iterations,
            parallelism: self.document.kdf.parallelism,
        }
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
        let encoded = encode_point(&token.public_key);
        if self
            .document
            .unlockers
            .iter()
            .any(|u| u.token.as_ref().is_some_and(|t| t.public_key == encoded))
        {
            return Err(invalid(
                "the token",
                "it is already enrolled in this keyring",
            ));
        }
        let id = self.new_unlocker_id();
        let record = TokenRecord {
            backend: token.backend.clone(),
            uri: token.uri.clone(),
            label: token.label.clone(),
            serial: token.serial.clone(),
            public_key: encoded,
            separate_pin: token.separate_pin,
            attestation: token.attestation.clone(),
        };
        let unlocker = self.wrap_token(id.clone(), now(), record)?;
        self.document.unlockers.push(unlocker);
        Ok(id)
    }

    fn new_unlocker_id(&self) -> String {
        loop {
            let id = random_id(4);
            let taken = self.document.unlockers.iter().any(|u| u.id == id)
                || self.document.systems.iter().any(|s| s.id == id);
            if !taken {
                return id;
            }
        }
    }

    /// A token unlocker: a fresh ephemeral key agreed with the token's public key, and the
    /// master key wrapped under it and the passphrase key.
    fn wrap_token(
        &self,
        id: String,
        added_at: String,
        record: TokenRecord,
    ) -> Result<Unlocker, VaultError> {
        let state = self
            .passphrase
            .as_ref()
            .ok_or(VaultError::NeedsPassphrase)?;
        let token_key = decode_point("token public_key", &record.public_key)?;
        let (shared, ephemeral) = crypto::enrol_ephemeral(&token_key);
        let kek = crypto::token_wrapping_key(
            &self.keyring_id,
            &id,
            &shared,
            &state.key,
            &ephemeral,
            &token_key,
        );
        Ok(self.sealed_unlocker(id, "token", added_at, Some(record), None, &ephemeral, &kek))
    }

    /// The recovery unlocker for the key a recovery code stands for.
    fn wrap_recovery(&self, id: String, added_at: String, public: &PublicKey) -> Unlocker {
        let (shared, ephemeral): (SharedSecret, PublicKey) = crypto::enrol_ephemeral(public);
        let kek = crypto::recovery_wrapping_key(&self.keyring_id, &id, &shared, &ephemeral, public);
        self.sealed_unlocker(
            id,
            "recovery",
            added_at,
            None,
            Some(encode_point(public)),
            &ephemeral,
            &kek,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn sealed_unlocker(
        &self,
        id: String,
        kind: &str,
        added_at: String,
        token: Option<TokenRecord>,
        recovery_public_key: Option<String>,
        ephemeral: &PublicKey,
        kek: &crate::secret::WrappingKey,
    ) -> Unlocker {
        let (nonce, wrapped) = crypto::seal(
            kek,
            self.master.expose(),
            &unlocker_aad(&self.keyring_id, &id),
        );
        Unlocker {
            id,
            kind: kind.into(),
            added_at,
            token,
            recovery_public_key,
            ephemeral_public_key: encode_point(ephemeral),
            nonce: format::b64(&nonce),
            wrapped_master_key: format::b64(&wrapped),
        }
    }

    /// Makes a new recovery code and puts its unlocker in place of the old one, if any.
    /// Call [`OpenKeyring::rekey`] afterwards so that the old code opens no copy of the
    /// current contents.
    pub fn new_recovery_code(&mut self) -> RecoveryCode {
        let code = crypto::new_recovery_code();
        let bytes = crypto::recovery_code_bytes(&code)
            .unwrap_or_else(|| unreachable!("a new recovery code always decodes"));
        let public = crypto::recovery_secret_key(&self.keyring_id, &bytes).public_key();
        self.document.unlockers.retain(|u| u.kind != "recovery");
        let id = self.new_unlocker_id();
        let unlocker = self.wrap_recovery(id, now(), &public);
        self.document.unlockers.push(unlocker);
        code
    }

    /// Removes one unlocker. The last token cannot be removed. Call [`OpenKeyring::rekey`]
    /// afterwards so that old copies of the file give the removed unlocker nothing current.
    pub fn remove_unlocker(&mut self, id: &str) -> Result<Unlocker, VaultError> {
        let index = self
            .document
            .unlockers
            .iter()
            .position(|u| u.id == id)
            .ok_or_else(|| VaultError::NoSuchUnlocker {
                id: id.into(),
                keyring: self.document.name.clone(),
            })?;
        let tokens = self
            .document
            .unlockers
            .iter()
            .filter(|u| u.kind == "token")
            .count();
        let unlocker = &self.document.unlockers[index];
        if unlocker.kind == "token" && tokens == 1 {
            return Err(VaultError::LastToken {
                what: format!("token {}", unlocker.label()),
            });
        }
        Ok(self.document.unlockers.remove(index))
    }

    /// Records whether an enrolled token has a PIN of its own (not the passphrase).
    pub fn set_separate_pin(&mut self, id: &str, separate: bool) {
        for u in &mut self.document.unlockers {
            if u.id == id {
                if let Some(t) = u.token.as_mut() {
                    t.separate_pin = separate;
                }
            }
        }
    }

    /// A new master key and a new passphrase key: every unlocker is wrapped again from its
    /// stored public key with a fresh ephemeral key (no token is needed), and every API key
    /// is encrypted again. Copies of the file from before open only what they held then.
    pub fn rekey(&mut self, change: PassphraseChange) -> Result<(), VaultError> {
        let (kdf, stretched) = match change {
            PassphraseChange::New(passphrase, cost) => {
                let (salt, stretched) = stretch_new(passphrase, cost)?;
                (kdf_record(cost, &salt), stretched)
            }
            PassphraseChange::Keep => {
                let state = self
                    .passphrase
                    .as_ref()
                    .ok_or(VaultError::NeedsPassphrase)?;
                (self.document.kdf.clone(), state.stretched.clone())
            }
        };
        let keys: Vec<(String, ApiKey)> = self
            .document
            .systems
            .iter()
            .map(|s| self.api_key(&s.name).map(|k| (s.name.clone(), k)))
            .collect::<Result<_, _>>()?;
        let key = PassphraseKey::generate();
        let masked = crypto::mask_passphrase_key(&self.keyring_id, &stretched, key.expose());
        self.master = MasterKey::generate();
        self.passphrase = Some(PassphraseState { stretched, key });
        self.document.kdf = kdf;
        self.document.masked_passphrase_key = format::b64(masked.expose());
        let old = std::mem::take(&mut self.document.unlockers);
        for u in old {
            let renewed = match (u.token, u.recovery_public_key) {
                (Some(record), _) => self.wrap_token(u.id, u.added_at, record)?,
                (None, Some(q)) => {
                    let public = decode_point("recovery_public_key", &q)?;
                    self.wrap_recovery(u.id, u.added_at, &public)
                }
                (None, None) => return Err(VaultError::Tampered),
            };
            self.document.unlockers.push(renewed);
        }
        for (name, key) in keys {
            self.reseal(&name, &key)?;
        }
        Ok(())
    }

    /// Encrypts one system's key again under the current master key; nothing else changes.
    fn reseal(&mut self, name: &str, key: &ApiKey) -> Result<(), VaultError> {
        let key_enc = crypto::entry_key(&self.keyring_id, &self.master);
        let keyring_id = self.keyring_id.clone();
        let entry = self
            .document
            .systems
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| VaultError::NoSuchSystem { name: name.into() })?;
        let (nonce, ct) = crypto::seal(
            &key_enc,
            key.expose().as_bytes(),
            &entry_aad(&keyring_id, entry),
        );
        entry.nonce = format::b64(&nonce);
        entry.ciphertext = format::b64(&ct);
        Ok(())
    }

    /// Notes (or clears) a key rotation in progress for a system.
    pub fn set_rotation(
        &mut self,
        name: &str,
        rotation: Option<PendingRotation>,
    ) -> Result<(), VaultError> {
        let entry = self
            .document
            .systems
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| VaultError::NoSuchSystem { name: name.into() })?;
        entry.rotation = rotation;
        Ok(())
    }

    /// A rotation record for a new key called `new_key_name`, replacing the current key.
    pub fn rotation_for(
        &self,
        name: &str,
        new_key_name: String,
    ) -> Result<PendingRotation, VaultError> {
        Ok(PendingRotation {
            new_key_name,
            old_key_id: self.system(name)?.api_key_id,
            started_at: now(),
        })
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
            rotation: None,
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

    // Limitation: after another process renewed the keys (rekey, passwd, token remove,
    // recovery regenerate) the held master key no longer authenticates the file, and this
    // reports it as altered; the command must be run again.
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
        open_entry(&self.keyring_id, &self.master, self.system(name)?)
    }

    /// The master key, for the one place that hands it on: the agent, over a pipe.
    pub fn master_key(&self) -> &MasterKey {
        &self.master
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

/// Decrypts a system's API key, bound to where it may go.
fn open_entry(
    keyring_id: &[u8],
    master: &MasterKey,
    entry: &SystemEntry,
) -> Result<ApiKey, VaultError> {
    let key_enc = crypto::entry_key(keyring_id, master);
    let nonce = format::unb64("entry nonce", &entry.nonce)?;
    let ct = format::unb64("entry ciphertext", &entry.ciphertext)?;
    let plain = crypto::open(&key_enc, &nonce, &ct, &entry_aad(keyring_id, entry))
        .map_err(|_: CryptoError| VaultError::Tampered)?;
    let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Tampered)?;
    Ok(ApiKey::new(text.to_string()))
}

impl Sealed {
    /// Opens the keyring with a master key already held (by the agent): the whole file is
    /// authenticated first, and a file of another keyring is refused as altered.
    pub fn open_with_master_key(
        self,
        keyring_id: &str,
        master: &MasterKey,
    ) -> Result<ReadKeyring, VaultError> {
        if self.file.document.keyring_id != keyring_id {
            return Err(VaultError::Tampered);
        }
        let id = keyring_id_bytes(&self.file.document)?;
        self.verify(&id, master)?;
        Ok(ReadKeyring {
            document: self.file.document,
            keyring_id: id,
        })
    }
}

/// An authenticated keyring opened with a held master key: it reads keys, never writes.
/// The master key stays with its holder; each call borrows it.
pub struct ReadKeyring {
    document: Document,
    keyring_id: Vec<u8>,
}

impl ReadKeyring {
    pub fn name(&self) -> &str {
        &self.document.name
    }

    pub fn systems(&self) -> &[SystemEntry] {
        &self.document.systems
    }

    /// Decrypts one system's API key; its URL, user name and pin are in the same
    /// authenticated entry.
    pub fn api_key(&self, master: &MasterKey, entry: &SystemEntry) -> Result<ApiKey, VaultError> {
        open_entry(&self.keyring_id, master, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SharedSecret;
    use crate::token::{KeygenOptions, PinStatus, TokenInfo};
    use p256::SecretKey;
    use rand::rngs::OsRng;

    struct SoftToken(SecretKey);

    impl Token for SoftToken {
        fn info(&self) -> TokenInfo {
            TokenInfo {
                uri: "pkcs11:token=soft".into(),
                label: "soft".into(),
                serial: None,
            }
        }
        fn public_key(&mut self) -> Result<PublicKey, TokenError> {
            Ok(self.0.public_key())
        }
        fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
            Ok(PinStatus::default())
        }
        fn login(&mut self, _pin: &Pin) -> Result<(), TokenError> {
            Ok(())
        }
        fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
            Ok(crypto::agree_software(&self.0, peer))
        }
        fn generate_key(&mut self, _o: &KeygenOptions) -> Result<PublicKey, TokenError> {
            Err(TokenError::Unavailable("fixed key".into()))
        }
    }

    fn enrolment(token: &SoftToken) -> TokenEnrolment {
        TokenEnrolment {
            backend: "pkcs11".into(),
            uri: "pkcs11:token=soft".into(),
            label: "soft".into(),
            serial: None,
            public_key: token.0.public_key(),
            separate_pin: false,
            attestation: None,
        }
    }

    const COST: KdfCost = KdfCost::MINIMUM;

    fn written(keyring: &mut OpenKeyring, dir: &Path) -> Vec<u8> {
        let vault = Vault::at(dir.join("k.nasring"));
        let lock = store::lock(vault.path(), true).expect("lock");
        keyring.save(&vault, &lock).expect("save");
        std::fs::read(vault.path()).expect("read")
    }

    #[test]
    fn rekey_leaves_the_old_master_key_nothing_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let passphrase = Passphrase::new("p".into());
        let mut first = SoftToken(SecretKey::random(&mut OsRng));
        let mut backup = SoftToken(SecretKey::random(&mut OsRng));
        let mut keyring =
            OpenKeyring::create("k", &passphrase, COST, &enrolment(&first)).expect("k");
        keyring.enrol_token(&enrolment(&backup)).expect("backup");
        let code = keyring.new_recovery_code();
        keyring
            .add_system(
                NewSystem {
                    name: "nas1".into(),
                    url: "https://127.0.0.1:9".into(),
                    username: "u".into(),
                    tls: String::new(),
                    api_key_id: Some(1),
                    api_key_name: None,
                    api_key_expires_at: None,
                },
                &ApiKey::new("1-abc".into()),
            )
            .expect("add");
        let old_file = written(&mut keyring, dir.path());
        let mut old = Sealed::parse(&old_file)
            .expect("parse")
            .open(&mut first, &passphrase, None)
            .expect("old opens");

        keyring.rekey(PassphraseChange::Keep).expect("rekey");
        let new_file = written(&mut keyring, dir.path());
        // The old master key does not authenticate (so cannot read) the new file.
        let refreshed = old.refresh(Sealed::parse(&new_file).expect("parse"));
        assert!(matches!(refreshed, Err(VaultError::Tampered)));
        // Every unlocker opens the new file, the absent backup token included.
        for token in [&mut first, &mut backup] {
            let open = Sealed::parse(&new_file)
                .expect("parse")
                .open(token, &passphrase, None)
                .expect("token opens after rekey");
            assert_eq!(open.api_key("nas1").expect("key").expose(), "1-abc");
        }
        let by_code = Sealed::parse(&new_file)
            .expect("parse")
            .open_with_recovery_code(&code)
            .expect("code opens after rekey");
        assert!(by_code.opened_with_recovery_code());
        assert!(matches!(
            Sealed::parse(&new_file).expect("parse").open(
                &mut first,
                &Passphrase::new("q".into()),
                None
            ),
            Err(VaultError::WrongPassphraseOrToken)
        ));
    }

    #[test]
    fn a_passphrase_change_needs_no_token_and_the_last_token_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Passphrase::new("old".into());
        let new = Passphrase::new("new".into());
        let mut token = SoftToken(SecretKey::random(&mut OsRng));
        let mut keyring = OpenKeyring::create("k", &old, COST, &enrolment(&token)).expect("k");
        keyring
            .rekey(PassphraseChange::New(&new, COST))
            .expect("passwd");
        let file = written(&mut keyring, dir.path());
        assert!(Sealed::parse(&file)
            .expect("parse")
            .open(&mut token, &old, None)
            .is_err());
        let mut opened = Sealed::parse(&file)
            .expect("parse")
            .open(&mut token, &new, None)
            .expect("new passphrase opens");
        let id = opened.document().unlockers[0].id.clone();
        assert!(matches!(
            opened.remove_unlocker(&id),
            Err(VaultError::LastToken { .. })
        ));
        // Opened with the recovery code, nothing can be enrolled until a passphrase is set.
        let code = opened.new_recovery_code();
        let file = written(&mut opened, dir.path());
        let mut recovered = Sealed::parse(&file)
            .expect("parse")
            .open_with_recovery_code(&code)
            .expect("code");
        let other = SoftToken(SecretKey::random(&mut OsRng));
        assert!(matches!(
            recovered.enrol_token(&enrolment(&other)),
            Err(VaultError::NeedsPassphrase)
        ));
        recovered
            .rekey(PassphraseChange::New(&new, COST))
            .expect("set passphrase");
        recovered
            .enrol_token(&enrolment(&other))
            .expect("enrol after");
    }
}
