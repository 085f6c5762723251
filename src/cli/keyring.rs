//! Commands about the keyring as a whole: init, info, list, reset.

use serde::Serialize;
use tracing::debug;

use super::args::{InitArgs, ResetArgs};
use super::output;
use super::prompt::NewPassphrasePolicy;
use super::unlockers::{deliver_recovery_code, discard_code_file, CodeDestination};
use super::{status_cache_path, CliError, Context};
use crate::secret::{Passphrase, Pin};
use crate::token::{self, Attestation, KeygenOptions, Token, TokenUri};
use crate::vault::crypto::{self, KdfCost};
use crate::vault::{check_name, Document, OpenKeyring, TokenEnrolment};

pub fn init(ctx: &mut Context, args: InitArgs) -> Result<(), CliError> {
    let name = keyring_name(ctx, &args)?;
    let cost = kdf_cost(&args)?;
    if ctx.vault.path().exists() {
        ctx.vault.lock_for_create()?;
    }
    check_code_destination(ctx, &args)?;
    let uri = TokenUri::parse(&args.token)?;
    let mut tok = super::open::open_token(ctx, &uri, None)?;
    let separate_pin = args.separate_pin || tok.pin_must_differ();
    if separate_pin && !args.separate_pin {
        ctx.ui.notice(
            "This token's PIN (6 to 8 characters) cannot be the passphrase: it is asked \
             separately, after the passphrase.",
        );
    }
    let passphrase = ctx.secrets.new_passphrase(
        ctx.ui,
        NewPassphrasePolicy {
            accept_weak: args.accept_weak_passphrase,
        },
        &[name.as_str(), "nasring", "truenas"],
    )?;
    let pin = init_pin(ctx, tok.as_mut(), separate_pin, &passphrase)?;
    tok.login(&pin)?;
    let public_key = token_key(ctx, tok.as_mut(), args.generate_key)?;
    if let Some(hint) = tok.touch_hint() {
        ctx.ui.notice(&hint);
    }
    prove_agreement(tok.as_mut(), &public_key)?;
    let attestation = check_attestation(ctx, tok.as_mut())?;
    let info = tok.info();
    let enrolment = TokenEnrolment {
        backend: uri.kind().into(),
        uri: info.uri.clone(),
        label: info.label.clone(),
        serial: info.serial.clone(),
        public_key,
        separate_pin,
        attestation,
    };
    let lock = ctx.vault.lock_for_create()?;
    let mut keyring = OpenKeyring::create(&name, &passphrase, cost, &enrolment)?;
    let code_to = if args.recovery.no_recovery_code {
        None
    } else {
        let to = CodeDestination::from_arg(args.recovery.save_recovery_code.as_deref());
        let code = keyring.new_recovery_code();
        deliver_recovery_code(ctx, keyring.name(), &code, &to)?;
        Some(to)
    };
    if let Err(e) = keyring.save(&ctx.vault, &lock) {
        if let Some(to) = &code_to {
            discard_code_file(to);
        }
        return Err(e.into());
    }
    report_created(ctx, &keyring, &enrolment)
}

/// Refuses, before the token is touched, an init whose recovery code could not be shown.
fn check_code_destination(ctx: &mut Context, args: &InitArgs) -> Result<(), CliError> {
    if args.recovery.no_recovery_code {
        return Ok(());
    }
    match &args.recovery.save_recovery_code {
        Some(path) if path.exists() => Err(CliError::Usage(format!(
            "{} exists already; name a new file for the recovery code",
            path.display()
        ))),
        Some(_) => Ok(()),
        None => ctx
            .ui
            .show_secret("nasring makes a recovery code for this keyring and shows it once below."),
    }
}

/// The name from `--name`, or asked on the terminal; an empty or unusable name is refused.
fn keyring_name(ctx: &mut Context, args: &InitArgs) -> Result<String, CliError> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => ctx.ui.line("Keyring name: ")?.trim().to_string(),
    };
    check_name("the keyring name", &name)?;
    Ok(name)
}

fn kdf_cost(args: &InitArgs) -> Result<KdfCost, CliError> {
    let cost = KdfCost {
        memory_kib: args.kdf_memory_mib.saturating_mul(1024),
        iterations: args.kdf_iterations,
        parallelism: 1,
    };
    if cost.memory_kib < KdfCost::MINIMUM.memory_kib || cost.iterations < 1 {
        return Err(CliError::Usage(
            "--kdf-memory-mib must be at least 8 and --kdf-iterations at least 1".into(),
        ));
    }
    if cost.memory_kib > KdfCost::MAXIMUM_MEMORY_KIB || cost.iterations > 64 {
        return Err(CliError::Usage(
            "--kdf-memory-mib must be at most 4096 and --kdf-iterations at most 64".into(),
        ));
    }
    Ok(cost)
}

/// Checks the token's proof that its key was made inside it, where it offers one: a proof
/// that does not hold stops `init`; the text of one that holds is recorded.
pub fn check_attestation(
    ctx: &mut Context,
    tok: &mut dyn Token,
) -> Result<Option<String>, CliError> {
    match tok.attestation() {
        Attestation::Proven(text) => {
            ctx.ui.notice(&format!("Key attestation: {text}."));
            Ok(Some(text))
        }
        Attestation::NotOffered(why) => {
            debug!(why, "no key attestation");
            Ok(None)
        }
        Attestation::Refuted(why) => Err(CliError::Failed(format!(
            "the token's proof that its key was made inside it does not hold: {why}.\n\
             Do not use this key; make a new one on the card with nasring token keygen --overwrite."
        ))),
    }
}

fn init_pin(
    ctx: &mut Context,
    tok: &mut dyn Token,
    separate_pin: bool,
    passphrase: &Passphrase,
) -> Result<Pin, CliError> {
    let label = tok.info().label;
    super::open::pin_for(ctx, tok, &label, separate_pin, passphrase)?
        .ok_or_else(|| CliError::Failed("no PIN for the token".into()))
}

/// The token's key-agreement key, made on it first if asked; the token's warnings are shown.
pub(super) fn token_key(
    ctx: &mut Context,
    tok: &mut dyn Token,
    generate: bool,
) -> Result<p256::PublicKey, CliError> {
    let key = if generate {
        tok.generate_key(&KeygenOptions::default())?
    } else {
        tok.public_key()?
    };
    for warning in tok.warnings() {
        ctx.ui.notice(&format!("Warning: {warning}"));
    }
    Ok(key)
}

/// Checks that the token really holds the private half of `key` and can do key agreement,
/// before anything is written.
pub(super) fn prove_agreement(tok: &mut dyn Token, key: &p256::PublicKey) -> Result<(), CliError> {
    let (expected, ephemeral) = crypto::enrol_ephemeral(key);
    let got = tok.agree(&ephemeral)?;
    if got.expose() == expected.expose() {
        Ok(())
    } else {
        Err(CliError::Failed(
            "the token's key agreement does not match its public key; the token cannot be used.\n\
             Make a fresh key with --generate-key."
                .into(),
        ))
    }
}

#[derive(Serialize)]
struct Created<'a> {
    name: &'a str,
    path: String,
    token: &'a str,
    token_uri: &'a str,
    fingerprint: String,
}

fn report_created(
    ctx: &mut Context,
    keyring: &OpenKeyring,
    token: &TokenEnrolment,
) -> Result<(), CliError> {
    let created = Created {
        name: keyring.name(),
        path: ctx.vault.path().display().to_string(),
        token: &token.label,
        token_uri: &token.uri,
        fingerprint: token::fingerprint(&token.public_key),
    };
    if ctx.json {
        return output::json(&created);
    }
    output::say(&format!(
        "Created keyring \"{}\" at {}\nBound to token {} (key {}).\nAdd a system: nasring add NAME --url https://HOST --username USER",
        created.name, created.path, created.token, created.fingerprint
    ))
}

#[derive(Serialize)]
struct UnlockerView {
    id: String,
    kind: String,
    backend: String,
    token: String,
    uri: String,
    serial: Option<String>,
    fingerprint: String,
    separate_pin: bool,
    attestation: Option<String>,
    added_at: String,
}

#[derive(Serialize)]
struct InfoView {
    name: String,
    path: String,
    created_at: String,
    updated_at: String,
    unlockers: Vec<UnlockerView>,
    policy: String,
    systems: usize,
    kdf: String,
}

fn unlocker_views(doc: &Document) -> Vec<UnlockerView> {
    doc.unlockers
        .iter()
        .map(|u| {
            let t = u.token.as_ref();
            UnlockerView {
                id: u.id.clone(),
                kind: u.kind.clone(),
                backend: t.map(|t| t.backend.clone()).unwrap_or_default(),
                token: u.label().to_string(),
                uri: t.map(|t| t.uri.clone()).unwrap_or_default(),
                serial: t.and_then(|t| t.serial.clone()),
                fingerprint: t
                    .map(|t| fingerprint_of(&t.public_key))
                    .unwrap_or_else(|| "-".into()),
                separate_pin: t.is_some_and(|t| t.separate_pin),
                attestation: t.and_then(|t| t.attestation.clone()),
                added_at: u.added_at.clone(),
            }
        })
        .collect()
}

pub(super) fn fingerprint_of(encoded: &str) -> String {
    crate::vault::format::unb64("public key", encoded)
        .ok()
        .and_then(|raw| p256::PublicKey::from_sec1_bytes(&raw).ok())
        .map(|k| token::fingerprint(&k))
        .unwrap_or_else(|| "invalid".into())
}

/// The unlock policy in words.
pub fn policy_words(doc: &Document) -> String {
    let tokens: Vec<&str> = doc
        .unlockers
        .iter()
        .filter_map(|u| u.token.as_ref().map(|t| t.label.as_str()))
        .collect();
    let with_tokens = match tokens.as_slice() {
        [one] => format!("the passphrase and the token {one}"),
        many => format!(
            "the passphrase and any one of {} tokens ({})",
            many.len(),
            many.join(", ")
        ),
    };
    if doc.unlockers.iter().any(|u| u.kind == "recovery") {
        format!("{with_tokens}, or the recovery code alone")
    } else {
        format!("{with_tokens}; there is no recovery code")
    }
}

pub fn info(ctx: &mut Context) -> Result<(), CliError> {
    let sealed = ctx.vault.load()?;
    let doc = sealed.document();
    let view = InfoView {
        name: doc.name.clone(),
        path: ctx.vault.path().display().to_string(),
        created_at: doc.created_at.clone(),
        updated_at: doc.updated_at.clone(),
        unlockers: unlocker_views(doc),
        policy: format!("opens with {}", policy_words(doc)),
        systems: doc.systems.len(),
        kdf: format!(
            "argon2id, {} MiB, {} passes, {} lane(s)",
            doc.kdf.memory_kib / 1024,
            doc.kdf.iterations,
            doc.kdf.parallelism
        ),
    };
    if !ctx.vault.is_private() {
        ctx.ui.notice(&format!(
            "Warning: {} can be read by other users; run chmod 600 on it.",
            view.path
        ));
    }
    if ctx.json {
        return output::json(&view);
    }
    print_info(&view)
}

fn print_info(view: &InfoView) -> Result<(), CliError> {
    let mut text = format!(
        "Keyring   {}\nFile      {}\nCreated   {}\nUpdated   {}\nSystems   {}\nPolicy    {}\nKDF       {}\nUnlockers\n",
        view.name, view.path, view.created_at, view.updated_at, view.systems, view.policy, view.kdf
    );
    for u in &view.unlockers {
        if u.kind == "recovery" {
            text.push_str(&format!("  {}  the recovery code\n", u.id));
            continue;
        }
        text.push_str(&format!(
            "  {}  {} {}  {}{}\n      {}\n      attestation: {}\n",
            u.id,
            u.backend,
            u.token,
            u.fingerprint,
            if u.separate_pin { "  (own PIN)" } else { "" },
            u.uri,
            u.attestation
                .as_deref()
                .unwrap_or("none (the token offered no proof that the key was made inside it)")
        ));
    }
    output::say(text.trim_end())
}

/// One system's last check, as kept beside the keyring.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct LastCheck {
    pub connected: Option<bool>,
    pub detail: String,
    pub checked_at: Option<String>,
}

pub fn read_status_cache(ctx: &Context) -> std::collections::BTreeMap<String, LastCheck> {
    std::fs::read(status_cache_path(&ctx.vault))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ListRow {
    name: String,
    url: String,
    username: String,
    key_stored: bool,
    connected: Option<bool>,
    detail: String,
    checked_at: Option<String>,
    api_key_expires_at: Option<String>,
}

pub fn list(ctx: &mut Context) -> Result<(), CliError> {
    let sealed = ctx.vault.load()?;
    let cache = read_status_cache(ctx);
    let rows: Vec<ListRow> = sealed
        .document()
        .systems
        .iter()
        .map(|s| {
            let last = cache.get(&s.name).cloned().unwrap_or_default();
            ListRow {
                name: s.name.clone(),
                url: s.url.clone(),
                username: s.username.clone(),
                key_stored: !s.ciphertext.is_empty(),
                connected: last.connected,
                detail: if last.checked_at.is_some() {
                    last.detail
                } else {
                    "not checked yet (nasring status)".into()
                },
                checked_at: last.checked_at,
                api_key_expires_at: s.api_key_expires_at.clone(),
            }
        })
        .collect();
    if ctx.json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        return output::say("The keyring holds no system yet. Add one: nasring add NAME --url https://HOST --username USER");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                if r.key_stored {
                    "stored".into()
                } else {
                    "-".into()
                },
                connected_word(r.connected).into(),
                match &r.checked_at {
                    Some(t) => format!("{} (checked {t})", r.detail),
                    None => r.detail.clone(),
                },
            ]
        })
        .collect();
    output::table(&["TrueNAS", "Key", "Connected", "Detail"], &table)
}

pub fn connected_word(c: Option<bool>) -> &'static str {
    match c {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

pub fn reset(ctx: &mut Context, args: ResetArgs) -> Result<(), CliError> {
    let sealed = ctx.vault.load()?;
    let doc = sealed.document();
    let names: Vec<&str> = doc.systems.iter().map(|s| s.name.as_str()).collect();
    let warning = format!(
        "This removes keyring \"{}\" ({}) and the stored API keys of {} system(s){}{}.\n{}",
        doc.name,
        ctx.vault.path().display(),
        names.len(),
        if names.is_empty() { "" } else { ": " },
        names.join(", "),
        if args.revoke {
            "Each key is deleted on its NAS first; those that cannot be are listed."
        } else {
            "The keys stay valid on the NAS systems until you delete them there (or use --revoke)."
        }
    );
    if !args.yes {
        ctx.ui.notice(&warning);
        let typed = ctx.ui.line(&format!(
            "Type the keyring name ({}) to confirm: ",
            doc.name
        ))?;
        if typed != doc.name {
            return Err(CliError::Aborted(
                "the name did not match; nothing was removed".into(),
            ));
        }
    }
    let name = doc.name.clone();
    let revocations = if args.revoke {
        let limits = super::nas::limits(&args.net)?;
        let keyring = super::open::open_keyring(ctx)?;
        let all: Vec<String> = keyring.systems().iter().map(|s| s.name.clone()).collect();
        Some(super::rotate::revoke_all(&keyring, &all, &limits))
    } else {
        None
    };
    ctx.vault.reset()?;
    let _ = std::fs::remove_file(status_cache_path(&ctx.vault));
    let failure = revocations
        .as_deref()
        .and_then(super::rotate::unrevoked_error);
    if ctx.json {
        output::json(&serde_json::json!({"reset": true, "name": name,
            "systems_removed": names.len(), "revocations": revocations}))?;
    } else {
        output::say(&format!(
            "Keyring \"{name}\" and {} stored key(s) removed{}. Start afresh with: nasring init",
            names.len(),
            match &revocations {
                Some(r) => format!(
                    "; {} of {} key(s) deleted on their NAS",
                    r.iter().filter(|r| r.revoked).count(),
                    r.len()
                ),
                None => String::new(),
            }
        ))?;
    }
    failure.map_or(Ok(()), Err)
}
