//! The TrueNAS double, run inside a test process on its own runtime, and the steps to store
//! its systems in a test keyring.

use std::sync::Arc;

use truenas_double::config::{GenerateOptions, Mode};
use truenas_double::system::{lock, now_ms, ModeState, System};

use super::{assert_ok, World};

pub const USER: &str = "admin";

/// The TrueNAS double, running in this test process on its own runtime.
pub struct Nas {
    runtime: tokio::runtime::Runtime,
    running: truenas_double::Running,
    _state: tempfile::TempDir,
}

impl Nas {
    pub fn start(count: usize) -> Nas {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = truenas_double::config::generate(&GenerateOptions {
            count,
            latency_ms: 0,
            blackhole_percent: 0,
            password: None,
            version: "25.10.1".into(),
            admin_user: USER.into(),
        });
        let state = tempfile::tempdir().expect("state dir");
        let running = runtime
            .block_on(truenas_double::start(&config, state.path(), 0))
            .expect("start the double");
        Nas {
            runtime,
            running,
            _state: state,
        }
    }

    pub fn system(&self, name: &str) -> &Arc<System> {
        self.running.registry.get(name).expect("system")
    }

    pub fn endpoint(&self, name: &str, field: &str) -> String {
        truenas_double::control::endpoints(self.system(name))[field]
            .as_str()
            .expect(field)
            .to_string()
    }

    /// A key made as an administrator would in the web interface.
    pub fn issue_key(&self, name: &str) -> String {
        let issued = lock(&self.system(name).keys).insert("made by hand", USER, None, now_ms());
        issued.secret.as_str().to_string()
    }

    /// `(id, name)` of every key on the system.
    pub fn keys(&self, name: &str) -> Vec<(u64, String)> {
        let keys = lock(&self.system(name).keys);
        let mut all: Vec<(u64, String)> = keys.all().map(|k| (k.id, k.name.clone())).collect();
        all.sort();
        all
    }

    pub fn set_offline(&self, name: &str) {
        let system = self.system(name).clone();
        let state = ModeState {
            mode: Mode::Offline,
            latency_ms: 0,
        };
        self.runtime
            .block_on(truenas_double::net::set_mode(&system, state))
            .expect("offline");
    }
}

impl Nas {
    /// Adds system `name` to the world's keyring with a key made on it, checked against it.
    pub fn add_to(&self, w: &World, name: &str) {
        let key = self.issue_key(name);
        let key_file = w.write(&format!("{name}.key"), &format!("{key}\n"));
        let out = w.run(&[
            "add",
            name,
            "--url",
            &self.endpoint(name, "url"),
            "--username",
            USER,
            "--api-key-file",
            key_file.to_str().expect("utf8"),
            "--tls-fingerprint",
            &self.endpoint(name, "fingerprint"),
        ]);
        assert_ok(&out, "add");
    }
}
