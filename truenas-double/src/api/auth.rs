//! `auth.*`: logins by API key, password (with the OTP continuation) and token, `auth.me`,
//! logout, and the insecure-transport revocation of API keys.

use std::time::Duration;

use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::error::{CallFailure, CallResult, EINVAL};
use super::params::{self, Checker};
use super::{Credential, CredentialKind, Ctx, PendingOtp};
use crate::keystore::KeyCheck;
use crate::system::{lock, now_ms, User};

/// The reason TrueNAS records when it revokes a key sent over plain transport.
pub const INSECURE_TRANSPORT_REASON: &str = "Attempt to use over an insecure transport";

pub(super) async fn call(ctx: &Ctx<'_>, method: &str, params: &[Value]) -> CallResult {
    match method {
        "auth.login_ex" | "auth.login_ex_continue" => login_ex(ctx, params).await,
        "auth.login_with_api_key" => login_with_api_key(ctx, params).await,
        "auth.login" => login_with_password(ctx, params).await,
        "auth.login_with_token" => login_with_token(ctx, params).await,
        "auth.logout" => logout(ctx, params),
        "auth.me" => params::check_count(params, &[]).map(|()| me(ctx)),
        "auth.mechanism_choices" => mechanism_choices(ctx, params),
        "auth.generate_token" => generate_token(ctx, params),
        _ => Err(CallFailure::call(
            super::error::ENOMETHOD,
            format!("Method {method:?} not found"),
        )),
    }
}

/// The credential a login presents.
enum Mechanism {
    ApiKey {
        username: String,
        key: Zeroizing<String>,
    },
    Password {
        username: String,
        password: Zeroizing<String>,
    },
    Token {
        token: Zeroizing<String>,
    },
    Otp {
        code: Zeroizing<String>,
    },
}

struct LoginRequest {
    mechanism: Mechanism,
    user_info: bool,
    reconnect_token: bool,
}

/// What a login attempt came to, before it is turned into a response.
enum Outcome {
    Success(Credential),
    OtpRequired(String),
    AuthErr,
    Expired,
    Denied,
}

async fn login_ex(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["login_data"])?;
    let data = params::required(params, 0, "login_data")?;
    let request = parse_login(data, ctx.system.release.has_reconnect_token())?;
    login(ctx, request).await
}

const MECHANISMS: [&str; 4] = [
    "API_KEY_PLAIN",
    "PASSWORD_PLAIN",
    "TOKEN_PLAIN",
    "OTP_TOKEN",
];

fn parse_login(data: &Value, has_reconnect_token: bool) -> Result<LoginRequest, CallFailure> {
    let object = data.as_object().ok_or_else(|| {
        CallFailure::invalid(
            "login_data",
            "Input should be a valid dictionary or object to extract fields from",
        )
    })?;
    let mechanism = match object.get("mechanism") {
        None => {
            return Err(CallFailure::invalid(
                "login_data.mechanism",
                "Field required",
            ))
        }
        Some(Value::String(m)) if MECHANISMS.contains(&m.as_str()) => m.as_str(),
        Some(other) => {
            let tag = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string);
            let expected = MECHANISMS.map(|m| format!("'{m}'")).join(", ");
            return Err(CallFailure::invalid(
                "login_data",
                format!("Input tag '{tag}' found using 'mechanism' does not match any of the expected tags: {expected}"),
            ));
        }
    };
    let prefix = format!("login_data.{mechanism}");
    let fields: &[&str] = match mechanism {
        "API_KEY_PLAIN" => &["username", "api_key"],
        "PASSWORD_PLAIN" => &["username", "password"],
        "TOKEN_PLAIN" => &["token"],
        _ => &["otp_token"],
    };
    let mut checker = Checker::default();
    let mut allowed = vec!["mechanism", "login_options"];
    allowed.extend_from_slice(fields);
    checker.no_extra(object, &allowed, &prefix);
    let values: Vec<Option<String>> = fields
        .iter()
        .map(|field| match object.get(*field) {
            None => {
                checker.fail(format!("{prefix}.{field}"), "Field required");
                None
            }
            Some(v) => checker
                .string(v, &format!("{prefix}.{field}"))
                .map(str::to_string),
        })
        .collect();
    let (user_info, reconnect_token) =
        login_options(&mut checker, object, &prefix, has_reconnect_token);
    checker.finish()?;
    let mut values = values
        .into_iter()
        .map(|v| Zeroizing::new(v.unwrap_or_default()));
    let mut next = || values.next().unwrap_or_default();
    let mechanism = match mechanism {
        "API_KEY_PLAIN" => Mechanism::ApiKey {
            username: next().to_string(),
            key: next(),
        },
        "PASSWORD_PLAIN" => Mechanism::Password {
            username: next().to_string(),
            password: next(),
        },
        "TOKEN_PLAIN" => Mechanism::Token { token: next() },
        _ => Mechanism::Otp { code: next() },
    };
    Ok(LoginRequest {
        mechanism,
        user_info,
        reconnect_token,
    })
}

fn login_options(
    checker: &mut Checker,
    object: &Map<String, Value>,
    prefix: &str,
    has_reconnect_token: bool,
) -> (bool, bool) {
    let Some(options) = object.get("login_options") else {
        return (true, false);
    };
    let loc = format!("{prefix}.login_options");
    let Some(options) = options.as_object() else {
        checker.fail(
            &loc,
            "Input should be a valid dictionary or instance of LoginOptions",
        );
        return (true, false);
    };
    let allowed: &[&str] = if has_reconnect_token {
        &["user_info", "reconnect_token"]
    } else {
        &["user_info"]
    };
    checker.no_extra(options, allowed, &loc);
    let user_info = options.get("user_info").map_or(Some(true), |v| {
        checker.boolean(v, &format!("{loc}.user_info"))
    });
    let reconnect = options.get("reconnect_token").map_or(Some(false), |v| {
        checker.boolean(v, &format!("{loc}.reconnect_token"))
    });
    (user_info.unwrap_or(true), reconnect.unwrap_or(false))
}

async fn login(ctx: &Ctx<'_>, request: LoginRequest) -> CallResult {
    if let Some(urls) = &ctx.system.redirect_urls {
        return Ok(json!({"response_type": "REDIRECT", "urls": urls}));
    }
    check_mechanism(ctx, &request.mechanism)?;
    let outcome = match &request.mechanism {
        Mechanism::Password { username, password } => password_outcome(ctx, username, password),
        Mechanism::ApiKey { username, key } => api_key_outcome(ctx, username, key),
        Mechanism::Token { token } => token_outcome(ctx, token),
        Mechanism::Otp { code } => otp_outcome(ctx, code),
    };
    respond(ctx, outcome, &request).await
}

/// Sending another mechanism in the middle of an OTP exchange abandons it; an OTP with no
/// exchange in progress is an error.
fn check_mechanism(ctx: &Ctx<'_>, mechanism: &Mechanism) -> Result<(), CallFailure> {
    let mut session = lock(ctx.session);
    let is_otp = matches!(mechanism, Mechanism::Otp { .. });
    if session.pending_otp.is_some() && !is_otp {
        session.pending_otp = None;
    }
    if session.pending_otp.is_none() && is_otp {
        return Err(CallFailure::call(
            EINVAL,
            "OTP_TOKEN: no authentication in progress",
        ));
    }
    Ok(())
}

fn password_outcome(ctx: &Ctx<'_>, username: &str, password: &str) -> Outcome {
    let Some(user) = ctx
        .system
        .user(username)
        .filter(|u| u.password_matches(password))
    else {
        return Outcome::AuthErr;
    };
    if user.has_two_factor() {
        let pending = PendingOtp {
            username: username.to_string(),
            failures: 0,
        };
        lock(ctx.session).pending_otp = Some(pending);
        return Outcome::OtpRequired(username.to_string());
    }
    admit(ctx, user, CredentialKind::Password)
}

/// Checks an `API_KEY_PLAIN` login in the middleware's order: owner, expiry, revocation,
/// secret, then transport. A correct key over an insecure transport is revoked and answered
/// EXPIRED.
fn api_key_outcome(ctx: &Ctx<'_>, username: &str, presented: &str) -> Outcome {
    let now = now_ms();
    let mut keys = lock(&ctx.system.keys);
    let record = match keys.check(presented) {
        KeyCheck::Unknown => return Outcome::AuthErr,
        KeyCheck::WrongSecret(r) | KeyCheck::Matches(r) if r.username != username => {
            return Outcome::AuthErr
        }
        KeyCheck::WrongSecret(r) if r.is_expired(now) => return Outcome::Expired,
        KeyCheck::WrongSecret(_) => return Outcome::AuthErr,
        KeyCheck::Matches(r) => r.clone(),
    };
    if record.is_expired(now) {
        return Outcome::Expired;
    }
    if record.revoked {
        return Outcome::AuthErr;
    }
    if !ctx.conn.is_secure(ctx.system) && ctx.system.release.revokes_insecure_keys() {
        keys.revoke(record.id, INSECURE_TRANSPORT_REASON, now);
        tracing::info!(system = %ctx.system.name, key_id = record.id, "API key revoked: sent over plain transport");
        return Outcome::Expired;
    }
    drop(keys);
    let Some(user) = ctx.system.user(username) else {
        return Outcome::AuthErr;
    };
    admit(
        ctx,
        user,
        CredentialKind::ApiKey {
            id: record.id,
            name: record.name,
        },
    )
}

fn token_outcome(ctx: &Ctx<'_>, token: &str) -> Outcome {
    match ctx
        .system
        .redeem_token(token)
        .and_then(|name| ctx.system.user(&name))
    {
        Some(user) => admit(ctx, user, CredentialKind::Token),
        None => Outcome::AuthErr,
    }
}

/// 25.x gives three tries for the code; 26 fails at the first wrong one.
fn otp_outcome(ctx: &Ctx<'_>, code: &str) -> Outcome {
    let mut session = lock(ctx.session);
    let Some(pending) = session.pending_otp.as_mut() else {
        return Outcome::AuthErr;
    };
    let username = pending.username.clone();
    let Some(user) = ctx.system.user(&username) else {
        return Outcome::AuthErr;
    };
    if user.otp_matches(code, ctx.system.otp_window) {
        session.pending_otp = None;
        drop(session);
        return admit(ctx, user, CredentialKind::TwoFactor);
    }
    pending.failures += 1;
    if pending.failures >= ctx.system.release.otp_attempts() {
        session.pending_otp = None;
        return Outcome::AuthErr;
    }
    Outcome::OtpRequired(username)
}

/// The last check of every login: the account must have API access (a privilege with roles).
fn admit(ctx: &Ctx<'_>, user: &User, kind: CredentialKind) -> Outcome {
    if !user.has_api_access() {
        return if ctx.system.release.denies_unprivileged() {
            Outcome::Denied
        } else {
            Outcome::AuthErr
        };
    }
    Outcome::Success(Credential {
        username: user.username.clone(),
        kind,
    })
}

async fn respond(ctx: &Ctx<'_>, outcome: Outcome, request: &LoginRequest) -> CallResult {
    let failed = |kind: &str| json!({"response_type": kind});
    let response = match outcome {
        Outcome::Success(credential) => {
            lock(ctx.session).credential = Some(credential.clone());
            return Ok(success(ctx, &credential, request));
        }
        Outcome::OtpRequired(username) => {
            return Ok(json!({"response_type": "OTP_REQUIRED", "username": username}))
        }
        Outcome::AuthErr => failed("AUTH_ERR"),
        Outcome::Expired => failed("EXPIRED"),
        Outcome::Denied => failed("DENIED"),
    };
    ctx.fail_delay().await;
    Ok(response)
}

fn success(ctx: &Ctx<'_>, credential: &Credential, request: &LoginRequest) -> Value {
    let user_info = if request.user_info {
        me(ctx)
    } else {
        Value::Null
    };
    let mut response =
        json!({"response_type": "SUCCESS", "user_info": user_info, "authenticator": "LEVEL_1"});
    if ctx.system.release.has_reconnect_token() {
        let token = request.reconnect_token.then(|| {
            ctx.system
                .issue_token(&credential.username, Duration::from_secs(600), true)
        });
        response["reconnect_token"] = json!(token);
    }
    response
}

async fn login_with_api_key(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["api_key"])?;
    let mut checker = Checker::default();
    let key = checker
        .string(params::required(params, 0, "api_key")?, "api_key")
        .map(str::to_string);
    checker.finish()?;
    let key = Zeroizing::new(key.unwrap_or_default());
    let owner = crate::keystore::KeyStore::id_of(&key)
        .and_then(|id| lock(&ctx.system.keys).get(id).map(|r| r.username.clone()));
    let Some(username) = owner else {
        ctx.fail_delay().await;
        return Ok(Value::Bool(false));
    };
    let request = LoginRequest {
        mechanism: Mechanism::ApiKey { username, key },
        user_info: false,
        reconnect_token: false,
    };
    let response = login(ctx, request).await?;
    Ok(Value::Bool(response["response_type"] == "SUCCESS"))
}

async fn login_with_password(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["username", "password", "otp_token"])?;
    let mut checker = Checker::default();
    let username = checker
        .string(params::required(params, 0, "username")?, "username")
        .map(str::to_string);
    let password = checker
        .string(params::required(params, 1, "password")?, "password")
        .map(str::to_string);
    let otp = match params.get(2).filter(|v| !v.is_null()) {
        Some(v) => checker.string(v, "otp_token").map(str::to_string),
        None => None,
    };
    checker.finish()?;
    let password = Zeroizing::new(password.unwrap_or_default());
    let mechanism = Mechanism::Password {
        username: username.unwrap_or_default(),
        password,
    };
    let first = login(
        ctx,
        LoginRequest {
            mechanism,
            user_info: false,
            reconnect_token: false,
        },
    )
    .await?;
    let answer = match (first["response_type"].as_str(), otp) {
        (Some("SUCCESS"), _) => true,
        (Some("OTP_REQUIRED"), Some(code)) => {
            let mechanism = Mechanism::Otp {
                code: Zeroizing::new(code),
            };
            let second = login(
                ctx,
                LoginRequest {
                    mechanism,
                    user_info: false,
                    reconnect_token: false,
                },
            )
            .await?;
            second["response_type"] == "SUCCESS"
        }
        _ => false,
    };
    Ok(Value::Bool(answer))
}

async fn login_with_token(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["token"])?;
    let mut checker = Checker::default();
    let token = checker
        .string(params::required(params, 0, "token")?, "token")
        .map(str::to_string);
    checker.finish()?;
    let mechanism = Mechanism::Token {
        token: Zeroizing::new(token.unwrap_or_default()),
    };
    let response = login(
        ctx,
        LoginRequest {
            mechanism,
            user_info: false,
            reconnect_token: false,
        },
    )
    .await?;
    Ok(Value::Bool(response["response_type"] == "SUCCESS"))
}

fn logout(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &[])?;
    let mut session = lock(ctx.session);
    session.credential = None;
    session.pending_otp = None;
    Ok(Value::Bool(true))
}

/// Unauthenticated, 25.04.2 to 25.10.x dereference a missing credential and fail; the double
/// reproduces the AttributeError a client sees there.
fn mechanism_choices(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &[])?;
    if ctx.credential().is_none()
        && ctx
            .system
            .release
            .mechanism_choices_crashes_unauthenticated()
    {
        return Err(CallFailure::Exception {
            class: "AttributeError",
            reason: "'NoneType' object has no attribute 'may_create_auth_token'".into(),
        });
    }
    Ok(json!(["API_KEY_PLAIN", "TOKEN_PLAIN", "PASSWORD_PLAIN"]))
}

fn generate_token(ctx: &Ctx<'_>, params: &[Value]) -> CallResult {
    params::check_count(params, &["ttl", "attrs", "match_origin", "single_use"])?;
    let mut checker = Checker::default();
    let ttl = params
        .first()
        .filter(|v| !v.is_null())
        .map_or(Some(600), |v| checker.integer(v, "ttl"));
    let single_use = params
        .get(3)
        .map_or(Some(false), |v| checker.boolean(v, "single_use"));
    checker.finish()?;
    let Some(credential) = ctx.credential() else {
        return Err(CallFailure::not_authenticated());
    };
    let ttl = Duration::from_secs(ttl.unwrap_or(600).clamp(1, 86_400) as u64);
    Ok(Value::from(ctx.system.issue_token(
        &credential.username,
        ttl,
        single_use.unwrap_or(false),
    )))
}

/// `auth.me`: the account, its privilege (roles as an extended-JSON set) and the account
/// attributes of the session.
pub(super) fn me(ctx: &Ctx<'_>) -> Value {
    let Some((credential, user)) = ctx.caller() else {
        return Value::Null;
    };
    let mut attributes = vec!["LOCAL"];
    if user.is_full_admin() && user.uid == 950 {
        attributes.push("SYS_ADMIN");
    }
    if user.has_two_factor() {
        attributes.push("2FA");
    }
    if matches!(credential.kind, CredentialKind::ApiKey { .. }) {
        attributes.push("API_KEY");
    }
    let mut groups = vec![user.uid];
    if user.is_full_admin() {
        groups.push(544);
    }
    let allowlist = if user.is_full_admin() {
        json!([{"method": "*", "resource": "*"}])
    } else {
        json!([])
    };
    json!({
        "pw_name": user.username,
        "pw_gecos": user.full_name,
        "pw_dir": format!("/home/{}", user.username),
        "pw_shell": "/usr/bin/zsh",
        "pw_uid": user.uid,
        "pw_gid": user.uid,
        "grouplist": groups,
        "sid": null,
        "source": "LOCAL",
        "local": true,
        "attributes": {},
        "two_factor_config": {
            "provisioning_uri": null,
            "secret_configured": user.has_two_factor(),
            "interval": 30,
            "otp_digits": 6,
        },
        "privilege": {
            "roles": {"$set": user.roles},
            "allowlist": allowlist,
            "web_shell": user.is_full_admin(),
            "webui_access": true,
        },
        "account_attributes": attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_data_errors_name_the_field() {
        let missing = parse_login(&json!({"username": "a"}), false)
            .err()
            .expect("invalid");
        assert_eq!(
            missing.extra(),
            json!([["login_data.mechanism", "Field required", 22]])
        );
        let extra = parse_login(
            &json!({"mechanism": "PASSWORD_PLAIN", "username": "a", "password": "b", "x": 1}),
            false,
        )
        .err()
        .expect("invalid");
        assert_eq!(
            extra.extra(),
            json!([[
                "login_data.PASSWORD_PLAIN.x",
                "Extra inputs are not permitted",
                22
            ]])
        );
        let no_key = parse_login(
            &json!({"mechanism": "API_KEY_PLAIN", "username": "a"}),
            false,
        )
        .err()
        .expect("invalid");
        assert_eq!(
            no_key.extra(),
            json!([["login_data.API_KEY_PLAIN.api_key", "Field required", 22]])
        );
        assert!(parse_login(&json!({"mechanism": "SCRAM"}), true).is_err());
    }

    #[test]
    fn reconnect_token_option_only_on_26() {
        let data = json!({"mechanism": "TOKEN_PLAIN", "token": "t", "login_options": {"reconnect_token": true}});
        assert!(parse_login(&data, false).is_err());
        assert!(parse_login(&data, true).is_ok_and(|r| r.reconnect_token && r.user_info));
    }
}
