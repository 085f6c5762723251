//! Entry points for the fuzz targets in `fuzz/`, built only with the `fuzzing` feature.
//!
//! Each one plays the NAS's side of an open WebSocket with bytes the fuzzer chose, and drives
//! a real [`Session`] through the calls nasring makes: login with an API key, the system card,
//! the API key's state, creating and deleting a key. Whatever the NAS sends, the session must
//! end in a value or a [`ClientError`], never a panic, a hang or an error quoting the API key.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::guard::{Security, Transport};
use super::transport::{ws_config, Io};
use super::{ClientError, Limits, Session, SystemUrl, TlsTrust};
use crate::secret::ApiKey;

/// The API key the session logs in with; no error may contain its secret part.
pub const API_KEY: &str = "7-FuzzSecretKeyMaterialThatNoErrorMayQuote0123456789abcdefghijk";

/// Small enough that the fuzzer reaches the size limit.
const LIMITS: Limits = Limits {
    connect_timeout: Duration::from_secs(5),
    call_timeout: Duration::from_secs(5),
    max_message_bytes: 4096,
};

/// `bytes` are the raw bytes the NAS sends once the WebSocket is open: frames and all.
pub fn raw_stream(bytes: &[u8]) {
    run(bytes.to_vec());
}

/// `input` is split at newlines and each line sent as one unmasked text frame, so that the
/// fuzzer works on JSON-RPC messages rather than on WebSocket framing. A line need not be
/// UTF-8: the client must refuse that too.
pub fn text_messages(input: &[u8]) {
    let mut stream = Vec::with_capacity(input.len() + 16);
    for line in input.split(|b| *b == b'\n') {
        text_frame(&mut stream, line);
    }
    run(stream);
}

fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81); // FIN, text
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime for the fuzz target")
    })
}

fn run(from_nas: Vec<u8>) {
    runtime().block_on(async move {
        // The client's requests go into a buffer nobody reads; it is large enough for them.
        let (client_io, mut nas_io) = tokio::io::duplex(1 << 20);
        nas_io
            .write_all(&from_nas)
            .await
            .expect("the NAS side of the stream");
        nas_io.shutdown().await.expect("end of the NAS's bytes");
        let io: Box<dyn Io> = Box::new(client_io);
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(ws_config(&LIMITS))).await;
        let transport = Transport {
            security: Security::Plain,
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 80)),
        };
        let url = SystemUrl::parse("http://127.0.0.1").expect("a loopback URL");
        let mut session = Session::on_open(ws, transport, &TlsTrust::PlainLoopback, &url, &LIMITS);
        drive(&mut session).await;
        drop(nas_io);
    });
}

async fn drive(session: &mut Session) {
    let key = ApiKey::new(API_KEY.to_owned());
    check(session.login_api_key("admin", &key).await.err());
    check(session.system_card().await.err());
    check(session.api_key_info(7).await.err());
    let created = session.create_api_key("fuzz", "admin", None).await;
    check(created.err());
    check(session.delete_api_key(7).await.err());
}

fn check(error: Option<ClientError>) {
    let Some(error) = error else { return };
    let secret = API_KEY.split_once('-').map_or(API_KEY, |(_, s)| s);
    let text = format!("{error} {error:?} {}", error.remedy("nas"));
    assert!(
        !text.contains(secret),
        "an error quoted the API key: {text}"
    );
}
