//! `add`, `trust` and `login`: the commands that talk to one NAS and may store a key.

use serde::Serialize;

use super::args::{AddArgs, LoginArgs, TrustArgs};
use super::nas::{self, block_on, client_error, Credentials};
use super::open::{open_keyring_with_passphrase, relock};
use super::systems::{api_key_id, read_api_key_file};
use super::{output, CliError, Context};
use crate::secret::{ApiKey, Passphrase};
use crate::truenas::{fetch_certificate, Limits, Session, SystemUrl, TlsTrust};
use crate::vault::{NewSystem, OpenKeyring, SystemEntry, VaultError};

/// A key ready to be stored, and what the NAS said about it.
struct Obtained {
    key: ApiKey,
    id: u64,
    name: Option<String>,
    expires_at: Option<String>,
    /// The password session that created the key, kept to clean up on the NAS.
    session: Option<Session>,
}

pub fn add(ctx: &mut Context, args: AddArgs) -> Result<(), CliError> {
    crate::vault::check_name("the system name", &args.name)?;
    let url = nas::parse_url(&args.url)?;
    let limits = nas::limits(&args.net)?;
    // The keyring opens first, so that no key is made on the NAS for a keyring that won't.
    let (passphrase, mut keyring) = open_keyring_with_passphrase(ctx)?;
    let old = check_replace(&keyring, &args.name, args.replace)?;
    let trust = match nas::trust_from_args(&url, &args.tls)? {
        Some(trust) => trust,
        None => nas::ask_to_pin(ctx, &args.name, &url, &limits)?,
    };
    let mut obtained = match &args.api_key_file {
        Some(file) => import_key(file, &args, &url, &trust, &limits)?,
        None => create_key(
            ctx,
            &args,
            &url,
            &trust,
            &limits,
            &passphrase,
            keyring.name(),
        )?,
    };
    let new = NewSystem {
        name: args.name.clone(),
        url: url.to_string(),
        username: args.username.clone(),
        tls: nas::trust_record(&trust),
        api_key_id: Some(obtained.id),
        api_key_name: obtained.name.clone(),
        api_key_expires_at: obtained.expires_at.clone(),
    };
    if let Err(e) = store(ctx, &mut keyring, new, &obtained.key, args.replace) {
        undo_created(&mut obtained, &args.name);
        return Err(e);
    }
    let old_deleted = match &old {
        Some(old) if old.api_key_id != Some(obtained.id) => {
            Some(delete_old_key(&mut obtained, old, &url, &trust, &limits))
        }
        _ => None,
    };
    close(obtained.session.take());
    report_added(ctx, &args.name, &obtained, old.as_ref(), old_deleted)
}

/// With --replace the system must exist; without it, it must not.
fn check_replace(
    keyring: &OpenKeyring,
    name: &str,
    replace: bool,
) -> Result<Option<SystemEntry>, CliError> {
    match (keyring.system(name), replace) {
        (Ok(old), true) => Ok(Some(old.clone())),
        (Ok(_), false) => Err(VaultError::SystemExists { name: name.into() }.into()),
        (Err(e), true) => Err(e.into()),
        (Err(_), false) => Ok(None),
    }
}

fn import_key(
    file: &std::path::Path,
    args: &AddArgs,
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
) -> Result<Obtained, CliError> {
    let key = read_api_key_file(file)?;
    let id = api_key_id(&key)?;
    if !args.no_check {
        nas::try_key(&args.name, url, trust, limits, &args.username, &key)?;
    }
    Ok(Obtained {
        key,
        id,
        name: None,
        expires_at: None,
        session: None,
    })
}

fn create_key(
    ctx: &mut Context,
    args: &AddArgs,
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
    passphrase: &Passphrase,
    keyring_name: &str,
) -> Result<Obtained, CliError> {
    let creds = Credentials {
        username: &args.username,
        password_file: args.password_file.as_deref(),
        otp_file: args.otp_file.as_deref(),
    };
    let password = nas::password(ctx, &creds, &args.name)?;
    if password.expose() == passphrase.expose() {
        ctx.ui.notice(
            "Warning: this NAS password is the keyring passphrase. Anyone who learns one knows both; \
             change one of them.",
        );
    }
    let mut session =
        nas::login_with_password(ctx, &args.name, url, trust, limits, &creds, &password)?;
    drop(password);
    let created = nas::create_key(
        &mut session,
        &args.name,
        keyring_name,
        &args.username,
        args.expires_in,
    )?;
    let mut obtained = Obtained {
        id: created.id,
        name: Some(created.name.clone()),
        expires_at: created.expires_at.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        key: created.key,
        session: Some(session),
    };
    if !args.no_check {
        if let Err(e) = nas::try_key(
            &args.name,
            url,
            trust,
            limits,
            &args.username,
            &obtained.key,
        ) {
            undo_created(&mut obtained, &args.name);
            return Err(e);
        }
    }
    Ok(obtained)
}

fn store(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    new: NewSystem,
    key: &ApiKey,
    replace: bool,
) -> Result<(), CliError> {
    let lock = relock(ctx, keyring)?;
    if replace {
        keyring.replace_system(new, key)?;
    } else {
        keyring.add_system(new, key)?;
    }
    keyring.save(&ctx.vault, &lock)?;
    Ok(())
}

/// A key this command made but could not store is deleted again, so none is left orphaned.
fn undo_created(obtained: &mut Obtained, system: &str) {
    let Some(session) = obtained.session.as_mut() else {
        return;
    };
    let id = obtained.id;
    let deleted = block_on(session.delete_api_key(id))
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !deleted {
        eprintln!(
            "nasring: the new API key (id {id}) could not be deleted from {system}; delete it in the NAS's API key list."
        );
    }
}

/// Deletes the replaced key on the NAS: with the password session if there is one, else
/// logged in with the new key.
fn delete_old_key(
    obtained: &mut Obtained,
    old: &SystemEntry,
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
) -> Result<u64, String> {
    let Some(old_id) = old.api_key_id else {
        return Err("its id is unknown".into());
    };
    let result = block_on(async {
        match obtained.session.as_mut() {
            Some(session) => session.delete_api_key(old_id).await,
            None => {
                let mut session = Session::connect(url, trust, limits).await?;
                session.login_api_key(&old.username, &obtained.key).await?;
                let r = session.delete_api_key(old_id).await;
                session.close().await;
                r
            }
        }
    });
    match result {
        Ok(Ok(())) => Ok(old_id),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn close(session: Option<Session>) {
    if let Some(session) = session {
        let _ = block_on(session.close());
    }
}

#[derive(Serialize)]
struct Added<'a> {
    name: &'a str,
    api_key_id: u64,
    api_key_name: Option<&'a str>,
    expires_at: Option<&'a str>,
    replaced_key_id: Option<u64>,
    old_key_deleted: Option<bool>,
}

fn report_added(
    ctx: &mut Context,
    name: &str,
    obtained: &Obtained,
    old: Option<&SystemEntry>,
    old_deleted: Option<Result<u64, String>>,
) -> Result<(), CliError> {
    let view = Added {
        name,
        api_key_id: obtained.id,
        api_key_name: obtained.name.as_deref(),
        expires_at: obtained.expires_at.as_deref(),
        replaced_key_id: old.and_then(|o| o.api_key_id),
        old_key_deleted: old_deleted.as_ref().map(Result::is_ok),
    };
    if ctx.json {
        return output::json(&view);
    }
    let mut text = match &obtained.name {
        Some(key_name) => format!(
            "Created API key {} (\"{key_name}\") on {name} and stored it.",
            obtained.id
        ),
        None => format!("Stored the API key {} of {name}.", obtained.id),
    };
    if let Some(expiry) = &obtained.expires_at {
        text.push_str(&format!(" It expires at {expiry}."));
    }
    match old_deleted {
        Some(Ok(id)) => text.push_str(&format!("\nThe replaced key {id} was deleted on the NAS.")),
        Some(Err(why)) => text.push_str(&format!(
            "\nThe replaced key could not be deleted on the NAS ({why}); delete it in its API key list."
        )),
        None => {}
    }
    output::say(&text)
}

pub fn trust(ctx: &mut Context, args: TrustArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.net)?;
    let mut keyring = super::open::open_keyring(ctx)?;
    let entry = keyring.system(&args.name)?.clone();
    let url = nas::parse_url(&entry.url)?;
    if !url.is_tls() {
        return Err(CliError::Usage(format!(
            "{} is plain loopback; there is no certificate to trust",
            args.name
        )));
    }
    let cert =
        block_on(fetch_certificate(&url, &limits))?.map_err(|e| client_error(&args.name, e))?;
    let pin = match &args.tls_fingerprint {
        Some(given) => {
            let given = crate::truenas::CertFingerprint::parse(given)
                .map_err(|e| CliError::Usage(format!("{e} {}", e.remedy(""))))?;
            if given != cert.fingerprint {
                return Err(CliError::Failed(format!(
                    "{} presents {}, not the fingerprint you gave; nothing was changed.\n\
                     Check which certificate the NAS really uses before trusting it.",
                    args.name, cert.fingerprint
                )));
            }
            given
        }
        None => match nas::ask_to_pin(ctx, &args.name, &url, &limits)? {
            TlsTrust::Pin(fp) => fp,
            _ => return Err(CliError::Failed("no certificate was pinned".into())),
        },
    };
    let old = entry.tls.clone();
    let lock = relock(ctx, &mut keyring)?;
    keyring.set_tls(&args.name, pin.to_string())?;
    keyring.save(&ctx.vault, &lock)?;
    if ctx.json {
        return output::json(
            &serde_json::json!({"name": args.name, "tls": pin.to_string(), "previous": old}),
        );
    }
    output::say(&format!("{} is now pinned to {pin}.", args.name))
}

pub fn login(ctx: &mut Context, args: LoginArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.net)?;
    let entry = target_of_login(ctx, &args.name)?;
    let url = nas::parse_url(&entry.url)?;
    let trust = nas::trust_from_record(&entry.tls).ok_or_else(|| {
        CliError::Failed(format!(
            "{}: its certificate has not been trusted yet, so no password is sent.\nPin it first: nasring trust {}",
            args.name, args.name
        ))
    })?;
    if args.add_to_keyring {
        return add(ctx, login_as_add(&args, &entry));
    }
    let creds = Credentials {
        username: &entry.username,
        password_file: args.password_file.as_deref(),
        otp_file: args.otp_file.as_deref(),
    };
    let password = nas::password(ctx, &creds, &args.name)?;
    let mut session =
        nas::login_with_password(ctx, &args.name, &url, &trust, &limits, &creds, &password)?;
    let card = block_on(session.system_card())?.map_err(|e| client_error(&args.name, e))?;
    close(Some(session));
    if ctx.json {
        return output::json(
            &serde_json::json!({"name": args.name, "connected": true, "card": card}),
        );
    }
    output::say(&format!(
        "Logged in to {} as {} for this command only; nothing was stored.\n{} - TrueNAS {}",
        args.name, entry.username, card.hostname, card.version
    ))
}

/// The stored system that `login` goes to, read without unlocking: it is shown to the user
/// before any password is asked, since an unopened keyring file is not authenticated.
// Limitation: with --password-file nobody may read that notice, so a writer of the keyring
// file could redirect the password; see docs/limitations.md.
fn target_of_login(ctx: &mut Context, name: &str) -> Result<SystemEntry, CliError> {
    let sealed = ctx.vault.load()?;
    let entry = sealed
        .document()
        .systems
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| VaultError::NoSuchSystem { name: name.into() })?;
    ctx.ui.notice(&format!(
        "Logging in to {} at {} as {} (certificate {}).",
        entry.name,
        entry.url,
        entry.username,
        if entry.tls.starts_with("ca:") {
            "checked against the stored CA"
        } else {
            &entry.tls
        }
    ));
    Ok(entry)
}

fn login_as_add(args: &LoginArgs, entry: &SystemEntry) -> AddArgs {
    let fingerprint = (!entry.tls.starts_with("ca:") && entry.tls.starts_with("sha256:"))
        .then(|| entry.tls.clone());
    AddArgs {
        name: args.name.clone(),
        url: entry.url.clone(),
        username: entry.username.clone(),
        api_key_file: None,
        password_file: args.password_file.clone(),
        otp_file: args.otp_file.clone(),
        expires_in: None,
        replace: true,
        no_check: false,
        tls: super::args::TlsArgs {
            tls_fingerprint: fingerprint,
            tls_ca: None,
        },
        net: args.net.clone(),
    }
}
