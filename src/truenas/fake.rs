//! A small fake NAS for the tests, on 127.0.0.1 only: rustls with an rcgen certificate, and a
//! tokio-tungstenite server that answers each request through a handler.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use super::{CertFingerprint, SystemUrl};

/// A certificate and its key.
pub(super) struct Identity {
    pub(super) cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Identity {
    /// Self-signed, CN=localhost, SAN=DNS:localhost, like TrueNAS's `truenas_default`.
    pub(super) fn localhost() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    pub(super) fn fingerprint(&self) -> CertFingerprint {
        CertFingerprint::of_der(&self.cert)
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A certificate authority that issues server certificates.
pub(super) struct Ca {
    pub(super) pem: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(super) fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA");
        Self {
            pem: cert.pem().into_bytes(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub(super) fn issue(&self, names: &[&str]) -> Identity {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = CertificateParams::new(names).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("issued");
        Identity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }
}

/// One thing the fake sends in answer to a request.
pub(super) enum Out {
    Text(String),
    Pause(Duration),
}

/// Answers one request (the parsed JSON of a text frame).
pub(super) type Handler = Arc<dyn Fn(&Value) -> Vec<Out> + Send + Sync>;

pub(super) enum Behaviour {
    /// Upgrades `/api/current` and answers through the handler.
    Rpc(Handler),
    /// Accepts TCP and never says anything.
    Silent,
    /// Answers every upgrade with HTTP 404, like TrueNAS 24.10.
    NotFound,
}

/// What the fake saw.
#[derive(Default)]
pub(super) struct Log {
    pub(super) upgrades: usize,
    pub(super) frames: Vec<String>,
}

pub(super) struct FakeNas {
    pub(super) addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl FakeNas {
    /// Listens on 127.0.0.1, with TLS when `identity` is given.
    pub(super) async fn start(identity: Option<&Identity>, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let log = Arc::new(Mutex::new(Log::default()));
        let tls = identity.map(|id| TlsAcceptor::from(id.server_config()));
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(accept_loop(listener, tls, behaviour, log.clone()));
        Self { addr, log, task }
    }

    pub(super) fn url(&self) -> SystemUrl {
        SystemUrl::parse(&format!("https://{}", self.addr)).expect("url")
    }

    pub(super) fn plain_url(&self) -> SystemUrl {
        SystemUrl::parse(&format!("http://{}", self.addr)).expect("url")
    }

    pub(super) fn upgrades(&self) -> usize {
        self.log.lock().expect("log").upgrades
    }

    pub(super) fn frames(&self) -> Vec<String> {
        self.log.lock().expect("log").frames.clone()
    }

    pub(super) fn requests(&self) -> Vec<Value> {
        let frames = self.frames();
        frames
            .iter()
            .filter_map(|f| serde_json::from_str(f).ok())
            .collect()
    }
}

impl Drop for FakeNas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    behaviour: Arc<Behaviour>,
    log: Arc<Mutex<Log>>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (tls, behaviour, log) = (tls.clone(), behaviour.clone(), log.clone());
        tokio::spawn(serve(tcp, tls, behaviour, log));
    }
}

async fn serve(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    behaviour: Arc<Behaviour>,
    log: Arc<Mutex<Log>>,
) {
    if let Behaviour::Silent = *behaviour {
        let _held = tcp;
        return std::future::pending::<()>().await;
    }
    match tls {
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(tcp).await {
                serve_http(stream, &behaviour, &log).await;
            }
        }
        None => serve_http(tcp, &behaviour, &log).await,
    }
}

async fn serve_http<S>(stream: S, behaviour: &Behaviour, log: &Mutex<Log>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let found = !matches!(behaviour, Behaviour::NotFound);
    // The error type is tungstenite's own HTTP response.
    #[allow(clippy::result_large_err)]
    let route = move |request: &Request, response: Response| {
        if found && request.uri().path() == "/api/current" {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(None);
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, route).await else {
        return;
    };
    log.lock().expect("log").upgrades += 1;
    let Behaviour::Rpc(handler) = behaviour else {
        return;
    };

    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        log.lock().expect("log").frames.push(text.to_string());
        let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        for out in handler(&request) {
            match out {
                Out::Text(text) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Out::Pause(pause) => tokio::time::sleep(pause).await,
            }
        }
    }
}

/// A successful reply to `request`.
pub(super) fn reply(request: &Value, result: Value) -> Out {
    Out::Text(json!({"jsonrpc": "2.0", "id": request["id"], "result": result}).to_string())
}

/// A `Method call error` reply to `request`.
pub(super) fn call_error(request: &Value, errname: &str, reason: &str) -> Out {
    let error = json!({"code": -32001, "message": "Method call error",
        "data": {"error": 13, "errname": errname, "reason": reason, "trace": null, "extra": null}});
    Out::Text(json!({"jsonrpc": "2.0", "id": request["id"], "error": error}).to_string())
}

/// A server notification, which has no id.
pub(super) fn notification() -> Out {
    let params = json!({"msg": "changed", "collection": "alert.list", "id": 1, "fields": {}});
    Out::Text(
        json!({"jsonrpc": "2.0", "method": "collection_update", "params": params}).to_string(),
    )
}

/// A handler from a plain function.
pub(super) fn handler(f: impl Fn(&Value) -> Vec<Out> + Send + Sync + 'static) -> Behaviour {
    Behaviour::Rpc(Arc::new(f))
}
