//! The control API on its own loopback port: plain HTTP and JSON, for tests to inspect and
//! steer the simulated systems. It never shows a stored secret; the only secrets it returns
//! are a key it has just created and a current OTP code, both on request.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Mode;
use crate::net::http::{self, Request, Response};
use crate::system::{lock, now_ms, ModeState, System};

/// All simulated systems, by name.
pub struct Registry {
    pub systems: Vec<Arc<System>>,
    by_name: HashMap<String, usize>,
}

impl Registry {
    pub fn new(systems: Vec<Arc<System>>) -> Self {
        let by_name = systems
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Registry { systems, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<System>> {
        self.by_name.get(name).map(|&i| &self.systems[i])
    }
}

/// The URLs and certificate of a system, as the ready line and `GET /systems` show them.
pub fn endpoints(system: &System) -> Value {
    let (tls_port, plain_port) = system.ports();
    let identity = system.identity();
    json!({
        "name": system.name,
        "url": system.serves_tls.then(|| format!("https://127.0.0.1:{tls_port}")),
        "plain_url": system.serves_plain.then(|| format!("http://127.0.0.1:{plain_port}")),
        "fingerprint": identity.fingerprint,
        "cert_pem": identity.cert_pem,
    })
}

fn summary(system: &System) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let mut value = endpoints(system);
    let mode = system.mode();
    value["hostname"] = json!(system.hostname);
    value["version"] = json!(system.release.text);
    value["mode"] = json!(mode.mode);
    value["latency_ms"] = json!(mode.latency_ms);
    value["connections"] = json!(system.counters.connections.load(Relaxed));
    value["tls_handshakes"] = json!(system.counters.tls_handshakes.load(Relaxed));
    value["requests"] = json!(system.counters.requests.load(Relaxed));
    value
}

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(handle(stream, registry.clone()));
    }
}

async fn handle(mut stream: TcpStream, registry: Arc<Registry>) {
    let Ok((request, _)) = http::read_request(&mut stream).await else {
        return;
    };
    let response = route(&registry, &request).await;
    let _ = http::write_response(&mut stream, &response).await;
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"error": message}))
}

async fn route(registry: &Registry, request: &Request) -> Response {
    let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let method = request.method.as_str();
    if parts == ["systems"] && method == "GET" {
        return Response::json(
            200,
            &registry
                .systems
                .iter()
                .map(|s| summary(s))
                .collect::<Value>(),
        );
    }
    let (Some(&"systems"), Some(name)) = (parts.first(), parts.get(1)) else {
        return error(404, "no such endpoint");
    };
    let Some(system) = registry.get(name) else {
        return error(404, &format!("no system named {name:?}"));
    };
    match (method, &parts[2..]) {
        ("GET", []) => Response::json(200, &summary(system)),
        ("POST", ["mode"]) => set_mode(system, &request.body).await,
        ("GET", ["keys"]) => Response::json(200, &keys(system)),
        ("POST", ["keys"]) => create_key(system, &request.body),
        ("POST", ["keys", id, action]) => key_action(system, id, action, &request.body),
        ("POST", ["rotate-cert"]) => rotate(system),
        ("GET", ["otp", username]) => otp(system, username),
        ("GET", ["log"]) => Response::json(200, &json!(system.log_entries())),
        ("DELETE", ["log"]) => Response::json(200, &json!({"cleared": system.clear_log()})),
        _ => error(404, "no such endpoint"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: Option<Mode>,
    latency_ms: Option<u64>,
}

async fn set_mode(system: &Arc<System>, body: &[u8]) -> Response {
    let request: ModeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                400,
                &format!("expected {{\"mode\": .., \"latency_ms\": ..}}: {e}"),
            )
        }
    };
    let current = system.mode();
    let state = ModeState {
        mode: request.mode.unwrap_or(current.mode),
        latency_ms: request.latency_ms.unwrap_or(current.latency_ms),
    };
    match crate::net::set_mode(system, state).await {
        Ok(()) => Response::json(200, &summary(system)),
        Err(e) => error(409, &format!("cannot bind the port again: {e}")),
    }
}

fn keys(system: &System) -> Value {
    let keys = lock(&system.keys);
    keys.all()
        .map(|k| {
            json!({
                "id": k.id,
                "name": k.name,
                "username": k.username,
                "revoked": k.revoked,
                "revoked_reason": k.revoked_reason,
                "expires_at": k.expires_at_ms,
                "created_at": k.created_at_ms,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    username: String,
    name: String,
    /// Milliseconds since the epoch.
    expires_at: Option<i64>,
}

/// Creates a key out of band, as an administrator would in the web UI, and answers it once.
fn create_key(system: &System, body: &[u8]) -> Response {
    let request: CreateKeyRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                400,
                &format!("expected {{\"username\": .., \"name\": ..}}: {e}"),
            )
        }
    };
    if system.user(&request.username).is_none() {
        return error(404, &format!("no user named {:?}", request.username));
    }
    let mut keys = lock(&system.keys);
    if keys.name_taken(&request.name, None) {
        return error(409, "name must be unique");
    }
    let issued = keys.insert(
        &request.name,
        &request.username,
        request.expires_at,
        now_ms(),
    );
    drop(keys);
    let conn_api = system.release.current_api();
    Response::json(
        200,
        &crate::api::issued_entry(system, &issued, conn_api, false),
    )
}

fn key_action(system: &System, id: &str, action: &str, body: &[u8]) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(400, "key ids are numbers");
    };
    let mut keys = lock(&system.keys);
    let done = match action {
        "revoke" => {
            let reason = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "Revoked by administrator".to_string());
            keys.revoke(id, &reason, now_ms())
        }
        "expire" => keys.expire(id, now_ms()),
        _ => return error(404, "no such endpoint"),
    };
    if !done {
        return error(404, &format!("no key with id {id}"));
    }
    let record = keys.get(id).map(|k| {
        json!({"id": k.id, "revoked": k.revoked, "revoked_reason": k.revoked_reason, "expires_at": k.expires_at_ms})
    });
    Response::json(200, &record.unwrap_or(Value::Null))
}

fn rotate(system: &System) -> Response {
    match system.rotate_certificate() {
        Ok(identity) => Response::json(
            200,
            &json!({"fingerprint": identity.fingerprint, "cert_pem": identity.cert_pem}),
        ),
        Err(e) => error(500, &e.to_string()),
    }
}

fn otp(system: &System, username: &str) -> Response {
    match system.user(username) {
        None => error(404, &format!("no user named {username:?}")),
        Some(user) => match user.current_otp() {
            Some(code) => Response::json(200, &json!({"username": username, "code": code})),
            None => error(404, &format!("{username} has no two-factor authentication")),
        },
    }
}
