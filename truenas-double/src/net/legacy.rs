//! The legacy DDP-style socket at `/websocket`, the only WebSocket API of 24.10. Implemented
//! far enough to log in and read the dashboard, and to show a client that it talks to an old
//! system.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::jsonrpc::{close, parse_message, Rejection};
use super::{delay, faults, WsStream};
use crate::api::{self, Conn, Ctx, Front, Session};
use crate::system::{lock, random_uuid, LogRecord, System};

pub async fn serve(system: Arc<System>, mut ws: WsStream, conn: Conn) {
    let session = Mutex::new(Session::default());
    let mut connected = false;
    while let Some(incoming) = ws.next().await {
        let text = match incoming {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(Message::Binary(_)) => {
                close(
                    &mut ws,
                    1003,
                    "Invalid websocket message type: <WSMsgType.BINARY: 2>",
                )
                .await;
                break;
            }
            Ok(_) => continue,
        };
        let authenticated = lock(&session).credential.is_some();
        let message = match parse_message(authenticated, text.as_str()) {
            Ok(message) => Value::Object(message),
            Err(Rejection::Close(code, reason)) => {
                close(&mut ws, code, reason).await;
                break;
            }
            Err(Rejection::Parse(_)) => continue,
        };
        let reply = answer(&system, &session, conn, &mut connected, &message).await;
        if let Some(reply) = reply {
            delay(&system).await;
            if faults::deliver(&mut ws, &system, reply).await.is_err() {
                break;
            }
        }
    }
}

async fn answer(
    system: &System,
    session: &Mutex<Session>,
    conn: Conn,
    connected: &mut bool,
    message: &Value,
) -> Option<Value> {
    let id = message.get("id").cloned();
    match message.get("msg").and_then(Value::as_str) {
        Some("connect") => {
            let version_ok = message.get("version").is_some_and(|v| v == "1");
            let support_ok = message
                .get("support")
                .and_then(Value::as_array)
                .is_some_and(|s| s.contains(&json!("1")));
            *connected = version_ok && support_ok;
            Some(if *connected {
                json!({"msg": "connected", "session": random_uuid()})
            } else {
                json!({"msg": "failed", "version": "1"})
            })
        }
        _ if !*connected => Some(json!({"msg": "failed", "version": "1"})),
        Some("ping") if system.release.legacy_ping() => Some(match id {
            Some(id) => json!({"msg": "pong", "id": id}),
            None => json!({"msg": "pong"}),
        }),
        Some("method") => {
            Some(method_call(system, session, conn, id.unwrap_or(Value::Null), message).await)
        }
        Some("sub") => id.map(|id| json!({"msg": "nosub", "id": id})),
        _ => None,
    }
}

async fn method_call(
    system: &System,
    session: &Mutex<Session>,
    conn: Conn,
    id: Value,
    message: &Value,
) -> Value {
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = match message.get("params") {
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    };
    let ctx = Ctx {
        system,
        session,
        conn,
        api: system.release.current_api(),
        front: Front::Legacy,
    };
    let (credential, key_id) = api::describe(method, &params, ctx.credential().as_ref());
    let result = api::call(&ctx, method, &params).await;
    system.log(LogRecord {
        transport: conn.transport(),
        peer: conn.peer.to_string(),
        kind: "legacy_call",
        method,
        credential,
        key_id,
        outcome: api::outcome(&result),
    });
    match result {
        Ok(value) => json!({"id": id, "msg": "result", "result": value}),
        Err(failure) => json!({"id": id, "msg": "result", "error": failure.legacy_error()}),
    }
}
