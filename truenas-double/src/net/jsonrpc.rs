//! JSON-RPC 2.0 over WebSocket (`/api/current`, `/api/vXX.YY.Z`): framing, size limits,
//! concurrency limits, and replies through the fault modes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{delay, faults, WsStream};
use crate::api::{self, Conn, Ctx, Front, Session};
use crate::profile::ApiFlavor;
use crate::system::{lock, LogRecord, System};

/// Message limits, counted in characters as the middleware counts them.
pub const UNAUTHENTICATED_LIMIT: usize = 8192;
pub const AUTHENTICATED_LIMIT: usize = 65536;
pub const EXTENDED_LIMIT: usize = 2_097_152;
/// Calls running at once on one connection; more wait, and past the hard limit they fail.
const SOFT_CONCURRENCY: usize = 10;
const HARD_CONCURRENCY: usize = 20;

/// The per-connection state shared with the call tasks.
struct Connection {
    system: Arc<System>,
    session: Mutex<Session>,
    conn: Conn,
    api: ApiFlavor,
    replies: mpsc::UnboundedSender<Value>,
    in_flight: AtomicUsize,
    running: Semaphore,
}

/// What the reading side decided about a message.
pub enum Flow {
    Continue,
    Close(u16, &'static str),
}

pub async fn serve(system: Arc<System>, mut ws: WsStream, conn: Conn, api: ApiFlavor) {
    let (replies, mut outbox) = mpsc::unbounded_channel();
    let connection = Arc::new(Connection {
        system: system.clone(),
        session: Mutex::new(Session::default()),
        conn,
        api,
        replies,
        in_flight: AtomicUsize::new(0),
        running: Semaphore::new(SOFT_CONCURRENCY),
    });
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let flow = match incoming {
                    Some(Ok(Message::Text(text))) => on_text(&connection, text.as_str()),
                    Some(Ok(Message::Binary(_))) => {
                        Flow::Close(1003, "Invalid websocket message type: <WSMsgType.BINARY: 2>")
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => Flow::Continue,
                    Some(Err(WsError::Capacity(_))) => Flow::Close(1009, "Max message length is 64 kB"),
                    Some(Err(_)) => break,
                };
                if let Flow::Close(code, reason) = flow {
                    close(&mut ws, code, reason).await;
                    break;
                }
            }
            Some(reply) = outbox.recv() => {
                if faults::deliver(&mut ws, &system, reply).await.is_err() {
                    break;
                }
            }
        }
    }
}

pub async fn close(ws: &mut WsStream, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.close(Some(frame)).await;
}

fn on_text(connection: &Arc<Connection>, text: &str) -> Flow {
    let authenticated = lock(&connection.session).credential.is_some();
    let message = match parse_message(authenticated, text) {
        Ok(message) => message,
        Err(Rejection::Close(code, reason)) => return Flow::Close(code, reason),
        Err(Rejection::Parse(message)) => {
            connection.reply(error_reply(&Value::Null, -32700, &message, None));
            return Flow::Continue;
        }
    };
    let id = message.get("id").cloned();
    if let Err(problem) = validate(&message) {
        if let Some(id) = id {
            connection.reply(error_reply(&id, -32600, problem, None));
        }
        return Flow::Continue;
    }
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !api::exists(Front::JsonRpc, &connection.system.release, &method) {
        if let Some(id) = id {
            connection.reply(error_reply(&id, -32601, "Method does not exist", None));
        }
        return Flow::Continue;
    }
    let params = match message.get("params") {
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    };
    tokio::spawn(run_call(connection.clone(), id, method, params));
    Flow::Continue
}

pub enum Rejection {
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// Answer -32700 with this message.
    Parse(String),
}

/// The middleware's `parse_message`: size limits, JSON, object check.
pub fn parse_message(authenticated: bool, text: &str) -> Result<Map<String, Value>, Rejection> {
    let length = text.chars().count();
    if !authenticated && length > UNAUTHENTICATED_LIMIT {
        return Err(Rejection::Close(
            1007,
            "Anonymous connection max message length is 8 kB",
        ));
    }
    if length > EXTENDED_LIMIT {
        return Err(Rejection::Close(1009, "Max message length is 64 kB"));
    }
    let message = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(Value::Array(_)) => {
            return Err(Rejection::Parse(
                "Batch messages are not supported yet".into(),
            ))
        }
        Ok(_) => return Err(Rejection::Parse("Invalid Message Format".into())),
        Err(e) => return Err(Rejection::Parse(e.to_string())),
    };
    if length > AUTHENTICATED_LIMIT {
        return Err(Rejection::Close(1009, "Max message length is 64 kB"));
    }
    Ok(message)
}

/// The JSON-RPC request rules, with the middleware's messages.
fn validate(message: &Map<String, Value>) -> Result<(), &'static str> {
    match message.get("jsonrpc") {
        None => return Err("Missing 'jsonrpc' member"),
        Some(v) if v != "2.0" => {
            return Err("'jsonrpc' member must be of type string and must be exactly '2.0'")
        }
        Some(_) => {}
    }
    if let Some(id) = message.get("id") {
        if !(id.is_null() || id.is_string() || id.is_i64() || id.is_u64()) {
            return Err("'id' member must be of type null, string or number");
        }
    }
    match message.get("method") {
        None => return Err("Missing 'method' member"),
        Some(Value::String(m)) if !m.is_empty() => {}
        Some(_) => return Err("'method' member must be of type string"),
    }
    match message.get("params") {
        Some(p) if !p.is_array() => Err("'params' member must be of type array"),
        _ => Ok(()),
    }
}

pub fn error_reply(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({"jsonrpc": "2.0", "error": error, "id": id})
}

impl Connection {
    fn reply(&self, value: Value) {
        let _ = self.replies.send(value);
    }
}

async fn run_call(
    connection: Arc<Connection>,
    id: Option<Value>,
    method: String,
    params: Vec<Value>,
) {
    if connection.in_flight.fetch_add(1, Ordering::SeqCst) >= HARD_CONCURRENCY {
        connection.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(id) = id {
            let message =
                format!("Maximum number of concurrent calls ({HARD_CONCURRENCY}) has exceeded");
            connection.reply(error_reply(&id, -32000, &message, None));
        }
        return;
    }
    let permit = connection.running.acquire().await;
    let system = &connection.system;
    let ctx = Ctx {
        system,
        session: &connection.session,
        conn: connection.conn,
        api: connection.api,
        front: Front::JsonRpc,
    };
    let (credential, key_id) = api::describe(&method, &params, ctx.credential().as_ref());
    let result = api::call(&ctx, &method, &params).await;
    drop(permit);
    connection.in_flight.fetch_sub(1, Ordering::SeqCst);
    system.log(LogRecord {
        transport: connection.conn.transport(),
        peer: connection.conn.peer.to_string(),
        kind: "call",
        method: &method,
        credential,
        key_id,
        outcome: api::outcome(&result),
    });
    let Some(id) = id else { return };
    let reply = match result {
        Ok(value) => json!({"jsonrpc": "2.0", "result": value, "id": id}),
        Err(failure) => {
            let (code, message) = failure.rpc_code();
            error_reply(&id, code, message, Some(failure.rpc_data()))
        }
    };
    delay(system).await;
    connection.reply(reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_depend_on_authentication() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(9000));
        assert!(matches!(
            parse_message(false, &big),
            Err(Rejection::Close(1007, _))
        ));
        assert!(parse_message(true, &big).is_ok());
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000));
        assert!(matches!(
            parse_message(true, &huge),
            Err(Rejection::Close(1009, _))
        ));
    }

    #[test]
    fn batches_and_non_objects_are_parse_errors() {
        assert!(
            matches!(parse_message(false, "[]"), Err(Rejection::Parse(m)) if m == "Batch messages are not supported yet")
        );
        assert!(
            matches!(parse_message(false, "3"), Err(Rejection::Parse(m)) if m == "Invalid Message Format")
        );
        assert!(matches!(
            parse_message(false, "{"),
            Err(Rejection::Parse(_))
        ));
    }

    #[test]
    fn request_validation_messages() {
        let check = |text: &str| validate(&serde_json::from_str(text).expect("json"));
        assert_eq!(check(r#"{"method":"a"}"#), Err("Missing 'jsonrpc' member"));
        assert!(check(r#"{"jsonrpc":"1.0","method":"a"}"#).is_err());
        assert_eq!(
            check(r#"{"jsonrpc":"2.0"}"#),
            Err("Missing 'method' member")
        );
        assert_eq!(
            check(r#"{"jsonrpc":"2.0","method":"a","params":{}}"#),
            Err("'params' member must be of type array")
        );
        assert_eq!(
            check(r#"{"jsonrpc":"2.0","method":"a","id":[1]}"#),
            Err("'id' member must be of type null, string or number")
        );
        assert_eq!(check(r#"{"jsonrpc":"2.0","method":"a","id":null}"#), Ok(()));
    }

    #[test]
    fn error_reply_shape() {
        let reply = error_reply(&json!(4), -32601, "Method does not exist", None);
        assert_eq!(
            reply,
            json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method does not exist"}, "id": 4})
        );
    }
}
