//! Unlock on the virtual PIV card: time and number of card commands.
//!
//! `cargo bench --bench piv_unlock` (needs pcscd, vsmartcard-vpcd, opensc and libclang-dev;
//! starts the card with `hsm-test/virtual-piv restart --cards 1`). Counts the commands one
//! unlock sends to the card (as the command line does it: find the card by its key, read the
//! PIN's tries, verify the PIN, one key agreement), times each phase, and times the real
//! binary's `unlock --offline`. Prints a Markdown table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nasring::secret::{Passphrase, Pin};
use nasring::token::piv::{self, PivUri};
use nasring::token::{Find, KeygenOptions, Token};
use nasring::vault::crypto::KdfCost;
use nasring::vault::{OpenKeyring, Sealed, TokenEnrolment, Vault};

const PASSPHRASE: &str = "benchmark-otter-violin-97-quietly";
const PIN: &str = "123456";
const RUNS: usize = 20;

fn start_card() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("hsm-test/virtual-piv"))
        .args(["restart", "--cards", "1"])
        .output()
        .expect("run hsm-test/virtual-piv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find(key: Option<&p256::PublicKey>) -> piv::PivToken {
    let mut quiet = |_: &str| {};
    let mut want = Find {
        key,
        wait: Duration::ZERO,
        notify: &mut quiet,
    };
    piv::find(&PivUri::default(), &mut want).expect("find the card")
}

fn make_keyring(dir: &Path) -> (Vault, p256::PublicKey) {
    let mut token = find(None);
    token.login(&Pin::new(PIN.into())).expect("login");
    let public_key = token
        .generate_key(&KeygenOptions::default())
        .expect("keygen");
    let info = token.info();
    drop(token);
    let enrolment = TokenEnrolment {
        backend: "piv".into(),
        uri: info.uri,
        label: info.label,
        serial: info.serial,
        public_key,
        separate_pin: true,
        attestation: None,
    };
    let vault = Vault::at(dir.join("piv.nasring"));
    let lock = vault.lock_for_create().expect("lock");
    let passphrase = Passphrase::new(PASSPHRASE.into());
    let mut keyring =
        OpenKeyring::create("bench", &passphrase, KdfCost::DEFAULT, &enrolment).expect("create");
    keyring.save(&vault, &lock).expect("save");
    std::fs::write(dir.join("passphrase"), PASSPHRASE).expect("passphrase");
    std::fs::write(dir.join("pin"), PIN).expect("pin");
    (vault, public_key)
}

struct Run {
    commands: u32,
    find: Duration,
    pin_status: Duration,
    open: Duration,
    cli: Duration,
}

fn run_once(vault: &Vault, key: &p256::PublicKey) -> Run {
    let passphrase = Passphrase::new(PASSPHRASE.into());
    let pin = Pin::new(PIN.into());
    let start = Instant::now();
    let mut token = find(Some(key));
    let found = start.elapsed();
    let start = Instant::now();
    token.pin_status().expect("pin status");
    let pin_status = start.elapsed();
    let sealed = vault.load().expect("load");
    let start = Instant::now();
    Sealed::open(sealed, &mut token, &passphrase, Some(&pin)).expect("open");
    let open = start.elapsed();
    let commands = token.card_commands();
    drop(token);
    Run {
        commands,
        find: found,
        pin_status,
        open,
        cli: cli_unlock(vault),
    }
}

fn cli_unlock(vault: &Vault) -> Duration {
    let dir = vault.path().parent().expect("dir");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_nasring"))
        .args(["unlock", "--offline", "--json"])
        .env("NASRING_VAULT", vault.path())
        .env("NASRING_PASSPHRASE_FILE", dir.join("passphrase"))
        .env("NASRING_PIN_FILE", dir.join("pin"))
        .output()
        .expect("run nasring");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    start_card();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (vault, key) = make_keyring(tmp.path());
    let runs: Vec<Run> = (0..RUNS).map(|_| run_once(&vault, &key)).collect();
    let argon = {
        let salt = [0u8; 16];
        let start = Instant::now();
        nasring::vault::crypto::stretch_passphrase(
            &Passphrase::new(PASSPHRASE.into()),
            &salt,
            KdfCost::DEFAULT,
        )
        .expect("argon2");
        start.elapsed()
    };
    let col = |f: fn(&Run) -> Duration| ms(median(runs.iter().map(f).collect()));
    println!("| card commands | find the card by its key ms | read PIN tries ms | verify PIN + Argon2id + key agreement + MAC ms | of which Argon2id ms | `nasring unlock --offline` ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        runs[0].commands,
        col(|r| r.find),
        col(|r| r.pin_status),
        col(|r| r.open),
        ms(argon),
        col(|r| r.cli)
    );
    println!(
        "\nMedian of {RUNS} runs; Argon2id at the default cost (64 MiB, 3 passes, 1 lane), \
         timed once on its own."
    );
}
