//! Just enough HTTP/1.1 for the simulated systems and the control API: one request per
//! connection, `Content-Length` bodies, and the WebSocket upgrade.

use std::fmt;
use std::io;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a WebSocket upgrade, and the client's key if so.
    pub fn websocket_key(&self) -> Option<&str> {
        let upgrade = self
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let connection = self.header("connection").is_some_and(|c| {
            c.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
        if self.method == "GET" && upgrade && connection {
            self.header("sec-websocket-key")
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed before sending a whole request head.
    Closed,
    TooLarge,
    Malformed,
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed before a request"),
            ReadError::TooLarge => f.write_str("request too large"),
            ReadError::Malformed => f.write_str("malformed request"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one request. Returns it and any bytes that followed it (the start of a WebSocket
/// stream, for instance).
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Request, Vec<u8>), ReadError> {
    let mut buffer = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let mut request = parse_head(&buffer[..head_len])?;
    let mut rest = buffer.split_off(head_len);
    let length: usize = match request.header("content-length") {
        Some(text) => text.trim().parse().map_err(|_| ReadError::Malformed)?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(ReadError::TooLarge);
    }
    while rest.len() < length {
        let mut chunk = vec![0u8; (length - rest.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    let leftover = rest.split_off(length);
    request.body = rest;
    Ok((request, leftover))
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ReadError::Malformed),
    }
    let target = parsed.path.ok_or(ReadError::Malformed)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Request {
        method: parsed.method.ok_or(ReadError::Malformed)?.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
    })
}

pub struct Response {
    pub status: u16,
    content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    pub fn text(status: u16, text: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }

    /// aiohttp's default body for an error status, e.g. `404: Not Found`.
    pub fn status_text(status: u16) -> Self {
        Self::text(status, &format!("{status}: {}", reason(status)))
    }

    pub fn empty(status: u16) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }
    }
}

pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.flush().await
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade.
pub async fn write_upgrade<S: AsyncWrite + Unpin>(stream: &mut S, key: &str) -> io::Result<()> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Splits `a=1&b=x%20y` into decoded pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_head_body_and_leftover() {
        let raw =
            b"POST /systems/a/mode?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbodyEXTRA"
                .to_vec();
        let mut reader = &raw[..];
        let (request, leftover) = read_request(&mut reader).await.expect("parses");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/systems/a/mode");
        assert_eq!(request.query.as_deref(), Some("x=1"));
        assert_eq!(request.body, b"body");
        assert_eq!(leftover, b"EXTRA");
        assert_eq!(request.header("HOST"), Some("h"));
    }

    #[tokio::test]
    async fn recognises_websocket_upgrade() {
        let raw = b"GET /api/current HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n".to_vec();
        let mut reader = &raw[..];
        let (request, _) = read_request(&mut reader).await.expect("parses");
        assert_eq!(request.websocket_key(), Some("abc"));
    }

    #[test]
    fn decodes_query() {
        assert_eq!(
            query_pairs(Some("name=a%20b&x=1+2&flag")),
            vec![
                ("name".into(), "a b".into()),
                ("x".into(), "1 2".into()),
                ("flag".into(), String::new())
            ]
        );
    }
}
