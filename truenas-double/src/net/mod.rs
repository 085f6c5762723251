//! The network side of the simulated systems: listeners and their lifecycle across modes,
//! TLS, and routing of each HTTP request to JSON-RPC, the legacy socket, or REST.

mod faults;
pub mod http;
mod jsonrpc;
mod legacy;
mod rest;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::api::Conn;
use crate::config::Mode;
use crate::system::{lock, LogRecord, ModeState, System};
use http::{Request, Response};

/// Time a client gets for the TLS handshake and the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames and messages larger than this end the connection before the middleware's own
/// limits (8 KiB, 64 KiB, 2 MiB) are checked.
const WS_READ_LIMIT: usize = 4 * 1024 * 1024;

/// A TLS or plain TCP stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxedIo = Box<dyn Io>;
pub type WsStream = WebSocketStream<BoxedIo>;

/// Binds 127.0.0.1 with SO_REUSEADDR, so a port can be bound again right after going offline.
async fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

/// Binds the system's listeners (on their earlier ports, if any) and starts accepting.
pub async fn bring_up(system: &Arc<System>) -> io::Result<()> {
    let (tls_port, plain_port) = system.ports();
    let mut tasks = system.listener_tasks.lock().await;
    let mut bound = (tls_port, plain_port);
    if system.serves_tls {
        let listener = bind(tls_port).await?;
        bound.0 = listener.local_addr()?.port();
        tasks.push(tokio::spawn(accept_loop(system.clone(), listener, true)));
    }
    if system.serves_plain {
        let listener = bind(plain_port).await?;
        bound.1 = listener.local_addr()?.port();
        tasks.push(tokio::spawn(accept_loop(system.clone(), listener, false)));
    }
    *lock(&system.ports) = bound;
    Ok(())
}

/// Closes the listeners; the port stays reserved in the system for `bring_up`.
pub async fn bring_down(system: &System) {
    let mut tasks = system.listener_tasks.lock().await;
    for task in tasks.drain(..) {
        task.abort();
        let _ = task.await;
    }
}

/// Switches mode and latency. Going offline closes the listeners and every open connection;
/// coming back binds the same ports again.
pub async fn set_mode(system: &Arc<System>, state: ModeState) -> io::Result<()> {
    let previous = system.replace_mode(state);
    match (previous.mode == Mode::Offline, state.mode == Mode::Offline) {
        (false, true) => bring_down(system).await,
        (true, false) => {
            if let Err(e) = bring_up(system).await {
                system.replace_mode(previous);
                return Err(e);
            }
        }
        _ => {}
    }
    tracing::info!(system = %system.name, mode = %state.mode, latency_ms = state.latency_ms, "mode changed");
    Ok(())
}

async fn accept_loop(system: Arc<System>, listener: TcpListener, tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                system.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(system.clone(), tcp, peer, tls));
            }
            Err(e) => {
                tracing::warn!(system = %system.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until it ends or the system goes offline.
async fn connection(system: Arc<System>, tcp: TcpStream, peer: SocketAddr, tls: bool) {
    let mut modes = system.subscribe_mode();
    tokio::select! {
        () = serve(&system, tcp, Conn { peer, tls }) => {}
        () = until_offline(&mut modes) => {}
    }
}

async fn until_offline(modes: &mut watch::Receiver<ModeState>) {
    loop {
        if modes.borrow_and_update().mode == Mode::Offline {
            return;
        }
        if modes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps for the system's current added latency.
pub async fn delay(system: &System) {
    let ms = system.mode().latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn serve(system: &Arc<System>, tcp: TcpStream, conn: Conn) {
    if system.mode().mode == Mode::Blackhole {
        return swallow(tcp).await;
    }
    delay(system).await;
    let mut io: BoxedIo = if conn.tls {
        let acceptor = TlsAcceptor::from(system.identity().server_config.clone());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Box::new(stream),
            _ => return,
        }
    } else {
        Box::new(tcp)
    };
    if conn.tls {
        system
            .counters
            .tls_handshakes
            .fetch_add(1, Ordering::Relaxed);
    }
    let Ok(Ok((request, leftover))) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, http::read_request(&mut io)).await
    else {
        return;
    };
    system.counters.requests.fetch_add(1, Ordering::Relaxed);
    log_request(system, &conn, &request);
    if let Err(e) = route(system, io, request, leftover, conn).await {
        tracing::debug!(system = %system.name, error = %e, "connection ended with an error");
    }
}

/// Reads and discards until the peer gives up: a blackhole never answers.
async fn swallow(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn log_request(system: &System, conn: &Conn, request: &Request) {
    let line = format!("{} {}", request.method, request.path);
    system.log(LogRecord {
        transport: conn.transport(),
        peer: conn.peer.to_string(),
        kind: "http",
        method: &line,
        credential: None,
        key_id: None,
        outcome: "received".into(),
    });
}

async fn route(
    system: &Arc<System>,
    mut io: BoxedIo,
    request: Request,
    leftover: Vec<u8>,
    conn: Conn,
) -> io::Result<()> {
    let release = &system.release;
    let path = request.path.trim_end_matches('/').to_string();
    if path == "/api/v2.0" || path.starts_with("/api/v2.0/") {
        if release.has_rest() {
            return rest::handle(system, io, &request, conn).await;
        }
        return respond(system, &mut io, Response::status_text(404)).await;
    }
    if path == "/api/versions" && release.has_jsonrpc() {
        return respond(
            system,
            &mut io,
            Response::json(200, &json!(release.api_versions())),
        )
        .await;
    }
    if path == "/api/boot_id" {
        return respond(system, &mut io, Response::json(200, &json!(system.boot_id))).await;
    }
    if path == "/websocket" {
        let ws = match upgrade(system, io, &request, leftover).await? {
            Some(ws) => ws,
            None => return Ok(()),
        };
        legacy::serve(system.clone(), ws, conn).await;
        return Ok(());
    }
    let api = path
        .strip_prefix("/api/")
        .and_then(|segment| release.api_for_path(segment));
    let Some(api) = api else {
        return respond(system, &mut io, Response::status_text(404)).await;
    };
    if let Some(ws) = upgrade(system, io, &request, leftover).await? {
        jsonrpc::serve(system.clone(), ws, conn, api).await;
    }
    Ok(())
}

async fn respond(system: &System, io: &mut BoxedIo, response: Response) -> io::Result<()> {
    delay(system).await;
    http::write_response(io, &response).await
}

/// Completes a WebSocket upgrade, or answers 400 like aiohttp for a plain GET.
async fn upgrade(
    system: &System,
    mut io: BoxedIo,
    request: &Request,
    leftover: Vec<u8>,
) -> io::Result<Option<WsStream>> {
    let Some(key) = request.websocket_key() else {
        let text = "No WebSocket UPGRADE hdr: None\n Can \"Upgrade\" only to \"WebSocket\".";
        respond(system, &mut io, Response::text(400, text)).await?;
        return Ok(None);
    };
    delay(system).await;
    http::write_upgrade(&mut io, key).await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(WS_READ_LIMIT))
        .max_frame_size(Some(WS_READ_LIMIT));
    Ok(Some(
        WebSocketStream::from_partially_read(io, leftover, Role::Server, Some(config)).await,
    ))
}
