//! A TrueNAS imposter on 127.0.0.1 with its own self-signed certificate, which records every
//! byte it receives (after TLS, and each WebSocket message unmasked). In [`Mode::Genuine`] it
//! answers as a TrueNAS system does; every other mode misbehaves in one way.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::{self, Message};

use super::API_KEY;

/// How an imposter behaves once a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP that answers the TLS hello with bytes that are not TLS.
    NotTls,
    /// Accepts the TCP connection and never says anything.
    Silent,
    /// TLS, then garbage instead of the HTTP upgrade response.
    HttpGarbage,
    /// TLS, a `101` status line, then header lines without end.
    EndlessHeaders,
    /// TLS, then a valid upgrade response, one byte every 200 ms.
    Trickle,
    /// Upgrades, then answers every call with text that is not JSON.
    NotJson,
    /// Upgrades, then answers every call with another call's id.
    WrongIds,
    /// Upgrades, then sends notifications without end instead of an answer.
    EndlessNotifications,
    /// Upgrades, then answers with a frame whose header announces 1 GiB.
    OversizedFrame,
    /// Upgrades, then sends one message in fragments without end.
    EndlessFragments,
    /// Speaks the protocol as a TrueNAS system does: the control.
    Genuine,
}

pub const ALL_MODES: [Mode; 11] = [
    Mode::NotTls,
    Mode::Silent,
    Mode::HttpGarbage,
    Mode::EndlessHeaders,
    Mode::Trickle,
    Mode::NotJson,
    Mode::WrongIds,
    Mode::EndlessNotifications,
    Mode::OversizedFrame,
    Mode::EndlessFragments,
    Mode::Genuine,
];

impl Mode {
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// True if the imposter misbehaves before the upgrade, so no login can be sent.
    pub fn fails_before_login(self) -> bool {
        matches!(
            self,
            Mode::NotTls | Mode::Silent | Mode::HttpGarbage | Mode::EndlessHeaders | Mode::Trickle
        )
    }
}

/// A server on 127.0.0.1 with its own self-signed certificate.
pub struct Imposter {
    pub addr: SocketAddr,
    pub fingerprint: String,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Imposter {
    pub fn start(mode: Mode) -> Imposter {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(der.as_ref())));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (config, log) = (Arc::new(config), Arc::clone(&received));
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, log) = (Arc::clone(&config), Arc::clone(&log));
                thread::spawn(move || serve(mode, tcp, config, log));
            }
        });
        Imposter {
            addr,
            fingerprint,
            received,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn received(&self) -> Vec<u8> {
        self.received.lock().expect("log").clone()
    }
}

/// A stream that copies everything read from it into the imposter's log.
struct Recorded<S> {
    inner: S,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<S: Read> Read for Recorded<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.log.lock().expect("log").extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: Write> Write for Recorded<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve(mode: Mode, tcp: TcpStream, config: Arc<ServerConfig>, log: Arc<Mutex<Vec<u8>>>) {
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    tcp.set_write_timeout(Some(Duration::from_secs(30))).ok();
    let _ = match mode {
        Mode::NotTls => not_tls(tcp, log),
        Mode::Silent => silent(tcp, log),
        _ => {
            let Ok(conn) = ServerConnection::new(config) else {
                return;
            };
            let tls = Recorded {
                inner: StreamOwned::new(conn, tcp),
                log,
            };
            serve_tls(mode, tls)
        }
    };
}

fn not_tls(mut tcp: TcpStream, log: Arc<Mutex<Vec<u8>>>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf)?;
    log.lock().expect("log").extend_from_slice(&buf[..n]);
    tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\x00\xff\xfe")
}

fn silent(mut tcp: TcpStream, log: Arc<Mutex<Vec<u8>>>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        log.lock().expect("log").extend_from_slice(&buf[..n]);
    }
}

fn serve_tls(mode: Mode, mut tls: Recorded<Tls>) -> io::Result<()> {
    match mode {
        Mode::HttpGarbage => {
            read_request(&mut tls)?;
            tls.write_all(b"\x16\x03\x01garbage\r\n\x00\xff not HTTP at all\r\n\r\n")?;
            tls.flush()
        }
        Mode::EndlessHeaders => {
            read_request(&mut tls)?;
            tls.write_all(b"HTTP/1.1 101 Switching Protocols\r\n")?;
            for i in 0.. {
                tls.write_all(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes())?;
            }
            Ok(())
        }
        Mode::Trickle => {
            let key = read_request(&mut tls)?;
            let response = upgrade_response(&key);
            for byte in response.as_bytes() {
                tls.write_all(&[*byte])?;
                tls.flush()?;
                thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        }
        _ => {
            let ws = tungstenite::accept(tls).map_err(io::Error::other)?;
            serve_ws(mode, ws)
        }
    }
}

/// Reads the client's HTTP request; returns its `Sec-WebSocket-Key`.
fn read_request(tls: &mut Recorded<Tls>) -> io::Result<String> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        request.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&request);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .or_else(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("sec-websocket-key: "))
        })
        .unwrap_or_default();
    Ok(key.trim().to_owned())
}

fn upgrade_response(key: &str) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

type Ws = tungstenite::WebSocket<Recorded<Tls>>;

fn serve_ws(mode: Mode, mut ws: Ws) -> io::Result<()> {
    loop {
        let request = match ws.read() {
            Ok(Message::Text(text)) => {
                // Client frames are masked on the wire: log the unmasked message too.
                let log = &ws.get_ref().log;
                log.lock().expect("log").extend_from_slice(text.as_bytes());
                text
            }
            Ok(Message::Close(_)) | Err(_) => return Ok(()),
            Ok(_) => continue,
        };
        let call: Value = serde_json::from_str(request.as_str()).unwrap_or_default();
        let id = call["id"].as_u64().unwrap_or_default();
        match mode {
            Mode::NotJson => send(&mut ws, "{\"jsonrpc\": \"2.0\", \"id\": 1, \"result\": ")?,
            Mode::WrongIds => {
                let reply = json!({"jsonrpc": "2.0", "id": id + 1000, "result": {}});
                send(&mut ws, &reply.to_string())?;
            }
            Mode::EndlessNotifications => loop {
                let note = json!({"jsonrpc": "2.0", "method": "collection_update",
                    "params": {"msg": "changed", "collection": "alert.list"}});
                send(&mut ws, &note.to_string())?;
                thread::sleep(Duration::from_millis(5));
            },
            Mode::OversizedFrame => {
                let mut header = vec![0x81, 127];
                header.extend_from_slice(&(1u64 << 30).to_be_bytes());
                raw(&mut ws, &header)?;
                loop {
                    raw(&mut ws, &[b'a'; 16 * 1024])?;
                }
            }
            Mode::EndlessFragments => {
                raw(&mut ws, &[0x01, 126, 0x40, 0x00])?; // text, not final, 16 KiB
                raw(&mut ws, &[b'a'; 16 * 1024])?;
                loop {
                    raw(&mut ws, &[0x00, 126, 0x40, 0x00])?; // continuation, not final
                    raw(&mut ws, &[b'a'; 16 * 1024])?;
                }
            }
            _ => send(&mut ws, &genuine_reply(&call).to_string())?,
        }
    }
}

fn send(ws: &mut Ws, text: &str) -> io::Result<()> {
    ws.send(Message::text(text)).map_err(io::Error::other)
}

fn raw(ws: &mut Ws, bytes: &[u8]) -> io::Result<()> {
    let stream = ws.get_mut();
    stream.write_all(bytes)?;
    stream.flush()
}

/// What a TrueNAS system answers to the calls `status` makes.
fn genuine_reply(call: &Value) -> Value {
    let result = match call["method"].as_str().unwrap_or_default() {
        "auth.login_ex" => json!({"response_type": "SUCCESS"}),
        "system.info" => json!({"hostname": "genuine", "version": "25.04.1",
            "uptime_seconds": 100.0, "model": "cpu"}),
        "pool.query" | "alert.list" => json!([]),
        "api_key.query" => {
            let id = call["params"][0][0][2].as_u64().unwrap_or(12);
            json!([{"id": id, "name": "nasring", "expires_at": null, "revoked": false}])
        }
        "api_key.create" => json!({"id": 12, "name": call["params"][0]["name"],
            "username": call["params"][0]["username"], "key": CREATED_KEY, "expires_at": null}),
        "api_key.delete" => json!(true),
        _ => Value::Null,
    };
    json!({"jsonrpc": "2.0", "id": call["id"], "result": result})
}

/// The key that `api_key.create` hands out in [`Mode::Genuine`].
pub const CREATED_KEY: &str = "12-Cr3atedKeyMaterialNeverToBeShown0123456789abcdefghijklmnopqrs";

/// The secret part of the API key, which must never reach a server it should not.
pub fn secret() -> &'static str {
    API_KEY.split_once('-').expect("key").1
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
