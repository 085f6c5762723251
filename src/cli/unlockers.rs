//! The ways into a keyring: `token add|list|remove`, `recovery regenerate`, `passwd`, `rekey`.
//!
//! Every change that takes a way in away (removing a token, replacing the recovery code,
//! changing the passphrase) also makes a new master key, so that a copy of the file from
//! before the change opens only what it held then, never what is stored afterwards.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{NewRecoveryCodeFile, PasswdArgs, TokenAddArgs, TokenCommand, TokenRemoveArgs};
use super::keyring::{fingerprint_of, policy_words, prove_agreement};
use super::open::{open_keyring, open_keyring_with_passphrase, open_with_token, pin_for, relock};
use super::prompt::NewPassphrasePolicy;
use super::{output, CliError, Context};
use crate::secret::{Passphrase, RecoveryCode};
use crate::token::{self, TokenUri};
use crate::vault::{Document, OpenKeyring, PassphraseChange, TokenEnrolment};

pub fn token(ctx: &mut Context, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Add(a) => token_add(ctx, a),
        TokenCommand::List => token_list(ctx),
        TokenCommand::Remove(a) => token_remove(ctx, a),
        TokenCommand::Keygen(a) => super::token::keygen(ctx, a),
    }
}

/// Opens the keyring with a token and the passphrase, or with the recovery code (then the
/// passphrase is `None`).
fn open_any(ctx: &mut Context) -> Result<(Option<Passphrase>, OpenKeyring), CliError> {
    if ctx.secrets.wants_recovery() {
        return Ok((None, open_keyring(ctx)?));
    }
    let (passphrase, keyring) = open_keyring_with_passphrase(ctx)?;
    Ok((Some(passphrase), keyring))
}

/// Where a new passphrase comes from.
enum NewPassphraseFrom<'a> {
    /// `--passphrase-file` (NASRING_PASSPHRASE_FILE), else asked: after the recovery code,
    /// when no passphrase was read yet.
    Usual,
    /// This file, else asked (never the file that holds the current passphrase).
    File(Option<&'a Path>),
}

/// A new passphrase, typed twice (or from a file), checked for strength.
fn ask_new_passphrase(
    ctx: &mut Context,
    from: NewPassphraseFrom,
    accept_weak: bool,
    keyring: &str,
) -> Result<Passphrase, CliError> {
    let mut sources = ctx.secrets.clone();
    if let NewPassphraseFrom::File(file) = from {
        sources.passphrase_file = file.map(Path::to_path_buf);
    }
    sources.new_passphrase(
        ctx.ui,
        NewPassphrasePolicy { accept_weak },
        &[keyring, "nasring", "truenas"],
    )
}

// Limitation: a token marked here keeps "own PIN" even after its PIN is changed to the
// passphrase with the token's own tool; no command marks it back yet.
/// After a passphrase change, the tokens whose PIN was the old passphrase keep that PIN:
/// they are marked as having a PIN of their own, and the user is told. `except` is a token
/// whose PIN was changed too.
fn mark_old_pins(ctx: &mut Context, keyring: &mut OpenKeyring, except: Option<&str>) {
    let affected: Vec<(String, String)> = keyring
        .document()
        .unlockers
        .iter()
        .filter(|u| Some(u.id.as_str()) != except)
        .filter_map(|u| u.token.as_ref().map(|t| (u, t)))
        .filter(|(_, t)| !t.separate_pin)
        .map(|(u, t)| (u.id.clone(), t.label.clone()))
        .collect();
    for (id, label) in affected {
        keyring.set_separate_pin(&id, true);
        ctx.ui.notice(&format!(
            "Token {label} ({id}) keeps its PIN, which is the old passphrase: from now on nasring \
             asks for that PIN separately (or reads --pin-file)."
        ));
    }
}

/// With a keyring opened by the recovery code, the passphrase is unknown: a new one is set
/// (it may be the old one), which also renews every key. Returns the passphrase.
fn passphrase_after_recovery(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    accept_weak: bool,
) -> Result<Passphrase, CliError> {
    ctx.ui.notice(
        "Opened with the recovery code: choose the keyring passphrase now (it may be the old one).",
    );
    let name = keyring.name().to_string();
    let passphrase = ask_new_passphrase(ctx, NewPassphraseFrom::Usual, accept_weak, &name)?;
    Ok(passphrase)
}

fn apply_new_passphrase(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    passphrase: &Passphrase,
) -> Result<(), CliError> {
    let cost = keyring.kdf_cost();
    keyring.rekey(PassphraseChange::New(passphrase, cost))?;
    mark_old_pins(ctx, keyring, None);
    Ok(())
}

/// Reads a token's public key from a file: PEM or DER SubjectPublicKeyInfo, or a raw SEC1
/// point.
pub fn read_public_key(path: &Path) -> Result<p256::PublicKey, CliError> {
    use p256::pkcs8::DecodePublicKey;
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the public key file {}: {e}",
            path.display()
        ))
    })?;
    let parsed = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => {
            p256::PublicKey::from_public_key_pem(text.trim()).ok()
        }
        _ => p256::PublicKey::from_public_key_der(&bytes)
            .ok()
            .or_else(|| p256::PublicKey::from_sec1_bytes(&bytes).ok()),
    };
    parsed.ok_or_else(|| {
        CliError::Usage(format!(
            "{} holds no P-256 public key.\n\
             Give a PEM (BEGIN PUBLIC KEY) or DER SubjectPublicKeyInfo of the token's P-256 key, \
             or its 65-byte SEC1 point.",
            path.display()
        ))
    })
}

/// A present token: PIN, key (made if asked), and proof that it can agree with that key.
fn enrol_present(
    ctx: &mut Context,
    args: &TokenAddArgs,
    uri_text: &str,
    passphrase: &Passphrase,
) -> Result<TokenEnrolment, CliError> {
    let uri = TokenUri::parse(uri_text)?;
    let mut tok = super::open::open_token(ctx, &uri, None)?;
    let label = tok.info().label;
    let separate_pin = args.separate_pin || tok.pin_must_differ();
    let pin = pin_for(ctx, tok.as_mut(), &label, separate_pin, passphrase)?
        .ok_or_else(|| CliError::Failed("no PIN for the token".into()))?;
    tok.login(&pin)?;
    let public_key = super::keyring::token_key(ctx, tok.as_mut(), args.generate_key)?;
    prove_agreement(tok.as_mut(), &public_key)?;
    let attestation = super::keyring::check_attestation(ctx, tok.as_mut())?;
    let info = tok.info();
    Ok(TokenEnrolment {
        backend: uri.kind().into(),
        uri: info.uri,
        label: args.label.clone().unwrap_or(info.label),
        serial: info.serial,
        public_key,
        separate_pin,
        attestation,
    })
}

/// A token that is not present, from its public key file.
fn enrol_absent(args: &TokenAddArgs, path: &Path) -> Result<TokenEnrolment, CliError> {
    let public_key = read_public_key(path)?;
    let (backend, uri) = match &args.uri {
        Some(text) => {
            let uri = TokenUri::parse(text)?;
            (uri.kind().to_string(), uri.to_string())
        }
        None => ("pkcs11".to_string(), String::new()),
    };
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("backup token {}", &token::fingerprint(&public_key)[7..19]));
    Ok(TokenEnrolment {
        backend,
        uri,
        label,
        serial: None,
        public_key,
        separate_pin: args.separate_pin,
        attestation: None,
    })
}

fn token_add(ctx: &mut Context, args: TokenAddArgs) -> Result<(), CliError> {
    let (passphrase, mut keyring) = open_any(ctx)?;
    let new_passphrase = match &passphrase {
        Some(_) => None,
        None => Some(passphrase_after_recovery(
            ctx,
            &mut keyring,
            args.accept_weak_passphrase,
        )?),
    };
    let pin_source = passphrase
        .as_ref()
        .or(new_passphrase.as_ref())
        .ok_or_else(|| CliError::Failed("no passphrase".into()))?;
    let enrolment = match (&args.token, &args.public_key) {
        (_, Some(path)) => enrol_absent(&args, path)?,
        (Some(uri), None) => enrol_present(ctx, &args, uri, pin_source)?,
        (None, None) => {
            return Err(CliError::Usage(
                "name the token: --token URI, or --public-key FILE for one that is not present"
                    .into(),
            ))
        }
    };
    let lock = relock(ctx, &mut keyring)?;
    if let Some(p) = &new_passphrase {
        apply_new_passphrase(ctx, &mut keyring, p)?;
    }
    let id = keyring.enrol_token(&enrolment)?;
    keyring.save(&ctx.vault, &lock)?;
    drop(lock);
    report_enrolled(ctx, &keyring, &id, &enrolment)
}

fn report_enrolled(
    ctx: &mut Context,
    keyring: &OpenKeyring,
    id: &str,
    enrolment: &TokenEnrolment,
) -> Result<(), CliError> {
    let fingerprint = token::fingerprint(&enrolment.public_key);
    let policy = policy_words(keyring.document());
    if ctx.json {
        return output::json(&serde_json::json!({
            "enrolled": id, "label": enrolment.label, "fingerprint": fingerprint,
            "uri": enrolment.uri, "policy": format!("opens with {policy}"),
        }));
    }
    let mut text = format!(
        "Enrolled token {} as {id} (key {fingerprint}).\nThe keyring now opens with {policy}.",
        enrolment.label
    );
    if enrolment.uri.is_empty() {
        text.push_str(
            "\nWhen you use this token, name it with --use-token URI (its URI was not given).",
        );
    }
    output::say(&text)
}

#[derive(Serialize)]
struct UnlockerRow {
    id: String,
    kind: String,
    label: String,
    backend: Option<String>,
    uri: Option<String>,
    fingerprint: Option<String>,
    separate_pin: Option<bool>,
    added_at: String,
}

fn unlocker_rows(doc: &Document) -> Vec<UnlockerRow> {
    doc.unlockers
        .iter()
        .map(|u| UnlockerRow {
            id: u.id.clone(),
            kind: u.kind.clone(),
            label: u.label().to_string(),
            backend: u.token.as_ref().map(|t| t.backend.clone()),
            uri: u.token.as_ref().map(|t| t.uri.clone()),
            fingerprint: u.token.as_ref().map(|t| fingerprint_of(&t.public_key)),
            separate_pin: u.token.as_ref().map(|t| t.separate_pin),
            added_at: u.added_at.clone(),
        })
        .collect()
}

fn token_list(ctx: &mut Context) -> Result<(), CliError> {
    let sealed = ctx.vault.load()?;
    let rows = unlocker_rows(sealed.document());
    if ctx.json {
        return output::json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.clone(),
                r.label.clone(),
                r.fingerprint.clone().unwrap_or_else(|| "-".into()),
                match r.separate_pin {
                    Some(true) => "own PIN".into(),
                    Some(false) => "passphrase".into(),
                    None => "-".into(),
                },
                r.added_at.clone(),
            ]
        })
        .collect();
    output::table(&["ID", "Kind", "Name", "Key", "PIN", "Added"], &table)?;
    output::say(&format!(
        "The keyring opens with {}.",
        policy_words(sealed.document())
    ))
}

fn token_remove(ctx: &mut Context, args: TokenRemoveArgs) -> Result<(), CliError> {
    let (mut keyring, new_passphrase) = open_for_renewal(ctx, false)?;
    let lock = relock(ctx, &mut keyring)?;
    let removed = keyring.remove_unlocker(&args.id)?;
    renew(ctx, &mut keyring, new_passphrase.as_ref())?;
    keyring.save(&ctx.vault, &lock)?;
    super::agent::end_after_renewal(ctx);
    drop(lock);
    let policy = policy_words(keyring.document());
    if ctx.json {
        return output::json(&serde_json::json!({
            "removed": removed.id, "label": removed.label(), "policy": format!("opens with {policy}"),
        }));
    }
    output::say(&format!(
        "Removed {} ({}) and made a new master key, which no copy of the keyring made before knows.\n\
         The keyring now opens with {policy}.",
        removed.label(),
        removed.id
    ))
}

/// Opens the keyring for a change that renews every key; opened with the recovery code,
/// the new passphrase is asked now, before the keyring is locked.
fn open_for_renewal(
    ctx: &mut Context,
    accept_weak: bool,
) -> Result<(OpenKeyring, Option<Passphrase>), CliError> {
    let (_, mut keyring) = open_any(ctx)?;
    let new_passphrase = if keyring.opened_with_recovery_code() {
        Some(passphrase_after_recovery(ctx, &mut keyring, accept_weak)?)
    } else {
        None
    };
    Ok((keyring, new_passphrase))
}

/// A new master key, and the new passphrase if one was asked.
fn renew(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    new_passphrase: Option<&Passphrase>,
) -> Result<(), CliError> {
    match new_passphrase {
        Some(p) => apply_new_passphrase(ctx, keyring, p),
        None => Ok(keyring.rekey(PassphraseChange::Keep)?),
    }
}

/// Where a new recovery code goes: the terminal, or a file the user named.
pub enum CodeDestination {
    Terminal,
    File(PathBuf),
}

impl CodeDestination {
    pub fn from_arg(file: Option<&Path>) -> Self {
        match file {
            Some(p) => CodeDestination::File(p.to_path_buf()),
            None => CodeDestination::Terminal,
        }
    }
}

// Limitation: the terminal's scrollback keeps the code shown; nasring cannot clear it.
/// Hands a new recovery code to the user, before the keyring that holds it is saved.
/// A file is made new (never overwritten) with mode 0600.
pub fn deliver_recovery_code(
    ctx: &mut Context,
    keyring: &str,
    code: &RecoveryCode,
    to: &CodeDestination,
) -> Result<(), CliError> {
    match to {
        CodeDestination::Terminal => ctx.ui.show_secret(&zeroize::Zeroizing::new(format!(
            "\nRecovery code for keyring \"{keyring}\" (shown this once):\n\n    {}\n\n\
             It opens the keyring without any token or passphrase. Write it down and keep it \
             offline, apart from your tokens.\n",
            code.expose()
        ))),
        CodeDestination::File(path) => {
            write_code_file(path, code)?;
            ctx.ui.notice(&format!(
                "The recovery code of keyring \"{keyring}\" is in {} (mode 0600). It opens the \
                 keyring without any token or passphrase: keep it offline, apart from your \
                 tokens, and delete this copy.",
                path.display()
            ));
            Ok(())
        }
    }
}

fn write_code_file(path: &Path, code: &RecoveryCode) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::Failed(format!(
            "cannot write the recovery code to {}: {e}.\nName a file that does not exist yet; nothing was changed.",
            path.display()
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    let line = zeroize::Zeroizing::new(format!("{}\n", code.expose()));
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)
}

/// Removes a code file written for a keyring that was then not saved.
pub fn discard_code_file(to: &CodeDestination) {
    if let CodeDestination::File(path) = to {
        let _ = std::fs::remove_file(path);
    }
}

pub fn recovery_regenerate(ctx: &mut Context, args: NewRecoveryCodeFile) -> Result<(), CliError> {
    let (mut keyring, new_passphrase) = open_for_renewal(ctx, args.accept_weak_passphrase)?;
    let lock = relock(ctx, &mut keyring)?;
    if let Some(p) = &new_passphrase {
        apply_new_passphrase(ctx, &mut keyring, p)?;
    }
    let code = keyring.new_recovery_code();
    keyring.rekey(PassphraseChange::Keep)?;
    let to = CodeDestination::from_arg(args.save_recovery_code.as_deref());
    deliver_recovery_code(ctx, keyring.name(), &code, &to)?;
    if let Err(e) = keyring.save(&ctx.vault, &lock) {
        discard_code_file(&to);
        return Err(e.into());
    }
    super::agent::end_after_renewal(ctx);
    if ctx.json {
        return output::json(&serde_json::json!({"recovery_code": "replaced"}));
    }
    output::say(
        "Made a new recovery code and a new master key; the old code no longer opens the keyring.",
    )
}

pub fn passwd(ctx: &mut Context, args: PasswdArgs) -> Result<(), CliError> {
    if ctx.secrets.wants_recovery() {
        return passwd_after_recovery(ctx, args);
    }
    let mut opened = open_with_token(ctx)?;
    let name = opened.keyring.name().to_string();
    let new = ask_new_passphrase(
        ctx,
        NewPassphraseFrom::File(args.new_passphrase_file.as_deref()),
        args.accept_weak_passphrase,
        &name,
    )?;
    if new.expose() == opened.passphrase.expose() {
        return Err(CliError::Usage(
            "the new passphrase is the old one; nothing was changed".into(),
        ));
    }
    let keyring = &mut opened.keyring;
    let lock = relock(ctx, keyring)?;
    let cost = keyring.kdf_cost();
    keyring.rekey(PassphraseChange::New(&new, cost))?;
    // First written with every token's PIN still the old passphrase (marked as their own),
    // so that a crash before or after the PIN change below leaves a keyring that opens.
    let own_pin_is_passphrase = !opened.separate_pin;
    let changing = own_pin_is_passphrase.then_some(opened.unlocker_id.as_str());
    mark_old_pins(ctx, keyring, changing);
    if own_pin_is_passphrase {
        keyring.set_separate_pin(&opened.unlocker_id, true);
    }
    keyring.save(&ctx.vault, &lock)?;
    super::agent::end_after_renewal(ctx);
    if own_pin_is_passphrase {
        let old_pin = crate::secret::Pin::from(&opened.passphrase);
        let new_pin = crate::secret::Pin::from(&new);
        match opened.token.change_pin(&old_pin, &new_pin) {
            Ok(()) => {
                keyring.set_separate_pin(&opened.unlocker_id, false);
                keyring.save(&ctx.vault, &lock)?;
            }
            Err(e) => ctx.ui.notice(&format!(
                "The token's PIN stays the old passphrase ({}); nasring asks for it separately from now on.",
                e.to_string().lines().next().unwrap_or_default()
            )),
        }
    }
    drop(lock);
    if ctx.json {
        return output::json(&serde_json::json!({"passphrase_changed": true}));
    }
    output::say(
        "Changed the passphrase and made a new master key; copies of the keyring made before \
         still open with the old passphrase, but hold only what they held then.",
    )
}

/// `passwd` with the recovery code: the old passphrase is not needed, the new one is set.
fn passwd_after_recovery(ctx: &mut Context, args: PasswdArgs) -> Result<(), CliError> {
    let mut keyring = open_keyring(ctx)?;
    let name = keyring.name().to_string();
    let new = ask_new_passphrase(
        ctx,
        NewPassphraseFrom::File(args.new_passphrase_file.as_deref()),
        args.accept_weak_passphrase,
        &name,
    )?;
    let lock = relock(ctx, &mut keyring)?;
    apply_new_passphrase(ctx, &mut keyring, &new)?;
    keyring.save(&ctx.vault, &lock)?;
    super::agent::end_after_renewal(ctx);
    drop(lock);
    if ctx.json {
        return output::json(&serde_json::json!({"passphrase_changed": true}));
    }
    output::say("Set the passphrase and made a new master key.")
}

pub fn rekey(ctx: &mut Context) -> Result<(), CliError> {
    let (mut keyring, new_passphrase) = open_for_renewal(ctx, false)?;
    let lock = relock(ctx, &mut keyring)?;
    renew(ctx, &mut keyring, new_passphrase.as_ref())?;
    keyring.save(&ctx.vault, &lock)?;
    super::agent::end_after_renewal(ctx);
    drop(lock);
    let (unlockers, systems) = (keyring.document().unlockers.len(), keyring.systems().len());
    if ctx.json {
        return output::json(
            &serde_json::json!({"rekeyed": true, "unlockers": unlockers, "systems": systems}),
        );
    }
    output::say(&format!(
        "Made a new master key: {unlockers} unlocker(s) wrapped again from their public keys \
         (no token needed) and {systems} API key(s) encrypted again.\n\
         Copies of the keyring file from before still open with the unlockers they hold, and \
         show the keys stored then: delete such copies."
    ))
}
