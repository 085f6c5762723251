//! `nasring status` over many simulated systems, some of which never answer.
//!
//! `cargo bench --bench status` (needs softhsm2 and opensc). For 10, 100 and 1,000 systems of
//! the TrueNAS test double on 127.0.0.1, each with 50 ms of latency before every reply and
//! 10 % of them accepting connections and never answering, it runs the real binary's
//! `status --json` once and reports wall time, peak memory (the child's maximum resident set)
//! and how the systems were reported. Prints a Markdown table.

#[path = "../tests/common/double.rs"]
#[allow(dead_code)]
mod double;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use double::{Double, ADMIN};

const PASSPHRASE: &str = "benchmark-otter-violin-97-quietly";
const LATENCY_MS: u64 = 50;
const SILENT_PERCENT: usize = 10;
const CONNECT_TIMEOUT: &str = "5";

fn nasring(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nasring"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("NASRING_VAULT", dir.join("keyring.nasring"))
        .env("NASRING_PASSPHRASE_FILE", dir.join("passphrase"))
        .env("SOFTHSM2_CONF", dir.join("hsm/softhsm2.conf"))
        .stdin(Stdio::null());
    cmd
}

fn run_ok(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A keyring on a fresh SoftHSM token, at the default key-derivation cost.
fn keyring(dir: &Path) {
    std::fs::write(dir.join("passphrase"), format!("{PASSPHRASE}\n")).expect("passphrase");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-test/softhsm-token");
    let uri = run_ok(
        Command::new(script)
            .arg(dir.join("hsm"))
            .arg("--no-key")
            .env("NASRING_PASSPHRASE_FILE", dir.join("passphrase")),
        "softhsm-token",
    );
    let uri = String::from_utf8(uri).expect("utf8");
    run_ok(
        nasring(dir).args([
            "init",
            "--name",
            "bench",
            "--token",
            uri.trim(),
            "--generate-key",
            "--no-recovery-code",
        ]),
        "nasring init",
    );
}

fn systems(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let mut s = double::system(&format!("nas{}", i + 1));
            s["latency_ms"] = json!(LATENCY_MS);
            if (i + 1) * SILENT_PERCENT / 100 != i * SILENT_PERCENT / 100 {
                s["mode"] = json!("blackhole");
            }
            s
        })
        .collect()
}

/// Puts a key for every system into the keyring in one `nasring import`.
fn import_all(dir: &Path, d: &Double, count: usize) {
    let mut lines = String::new();
    for i in 1..=count {
        let name = format!("nas{i}");
        let (_, key) = d.create_key(&name, "benchmark");
        let line = json!({
            "name": name, "url": d.url(&name), "username": ADMIN, "api_key": key,
            "tls_fingerprint": d.fingerprint(&name),
        });
        lines.push_str(&format!("{line}\n"));
    }
    let inventory = dir.join("inventory.jsonl");
    std::fs::write(&inventory, lines).expect("inventory");
    run_ok(nasring(dir).arg("import").arg(&inventory), "nasring import");
    std::fs::remove_file(inventory).expect("remove inventory");
}

struct Row {
    systems: usize,
    wall: Duration,
    peak_rss_kib: i64,
    connected: usize,
    silent: usize,
}

/// Runs `status` from a child of this benchmark whose only child is `nasring`, so that the
/// child's own RUSAGE_CHILDREN is the peak memory of that one command.
fn measure(dir: &Path, count: usize) -> Row {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("measuring child");
    let wall = start.elapsed();
    let (rss, json) = String::from_utf8(out.stdout)
        .expect("utf8")
        .split_once('\n')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("child output");
    let reports: Vec<Value> = serde_json::from_str(&json).expect("status --json");
    let connected = reports.iter().filter(|r| r["connected"] == true).count();
    let silent = reports
        .iter()
        .filter(|r| r["status"] == "unreachable" || r["status"] == "deadline")
        .count();
    Row {
        systems: count,
        wall,
        peak_rss_kib: rss.trim().parse().expect("max rss"),
        connected,
        silent,
    }
}

const CHILD_ENV: &str = "NASRING_BENCH_STATUS_DIR";

/// The measuring child: prints the max RSS of `nasring status` in KiB, then its output.
fn child(dir: &Path) {
    let out = nasring(dir)
        .args([
            "status",
            "--json",
            "--no-cards",
            "--connect-timeout",
            CONNECT_TIMEOUT,
        ])
        .output()
        .expect("nasring status");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("{}", usage.max_rss());
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let mut rows = Vec::new();
    for count in [10, 100, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        keyring(dir.path());
        let d = Double::start(systems(count));
        import_all(dir.path(), &d, count);
        rows.push(measure(dir.path(), count));
        eprintln!("status: {count} systems measured");
    }
    println!(
        "| systems | never answer | wall time | peak memory (max RSS) | connected | unreachable |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} s | {:.1} MiB | {} | {} |",
            r.systems,
            r.systems * SILENT_PERCENT / 100,
            r.wall.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.connected,
            r.silent
        );
    }
}
