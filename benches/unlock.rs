//! Unlock cost against the number of stored systems, on a real SoftHSM token.
//!
//! `cargo bench --bench unlock` (needs softhsm2 and opensc). For 1, 100 and 1,000 systems it
//! reports the token operations of one unlock and where the time goes: Argon2id, the token
//! (login and key agreement), the whole-file MAC and the decryption of every API key, plus
//! the wall time of the real binary's `unlock --offline`. Prints a Markdown table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nasring::secret::{ApiKey, Passphrase, Pin, SharedSecret};
use nasring::token::pkcs11::{Pkcs11Token, Pkcs11Uri};
use nasring::token::{KeygenOptions, PinStatus, Token, TokenError, TokenInfo};
use nasring::vault::crypto::{self, KdfCost};
use nasring::vault::{NewSystem, OpenKeyring, Sealed, TokenEnrolment, Vault};
use p256::PublicKey;

const PASSPHRASE: &str = "benchmark-otter-violin-97-quietly";
const RUNS: u32 = 5;

/// Counts and times what the vault asks of the token.
struct Counting {
    inner: Box<dyn Token>,
    logins: u32,
    agreements: u32,
    time: Duration,
}

impl Counting {
    fn timed<T>(&mut self, f: impl FnOnce(&mut dyn Token) -> T) -> T {
        let start = Instant::now();
        let out = f(self.inner.as_mut());
        self.time += start.elapsed();
        out
    }
}

impl Token for Counting {
    fn info(&self) -> TokenInfo {
        self.inner.info()
    }
    fn public_key(&mut self) -> Result<PublicKey, TokenError> {
        self.timed(|t| t.public_key())
    }
    fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
        self.timed(|t| t.pin_status())
    }
    fn login(&mut self, pin: &Pin) -> Result<(), TokenError> {
        self.logins += 1;
        self.timed(|t| t.login(pin))
    }
    fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        self.agreements += 1;
        self.timed(|t| t.agree(peer))
    }
    fn generate_key(&mut self, options: &KeygenOptions) -> Result<PublicKey, TokenError> {
        self.inner.generate_key(options)
    }
}

fn softhsm(dir: &Path) -> String {
    let pass = dir.join("passphrase");
    std::fs::write(&pass, PASSPHRASE).expect("write passphrase");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("hsm-test/softhsm-token"))
        .arg(dir.join("hsm"))
        .arg("--no-key")
        .env("NASRING_PIN_FILE", &pass)
        .output()
        .expect("run hsm-test/softhsm-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::env::set_var("SOFTHSM2_CONF", dir.join("hsm/softhsm2.conf"));
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

fn make_keyring(dir: &Path, uri: &str, systems: usize) -> Vault {
    let parsed = Pkcs11Uri::parse(uri).expect("uri");
    let mut token = Pkcs11Token::open(&parsed).expect("open token");
    token.login(&Pin::new(PASSPHRASE.into())).expect("login");
    let public_key = match token.public_key() {
        Ok(k) => k,
        Err(_) => token
            .generate_key(&KeygenOptions::default())
            .expect("keygen"),
    };
    let enrolment = TokenEnrolment {
        backend: "pkcs11".into(),
        uri: uri.into(),
        label: "bench".into(),
        serial: None,
        public_key,
        separate_pin: false,
        attestation: None,
    };
    let vault = Vault::at(dir.join(format!("k{systems}.nasring")));
    let lock = vault.lock_for_create().expect("lock");
    let passphrase = Passphrase::new(PASSPHRASE.into());
    let mut keyring =
        OpenKeyring::create("bench", &passphrase, KdfCost::DEFAULT, &enrolment).expect("create");
    for i in 0..systems {
        let new = NewSystem {
            name: format!("nas{i:04}"),
            url: format!("https://127.0.0.1:{}", 10_000 + i),
            username: "admin".into(),
            tls: format!("sha256:{}", "ab".repeat(32)),
            api_key_id: Some(i as u64 + 1),
            api_key_name: None,
            api_key_expires_at: None,
        };
        let key = ApiKey::new(format!("{}-{}", i + 1, "k".repeat(64)));
        keyring.add_system(new, &key).expect("add");
    }
    keyring.save(&vault, &lock).expect("save");
    vault
}

struct Row {
    systems: usize,
    file_kib: u64,
    logins: u32,
    agreements: u32,
    argon: Duration,
    token: Duration,
    open: Duration,
    decrypt: Duration,
    cli: Duration,
}

fn measure(vault: &Vault, uri: &str, systems: usize) -> Row {
    let passphrase = Passphrase::new(PASSPHRASE.into());
    let mut best: Option<Row> = None;
    for _ in 0..RUNS {
        let token = Pkcs11Token::open(&Pkcs11Uri::parse(uri).expect("uri")).expect("open");
        let mut counting = Counting {
            inner: Box::new(token),
            logins: 0,
            agreements: 0,
            time: Duration::ZERO,
        };
        let sealed = vault.load().expect("load");
        let salt =
            nasring::vault::format::unb64("salt", &sealed.document().kdf.salt).expect("salt");
        let start = Instant::now();
        crypto::stretch_passphrase(&passphrase, &salt, KdfCost::DEFAULT).expect("argon2");
        let argon = start.elapsed();

        let start = Instant::now();
        let keyring = Sealed::open(sealed, &mut counting, &passphrase, None).expect("open");
        let open = start.elapsed();
        let start = Instant::now();
        for s in keyring.systems() {
            keyring.api_key(&s.name).expect("decrypt");
        }
        let decrypt = start.elapsed();
        let row = Row {
            systems,
            file_kib: std::fs::metadata(vault.path())
                .map(|m| m.len() / 1024)
                .unwrap_or(0),
            logins: counting.logins,
            agreements: counting.agreements,
            argon,
            token: counting.time,
            open,
            decrypt,
            cli: cli_unlock(vault),
        };
        if best
            .as_ref()
            .is_none_or(|b| row.open + row.decrypt < b.open + b.decrypt)
        {
            best = Some(row);
        }
    }
    best.expect("at least one run")
}

fn cli_unlock(vault: &Vault) -> Duration {
    let dir = vault.path().parent().expect("dir");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_nasring"))
        .args(["unlock", "--offline", "--json"])
        .env("NASRING_VAULT", vault.path())
        .env("NASRING_PASSPHRASE_FILE", dir.join("passphrase"))
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

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let uri = softhsm(tmp.path());
    println!("| systems | file KiB | token logins | key agreements | Argon2id ms | token ms | open (Argon2id + token + MAC) ms | decrypt all keys ms | `nasring unlock --offline` ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for systems in [1, 100, 1000] {
        let vault = make_keyring(tmp.path(), &uri, systems);
        let r = measure(&vault, &uri, systems);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.systems,
            r.file_kib,
            r.logins,
            r.agreements,
            ms(r.argon),
            ms(r.token),
            ms(r.open),
            ms(r.decrypt),
            ms(r.cli)
        );
    }
    println!(
        "\nBest of {RUNS} runs each; Argon2id at the default cost (64 MiB, 3 passes, 1 lane)."
    );
}
