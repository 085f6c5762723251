//! From a URL to an open WebSocket: name lookup, TCP, TLS, and the upgrade to `/api/current`.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{lookup_host, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::guard::{Security, Transport};
use super::{tls, ClientError, Limits, Phase, SystemUrl, TlsTrust};

/// A byte stream, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) type WsStream = WebSocketStream<Box<dyn Io>>;

/// Opens the WebSocket to `url`, with TLS checked against `trust`.
pub(super) async fn open(
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
) -> Result<(WsStream, Transport), ClientError> {
    check_trust_fits(url, trust)?;
    let deadline = Instant::now() + limits.connect_timeout;
    let (tcp, peer) = connect_tcp(url, deadline).await?;

    let (io, security): (Box<dyn Io>, _) = match tls::config_for(trust)? {
        Some(config) => {
            let stream = tls::handshake(config, url, tcp, deadline).await?;
            (Box::new(stream), Security::VerifiedTls)
        }
        None => (Box::new(tcp), Security::Plain),
    };
    let ws = upgrade(url, io, limits, deadline).await?;
    tracing::debug!(system = %url, %peer, "connected");
    Ok((ws, Transport { security, peer }))
}

fn check_trust_fits(url: &SystemUrl, trust: &TlsTrust) -> Result<(), ClientError> {
    match (url.is_tls(), trust) {
        (true, TlsTrust::PlainLoopback) => Err(ClientError::TlsUntrusted {
            detail: "no certificate pin or CA was given for this https:// address".into(),
        }),
        (false, TlsTrust::Pin(_) | TlsTrust::Ca(_)) => Err(ClientError::BadUrl {
            reason: "a certificate was given for a plain http:// address".into(),
        }),
        _ => Ok(()),
    }
}

/// Looks the host up and connects to the first address that answers, before `deadline`.
pub(super) async fn connect_tcp(
    url: &SystemUrl,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), ClientError> {
    let timed_out = |_| ClientError::TimedOut {
        phase: Phase::Connect,
    };
    let not_found = |_| ClientError::NameNotFound {
        host: url.host().to_owned(),
    };
    let addrs = timeout_at(deadline, lookup_host((url.host(), url.port())))
        .await
        .map_err(timed_out)?
        .map_err(not_found)?;

    let mut last_error = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(timed_out)?
        {
            Ok(stream) => {
                stream.set_nodelay(true).ok();
                return Ok((stream, addr));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => connect_error(&e),
        None => ClientError::NameNotFound {
            host: url.host().to_owned(),
        },
    })
}

fn connect_error(error: &io::Error) -> ClientError {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::Refused,
        _ => ClientError::Unreachable {
            detail: error.to_string(),
        },
    }
}

async fn upgrade(
    url: &SystemUrl,
    io: Box<dyn Io>,
    limits: &Limits,
    deadline: Instant,
) -> Result<WsStream, ClientError> {
    let request = url
        .ws_endpoint()
        .into_client_request()
        .map_err(|e| ClientError::protocol(format!("the upgrade request cannot be made ({e})")))?;
    let handshake =
        tokio_tungstenite::client_async_with_config(request, io, Some(ws_config(limits)));

    match timeout_at(deadline, handshake).await {
        Err(_) => Err(ClientError::TimedOut {
            phase: Phase::Upgrade,
        }),
        Ok(Err(e)) => Err(upgrade_error(e, limits)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// The WebSocket's bounds: no message or frame larger than the limit.
pub(super) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

fn upgrade_error(error: WsError, limits: &Limits) -> ClientError {
    match error {
        WsError::Http(response) if response.status() == StatusCode::NOT_FOUND => {
            ClientError::UnsupportedVersion {
                detail: "it has no JSON-RPC API at /api/current, so it runs TrueNAS 24.10 \
                         or older"
                    .into(),
            }
        }
        WsError::Http(response) => ClientError::protocol(format!(
            "the NAS answered the WebSocket upgrade with HTTP {}",
            response.status()
        )),
        other => ws_error(other, limits),
    }
}

/// Maps an error of an open (or opening) WebSocket.
pub(super) fn ws_error(error: WsError, limits: &Limits) -> ClientError {
    match error {
        WsError::Capacity(_) => ClientError::protocol(format!(
            "a message was larger than the limit of {} bytes",
            limits.max_message_bytes
        )),
        WsError::Io(e) => ClientError::Unreachable {
            detail: format!("the connection failed ({e})"),
        },
        WsError::ConnectionClosed | WsError::AlreadyClosed => ClientError::Unreachable {
            detail: "the NAS closed the connection".into(),
        },
        other => ClientError::protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truenas::CertFingerprint;

    #[test]
    fn trust_must_fit_the_scheme() {
        let https = SystemUrl::parse("https://127.0.0.1").expect("https");
        let http = SystemUrl::parse("http://127.0.0.1").expect("http");
        let pin = TlsTrust::Pin(CertFingerprint::from_bytes([1; 32]));

        assert!(check_trust_fits(&https, &pin).is_ok());
        assert!(check_trust_fits(&http, &TlsTrust::PlainLoopback).is_ok());
        assert_eq!(
            check_trust_fits(&https, &TlsTrust::PlainLoopback).map_err(|e| e.kind()),
            Err("tls")
        );
        assert_eq!(
            check_trust_fits(&http, &pin).map_err(|e| e.kind()),
            Err("bad_url")
        );
    }

    #[test]
    fn refused_and_other_socket_errors_differ() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let other = io::Error::from(io::ErrorKind::HostUnreachable);
        assert!(matches!(connect_error(&refused), ClientError::Refused));
        assert!(matches!(
            connect_error(&other),
            ClientError::Unreachable { .. }
        ));
    }
}
