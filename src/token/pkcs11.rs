//! PKCS#11 tokens: enterprise HSMs, Nitrokey HSM, SoftHSM, anything with a PKCS#11 module.
//!
//! A token and its key are named by an RFC 7512 URI, for example
//! `pkcs11:token=nasring;object=nasring-key?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//! Without `module-path`, the modules registered with p11-kit are used through its proxy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use p256::PublicKey;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tracing::{debug, warn};
use zeroize::Zeroizing;

use super::{KeygenOptions, PinStatus, Token, TokenError, TokenInfo};
use crate::secret::{Pin, SharedSecret};

/// DER encoding of the OID of prime256v1 (secp256r1), the only curve nasring uses.
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Object label used when the URI names none.
pub const DEFAULT_OBJECT_LABEL: &str = "nasring";

/// Where p11-kit's proxy module is found on common distributions.
const P11_KIT_PROXY: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// How often a transient SoftHSM failure is retried (see [`Pkcs11Token::is_softhsm`]).
const SOFTHSM_RETRIES: u32 = 8;

/// An RFC 7512 `pkcs11:` URI, reduced to the attributes nasring uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: Option<String>,
}

const URI_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b';')
    .add(b'?')
    .add(b'&')
    .add(b'=')
    .add(b'/')
    .add(b'"')
    .add(b'#');
const URI_QUERY_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'&').add(b'"').add(b'#');

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        // The query may hold a pin-value: never echo it.
        let shown = match text.split_once('?') {
            Some((path, _)) => format!("{path}?..."),
            None => text.to_string(),
        };
        let bad = |reason: String| TokenError::BadUri {
            uri: shown.clone(),
            reason,
        };
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("it must start with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = split_attr(attr).map_err(&bad)?;
            uri.set_path_attr(name, value).map_err(&bad)?;
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = split_attr(attr).map_err(&bad)?;
            uri.set_query_attr(name, value).map_err(&bad)?;
        }
        Ok(uri)
    }

    fn set_path_attr(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let text = || decode_text(name, raw);
        match name {
            "token" => self.token = Some(text()?),
            "serial" => self.serial = Some(text()?),
            "manufacturer" => self.manufacturer = Some(text()?),
            "model" => self.model = Some(text()?),
            "object" => self.object = Some(text()?),
            "id" => self.id = Some(percent_decode_str(raw).collect()),
            "slot-id" => {
                let id = text()?;
                self.slot_id = Some(
                    id.parse()
                        .map_err(|_| format!("slot-id {id} is not a number"))?,
                )
            }
            "type" => {
                let t = text()?;
                if !matches!(t.as_str(), "private" | "public") {
                    return Err(format!("type={t} cannot name a key-agreement key"));
                }
            }
            n if n.starts_with("x-") || n.starts_with("library-") || n.starts_with("slot-") => {}
            other => return Err(format!("unknown attribute {other}")),
        }
        Ok(())
    }

    fn set_query_attr(&mut self, name: &str, raw: &str) -> Result<(), String> {
        match name {
            "module-path" => self.module_path = Some(decode_text(name, raw)?),
            "pin-value" | "pin-source" => {
                return Err(format!(
                    "{name} is not accepted: a PIN never goes into a command line; \
                     use --pin-file or the passphrase prompt"
                ))
            }
            n if n.starts_with("x-") || n == "module-name" => {}
            other => return Err(format!("unknown query attribute {other}")),
        }
        Ok(())
    }

    /// The object label to use for a new key.
    pub fn object_label(&self) -> &str {
        self.object.as_deref().unwrap_or(DEFAULT_OBJECT_LABEL)
    }

    fn names_token(&self, info: &cryptoki::slot::TokenInfo, slot: Slot) -> bool {
        let eq =
            |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have.trim());
        eq(&self.token, info.label())
            && eq(&self.serial, info.serial_number())
            && eq(&self.manufacturer, info.manufacturer_id())
            && eq(&self.model, info.model())
            && self.slot_id.is_none_or(|s| s == slot.id())
    }
}

fn split_attr(attr: &str) -> Result<(&str, &str), String> {
    attr.split_once('=')
        .ok_or_else(|| format!("attribute {attr} has no value"))
}

fn decode_text(name: &str, raw: &str) -> Result<String, String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{name} is not valid UTF-8"))
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = |v: &str| utf8_percent_encode(v, URI_VALUE).to_string();
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("object", &self.object),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={}", enc(v)));
            }
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            parts.push(format!("id={hex}"));
        }
        if let Some(slot) = self.slot_id {
            parts.push(format!("slot-id={slot}"));
        }
        write!(f, "pkcs11:{}", parts.join(";"))?;
        if let Some(path) = &self.module_path {
            write!(
                f,
                "?module-path={}",
                utf8_percent_encode(path, URI_QUERY_VALUE)
            )?;
        }
        Ok(())
    }
}

/// An open PKCS#11 token with one P-256 key.
pub struct Pkcs11Token {
    uri: Pkcs11Uri,
    module: PathBuf,
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    manufacturer: String,
    serial: String,
    session: Option<Session>,
}

impl Pkcs11Token {
    /// Loads the module and finds the token. Retries SoftHSM's transient failures.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, TokenError> {
        let module = resolve_module(uri)?;
        let mut attempt = 0;
        loop {
            match Self::open_once(uri, &module) {
                Err(e)
                    if attempt < SOFTHSM_RETRIES && is_softhsm_module(&module) && transient(&e) =>
                {
                    attempt += 1;
                    debug!(
                        attempt,
                        "SoftHSM was busy while opening the token; retrying"
                    );
                    thread::sleep(backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn open_once(uri: &Pkcs11Uri, module: &Path) -> Result<Self, TokenError> {
        let ctx = load_module(module)?;
        let (slot, info) = find_slot(&ctx, uri)?;
        debug!(
            slot = slot.id(),
            label = info.label().trim(),
            "found PKCS#11 token"
        );
        Ok(Self {
            uri: uri.clone(),
            module: module.to_path_buf(),
            slot,
            label: info.label().trim().to_string(),
            manufacturer: info.manufacturer_id().trim().to_string(),
            serial: info.serial_number().trim().to_string(),
            ctx,
            session: None,
        })
    }

    /// SoftHSM rewrites its token file on every login, so concurrent processes see
    /// `CKR_GENERAL_ERROR` now and then; those, and only those, are retried.
    fn is_softhsm(&self) -> bool {
        self.manufacturer.starts_with("SoftHSM") || is_softhsm_module(&self.module)
    }

    /// Starts over after a transient failure: a new context, the same token.
    fn reopen(&mut self) -> Result<(), TokenError> {
        self.session = None;
        // SoftHSM keeps its view of the token file until the library is finalized.
        if let Err(e) = self.ctx.clone().finalize() {
            debug!(error = %e, "C_Finalize before starting over failed");
        }
        let fresh = Self::open(&self.uri)?;
        *self = fresh;
        Ok(())
    }

    /// Runs a step that comes before login, starting over on SoftHSM's transient failures.
    fn retrying<T>(
        &mut self,
        mut step: impl FnMut(&mut Self) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let mut attempt = 0;
        loop {
            match step(self) {
                Err(e) if attempt < SOFTHSM_RETRIES && self.is_softhsm() && transient(&e) => {
                    attempt += 1;
                    debug!(attempt, "SoftHSM was busy; starting over");
                    thread::sleep(backoff(attempt));
                    self.reopen()?;
                }
                other => return other,
            }
        }
    }

    fn session(&self) -> Result<&Session, TokenError> {
        self.session.as_ref().ok_or_else(|| TokenError::Device {
            operation: "using the token".into(),
            detail: "no PIN was presented yet".into(),
        })
    }

    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class), Attribute::KeyType(KeyType::EC)];
        if let Some(label) = &self.uri.object {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    fn find_one(
        &self,
        session: &Session,
        class: ObjectClass,
    ) -> Result<Option<ObjectHandle>, TokenError> {
        let found = session
            .find_objects(&self.key_template(class))
            .map_err(|e| device("C_FindObjects", e))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0])),
            n => Err(TokenError::KeyNotFound {
                uri: self.uri.to_string(),
                remedy: format!("{n} keys match; name one with object=LABEL or id=%XX in the URI."),
            }),
        }
    }

    fn key_not_found(&self) -> TokenError {
        TokenError::KeyNotFound {
            uri: self.uri.to_string(),
            remedy: "Check the object label or id, or make a key with --generate-key.".into(),
        }
    }

    fn private_key(&self) -> Result<ObjectHandle, TokenError> {
        let session = self.session()?;
        self.find_one(session, ObjectClass::PRIVATE_KEY)?
            .ok_or_else(|| self.key_not_found())
    }

    fn login_once(&mut self, pin: &Pin) -> Result<(), TokenError> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .or_else(|_| self.ctx.open_ro_session(self.slot))
            .map_err(|e| device("C_OpenSession", e))?;
        let auth = AuthPin::from(pin.expose().to_string());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                self.session = Some(session);
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(self.wrong_pin()),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(pin_locked()),
            Err(CkError::Pkcs11(RvError::PinLenRange, _)) => Err(TokenError::PinFormat {
                reason: "the token does not accept a PIN of that length".into(),
            }),
            Err(e) => Err(device("C_Login", e)),
        }
    }

    fn wrong_pin(&self) -> TokenError {
        match self.read_pin_status() {
            Ok(s) if s.locked => pin_locked(),
            Ok(s) if s.final_try => TokenError::WrongPin {
                tries_left: Some(1),
            },
            _ => TokenError::WrongPin { tries_left: None },
        }
    }

    fn read_pin_status(&self) -> Result<PinStatus, TokenError> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| device("C_GetTokenInfo", e))?;
        Ok(PinStatus {
            tries_left: info.user_pin_final_try().then_some(1),
            count_low: info.user_pin_count_low(),
            final_try: info.user_pin_final_try(),
            locked: info.user_pin_locked(),
        })
    }

    fn derive(&self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        let session = self.session()?;
        let key = self.private_key()?;
        let point = p256::EncodedPoint::from(peer);
        let params = Ecdh1DeriveParams::new(EcKdf::null(), point.as_bytes());
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::ValueLen(32.into()),
        ];
        let derived = session
            .derive_key(&Mechanism::Ecdh1Derive(params), key, &template)
            .map_err(|e| device("C_DeriveKey (ECDH)", e))?;
        let value = read_secret_value(session, derived);
        if let Err(e) = session.destroy_object(derived) {
            warn!(error = %e, "could not destroy the derived ECDH object");
        }
        value
    }

    fn generate(&self, options: &KeygenOptions) -> Result<PublicKey, TokenError> {
        let session = self.session()?;
        if let Some(existing) = self.find_one(session, ObjectClass::PRIVATE_KEY)? {
            if !options.overwrite {
                return Err(TokenError::KeyExists {
                    uri: self.uri.to_string(),
                });
            }
            session
                .destroy_object(existing)
                .map_err(|e| device("C_DestroyObject", e))?;
        }
        let label = self.uri.object_label().as_bytes().to_vec();
        let id = self.uri.id.clone().unwrap_or_else(random_id);
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::EcParams(P256_OID_DER.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(true),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        let (pub_handle, _) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| device("C_GenerateKeyPair (EC P-256)", e))?;
        read_ec_point(session, pub_handle)
    }
}

impl Token for Pkcs11Token {
    fn info(&self) -> TokenInfo {
        let mut uri = self.uri.clone();
        if uri.token.is_none() && uri.serial.is_none() {
            uri.token = Some(self.label.clone());
        }
        TokenInfo {
            uri: uri.to_string(),
            label: format!("{} ({})", self.label, self.manufacturer),
            serial: Some(self.serial.clone()).filter(|s| !s.is_empty()),
        }
    }

    fn public_key(&mut self) -> Result<PublicKey, TokenError> {
        self.retrying(|tok| {
            if tok.session.is_none() {
                let s = tok
                    .ctx
                    .open_ro_session(tok.slot)
                    .map_err(|e| device("C_OpenSession", e))?;
                tok.session = Some(s);
            }
            let session = tok.session()?;
            let handle = tok
                .find_one(session, ObjectClass::PUBLIC_KEY)?
                .ok_or_else(|| tok.key_not_found())?;
            read_ec_point(session, handle)
        })
    }

    fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
        self.retrying(|tok| tok.read_pin_status())
    }

    fn login(&mut self, pin: &Pin) -> Result<(), TokenError> {
        self.retrying(|tok| {
            if tok.read_pin_status()?.locked {
                return Err(pin_locked());
            }
            tok.session = None;
            tok.login_once(pin)
        })
    }

    fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        self.derive(peer)
    }

    fn change_pin(&mut self, old: &Pin, new: &Pin) -> Result<(), TokenError> {
        let session = self.session()?;
        let old = AuthPin::from(old.expose().to_string());
        let new = AuthPin::from(new.expose().to_string());
        match session.set_pin(&old, &new) {
            Ok(()) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(self.wrong_pin()),
            Err(CkError::Pkcs11(RvError::PinLenRange | RvError::PinInvalid, _)) => {
                Err(TokenError::PinFormat {
                    reason: "the token does not accept the new passphrase as its PIN".into(),
                })
            }
            Err(e) => Err(device("C_SetPIN", e)),
        }
    }

    fn generate_key(&mut self, options: &KeygenOptions) -> Result<PublicKey, TokenError> {
        self.generate(options)
    }

    /// Looks for the token in the module's slot list again. SoftHSM reads its token folder
    /// only when initialised, so for it the module is started over first.
    fn is_present(&mut self) -> bool {
        let serial = self.serial.clone();
        if self.is_softhsm() {
            return self.reopen().is_ok() && self.serial == serial;
        }
        find_slot(&self.ctx, &self.uri).is_ok_and(|(_, info)| info.serial_number().trim() == serial)
    }

    fn warnings(&mut self) -> Vec<String> {
        let Ok(session) = self.session() else {
            return Vec::new();
        };
        let Ok(Some(key)) = self.find_one(session, ObjectClass::PRIVATE_KEY) else {
            return Vec::new();
        };
        let attrs = session
            .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
            .unwrap_or_default();
        let mut out = Vec::new();
        for attr in attrs {
            match attr {
                Attribute::Extractable(true) => out.push(
                    "the token's key is extractable: a copy of it could exist outside the token. \
                     Prefer a key made with --generate-key."
                        .to_string(),
                ),
                Attribute::Sensitive(false) => out.push(
                    "the token's key is not marked sensitive: its value can be read from the token."
                        .to_string(),
                ),
                _ => {}
            }
        }
        out
    }
}

fn resolve_module(uri: &Pkcs11Uri) -> Result<PathBuf, TokenError> {
    if let Some(path) = &uri.module_path {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(TokenError::ModuleNotFound {
                path: path.display().to_string(),
            })
        };
    }
    P11_KIT_PROXY
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| TokenError::ModuleNotFound {
            path: "p11-kit-proxy.so (no module-path was given)".into(),
        })
}

fn is_softhsm_module(path: &Path) -> bool {
    path.to_string_lossy().contains("softhsm")
}

fn load_module(path: &Path) -> Result<Pkcs11, TokenError> {
    let failed = |detail: String| TokenError::ModuleFailed {
        path: path.display().to_string(),
        detail,
        remedy: module_remedy(path),
    };
    let ctx = Pkcs11::new(path).map_err(|e| failed(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(ctx),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(failed(format!("C_Initialize: {e}"))),
    }
}

/// SoftHSM fails C_Initialize with a bare CKR_GENERAL_ERROR when its configuration or token
/// folder is missing; say which.
fn module_remedy(path: &Path) -> String {
    if !is_softhsm_module(path) {
        return "Check that the module matches this machine and that its own configuration is in place."
            .into();
    }
    let conf =
        std::env::var("SOFTHSM2_CONF").unwrap_or_else(|_| "/etc/softhsm/softhsm2.conf".into());
    let Ok(text) = std::fs::read_to_string(&conf) else {
        return format!(
            "SoftHSM's configuration {conf} cannot be read: set SOFTHSM2_CONF to a valid file."
        );
    };
    let dir = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("directories.tokendir"))
        .filter_map(|l| l.trim().strip_prefix('='))
        .map(|d| d.trim().to_string())
        .next();
    match dir {
        Some(d) if !Path::new(&d).is_dir() => {
            format!("SoftHSM's token folder {d} (from {conf}) does not exist: create it or fix the file.")
        }
        Some(_) => {
            format!("SoftHSM's configuration is {conf}; check its token folder's permissions.")
        }
        None => format!("{conf} sets no directories.tokendir: add one."),
    }
}

fn find_slot(
    ctx: &Pkcs11,
    uri: &Pkcs11Uri,
) -> Result<(Slot, cryptoki::slot::TokenInfo), TokenError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| device("C_GetSlotList", e))?;
    let mut present = Vec::new();
    for slot in slots {
        // One broken slot must not hide the others.
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if uri.names_token(&info, slot) {
            return Ok((slot, info));
        }
        // SoftHSM always shows one free slot holding an uninitialised token with no label.
        if info.token_initialized() {
            present.push(format!("\"{}\"", info.label().trim()));
        }
    }
    let remedy = if present.is_empty() {
        "No initialised token is present: insert it, or for SoftHSM check SOFTHSM2_CONF."
            .to_string()
    } else {
        format!(
            "Tokens present: {}. Insert the right one or fix the URI.",
            present.join(", ")
        )
    };
    Err(TokenError::TokenNotFound {
        uri: uri.to_string(),
        remedy,
    })
}

fn read_ec_point(session: &Session, handle: ObjectHandle) -> Result<PublicKey, TokenError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| device("C_GetAttributeValue (EC point)", e))?;
    let mut point = None;
    for attr in attrs {
        match attr {
            Attribute::EcParams(p) if p != P256_OID_DER => {
                return Err(TokenError::WrongKeyType {
                    detail: "its curve is not P-256".into(),
                    remedy: "Make a P-256 key with --generate-key.".into(),
                })
            }
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let raw = point.ok_or_else(|| TokenError::WrongKeyType {
        detail: "the token does not show the key's public point".into(),
        remedy: "Make a P-256 key with --generate-key.".into(),
    })?;
    parse_ec_point(&raw).ok_or_else(|| TokenError::WrongKeyType {
        detail: "its public point is not a valid P-256 point".into(),
        remedy: "Make a P-256 key with --generate-key.".into(),
    })
}

/// CKA_EC_POINT is a DER OCTET STRING around the SEC1 point; some modules omit the wrapper.
fn parse_ec_point(raw: &[u8]) -> Option<PublicKey> {
    let inner = match raw {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => raw,
    };
    PublicKey::from_sec1_bytes(inner).ok()
}

fn read_secret_value(session: &Session, handle: ObjectHandle) -> Result<SharedSecret, TokenError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(|e| device("C_GetAttributeValue (derived secret)", e))?;
    for attr in attrs {
        if let Attribute::Value(v) = attr {
            let v = Zeroizing::new(v);
            return SharedSecret::from_slice(&v).ok_or_else(|| TokenError::Device {
                operation: "ECDH".into(),
                detail: format!("the token returned {} bytes instead of 32", v.len()),
            });
        }
    }
    Err(TokenError::Device {
        operation: "ECDH".into(),
        detail: "the token did not return the derived secret".into(),
    })
}

fn random_id() -> Vec<u8> {
    let mut id = vec![0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    id
}

fn pin_locked() -> TokenError {
    TokenError::PinLocked {
        remedy:
            "Unblock it with the security officer PIN (for SoftHSM: softhsm2-util), then try again."
                .into(),
    }
}

fn device(operation: &str, e: CkError) -> TokenError {
    let detail = match e {
        // The return code's name, which is what a PKCS#11 user searches for.
        CkError::Pkcs11(rv, _) => format!("the module returned {rv:?}"),
        other => other.to_string(),
    };
    TokenError::Device {
        operation: operation.into(),
        detail,
    }
}

fn transient(e: &TokenError) -> bool {
    match e {
        // What SoftHSM answers while another process rewrites its token file.
        TokenError::Device { detail, .. } => [
            "GeneralError",
            "UserPinNotInitialized",
            "TokenNotRecognized",
            "TokenNotPresent",
            "SlotIdInvalid",
            "DeviceError",
        ]
        .iter()
        .any(|code| detail.contains(code)),
        TokenError::ModuleFailed { detail, .. } => detail.contains("GeneralError"),
        TokenError::TokenNotFound { .. } => true,
        _ => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(rand::random::<u8>() % 20);
    Duration::from_millis(5 * u64::from(attempt) * u64::from(attempt) + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_object_and_module() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=nas;id=%01%ff?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .expect("parse");
        assert_eq!(uri.token.as_deref(), Some("My Token"));
        assert_eq!(uri.object.as_deref(), Some("nas"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 0xff][..]));
        assert_eq!(
            uri.module_path.as_deref(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
    }

    #[test]
    fn display_round_trips() {
        let text = "pkcs11:token=a%3Bb;serial=42;object=k;id=%0a?module-path=/x/y.so";
        let uri = Pkcs11Uri::parse(text).expect("parse");
        let again = Pkcs11Uri::parse(&uri.to_string()).expect("reparse");
        assert_eq!(uri, again);
    }

    #[test]
    fn refuses_pins_in_the_uri() {
        let err = Pkcs11Uri::parse("pkcs11:token=t?pin-value=1234").expect_err("must refuse");
        let text = err.to_string();
        assert!(text.contains("pin-value is not accepted"), "{text}");
        assert!(
            !text.contains("1234"),
            "the PIN leaked into the error: {text}"
        );
    }

    #[test]
    fn refuses_unknown_attributes() {
        assert!(Pkcs11Uri::parse("pkcs11:colour=blue").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:type=secret-key").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:x-vendor=1;token=t").is_ok());
    }

    #[test]
    fn ec_point_with_and_without_der_wrapper() {
        let secret = p256::SecretKey::from_slice(&[3u8; 32]).expect("key");
        let point = p256::EncodedPoint::from(secret.public_key());
        let raw = point.as_bytes().to_vec();
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&raw);
        assert_eq!(parse_ec_point(&raw), Some(secret.public_key()));
        assert_eq!(parse_ec_point(&wrapped), Some(secret.public_key()));
        assert_eq!(parse_ec_point(&[0x04, 2, 1, 2]), None);
    }
}
