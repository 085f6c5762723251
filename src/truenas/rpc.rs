//! JSON-RPC 2.0 framing over the WebSocket, and TrueNAS's extended JSON for dates.

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

use super::transport::{ws_error, WsStream};
use super::{ClientError, Limits, Phase};

/// One WebSocket on which calls are made one at a time.
pub(super) struct RpcChannel {
    ws: WsStream,
    limits: Limits,
    next_id: u64,
}

#[derive(Serialize)]
struct Request<'a, P: Serialize + ?Sized> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: &'a P,
}

impl RpcChannel {
    pub(super) fn new(ws: WsStream, limits: Limits) -> Self {
        Self {
            ws,
            limits,
            next_id: 1,
        }
    }

    /// Calls `method` with `params` (a JSON array) and waits at most `call_timeout` for its
    /// reply, skipping notifications and replies to other ids.
    pub(super) async fn call<P: Serialize + ?Sized>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + self.limits.call_timeout;
        tracing::debug!(method, id, "call");

        self.send(&request_text(id, method, params)?, deadline)
            .await?;
        self.await_reply(id, method, deadline).await
    }

    // Limitation: the frame buffers of tungstenite and rustls, and the text of a received
    // message, are not wiped. A request holding a password or API key, and the reply to
    // api_key.create, stay in freed memory until it is reused.
    async fn send(&mut self, text: &str, deadline: Instant) -> Result<(), ClientError> {
        let sent = timeout_at(deadline, self.ws.send(Message::text(text))).await;
        match sent {
            Err(_) => Err(ClientError::TimedOut {
                phase: Phase::Reply,
            }),
            Ok(Err(e)) => Err(ws_error(e, &self.limits)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn await_reply(
        &mut self,
        id: u64,
        method: &str,
        deadline: Instant,
    ) -> Result<Value, ClientError> {
        loop {
            let next =
                timeout_at(deadline, self.ws.next())
                    .await
                    .map_err(|_| ClientError::TimedOut {
                        phase: Phase::Reply,
                    })?;
            let Some(message) = self.read_message(next)? else {
                continue;
            };
            if let Some(reply) = Reply::for_id(message, id)? {
                return reply.into_result(method);
            }
        }
    }

    /// The JSON of a text message; `None` for control frames.
    fn read_message(
        &self,
        next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<Value>, ClientError> {
        match next {
            None => Err(ws_error(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed,
                &self.limits,
            )),
            Some(Err(e)) => Err(ws_error(e, &self.limits)),
            Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str())
                .map(Some)
                .map_err(|_| ClientError::protocol("a message was not JSON")),
            Some(Ok(Message::Binary(_))) => Err(ClientError::protocol("a message was binary")),
            Some(Ok(Message::Close(frame))) => Err(closed(frame)),
            Some(Ok(_)) => Ok(None),
        }
    }

    /// Says goodbye, waiting at most `call_timeout` for the NAS to answer.
    pub(super) async fn close(mut self) {
        let deadline = Instant::now() + self.limits.call_timeout;
        let goodbye = async {
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        };
        let _ = timeout_at(deadline, goodbye).await;
    }
}

fn closed(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> ClientError {
    let detail = match frame {
        Some(frame) if !frame.reason.is_empty() => {
            format!(
                "the NAS closed the connection ({}: {})",
                u16::from(frame.code),
                frame.reason
            )
        }
        _ => "the NAS closed the connection".to_owned(),
    };
    ClientError::Unreachable { detail }
}

/// The request's text, wiped when dropped since it may hold a secret.
fn request_text<P: Serialize + ?Sized>(
    id: u64,
    method: &str,
    params: &P,
) -> Result<Zeroizing<String>, ClientError> {
    let request = Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    serde_json::to_string(&request)
        .map(Zeroizing::new)
        .map_err(|e| ClientError::protocol(format!("the request cannot be written ({e})")))
}

/// A reply to one of our calls.
enum Reply {
    Result(Value),
    Error(Value),
}

impl Reply {
    /// The reply in `message` if it answers `id`; `None` for notifications and other ids.
    ///
    /// A parse error from the NAS comes with `"id": null`; as only one call is in flight, it
    /// is taken as the answer to this one.
    fn for_id(mut message: Value, id: u64) -> Result<Option<Self>, ClientError> {
        let Some(object) = message.as_object_mut() else {
            return Err(ClientError::protocol("a message was not a JSON object"));
        };
        let answers_us = match object.get("id") {
            Some(Value::Number(n)) => n.as_u64() == Some(id),
            Some(Value::Null) => object.contains_key("error"),
            _ => false,
        };
        if !answers_us {
            tracing::trace!("skipped a message that does not answer call {id}");
            return Ok(None);
        }
        if let Some(error) = object.remove("error") {
            return Ok(Some(Reply::Error(error)));
        }
        match object.remove("result") {
            Some(result) => Ok(Some(Reply::Result(result))),
            None => Err(ClientError::protocol(
                "a reply had neither result nor error",
            )),
        }
    }

    fn into_result(self, method: &str) -> Result<Value, ClientError> {
        match self {
            Reply::Result(value) => Ok(value),
            Reply::Error(error) => Err(rpc_error(method, &error)),
        }
    }
}

/// `{"code", "message", "data": {"error", "errname", "reason", …}}` as [`ClientError::Rpc`].
fn rpc_error(method: &str, error: &Value) -> ClientError {
    let data = &error["data"];
    let reason = data["reason"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or("no reason given");
    ClientError::Rpc {
        method: method.to_owned(),
        code: error["code"].as_i64().unwrap_or_default(),
        errname: data["errname"].as_str().map(str::to_owned),
        reason: reason.to_owned(),
    }
}

/// Parses a reply's result into `T`, naming `method` if it does not fit.
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    method: &str,
    value: Value,
) -> Result<T, ClientError> {
    // serde's own message can quote the offending value, which may be a secret.
    serde_json::from_value(value).map_err(|_| {
        ClientError::protocol(format!(
            "the reply to {method} lacks a field or has one of the wrong type"
        ))
    })
}

/// A date in TrueNAS's extended JSON: `{"$date": <ms since the epoch, UTC>}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EjsonDate(pub(super) OffsetDateTime);

impl EjsonDate {
    pub(super) fn to_value(at: OffsetDateTime) -> Value {
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        serde_json::json!({ "$date": millis as i64 })
    }
}

impl<'de> Deserialize<'de> for EjsonDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "$date")]
            millis: f64,
        }
        let wire = Wire::deserialize(deserializer)?;
        let nanos = (wire.millis * 1_000_000.0).round() as i128;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map(EjsonDate)
            .map_err(serde::de::Error::custom)
    }
}

/// Reads an optional ejson date, for `#[serde(deserialize_with)]`.
pub(super) fn optional_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    Ok(Option::<EjsonDate>::deserialize(deserializer)?.map(|d| d.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_to_other_ids_and_notifications_are_skipped() {
        let notification = json!({"jsonrpc": "2.0", "method": "collection_update", "params": {}});
        let other = json!({"jsonrpc": "2.0", "id": 6, "result": 1});
        let text_id = json!({"jsonrpc": "2.0", "id": "7", "result": 1});
        for message in [notification, other, text_id] {
            assert!(Reply::for_id(message, 7).expect("valid").is_none());
        }
        let ours = json!({"jsonrpc": "2.0", "id": 7, "result": "pong"});
        let reply = Reply::for_id(ours, 7).expect("valid").expect("ours");
        assert_eq!(reply.into_result("core.ping").expect("ok"), json!("pong"));
    }

    #[test]
    fn error_objects_become_rpc_errors() {
        let message = json!({"jsonrpc": "2.0", "id": 3, "error": {
            "code": -32001, "message": "Method call error",
            "data": {"error": 13, "errname": "EACCES", "reason": "[EACCES] Not authorized"}}});
        let reply = Reply::for_id(message, 3).expect("valid").expect("ours");
        match reply.into_result("pool.query") {
            Err(ClientError::Rpc {
                method,
                code,
                errname,
                reason,
            }) => {
                assert_eq!(
                    (method.as_str(), code, errname.as_deref(), reason.as_str()),
                    (
                        "pool.query",
                        -32001,
                        Some("EACCES"),
                        "[EACCES] Not authorized"
                    )
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_parse_error_without_id_answers_the_call_in_flight() {
        let message = json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": "Expecting value"}});
        let reply = Reply::for_id(message, 9).expect("valid").expect("ours");
        let err = reply.into_result("core.ping").expect_err("error");
        assert!(
            matches!(err, ClientError::Rpc { code: -32700, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_reply_without_result_or_error_is_a_protocol_error() {
        let message = json!({"jsonrpc": "2.0", "id": 2});
        assert!(matches!(
            Reply::for_id(message, 2),
            Err(ClientError::Protocol { .. })
        ));
        assert!(matches!(
            Reply::for_id(json!([1]), 2),
            Err(ClientError::Protocol { .. })
        ));
    }

    #[test]
    fn requests_are_json_rpc_2() {
        let text = request_text(4, "system.info", &json!([])).expect("text");
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            value,
            json!({"jsonrpc": "2.0", "id": 4, "method": "system.info", "params": []})
        );
    }

    #[test]
    fn ejson_dates_go_both_ways() {
        let at = time::macros::datetime!(2025-01-01 0:00 UTC);
        assert_eq!(
            EjsonDate::to_value(at),
            json!({"$date": 1_735_689_600_000_i64})
        );
        let back: EjsonDate =
            serde_json::from_value(json!({"$date": 1_735_689_600_000_i64})).expect("date");
        assert_eq!(back.0, at);
        assert!(serde_json::from_value::<EjsonDate>(json!("2025-01-01")).is_err());
    }

    #[test]
    fn shape_errors_do_not_quote_values() {
        #[derive(Debug, Deserialize)]
        struct Entry {
            #[allow(dead_code)]
            id: u64,
        }
        let err = parse::<Entry>("api_key.create", json!({"id": "1-SECRETSECRET"}))
            .expect_err("wrong type");
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }
}
