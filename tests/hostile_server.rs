//! TrueNAS imposters on 127.0.0.1: servers that answer garbage, oversized frames, endless
//! streams, wrong JSON-RPC ids or a slow trickle, or present a certificate other than the
//! pinned one. nasring must refuse each within its timeouts, and an API key may reach only a
//! server that holds the pinned certificate's key. Every imposter records all the bytes it
//! receives (after TLS, and each WebSocket message unmasked), so the tests can look for the
//! key in them.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::{self, Message};

/// How an imposter behaves once a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
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

const ALL_MODES: [Mode; 11] = [
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
    fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// True if the imposter misbehaves before the upgrade, so no login can be sent.
    fn fails_before_login(self) -> bool {
        matches!(
            self,
            Mode::NotTls | Mode::Silent | Mode::HttpGarbage | Mode::EndlessHeaders | Mode::Trickle
        )
    }
}

/// A server on 127.0.0.1 with its own self-signed certificate.
struct Imposter {
    addr: SocketAddr,
    fingerprint: String,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Imposter {
    fn start(mode: Mode) -> Imposter {
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

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn received(&self) -> Vec<u8> {
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
        "api_key.query" => json!([]),
        _ => Value::Null,
    };
    json!({"jsonrpc": "2.0", "id": call["id"], "result": result})
}

/// The secret part of the API key, which must never reach a server it should not.
fn secret() -> &'static str {
    API_KEY.split_once('-').expect("key").1
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn add_system(w: &World, name: &str, url: &str, fingerprint: &str) {
    let key_file = w.write(&format!("{name}.key"), &format!("{API_KEY}\n"));
    let out = w.run(&[
        "add",
        name,
        "--url",
        url,
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        fingerprint,
        "--no-check",
    ]);
    assert_ok(&out, "add --no-check");
}

/// Runs `nasring` with `args`, killing it (and failing) if it has not ended within a minute,
/// far beyond its own timeouts; returns its output and how long it took.
fn run_bounded(w: &World, args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let child = w
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nasring");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let out = child.wait_with_output().expect("wait");
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("nasring {args:?} did not end within a minute");
    }
    (waiter.join().expect("waiter"), start.elapsed())
}

const NET: [&str; 4] = ["--connect-timeout", "1", "--deadline", "4"];

#[test]
fn status_refuses_every_imposter_and_sends_the_key_only_behind_the_pin() {
    let w = World::with_keyring();
    let pinned: Vec<(Mode, Imposter)> = ALL_MODES
        .iter()
        .map(|m| (*m, Imposter::start(*m)))
        .collect();
    let unpinned: Vec<(Mode, Imposter)> = ALL_MODES
        .iter()
        .map(|m| (*m, Imposter::start(*m)))
        .collect();
    let other_pin = format!("sha256:{}", "5a".repeat(32));
    for (mode, imposter) in &pinned {
        add_system(
            &w,
            &format!("pinned-{}", mode.name()),
            &imposter.url(),
            &imposter.fingerprint,
        );
    }
    for (mode, imposter) in &unpinned {
        add_system(
            &w,
            &format!("other-{}", mode.name()),
            &imposter.url(),
            &other_pin,
        );
    }
    let before = std::fs::read(&w.vault).expect("vault");

    let mut args = vec!["status", "--json"];
    args.extend_from_slice(&NET);
    let (out, took) = run_bounded(&w, &args);
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).expect("status json");
    let status_of = |name: &str| -> (String, String) {
        let r = reports
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no report for {name}: {}", text(&out)));
        assert_eq!(
            r["connected"].as_bool(),
            Some(r["status"] == "connected"),
            "{r}"
        );
        (
            r["status"].as_str().unwrap_or_default().to_owned(),
            r["detail"].as_str().unwrap_or_default().to_owned(),
        )
    };

    let mut lines = Vec::new();
    for (mode, imposter) in &pinned {
        let (status, detail) = status_of(&format!("pinned-{}", mode.name()));
        let got_key = contains(&imposter.received(), secret());
        lines.push(format!(
            "pinned {mode:?}: {status} ({detail}); key arrived: {got_key}"
        ));
        if *mode == Mode::Genuine {
            assert_eq!(
                status, "connected",
                "the genuine server must connect: {detail}"
            );
            assert!(got_key, "the genuine server must receive the key");
            continue;
        }
        assert_ne!(status, "connected", "{mode:?} was accepted: {detail}");
        if mode.fails_before_login() {
            assert!(
                !got_key,
                "{mode:?} received the API key before any login was possible"
            );
        }
    }
    for (mode, imposter) in &unpinned {
        let (status, detail) = status_of(&format!("other-{}", mode.name()));
        let received = imposter.received();
        lines.push(format!("unpinned {mode:?}: {status} ({detail})"));
        assert_ne!(
            status, "connected",
            "{mode:?} with another certificate: {detail}"
        );
        assert!(
            !contains(&received, secret()),
            "{mode:?} without the pin got the key"
        );
        assert!(
            !contains(&received, "auth.login_ex"),
            "{mode:?} without the pin got a login"
        );
        if !matches!(mode, Mode::NotTls | Mode::Silent) {
            assert_eq!(status, "pin_mismatch", "{mode:?}: {detail}");
        }
    }
    let all = text(&out);
    assert!(!all.contains(secret()), "the key was printed:\n{all}");
    assert_eq!(
        std::fs::read(&w.vault).expect("vault"),
        before,
        "status changed the keyring"
    );
    eprintln!(
        "status over {} imposters took {took:?}\n{}",
        reports.len(),
        lines.join("\n")
    );
}

#[test]
fn add_with_a_check_stores_nothing_from_an_imposter() {
    let w = World::with_keyring();
    let key_file = w.write("nas.key", &format!("{API_KEY}\n"));
    for mode in ALL_MODES.iter().filter(|m| **m != Mode::Genuine) {
        let imposter = Imposter::start(*mode);
        let url = imposter.url();
        let mut args = vec![
            "add",
            "nas",
            "--url",
            &url,
            "--username",
            "admin",
            "--api-key-file",
            key_file.to_str().expect("utf8"),
            "--tls-fingerprint",
            &imposter.fingerprint,
        ];
        args.extend_from_slice(&NET);
        let (out, _) = run_bounded(&w, &args);
        assert_code(&out, 1, &format!("add against {mode:?}"));
        assert!(
            !text(&out).contains(secret()),
            "{mode:?}: the key was printed"
        );
        if mode.fails_before_login() {
            assert!(
                !contains(&imposter.received(), secret()),
                "{mode:?} got the key"
            );
        }
        let list = w.run(&["list", "--json"]);
        let rows: Value = serde_json::from_slice(&list.stdout).expect("list json");
        assert_eq!(rows, json!([]), "{mode:?}: add stored the system");
    }
}

#[test]
fn add_sends_no_key_to_a_certificate_other_than_the_pinned_one() {
    let w = World::with_keyring();
    let key_file = w.write("nas.key", &format!("{API_KEY}\n"));
    let genuine = Imposter::start(Mode::Genuine);
    let imposter = Imposter::start(Mode::Genuine);
    let url = imposter.url();
    let mut args = vec![
        "add",
        "nas",
        "--url",
        &url,
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &genuine.fingerprint,
    ];
    args.extend_from_slice(&NET);
    let (out, _) = run_bounded(&w, &args);
    assert_code(&out, 1, "add against a server with another certificate");
    assert!(stderr(&out).contains("not the pinned"), "{}", text(&out));
    assert!(
        !contains(&imposter.received(), secret()),
        "the imposter got the key"
    );
    assert!(
        genuine.received().is_empty(),
        "nothing was meant for the genuine server"
    );
}

#[test]
fn trust_refuses_an_imposter_and_a_fingerprint_it_does_not_present() {
    let w = World::with_keyring();
    let genuine = Imposter::start(Mode::Genuine);
    add_system(&w, "nas", &genuine.url(), &genuine.fingerprint);
    let before = std::fs::read(&w.vault).expect("vault");

    // The system moved to an imposter's address: trust with the old, checked fingerprint.
    for mode in [Mode::NotTls, Mode::Silent, Mode::Genuine] {
        let imposter = Imposter::start(mode);
        let url = imposter.url();
        // Point the system at the imposter by adding a second entry with its URL.
        let name = format!("moved-{}", mode.name());
        add_system(&w, &name, &url, &genuine.fingerprint);
        let moved = std::fs::read(&w.vault).expect("vault");
        let mut args = vec!["trust", &name, "--tls-fingerprint", &genuine.fingerprint];
        args.extend_from_slice(&NET);
        let (out, _) = run_bounded(&w, &args);
        assert_code(&out, 1, &format!("trust against {mode:?}"));
        assert_eq!(
            std::fs::read(&w.vault).expect("vault"),
            moved,
            "{mode:?}: trust wrote"
        );
        assert!(
            !contains(&imposter.received(), secret()),
            "{mode:?} got the key"
        );
        assert_ok(&w.run(&["remove", &name]), "remove");
    }
    let after = w.run(&["unlock", "--offline", "--json"]);
    assert_ok(&after, "unlock after the trust attempts");
    assert_ne!(before.len(), 0);
}
