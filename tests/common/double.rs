//! The TrueNAS test double, run in the test process on its own runtime: real TLS listeners on
//! 127.0.0.1 that the `nasring` binary connects to, and the double's control API to steer it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use truenas_double::config::DoubleConfig;

pub const ADMIN: &str = "truenas_admin";
pub const ADMIN_PASSWORD: &str = "double-admin-Pw-30117";
/// A base32 TOTP secret for the two-factor account.
pub const OTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A running double. Dropping it stops every listener.
pub struct Double {
    ready: Value,
    _runtime: tokio::runtime::Runtime,
    _state: tempfile::TempDir,
}

/// One simulated system with a full admin whose password is [`ADMIN_PASSWORD`].
pub fn system(name: &str) -> Value {
    json!({
        "name": name,
        "hostname": format!("{name}.lab"),
        "users": [{"username": ADMIN, "password": ADMIN_PASSWORD, "roles": ["FULL_ADMIN"]}],
    })
}

/// A system whose admin has two-factor authentication on.
pub fn system_with_otp(name: &str) -> Value {
    let mut s = system(name);
    s["users"][0]["otp_secret"] = json!(OTP_SECRET);
    s
}

impl Double {
    /// Starts the systems described (see [`system`]); returns once all of them listen.
    pub fn start(systems: Vec<Value>) -> Double {
        let config = json!({ "systems": systems }).to_string();
        let config = DoubleConfig::parse(&config).expect("a valid double configuration");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the double");
        let state = tempfile::tempdir().expect("tempdir");
        let running = runtime
            .block_on(truenas_double::start(&config, state.path(), 0))
            .expect("the double starts");
        Double {
            ready: running.ready_line(),
            _runtime: runtime,
            _state: state,
        }
    }

    fn endpoint(&self, name: &str) -> &Value {
        self.ready["systems"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no system {name} in the double"))
    }

    /// `https://127.0.0.1:PORT` of the system.
    pub fn url(&self, name: &str) -> String {
        self.endpoint(name)["url"]
            .as_str()
            .expect("a TLS url")
            .to_string()
    }

    /// `http://127.0.0.1:PORT` of a system configured with `"plain": true`.
    pub fn plain_url(&self, name: &str) -> String {
        self.endpoint(name)["plain_url"]
            .as_str()
            .expect("a plain url")
            .to_string()
    }

    /// The certificate fingerprint the system presents now (`sha256:HEX`).
    pub fn fingerprint(&self, name: &str) -> String {
        self.control("GET", &format!("/systems/{name}"), None)["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    }

    /// Switches a system to `online`, `offline`, `blackhole`, `garbage`, … .
    pub fn set_mode(&self, name: &str, mode: &str) {
        self.control(
            "POST",
            &format!("/systems/{name}/mode"),
            Some(json!({ "mode": mode })),
        );
    }

    /// The API keys on a system, as the NAS's key list shows them (never the secrets).
    pub fn keys(&self, name: &str) -> Vec<Value> {
        self.control("GET", &format!("/systems/{name}/keys"), None)
            .as_array()
            .expect("a key list")
            .clone()
    }

    /// Creates a key out of band, as an admin would in the web UI; returns (id, key).
    pub fn create_key(&self, name: &str, key_name: &str) -> (u64, String) {
        let body = json!({ "username": ADMIN, "name": key_name });
        let made = self.control("POST", &format!("/systems/{name}/keys"), Some(body));
        (
            made["id"].as_u64().expect("key id"),
            made["key"].as_str().expect("key").to_string(),
        )
    }

    /// `revoke` or `expire` a key by id.
    pub fn key_action(&self, name: &str, id: u64, action: &str) {
        self.control(
            "POST",
            &format!("/systems/{name}/keys/{id}/{action}"),
            Some(json!({})),
        );
    }

    /// Gives the system a new self-signed certificate; returns its fingerprint.
    pub fn rotate_certificate(&self, name: &str) -> String {
        let made = self.control("POST", &format!("/systems/{name}/rotate-cert"), None);
        made["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    }

    /// The current one-time code of the two-factor account.
    pub fn otp_code(&self, name: &str) -> String {
        self.control("GET", &format!("/systems/{name}/otp/{ADMIN}"), None)["code"]
            .as_str()
            .expect("code")
            .to_string()
    }

    /// Every request the system logged (methods and outcomes, never secrets).
    pub fn log(&self, name: &str) -> Vec<Value> {
        self.control("GET", &format!("/systems/{name}/log"), None)
            .as_array()
            .expect("a log")
            .clone()
    }

    /// One call to the control API (plain HTTP on 127.0.0.1); panics unless it answers 200.
    pub fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let address = self.ready["control"].as_str().expect("control address");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(address).expect("connect to the control API");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to the control API");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("read the control API");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "control {method} {path}: {head}\n{body}"
        );
        serde_json::from_str(body).expect("JSON from the control API")
    }
}
