//! Sending a reply as the current mode dictates: normally, not at all (blackhole), as garbage,
//! with another id, as one 100 MiB message, or one byte per second.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::{BoxedIo, WsStream};
use crate::config::Mode;
use crate::system::System;

/// Size of the message the `oversized` mode sends.
pub const OVERSIZED_BYTES: u64 = 100 * 1024 * 1024;

/// What a proxy in front of a broken middleware might answer.
const GARBAGE: &str =
    "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>";

/// The connection could not be written to any more.
pub struct Broken;

pub async fn deliver(ws: &mut WsStream, system: &System, mut reply: Value) -> Result<(), Broken> {
    match system.mode().mode {
        Mode::Online | Mode::Offline => send(ws, reply.to_string()).await,
        Mode::Blackhole => Ok(()),
        Mode::Garbage => send(ws, GARBAGE.to_string()).await,
        Mode::WrongId => {
            if let Some(id) = reply.get_mut("id") {
                *id = other_id(id);
            }
            send(ws, reply.to_string()).await
        }
        Mode::Oversized => oversized(ws, reply.get("id").cloned().unwrap_or(Value::Null)).await,
        Mode::Trickle => trickle(ws, system, reply.to_string().as_bytes()).await,
    }
}

async fn send(ws: &mut WsStream, text: String) -> Result<(), Broken> {
    ws.send(Message::text(text)).await.map_err(|_| Broken)
}

/// An id the client did not use: numbers move up by 1000, strings get a suffix.
pub fn other_id(id: &Value) -> Value {
    match id {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i.wrapping_add(1000)),
            None => Value::from(n.as_f64().unwrap_or(0.0) + 1000.0),
        },
        Value::String(s) => Value::from(format!("{s}-other")),
        _ => Value::from(1000),
    }
}

/// The header of one unmasked, final text frame of `len` bytes.
fn frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x81];
    if len < 126 {
        header.push(len as u8);
    } else if len <= u64::from(u16::MAX) {
        header.push(126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header
}

/// Streams a single valid JSON-RPC reply of exactly 100 MiB whose result is one long string,
/// without holding it in memory.
async fn oversized(ws: &mut WsStream, id: Value) -> Result<(), Broken> {
    ws.flush().await.map_err(|_| Broken)?;
    let head = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":\"");
    let tail = "\"}";
    let filler = OVERSIZED_BYTES - (head.len() + tail.len()) as u64;
    let io = ws.get_mut();
    write(io, &frame_header(OVERSIZED_BYTES)).await?;
    write(io, head.as_bytes()).await?;
    let chunk = vec![b'A'; 64 * 1024];
    let mut left = filler;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        write(io, &chunk[..n]).await?;
        left -= n as u64;
    }
    write(io, tail.as_bytes()).await?;
    io.flush().await.map_err(|_| Broken)
}

async fn write(io: &mut BoxedIo, bytes: &[u8]) -> Result<(), Broken> {
    io.write_all(bytes).await.map_err(|_| Broken)
}

/// Sends the frame one byte per second while the mode stays `trickle`, then the rest at once.
async fn trickle(ws: &mut WsStream, system: &System, payload: &[u8]) -> Result<(), Broken> {
    ws.flush().await.map_err(|_| Broken)?;
    let mut frame = frame_header(payload.len() as u64);
    frame.extend_from_slice(payload);
    let io = ws.get_mut();
    for (i, byte) in frame.iter().enumerate() {
        if system.mode().mode != Mode::Trickle {
            io.write_all(&frame[i..]).await.map_err(|_| Broken)?;
            break;
        }
        io.write_all(&[*byte]).await.map_err(|_| Broken)?;
        io.flush().await.map_err(|_| Broken)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    io.flush().await.map_err(|_| Broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header(5), vec![0x81, 5]);
        assert_eq!(frame_header(300), vec![0x81, 126, 1, 44]);
        assert_eq!(frame_header(OVERSIZED_BYTES)[..2], [0x81, 127]);
        assert_eq!(frame_header(OVERSIZED_BYTES).len(), 10);
    }

    #[test]
    fn other_ids_differ() {
        assert_eq!(other_id(&json!(7)), json!(1007));
        assert_eq!(other_id(&json!("a")), json!("a-other"));
        assert_eq!(other_id(&Value::Null), json!(1000));
    }
}
