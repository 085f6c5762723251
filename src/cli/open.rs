//! Opening a keyring: find an enrolled token, ask the passphrase (and PIN), unlock.

use tracing::debug;

use super::prompt::pin_warning;
use super::{CliError, Context};
use crate::secret::{Passphrase, Pin, RecoveryCode};
use crate::token::{self, Find, Token, TokenError, TokenUri};
use crate::vault::{KeyringLock, OpenKeyring, Sealed, TokenRecord, Unlocker, VaultError};

/// The token to open the keyring with, and the unlocker it matches.
struct Chosen {
    token: Box<dyn Token>,
    label: String,
    separate_pin: bool,
}

/// Opens the token `uri` names, holding `key` if given; waits for a PIV card that is not
/// inserted, and says so.
pub fn open_token(
    ctx: &mut Context,
    uri: &TokenUri,
    key: Option<&p256::PublicKey>,
) -> Result<Box<dyn Token>, TokenError> {
    let wait = ctx.card_wait;
    let ui = &mut *ctx.ui;
    let mut notify = |text: &str| ui.notice(text);
    token::open_with(
        uri,
        &mut Find {
            key,
            wait,
            notify: &mut notify,
        },
    )
}

/// Opens the first enrolled token that is present (or the one named by --use-token).
fn choose_token(ctx: &mut Context, sealed: &Sealed) -> Result<Chosen, CliError> {
    if let Some(uri) = ctx.use_token.clone() {
        let mut tok = open_token(ctx, &TokenUri::parse(&uri)?, None)?;
        let key = tok.public_key()?;
        let unlocker = sealed.unlocker_for(&key);
        return Ok(Chosen {
            label: tok.info().label,
            separate_pin: unlocker
                .and_then(|u| u.token.as_ref())
                .is_some_and(|t| t.separate_pin),
            token: tok,
        });
    }
    let mut missing = Vec::new();
    let mut other_key = None;
    let mut failure = None;
    for (unlocker, record) in token_unlockers(sealed) {
        if record.uri.is_empty() {
            // Enrolled from its public key without a URI: found only with --use-token.
            missing.push(format!("{} (with --use-token URI)", record.label));
            continue;
        }
        match open_enrolled(ctx, record) {
            Ok(Found::Enrolled(tok)) => {
                return Ok(Chosen {
                    token: tok,
                    label: record.label.clone(),
                    separate_pin: record.separate_pin,
                })
            }
            Ok(Found::OtherKey(fingerprint)) => other_key = Some(fingerprint),
            Err(e @ (TokenError::TokenNotFound { .. } | TokenError::KeyNotFound { .. })) => {
                debug!(unlocker = %unlocker.id, error = %e, "enrolled token not usable");
                missing.push(record.label.clone());
            }
            // Another token may still be present: look on, and report this only if none is.
            Err(e) => {
                debug!(unlocker = %unlocker.id, error = %e, "enrolled token failed");
                missing.push(record.label.clone());
                failure.get_or_insert(e);
            }
        }
    }
    if let (None, Some(e)) = (&other_key, failure) {
        return Err(e.into());
    }
    if let Some(fingerprint) = other_key {
        return Err(VaultError::TokenNotEnrolled {
            keyring: sealed.document().name.clone(),
            fingerprint,
        }
        .into());
    }
    let recovery = if sealed
        .document()
        .unlockers
        .iter()
        .any(|u| u.kind == "recovery")
    {
        " If every token is lost, open it with the recovery code: --recovery-code-file FILE or --recovery-code."
    } else {
        ""
    };
    Err(TokenError::TokenNotFound {
        uri: "any enrolled token".into(),
        remedy: format!(
            "Insert one of the keyring's tokens: {}. For SoftHSM, check SOFTHSM2_CONF.{recovery}",
            missing.join(", ")
        ),
    }
    .into())
}

/// A token found where an unlocker's URI points: the enrolled one, or one with another key.
enum Found {
    Enrolled(Box<dyn Token>),
    OtherKey(String),
}

/// The token unlockers of a keyring, with their token records.
fn token_unlockers(sealed: &Sealed) -> impl Iterator<Item = (&Unlocker, &TokenRecord)> {
    sealed
        .document()
        .unlockers
        .iter()
        .filter_map(|u| u.token.as_ref().map(|t| (u, t)))
}

fn open_enrolled(ctx: &mut Context, record: &TokenRecord) -> Result<Found, TokenError> {
    let uri = TokenUri::parse(&record.uri)?;
    let recorded = crate::vault::format::unb64("public key", &record.public_key)
        .ok()
        .and_then(|raw| p256::PublicKey::from_sec1_bytes(&raw).ok());
    let mut tok = open_token(ctx, &uri, recorded.as_ref())?;
    // The URI can match a different token with the same label: compare the key too.
    let key = tok.public_key()?;
    if sealed_key_matches(record, &key) {
        Ok(Found::Enrolled(tok))
    } else {
        Ok(Found::OtherKey(token::fingerprint(&key)))
    }
}

fn sealed_key_matches(record: &TokenRecord, key: &p256::PublicKey) -> bool {
    let encoded = crate::vault::format::b64(p256::EncodedPoint::from(key).as_bytes());
    record.public_key == encoded
}

/// The PIN to present: the passphrase, or a separate PIN asked after it.
pub fn pin_for(
    ctx: &mut Context,
    token: &mut dyn Token,
    label: &str,
    separate: bool,
    passphrase: &Passphrase,
) -> Result<Option<Pin>, CliError> {
    let status = token.pin_status()?;
    if status.locked {
        return Err(pin_locked().into());
    }
    if !separate {
        if let Some(w) = pin_warning(&status) {
            ctx.ui.notice(&w);
        }
        return Ok(Some(Pin::from(passphrase)));
    }
    ctx.secrets.pin(ctx.ui, label, &status).map(Some)
}

/// Opens with the recovery code if the user asked to (`--recovery-code-file`, `--recovery-code`).
fn open_by_recovery(
    ctx: &mut Context,
    sealed: Sealed,
    code: &RecoveryCode,
) -> Result<OpenKeyring, CliError> {
    let keyring = sealed.open_with_recovery_code(code)?;
    ctx.ui.notice(
        "The keyring is open with the recovery code. Enrol a new token now, while you have the code:\n  \
         nasring token add --token URI --recovery-code-file FILE   (or --recovery-code to type it)\n\
         then remove the lost tokens (nasring token remove ID) and replace the code \
         (nasring recovery regenerate).",
    );
    Ok(keyring)
}

fn ask_recovery_code(ctx: &mut Context) -> Result<RecoveryCode, CliError> {
    let sealed = ctx.vault.load()?;
    let name = sealed.document().name.clone();
    ctx.secrets.recovery_code(ctx.ui, &name)
}

/// A blocked PIN, with the way out; no try is spent to learn it.
pub fn pin_locked() -> TokenError {
    TokenError::PinLocked {
        remedy: "Unblock it with the PUK (YubiKey: ykman piv access unblock-pin, or \
                 yubico-piv-tool -a unblock-pin) or, on a PKCS#11 token, with the security \
                 officer PIN; then try again."
            .into(),
    }
}

/// Asks the passphrase for the keyring as it is on disk now (nothing locked while asking).
pub fn ask_passphrase(ctx: &mut Context) -> Result<Passphrase, CliError> {
    let sealed = ctx.vault.load()?;
    let name = sealed.document().name.clone();
    ctx.secrets.passphrase(ctx.ui, &name)
}

/// Opens the keyring for reading: shared lock while reading, none while deciding.
pub fn open_keyring(ctx: &mut Context) -> Result<OpenKeyring, CliError> {
    if ctx.secrets.wants_recovery() {
        let code = ask_recovery_code(ctx)?;
        let sealed = ctx.vault.load()?;
        return open_by_recovery(ctx, sealed, &code);
    }
    open_keyring_with_passphrase(ctx).map(|(_, keyring)| keyring)
}

/// Opens the keyring and keeps the passphrase, for the checks that compare against it.
pub fn open_keyring_with_passphrase(
    ctx: &mut Context,
) -> Result<(Passphrase, OpenKeyring), CliError> {
    let passphrase = ask_passphrase(ctx)?;
    let sealed = ctx.vault.load()?;
    let keyring = unlock(ctx, sealed, &passphrase)?;
    Ok((passphrase, keyring))
}

/// Takes the exclusive lock and brings an open keyring up to date with the file, checked
/// with the master key it holds (no second token operation). Save before dropping the lock.
pub fn relock(ctx: &mut Context, keyring: &mut OpenKeyring) -> Result<KeyringLock, CliError> {
    let (lock, sealed) = ctx.vault.load_for_update()?;
    keyring.refresh(sealed)?;
    Ok(lock)
}

/// Opens the keyring for a change: the exclusive lock is held until the caller saves.
pub fn open_for_update(ctx: &mut Context) -> Result<(KeyringLock, OpenKeyring), CliError> {
    if ctx.secrets.wants_recovery() {
        let code = ask_recovery_code(ctx)?;
        let (lock, sealed) = ctx.vault.load_for_update()?;
        return Ok((lock, open_by_recovery(ctx, sealed, &code)?));
    }
    let passphrase = ask_passphrase(ctx)?;
    let (lock, sealed) = ctx.vault.load_for_update()?;
    let keyring = unlock(ctx, sealed, &passphrase)?;
    Ok((lock, keyring))
}

/// Opens the keyring and says which token opened it (its URI), for the agent to watch.
pub fn open_keyring_with_token(ctx: &mut Context) -> Result<(OpenKeyring, String), CliError> {
    let passphrase = ask_passphrase(ctx)?;
    let sealed = ctx.vault.load()?;
    unlock_with_token(ctx, sealed, &passphrase)
}

fn unlock(
    ctx: &mut Context,
    sealed: Sealed,
    passphrase: &Passphrase,
) -> Result<OpenKeyring, CliError> {
    unlock_with_token(ctx, sealed, passphrase).map(|(keyring, _)| keyring)
}

fn unlock_with_token(
    ctx: &mut Context,
    sealed: Sealed,
    passphrase: &Passphrase,
) -> Result<(OpenKeyring, String), CliError> {
    let mut chosen = choose_token(ctx, &sealed)?;
    let pin = pin_for(
        ctx,
        chosen.token.as_mut(),
        &chosen.label,
        chosen.separate_pin,
        passphrase,
    )?;
    if let Some(hint) = chosen.token.touch_hint() {
        ctx.ui.notice(&hint);
    }
    let keyring = sealed.open(chosen.token.as_mut(), passphrase, pin.as_ref())?;
    for warning in chosen.token.warnings() {
        ctx.ui.notice(&format!("Warning: {warning}"));
    }
    Ok((keyring, chosen.token.info().uri))
}

/// A keyring opened with a token and the passphrase, with both kept for a change that needs
/// them (a PIN change).
pub struct OpenedWithToken {
    pub passphrase: Passphrase,
    pub keyring: OpenKeyring,
    pub token: Box<dyn Token>,
    /// The unlocker of the token that opened it.
    pub unlocker_id: String,
    pub separate_pin: bool,
}

/// Opens the keyring with a token and the passphrase and keeps the logged-in token.
pub fn open_with_token(ctx: &mut Context) -> Result<OpenedWithToken, CliError> {
    let passphrase = ask_passphrase(ctx)?;
    let sealed = ctx.vault.load()?;
    let mut chosen = choose_token(ctx, &sealed)?;
    let key = chosen.token.public_key()?;
    let unlocker_id = sealed
        .unlocker_for(&key)
        .map(|u| u.id.clone())
        .unwrap_or_default();
    let pin = pin_for(
        ctx,
        chosen.token.as_mut(),
        &chosen.label,
        chosen.separate_pin,
        &passphrase,
    )?;
    let keyring = sealed.open(chosen.token.as_mut(), &passphrase, pin.as_ref())?;
    Ok(OpenedWithToken {
        passphrase,
        keyring,
        token: chosen.token,
        unlocker_id,
        separate_pin: chosen.separate_pin,
    })
}
