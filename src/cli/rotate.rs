//! Keys on the NAS: `rotate` (a new API key, stored, then the old one deleted) and the
//! revocation of keys by `remove --revoke` and `reset --revoke`.
//!
//! A rotation is written down in the keyring before the NAS is asked for a new key, under a
//! name chosen in advance. Whatever step a crash interrupts, the stored key still works, and
//! a rerun finds what was left on the NAS by that name or by the recorded old key id:
//!
//! 1. record `{new_key_name, old_key_id}` in the system's entry, save;
//! 2. `api_key.create` with that name;
//! 3. store the new key (the record stays, for the old id), save;
//! 4. `api_key.delete` of the old key, through a session logged in with the new key;
//! 5. clear the record, save.

use serde::Serialize;

use super::args::RotateArgs;
use super::nas::{self, block_on, client_error};
use super::open::{open_keyring, relock};
use super::{output, CliError, Context};
use crate::secret::ApiKey;
use crate::truenas::{Limits, Session, SystemUrl, TlsTrust};
use crate::vault::{NewSystem, OpenKeyring, PendingRotation, SystemEntry};

/// For tests only, and only in debug builds: `NASRING_TEST_CRASH_AT=<step>` aborts the
/// process at that step of a rotation, as a crash or a power cut would. Release builds
/// contain no such hook; in a debug build it can do nothing that a crash at the same point
/// could not, and every such point is one that a rerun recovers from.
fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("NASRING_TEST_CRASH_AT").is_ok_and(|v| v == step) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

/// Where and how to reach one stored system with its key.
struct Target {
    name: String,
    url: SystemUrl,
    trust: TlsTrust,
    username: String,
}

fn target(entry: &SystemEntry) -> Result<Target, CliError> {
    let url = nas::parse_url(&entry.url)?;
    let trust = nas::trust_from_record(&entry.tls).ok_or_else(|| {
        CliError::Failed(format!(
            "{}: its certificate has not been trusted yet, so its key is never sent.\n\
             Pin it first: nasring trust {}",
            entry.name, entry.name
        ))
    })?;
    Ok(Target {
        name: entry.name.clone(),
        url,
        trust,
        username: entry.username.clone(),
    })
}

fn connect(t: &Target, limits: &Limits, key: &ApiKey) -> Result<Session, CliError> {
    block_on(async {
        let mut session = Session::connect(&t.url, &t.trust, limits).await?;
        session.login_api_key(&t.username, key).await?;
        Ok(session)
    })?
    .map_err(|e| client_error(&t.name, e))
}

fn close(session: Session) {
    let _ = block_on(session.close());
}

#[derive(Serialize)]
struct Rotated {
    name: String,
    ok: bool,
    new_key_id: Option<u64>,
    old_key_id: Option<u64>,
    old_key_deleted: bool,
    /// Keys left by an interrupted rotation and deleted now.
    orphans_deleted: Vec<u64>,
    detail: String,
}

pub fn rotate(ctx: &mut Context, args: RotateArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.net)?;
    let mut keyring = open_keyring(ctx)?;
    let names: Vec<String> = match &args.name {
        Some(name) => vec![keyring.system(name)?.name.clone()],
        None => keyring.systems().iter().map(|s| s.name.clone()).collect(),
    };
    let mut results = Vec::new();
    for name in names {
        let result = rotate_one(ctx, &mut keyring, &name, &limits, args.expires_in);
        results.push(result.unwrap_or_else(|e| Rotated {
            name: name.clone(),
            ok: false,
            new_key_id: None,
            old_key_id: None,
            old_key_deleted: false,
            orphans_deleted: Vec::new(),
            detail: e.to_string(),
        }));
    }
    report(ctx, &results)
}

fn report(ctx: &mut Context, results: &[Rotated]) -> Result<(), CliError> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    if ctx.json {
        output::json(results)?;
    } else {
        for r in results {
            output::say(&format!("{}: {}", r.name, r.detail))?;
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::Failed(format!(
        "the key of {} was not rotated; each keeps a working key.\n\
         Fix what is said above and run nasring rotate again: it finishes what was started.",
        failed.join(", ")
    )))
}

/// Saves a change to one system under the lock, on top of what is on disk now.
fn save_change(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    change: impl FnOnce(&mut OpenKeyring) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let lock = relock(ctx, keyring)?;
    change(keyring)?;
    keyring.save(&ctx.vault, &lock)?;
    Ok(())
}

fn rotate_one(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    name: &str,
    limits: &Limits,
    expires_in: Option<u32>,
) -> Result<Rotated, CliError> {
    let entry = keyring.system(name)?.clone();
    let t = target(&entry)?;
    let mut session = connect(&t, limits, &keyring.api_key(name)?)?;
    let mut orphans = Vec::new();
    if let Some(pending) = &entry.rotation {
        if entry.api_key_name.as_deref() == Some(pending.new_key_name.as_str()) {
            // Stored already: only the old key's deletion was left.
            let result = finish(ctx, keyring, &t, session, pending, &entry);
            return result;
        }
        orphans = delete_named(&mut session, &t, &pending.new_key_name)?;
        save_change(ctx, keyring, |k| Ok(k.set_rotation(name, None)?))?;
    }
    let new_key_name = format!(
        "{} rotation {}",
        nas::key_name(keyring.name()),
        hex::encode(crate::vault::crypto::random_bytes::<3>())
    );
    let pending = keyring.rotation_for(name, new_key_name.clone())?;
    save_change(ctx, keyring, |k| {
        Ok(k.set_rotation(name, Some(pending.clone()))?)
    })?;
    crash_point("recorded");
    // Limitation: the old key's expiry is not carried over; without --expires-in the new
    // key never expires.
    let expires =
        expires_in.map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
    let created = block_on(session.create_api_key(&new_key_name, &t.username, expires));
    let created = match created {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            close(session);
            return Err(client_error(name, e));
        }
        Err(e) => return Err(e),
    };
    close(session);
    crash_point("created");
    let new = NewSystem {
        name: entry.name.clone(),
        url: entry.url.clone(),
        username: entry.username.clone(),
        tls: entry.tls.clone(),
        api_key_id: Some(created.id),
        api_key_name: Some(created.name.clone()),
        api_key_expires_at: created.expires_at.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
    };
    save_change(ctx, keyring, |k| {
        k.replace_system(new, &created.key)?;
        Ok(k.set_rotation(name, Some(pending.clone()))?)
    })?;
    crash_point("stored");
    let session = connect(&t, limits, &created.key)?;
    let entry = keyring.system(name)?.clone();
    let mut done = finish(ctx, keyring, &t, session, &pending, &entry)?;
    done.orphans_deleted = orphans;
    Ok(done)
}

/// Deletes the keys called `name` on the NAS; returns their ids.
fn delete_named(session: &mut Session, t: &Target, name: &str) -> Result<Vec<u64>, CliError> {
    let found = block_on(session.api_keys_named(name))?.map_err(|e| client_error(&t.name, e))?;
    let mut deleted = Vec::new();
    for key in found {
        block_on(session.delete_api_key(key.id))?.map_err(|e| client_error(&t.name, e))?;
        deleted.push(key.id);
    }
    Ok(deleted)
}

/// The new key is stored: deletes the old one and clears the record.
fn finish(
    ctx: &mut Context,
    keyring: &mut OpenKeyring,
    t: &Target,
    mut session: Session,
    pending: &PendingRotation,
    entry: &SystemEntry,
) -> Result<Rotated, CliError> {
    let old = pending
        .old_key_id
        .filter(|id| Some(*id) != entry.api_key_id);
    let deleted = match old {
        Some(id) => block_on(session.delete_api_key_if_present(id))?,
        None => Ok(false),
    };
    close(session);
    let deleted = deleted.map_err(|e| client_error(&t.name, e))?;
    crash_point("deleted");
    save_change(ctx, keyring, |k| Ok(k.set_rotation(&t.name, None)?))?;
    Ok(Rotated {
        name: t.name.clone(),
        ok: true,
        new_key_id: entry.api_key_id,
        old_key_id: old,
        old_key_deleted: deleted,
        orphans_deleted: Vec::new(),
        detail: format!(
            "new API key {} stored{}",
            entry
                .api_key_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "?".into()),
            match old {
                Some(id) => format!("; the old key {id} is deleted on the NAS"),
                None => String::new(),
            }
        ),
    })
}

/// What revoking one system's key came to.
#[derive(Serialize)]
pub struct Revoked {
    pub name: String,
    pub revoked: bool,
    pub key_ids: Vec<u64>,
    pub detail: String,
}

/// Deletes on its NAS the key of every named system (and any key an interrupted rotation
/// left), each on its own; nothing is forgotten here.
pub fn revoke_all(keyring: &OpenKeyring, names: &[String], limits: &Limits) -> Vec<Revoked> {
    names
        .iter()
        .map(|name| match revoke_one(keyring, name, limits) {
            Ok(ids) => Revoked {
                name: name.clone(),
                revoked: true,
                detail: format!(
                    "key {} deleted on the NAS",
                    ids.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                key_ids: ids,
            },
            Err(e) => Revoked {
                name: name.clone(),
                revoked: false,
                key_ids: Vec::new(),
                detail: e.to_string().replace('\n', " "),
            },
        })
        .collect()
}

fn revoke_one(keyring: &OpenKeyring, name: &str, limits: &Limits) -> Result<Vec<u64>, CliError> {
    let entry = keyring.system(name)?;
    let id = entry.api_key_id.ok_or_else(|| {
        CliError::Failed("its key's id on the NAS is unknown; delete it there by hand".into())
    })?;
    let t = target(entry)?;
    let mut session = connect(&t, limits, &keyring.api_key(name)?)?;
    let mut ids = Vec::new();
    if let Some(pending) = &entry.rotation {
        if entry.api_key_name.as_deref() != Some(pending.new_key_name.as_str()) {
            ids.extend(delete_named(&mut session, &t, &pending.new_key_name)?);
        }
        if let Some(old) = pending.old_key_id.filter(|o| *o != id) {
            if block_on(session.delete_api_key_if_present(old))?
                .map_err(|e| client_error(name, e))?
            {
                ids.push(old);
            }
        }
    }
    // The session is logged in with this key: deleting it is the last call.
    block_on(session.delete_api_key(id))?.map_err(|e| client_error(name, e))?;
    ids.push(id);
    close(session);
    Ok(ids)
}

/// The message for systems whose key could not be deleted: the keys stay valid there.
pub fn unrevoked_error(results: &[Revoked]) -> Option<CliError> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.revoked)
        .map(|r| format!("  {}: {}", r.name, r.detail))
        .collect();
    if failed.is_empty() {
        return None;
    }
    Some(CliError::Failed(format!(
        "the API key of {} system(s) could not be deleted on the NAS and stays valid there:\n{}\n\
         Delete those keys in each NAS's API key list (Credentials > API Keys).",
        failed.len(),
        failed.join("\n")
    )))
}
