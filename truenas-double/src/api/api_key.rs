//! `api_key.*`: create, update (with reset), delete, query, get_instance, my_keys.

use serde_json::{json, Value};

use super::error::{CallFailure, CallResult, FieldError, EACCES, EFAULT, EINVAL};
use super::params::{self, Checker};
use super::{query, Ctx};
use crate::keystore::{ApiKeyRecord, IssuedKey};
use crate::profile::ApiFlavor;
use crate::system::{lock, now_ms, System};

/// What full admins see instead of the hash when they may not read it.
const MASK: &str = "********";

pub(super) fn call(ctx: &Ctx<'_>, method: &str, params: &[Value]) -> CallResult {
    match method {
        "api_key.create" => create(ctx, params),
        "api_key.update" => update(ctx, params),
        "api_key.delete" => delete(ctx, params),
        "api_key.query" => {
            params::check_count(params, &["filters", "options"])?;
            query::apply(entries(ctx, None), params.first(), params.get(1))
        }
        "api_key.get_instance" => get_instance(ctx, params),
        "api_key.my_keys" => my_keys(ctx, params),
        _ => Err(CallFailure::call(
            super::error::ENOMETHOD,
            format!("Method {method:?} not found"),
        )),
    }
}

/// One key as the API shows it in the given flavour.
pub fn entry(system: &System, record: &ApiKeyRecord, api: ApiFlavor, reveal: bool) -> Value {
    let uid = system.user(&record.username).map(|u| u.uid);
    let mut value = json!({
        "id": record.id,
        "name": record.name,
        "username": record.username,
        "user_identifier": uid,
        "created_at": {"$date": record.created_at_ms},
        "expires_at": record.expires_at_ms.map(|ms| json!({"$date": ms})),
        "local": true,
        "revoked": record.revoked,
    });
    let secret = |text: String| {
        if reveal {
            Value::from(text)
        } else {
            Value::from(MASK)
        }
    };
    match api {
        ApiFlavor::V25_04 | ApiFlavor::V25_10 => value["keyhash"] = secret(record.keyhash()),
        ApiFlavor::V26 => {
            value["iterations"] = if reveal { json!(1) } else { json!(MASK) };
            value["salt"] = secret(record.salt_hex().to_string());
            value["stored_key"] = secret(record.hash_hex().to_string());
            value["server_key"] = secret(record.hash_hex().chars().rev().collect());
        }
    }
    if api >= ApiFlavor::V25_10 {
        value["revoked_reason"] = json!(record.revoked_reason);
    }
    value
}

/// A created or reset key: its entry plus the secret, shown this once.
pub fn issued_entry(system: &System, issued: &IssuedKey, api: ApiFlavor, reveal: bool) -> Value {
    let mut value = entry(system, &issued.record, api, reveal);
    value["key"] = Value::from(issued.secret.as_str());
    value
}

/// Full admins and holders of API_KEY_WRITE see hashes; others see the mask.
fn reveals_secrets(ctx: &Ctx<'_>) -> bool {
    ctx.caller()
        .is_some_and(|(_, user)| user.has_role("API_KEY_WRITE"))
}

fn entries(ctx: &Ctx<'_>, owner: Option<&str>) -> Vec<Value> {
    let reveal = reveals_secrets(ctx);
    let keys = lock(&ctx.system.keys);
    keys.all()
        .filter(|k| owner.is_none_or(|o| k.username == o))
        .map(|k| entry(ctx.system, k, ctx.api, reveal))
        .collect()
}

/// Without full admin or API_KEY_WRITE a session manages only its own account's keys.
fn privilege_check(ctx: &Ctx<'_>, owner: &str) -> Result<(), CallFailure> {
    let Some((credential, user)) = ctx.caller() else {
        return Err(CallFailure::not_authenticated());
    };
    if user.has_role("API_KEY_WRITE") || credential.username == owner {
        return Ok(());
    }
    Err(CallFailure::call(
        EACCES,
        format!(
            "{}: authenticated user lacks privileges to create or modify API keys of other users.",
            credential.username
        ),
    ))
}

struct CreateData {
    name: String,
    username: String,
    expires_at_ms: Option<i64>,
}

fn parse_create(params: &[Value]) -> Result<CreateData, CallFailure> {
    params::check_count(params, &["api_key_create"])?;
    let object = params::object(
        params::required(params, 0, "api_key_create")?,
        "api_key_create",
    )?;
    let mut checker = Checker::default();
    checker.no_extra(
        object,
        &["name", "username", "expires_at"],
        "api_key_create",
    );
    let name = required_name(&mut checker, object.get("name"), "api_key_create.name");
    let username = match object.get("username") {
        None => {
            checker.fail("api_key_create.username", "Field required");
            None
        }
        Some(v) => checker
            .string(v, "api_key_create.username")
            .map(str::to_string),
    };
    let expires = object.get("expires_at").map_or(Some(None), |v| {
        checker.datetime(v, "api_key_create.expires_at", true)
    });
    checker.finish()?;
    Ok(CreateData {
        name: name.unwrap_or_default(),
        username: username.unwrap_or_default(),
        expires_at_ms: expires.flatten(),
    })
}

fn required_name(checker: &mut Checker, value: Option<&Value>, loc: &str) -> Option<String> {
    let Some(value) = value else {
        checker.fail(loc, "Field required");
        return None;
    };
    let name = checker.string(value, loc)?;
    if name.is_empty() {
        checker.fail(loc, "String should have at least 1 character");
    } else if name.chars().count() > 200 {
        checker.fail(loc, "String should have at most 200 characters");
    }
    Some(name.to_string())
}

fn create(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    let data = parse_create(params)?;
    privilege_check(ctx, &data.username)?;
    let now = now_ms();
    let mut keys = lock(&ctx.system.keys);
    let mut errors = Vec::new();
    let mut fail = |attribute: &str, message: String| {
        errors.push(FieldError {
            attribute: Some(attribute.to_string()),
            message,
            errno: EINVAL,
        })
    };
    if keys.name_taken(&data.name, None) {
        fail("api_key_create", "name must be unique".into());
    }
    if data.expires_at_ms.is_some_and(|at| at < now) {
        fail("api_key_create", "Expiration date is in the past".into());
    }
    match ctx.system.user(&data.username) {
        None => fail("api_key_create", "User does not exist.".into()),
        Some(user) if !user.has_api_access() => fail(
            "api_key_create",
            "User lacks privilege role membership.".into(),
        ),
        Some(_) => {}
    }
    let limit = ctx.system.release.max_keys_per_user();
    if limit.is_some_and(|max| keys.count_for(&data.username) >= max) {
        let max = limit.unwrap_or_default();
        fail(
            "api_key_create.username",
            format!("User already meets or exceeds maximum per-user API key limit of {max}"),
        );
    }
    if !errors.is_empty() {
        return Err(CallFailure::Validation(errors));
    }
    let issued = keys.insert(&data.name, &data.username, data.expires_at_ms, now);
    drop(keys);
    Ok(issued_entry(
        ctx.system,
        &issued,
        ctx.api,
        reveals_secrets(ctx),
    ))
}

fn update(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["id", "api_key_update"])?;
    let id = params::id(params, 0, "id")?;
    let object = params::object(
        params::required(params, 1, "api_key_update")?,
        "api_key_update",
    )?;
    let mut checker = Checker::default();
    checker.no_extra(object, &["name", "expires_at", "reset"], "api_key_update");
    let name = object
        .get("name")
        .and_then(|v| required_name(&mut checker, Some(v), "api_key_update.name"));
    let expires = object
        .get("expires_at")
        .and_then(|v| checker.datetime(v, "api_key_update.expires_at", true));
    let reset = object
        .get("reset")
        .and_then(|v| checker.boolean(v, "api_key_update.reset"))
        .unwrap_or(false);
    checker.finish()?;

    let owner = lock(&ctx.system.keys)
        .get(id)
        .map(|k| k.username.clone())
        .ok_or_else(CallFailure::match_not_found)?;
    privilege_check(ctx, &owner)?;
    let now = now_ms();
    let mut keys = lock(&ctx.system.keys);
    let mut errors = Vec::new();
    if name
        .as_deref()
        .is_some_and(|n| keys.name_taken(n, Some(id)))
    {
        errors.push(FieldError {
            attribute: Some("api_key_update".into()),
            message: "name must be unique".into(),
            errno: EINVAL,
        });
    }
    if expires.flatten().is_some_and(|at| at < now) {
        errors.push(FieldError {
            attribute: Some("api_key_update".into()),
            message: "Expiration date is in the past".into(),
            errno: EINVAL,
        });
    }
    if !errors.is_empty() {
        return Err(CallFailure::Validation(errors));
    }
    keys.update(id, name, expires);
    let issued = if reset { keys.reset(id) } else { None };
    let record = keys.get(id).cloned();
    drop(keys);
    let reveal = reveals_secrets(ctx);
    match (issued, record) {
        (Some(issued), _) => Ok(issued_entry(ctx.system, &issued, ctx.api, reveal)),
        (None, Some(record)) => Ok(entry(ctx.system, &record, ctx.api, reveal)),
        (None, None) => Err(CallFailure::match_not_found()),
    }
}

fn delete(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["id"])?;
    let id = params::id(params, 0, "id")?;
    let owner = lock(&ctx.system.keys).get(id).map(|k| k.username.clone());
    let owner = owner
        .ok_or_else(|| CallFailure::instance_not_found(format!("ApiKey {id} does not exist")))?;
    privilege_check(ctx, &owner)?;
    lock(&ctx.system.keys).remove(id);
    Ok(Value::Bool(true))
}

fn get_instance(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["id", "options"])?;
    let id = params::id(params, 0, "id")?;
    let reveal = reveals_secrets(ctx);
    let keys = lock(&ctx.system.keys);
    let record = keys
        .get(id)
        .ok_or_else(|| CallFailure::instance_not_found(format!("ApiKey {id} does not exist")))?;
    Ok(entry(ctx.system, record, ctx.api, reveal))
}

fn my_keys(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &[])?;
    let Some(credential) = ctx.credential() else {
        return Err(CallFailure::call(EFAULT, "Not a user session"));
    };
    Ok(Value::Array(entries(ctx, Some(&credential.username))))
}
