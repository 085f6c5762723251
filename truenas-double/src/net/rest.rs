//! The deprecated REST API (`/api/v2.0`, releases up to 25.10), read-only: Bearer, Basic and
//! Token credentials, and the status codes and bodies of the middleware. REST never revokes
//! a key sent over plain HTTP.

use std::io;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::http::{self, Request, Response};
use super::{respond, BoxedIo};
use crate::api::error::{CallFailure, EACCES, ENOTAUTHENTICATED};
use crate::api::{self, Conn, Credential, CredentialKind, Ctx, Front, Session};
use crate::keystore::KeyCheck;
use crate::system::{lock, now_ms, LogRecord, System};

pub async fn handle(
    system: &Arc<System>,
    mut io: BoxedIo,
    request: &Request,
    conn: Conn,
) -> io::Result<()> {
    let (response, credential) = answer(system, request, conn).await;
    system.log(LogRecord {
        transport: conn.transport(),
        peer: conn.peer.to_string(),
        kind: "rest",
        method: &format!("{} {}", request.method, request.path),
        credential: credential.as_ref().map(|c| c.kind.as_str().to_string()),
        key_id: credential.as_ref().and_then(|c| match c.kind {
            CredentialKind::ApiKey { id, .. } => Some(id),
            _ => None,
        }),
        outcome: response.status.to_string(),
    });
    respond(system, &mut io, response).await
}

async fn answer(system: &System, request: &Request, conn: Conn) -> (Response, Option<Credential>) {
    let path = request
        .path
        .trim_end_matches('/')
        .trim_start_matches("/api/v2.0");
    let Some((method, params)) = endpoint(path, request.query.as_deref()) else {
        return (Response::status_text(404), None);
    };
    if request.method != "GET" {
        return (Response::status_text(405), None);
    }
    let credential = match authenticate(system, request) {
        Ok(credential) => credential,
        Err(response) => return (response, None),
    };
    let session = Mutex::new(Session {
        credential: Some(credential.clone()),
        pending_otp: None,
    });
    let ctx = Ctx {
        system,
        session: &session,
        conn,
        api: system.release.current_api(),
        front: Front::JsonRpc,
    };
    let response = match api::call(&ctx, method, &params).await {
        Ok(value) => Response::json(200, &value),
        Err(failure) => failure_response(&failure),
    };
    (response, Some(credential))
}

/// The method and parameters behind a REST path.
fn endpoint(path: &str, query: Option<&str>) -> Option<(&'static str, Vec<Value>)> {
    if let Some(id) = path.strip_prefix("/api_key/id/") {
        let id: Value = id
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(id));
        return Some((
            "api_key.query",
            vec![json!([["id", "=", id]]), json!({"get": true})],
        ));
    }
    let (method, filterable) = match path {
        "/system/info" => ("system.info", false),
        "/pool" => ("pool.query", true),
        "/alert/list" => ("alert.list", false),
        "/auth/me" => ("auth.me", false),
        "/api_key" => ("api_key.query", true),
        "/api_key/my_keys" => ("api_key.my_keys", false),
        _ => return None,
    };
    let params = if filterable {
        query_params(query)
    } else {
        Vec::new()
    };
    Some((method, params))
}

/// `field=value`, `field__gt=value` and friends, plus `limit`, `offset`, `count`, `sort`.
fn query_params(query: Option<&str>) -> Vec<Value> {
    let mut filters = Vec::new();
    let mut options = Map::new();
    for (key, text) in http::query_pairs(query) {
        let value =
            serde_json::from_str::<Value>(&text).unwrap_or_else(|_| Value::from(text.clone()));
        match key.as_str() {
            "limit" | "offset" => {
                options.insert(key, value);
            }
            "count" => {
                options.insert(key, Value::Bool(true));
            }
            "sort" => {
                options.insert(
                    "order_by".into(),
                    json!(text.split(',').collect::<Vec<_>>()),
                );
            }
            _ => {
                let (field, op) = match key.rsplit_once("__") {
                    Some((f, "gt")) => (f, ">"),
                    Some((f, "gte")) => (f, ">="),
                    Some((f, "lt")) => (f, "<"),
                    Some((f, "lte")) => (f, "<="),
                    Some((f, "neq")) => (f, "!="),
                    _ => (key.as_str(), "="),
                };
                filters.push(json!([field, op, value]));
            }
        }
    }
    vec![Value::Array(filters), Value::Object(options)]
}

fn authenticate(system: &System, request: &Request) -> Result<Credential, Response> {
    let header = request.header("authorization").unwrap_or_default();
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => {
            bearer(system, value.trim()).ok_or_else(|| Response::text(401, "Invalid API key"))
        }
        "basic" => basic(system, value.trim()),
        "token" => match system
            .redeem_token(value.trim())
            .and_then(|name| system.user(&name))
        {
            Some(user) => Ok(Credential {
                username: user.username.clone(),
                kind: CredentialKind::Token,
            }),
            None => Err(Response::text(403, "Invalid token")),
        },
        _ => Err(Response::status_text(401)),
    }
}

/// A key that is right, current and not revoked, owned by an account with API access.
fn bearer(system: &System, presented: &str) -> Option<Credential> {
    let keys = lock(&system.keys);
    let KeyCheck::Matches(record) = keys.check(presented) else {
        return None;
    };
    if record.revoked || record.is_expired(now_ms()) {
        return None;
    }
    let user = system
        .user(&record.username)
        .filter(|u| u.has_api_access())?;
    let kind = CredentialKind::ApiKey {
        id: record.id,
        name: record.name.clone(),
    };
    Some(Credential {
        username: user.username.clone(),
        kind,
    })
}

fn basic(system: &System, encoded: &str) -> Result<Credential, Response> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| Response::status_text(400))?;
    let (username, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    let Some(user) = system
        .user(username)
        .filter(|u| u.password_matches(password))
    else {
        return Err(Response::text(401, "Bad username or password"));
    };
    if user.has_two_factor() {
        return Err(Response::text(
            401,
            "HTTP Basic Auth is unavailable when OTP is enabled",
        ));
    }
    if !user.has_api_access() {
        return Err(Response::text(401, "Bad username or password"));
    }
    Ok(Credential {
        username: user.username.clone(),
        kind: CredentialKind::Password,
    })
}

fn failure_response(failure: &CallFailure) -> Response {
    match failure {
        CallFailure::Call {
            errno: EACCES,
            message,
        } if message == "Not authorized" => Response::empty(403),
        CallFailure::Call {
            errno: ENOTAUTHENTICATED,
            ..
        } => Response::status_text(401),
        CallFailure::Call { errno, message } => {
            Response::json(422, &json!({"message": message, "errno": errno}))
        }
        CallFailure::Validation(errors) => {
            let mut body = Map::new();
            for e in errors {
                let key = e.attribute.clone().unwrap_or_else(|| "null".into());
                let list = body.entry(key).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(json!({"message": e.message, "errno": e.errno}));
                }
            }
            Response::json(422, &Value::Object(body))
        }
        CallFailure::Exception {
            class: "MatchNotFound",
            ..
        } => Response::json(404, &json!({"message": ""})),
        CallFailure::Exception { reason, .. } => Response::json(
            500,
            &json!({"message": reason, "traceback": failure.trace()["formatted"]}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_string_becomes_filters_and_options() {
        let params = query_params(Some("name=tank&size__gt=5&limit=2&sort=-size"));
        assert_eq!(params[0], json!([["name", "=", "tank"], ["size", ">", 5]]));
        assert_eq!(params[1], json!({"limit": 2, "order_by": ["-size"]}));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("/system/info", None).map(|e| e.0),
            Some("system.info")
        );
        assert_eq!(
            endpoint("/api_key/id/3", None).map(|e| e.1),
            Some(vec![json!([["id", "=", 3]]), json!({"get": true})])
        );
        assert!(endpoint("/nope", None).is_none());
    }
}
