//! `nasring get` through the agent against `nasring get` that unlocks by itself, on a real
//! SoftHSM token with the default Argon2id cost.
//!
//! `cargo bench --bench agent` (needs softhsm2 and opensc). Runs the real binary: several
//! fresh unlocks, then `unlock` and many gets through the agent; prints the medians and
//! their ratio as a Markdown table.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "benchmark-otter-violin-97-quietly";
const API_KEY: &str = "12-Zq7XvB1mK9pLr3TtY6uW2nE5sD8fG0hJ4kA7cV1bN3mQ5wE9rT2yU6iO8pL0aS4d";
const FRESH_RUNS: usize = 5;
const AGENT_RUNS: usize = 50;

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn nasring(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_nasring"))
            .args(args)
            .env("NASRING_VAULT", self.path("keyring.nasring"))
            .env("NASRING_PASSPHRASE_FILE", self.path("passphrase"))
            .env("SOFTHSM2_CONF", self.path("hsm/softhsm2.conf"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .output()
            .expect("run nasring");
        assert!(
            out.status.success(),
            "nasring {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn timed_get(&self) -> Duration {
        let start = Instant::now();
        let out = self.nasring(&["get", "nas1"]);
        let elapsed = start.elapsed();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), API_KEY);
        elapsed
    }
}

fn setup() -> Bench {
    let bench = Bench {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    std::fs::write(bench.path("passphrase"), PASSPHRASE).expect("passphrase");
    std::fs::write(bench.path("key"), API_KEY).expect("key");
    std::fs::create_dir(bench.path("run")).expect("run");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(bench.path("run"), private).expect("chmod");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = Command::new(root.join("hsm-test/softhsm-token"))
        .arg(bench.path("hsm"))
        .arg("--no-key")
        .env("NASRING_PIN_FILE", bench.path("passphrase"))
        .output()
        .expect("run hsm-test/softhsm-token");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let uri = String::from_utf8(made.stdout).expect("utf8");
    bench.nasring(&[
        "init",
        "--name",
        "bench",
        "--token",
        uri.trim(),
        "--generate-key",
        "--no-recovery-code",
    ]);
    let fp = format!("sha256:{}", "ab".repeat(32));
    let key_file = bench.path("key");
    bench.nasring(&[
        "add",
        "nas1",
        "--url",
        "https://127.0.0.1:9",
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &fp,
        "--no-check",
    ]);
    bench
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let bench = setup();
    let fresh = median((0..FRESH_RUNS).map(|_| bench.timed_get()).collect());
    bench.nasring(&["unlock", "--offline"]);
    let through_agent = median((0..AGENT_RUNS).map(|_| bench.timed_get()).collect());
    bench.nasring(&["lock"]);
    println!("| `nasring get` | median | runs |");
    println!("|---|---|---|");
    println!(
        "| fresh unlock (Argon2id 64 MiB, 3 passes; SoftHSM) | {} | {FRESH_RUNS} |",
        ms(fresh)
    );
    println!(
        "| through the agent | {} | {AGENT_RUNS} |",
        ms(through_agent)
    );
    println!(
        "\nThrough the agent, `get` takes 1/{:.0} of the time of a fresh unlock.",
        fresh.as_secs_f64() / through_agent.as_secs_f64()
    );
}
