//! The TrueNAS test double, run in this test process on 127.0.0.1.

use std::sync::Arc;

use truenas_double::config::{self, GenerateOptions};
use truenas_double::system::{lock, now_ms, System};

pub const ADMIN: &str = "truenas_admin";

/// Simulated systems `nas1` .. `nasN`, each with one full admin, served until dropped.
pub struct Double {
    _runtime: tokio::runtime::Runtime,
    _state: tempfile::TempDir,
    running: truenas_double::Running,
}

impl Double {
    pub fn start(count: usize) -> Double {
        let state = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let options = GenerateOptions {
            count,
            latency_ms: 0,
            blackhole_percent: 0,
            password: None,
            version: "25.10.1".into(),
            admin_user: ADMIN.into(),
        };
        let config = config::generate(&options);
        let running = runtime
            .block_on(truenas_double::start(&config, state.path(), 0))
            .expect("start the double");
        Double {
            _runtime: runtime,
            _state: state,
            running,
        }
    }

    fn system(&self, name: &str) -> &Arc<System> {
        self.running.registry.get(name).expect("a simulated system")
    }

    pub fn url(&self, name: &str) -> String {
        let (tls_port, _) = self.system(name).ports();
        format!("https://127.0.0.1:{tls_port}")
    }

    pub fn fingerprint(&self, name: &str) -> String {
        self.system(name).identity().fingerprint.clone()
    }

    pub fn hostname(&self, name: &str) -> String {
        self.system(name).hostname.clone()
    }

    /// A new API key of the admin, made as an administrator would in the web interface.
    pub fn issue_key(&self, name: &str) -> String {
        let system = self.system(name);
        let issued =
            lock(&system.keys).insert(&format!("test-{}", now_ms()), ADMIN, None, now_ms());
        issued.secret.as_str().to_string()
    }
}
