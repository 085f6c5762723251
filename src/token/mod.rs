//! Security tokens that hold a P-256 key-agreement key: PKCS#11 tokens and PIV cards.
//!
//! Everything above this module sees only [`Token`], [`TokenUri`] and [`TokenError`]; the
//! backends' own types (cryptoki, PC/SC) stay inside their files.

pub mod piv;
pub mod pkcs11;

use std::fmt;
use std::time::Duration;

use p256::PublicKey;
use sha2::{Digest, Sha256};

use crate::secret::{Pin, SharedSecret};

/// Where a token and its key are found, as the user wrote it (`pkcs11:…` or `piv:…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenUri {
    Pkcs11(pkcs11::Pkcs11Uri),
    Piv(piv::PivUri),
}

impl TokenUri {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if text.starts_with("pkcs11:") {
            pkcs11::Pkcs11Uri::parse(text).map(TokenUri::Pkcs11)
        } else if text.starts_with("piv:") {
            piv::PivUri::parse(text).map(TokenUri::Piv)
        } else {
            Err(TokenError::BadUri {
                uri: text.to_string(),
                reason: "it must start with pkcs11: or piv:".into(),
            })
        }
    }

    /// The kind of token, as recorded in the vault: `pkcs11` or `piv`.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenUri::Pkcs11(_) => "pkcs11",
            TokenUri::Piv(_) => "piv",
        }
    }
}

impl fmt::Display for TokenUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenUri::Pkcs11(u) => u.fmt(f),
            TokenUri::Piv(u) => u.fmt(f),
        }
    }
}

/// What a token says about its PIN before one is tried. No try is spent to learn this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinStatus {
    /// Tries left, where the token tells the exact number.
    pub tries_left: Option<u32>,
    /// The token says some wrong PINs were entered (PKCS#11 "count low").
    pub count_low: bool,
    /// The next wrong PIN locks the token.
    pub final_try: bool,
    pub locked: bool,
}

/// How a token describes itself, for display and for the keyring's record of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// A canonical URI that finds this token and key again.
    pub uri: String,
    /// A short human label: token label and manufacturer, or card name and serial.
    pub label: String,
    pub serial: Option<String>,
}

/// Options for making a new key on a token.
#[derive(Clone, Debug, Default)]
pub struct KeygenOptions {
    /// PIV only: `once` (default) or `always`.
    pub pin_policy: Option<String>,
    /// PIV only: `never` (default), `cached` or `always`.
    pub touch_policy: Option<String>,
    /// Replace a key that is already there.
    pub overwrite: bool,
    /// PIV (YubiKey) only: when the card still has the factory management key, replace it
    /// by a random one stored on the card under the PIN.
    pub protect_management_key: bool,
}

/// Whether the token can prove that its key was made inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attestation {
    /// The proof was checked; the text says by whom.
    Proven(String),
    /// The token offers no proof for this key; the text says why.
    NotOffered(String),
    /// The token offered a proof that does not hold.
    Refuted(String),
}

/// Whether the token still has factory credentials; `None` where it cannot tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminStatus {
    pub default_pin: Option<bool>,
    pub default_puk: Option<bool>,
    pub default_management_key: Option<bool>,
}

/// How to look for a token: the key it must hold, and how long to wait for it.
pub struct Find<'a> {
    /// Only a token holding this key will do (the one a keyring records).
    pub key: Option<&'a PublicKey>,
    /// How long to wait for a card that is not inserted (PIV only).
    pub wait: Duration,
    /// Told once when the wait starts, with what to insert.
    pub notify: &'a mut dyn FnMut(&str),
}

/// A token with one P-256 key that can do key agreement.
pub trait Token {
    fn info(&self) -> TokenInfo;

    /// The key's public point. Needs no PIN.
    fn public_key(&mut self) -> Result<PublicKey, TokenError>;

    /// The PIN state, read without spending a try.
    fn pin_status(&mut self) -> Result<PinStatus, TokenError>;

    /// Presents the PIN once. A wrong PIN is never retried here.
    fn login(&mut self, pin: &Pin) -> Result<(), TokenError>;

    /// ECDH between the token's key and `peer`: the x coordinate of the shared point.
    fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError>;

    /// Makes a new P-256 key-agreement key (after [`Token::login`]) and returns its public key.
    fn generate_key(&mut self, options: &KeygenOptions) -> Result<PublicKey, TokenError>;

    /// Changes the user PIN from `old` to `new` (after [`Token::login`] with `old`).
    /// Backends that cannot change a PIN say so, and nothing is changed.
    fn change_pin(&mut self, _old: &Pin, _new: &Pin) -> Result<(), TokenError> {
        Err(TokenError::Unavailable(
            "this kind of token cannot have its PIN changed by nasring".into(),
        ))
    }

    /// Warnings about the key or token that the user should see (an extractable key, a
    /// default PIN), each one sentence.
    fn warnings(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the token is still there (plugged in, its slot still holding it). Needs no
    /// PIN. By default a token is present while its public key can be read.
    fn is_present(&mut self) -> bool {
        self.public_key().is_ok()
    }

    /// True when the token's PIN cannot be the passphrase (a PIV PIN is 6 to 8 characters).
    fn pin_must_differ(&self) -> bool {
        false
    }

    /// What to tell the user before a key agreement that may wait for a touch.
    fn touch_hint(&mut self) -> Option<String> {
        None
    }

    /// Asks the token to prove that its key was made inside it.
    fn attestation(&mut self) -> Attestation {
        Attestation::NotOffered("the token offers no attestation".into())
    }

    /// Which factory credentials the token still has.
    fn admin_status(&mut self) -> AdminStatus {
        AdminStatus::default()
    }
}

/// Opens the token that `uri` names. No PIN is asked or used here.
pub fn open(uri: &TokenUri) -> Result<Box<dyn Token>, TokenError> {
    match uri {
        TokenUri::Pkcs11(u) => Ok(Box::new(pkcs11::Pkcs11Token::open(u)?)),
        TokenUri::Piv(u) => {
            let mut quiet = |_: &str| {};
            let mut want = Find {
                key: None,
                wait: Duration::ZERO,
                notify: &mut quiet,
            };
            Ok(Box::new(piv::find(u, &mut want)?))
        }
    }
}

/// Opens the token that `uri` names and that holds `want.key`, waiting for a PIV card
/// as `want` says. No PIN is asked or used here.
pub fn open_with(uri: &TokenUri, want: &mut Find<'_>) -> Result<Box<dyn Token>, TokenError> {
    match uri {
        TokenUri::Pkcs11(u) => Ok(Box::new(pkcs11::Pkcs11Token::open(u)?)),
        TokenUri::Piv(u) => Ok(Box::new(piv::find(u, want)?)),
    }
}

/// `sha256:` and the hex SHA-256 of the SEC1 uncompressed public key: how keys are named
/// to the user and matched against the keyring.
pub fn fingerprint(key: &PublicKey) -> String {
    let point = p256::EncodedPoint::from(key);
    format!("sha256:{}", hex::encode(Sha256::digest(point.as_bytes())))
}

/// Errors from the token layer. Messages are one sentence of what happened and one of what
/// to do; they never contain a PIN.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token URI {uri} is not valid: {reason}")]
    BadUri { uri: String, reason: String },
    #[error(
        "the PKCS#11 module {path} was not found.\n\
         Install the token's PKCS#11 library, or name it with ?module-path=... in the URI."
    )]
    ModuleNotFound { path: String },
    #[error("the PKCS#11 module {path} could not be loaded: {detail}.\n{remedy}")]
    ModuleFailed {
        path: String,
        detail: String,
        remedy: String,
    },
    #[error("no token matching {uri} is present.\n{remedy}")]
    TokenNotFound { uri: String, remedy: String },
    #[error("the token has no key matching {uri}.\n{remedy}")]
    KeyNotFound { uri: String, remedy: String },
    #[error(
        "the token already holds a key at {uri}.\n\
         Use it as it is (leave out --generate-key), or pick another object label or slot."
    )]
    KeyExists { uri: String },
    #[error("wrong PIN{}.\n{}", tries_text(*.tries_left), pin_remedy(*.tries_left))]
    WrongPin { tries_left: Option<u32> },
    #[error("the token's PIN is blocked.\n{remedy}")]
    PinLocked { remedy: String },
    #[error("the PIN was refused by nasring before reaching the token: {reason}")]
    PinFormat { reason: String },
    #[error("the token's key is not a P-256 key-agreement key ({detail}).\n{remedy}")]
    WrongKeyType { detail: String, remedy: String },
    #[error(
        "the token did not confirm presence in time: touch the key when it blinks, then try again"
    )]
    TouchTimeout,
    #[error(
        "the smart card service (pcscd) is not running.\n\
         Start it: sudo systemctl start pcscd.socket (install it with apt-get install pcscd)."
    )]
    ServiceNotRunning,
    #[error(
        "no smart card reader is connected (a YubiKey is its own reader).\n\
         Plug in the YubiKey or the card reader, then try again."
    )]
    NoReader,
    #[error(
        "the card in {reader} is held exclusively by another program.\n\
         Close that program (for GnuPG: gpgconf --kill scdaemon), then try again."
    )]
    CardBusy { reader: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("the token failed during {operation}: {detail}")]
    Device { operation: String, detail: String },
}

fn tries_text(tries: Option<u32>) -> String {
    match tries {
        Some(1) => " (1 try left)".into(),
        Some(n) => format!(" ({n} tries left)"),
        None => String::new(),
    }
}

fn pin_remedy(tries: Option<u32>) -> &'static str {
    match tries {
        Some(1) => "The next wrong PIN blocks the token: check the PIN before trying again.",
        Some(0) => "The PIN is blocked: unblock it with the PUK or the security officer PIN.",
        _ => "Check the PIN and try again; nasring never retries a PIN by itself.",
    }
}

impl TokenError {
    /// True when the token refused the user's PIN or is locked: the "refused" exit code.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TokenError::WrongPin { .. }
                | TokenError::PinLocked { .. }
                | TokenError::PinFormat { .. }
        )
    }
}
