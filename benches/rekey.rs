//! Cost of renewing the keys (`rekey`; also `passwd`, `token remove`, `recovery regenerate`)
//! against the number of stored systems and enrolled tokens. No token is used: every
//! unlocker is wrapped again from its public key.
//!
//! `cargo bench --bench rekey`. Prints a Markdown table: the median of five runs of
//! `OpenKeyring::rekey` (new master key, every unlocker wrapped again, every API key
//! encrypted again) and of writing the file (atomic, fsynced).

use std::time::{Duration, Instant};

use nasring::secret::{ApiKey, Passphrase};
use nasring::vault::crypto::KdfCost;
use nasring::vault::{store, NewSystem, OpenKeyring, PassphraseChange, TokenEnrolment, Vault};
use p256::SecretKey;
use rand::rngs::OsRng;

const RUNS: usize = 5;

fn enrolment(n: usize) -> TokenEnrolment {
    TokenEnrolment {
        backend: "pkcs11".into(),
        uri: format!("pkcs11:token=bench{n}"),
        label: format!("bench {n}"),
        serial: None,
        public_key: SecretKey::random(&mut OsRng).public_key(),
        separate_pin: false,
        attestation: None,
    }
}

fn keyring(systems: usize, tokens: usize) -> OpenKeyring {
    let passphrase = Passphrase::new("benchmark-otter-violin-97-quietly".into());
    let mut k =
        OpenKeyring::create("bench", &passphrase, KdfCost::MINIMUM, &enrolment(0)).expect("create");
    for n in 1..tokens {
        k.enrol_token(&enrolment(n)).expect("enrol");
    }
    let _code = k.new_recovery_code();
    for i in 0..systems {
        let new = NewSystem {
            name: format!("nas{i}"),
            url: format!("https://10.0.{}.{}:443", i / 250, i % 250 + 1),
            username: "admin".into(),
            tls: format!("sha256:{}", "ab".repeat(32)),
            api_key_id: Some(i as u64 + 1),
            api_key_name: Some(format!("nasring bench {i}")),
            api_key_expires_at: None,
        };
        let key = ApiKey::new(format!("{}-{}", i + 1, "k".repeat(64)));
        k.add_system(new, &key).expect("add");
    }
    k
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::at(dir.path().join("bench.nasring"));
    println!("| systems | tokens | rekey (median of {RUNS}) | save (median of {RUNS}) |");
    println!("|---:|---:|---:|---:|");
    for (systems, tokens) in [(1, 1), (100, 3), (1000, 3), (1000, 10)] {
        let mut k = keyring(systems, tokens);
        let lock = store::lock(vault.path(), true).expect("lock");
        let (mut rekeys, mut saves) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let start = Instant::now();
            k.rekey(PassphraseChange::Keep).expect("rekey");
            rekeys.push(start.elapsed());
            let start = Instant::now();
            k.save(&vault, &lock).expect("save");
            saves.push(start.elapsed());
        }
        println!(
            "| {systems} | {tokens} | {:.1} ms | {:.1} ms |",
            median(rekeys).as_secs_f64() * 1000.0,
            median(saves).as_secs_f64() * 1000.0
        );
    }
}
