//! Against a real YubiKey, only when `NASRING_TEST_YUBIKEY_SERIAL` names one.
//!
//! The key is made in a retired key-management slot (`NASRING_TEST_YUBIKEY_SLOT`, default
//! 95), which is overwritten; slot 9D is left alone. The PIN is read from the file named by
//! `NASRING_TEST_YUBIKEY_PIN_FILE`. Never run against a card whose slot 95 matters to you.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

struct YubiKey {
    tmp: tempfile::TempDir,
    uri: String,
    pin_file: PathBuf,
    serial: String,
}

/// `None` (and a line saying so) unless a YubiKey was named for these tests.
fn yubikey() -> Option<YubiKey> {
    let Ok(serial) = std::env::var("NASRING_TEST_YUBIKEY_SERIAL") else {
        eprintln!("NASRING_TEST_YUBIKEY_SERIAL is not set: no real YubiKey test runs");
        return None;
    };
    let pin_file = std::env::var_os("NASRING_TEST_YUBIKEY_PIN_FILE")
        .map(PathBuf::from)
        .expect("set NASRING_TEST_YUBIKEY_PIN_FILE to a file holding the YubiKey's PIN");
    let slot = std::env::var("NASRING_TEST_YUBIKEY_SLOT").unwrap_or_else(|_| "95".into());
    Some(YubiKey {
        tmp: tempfile::tempdir().expect("tempdir"),
        uri: format!("piv:serial={serial};slot={slot}"),
        pin_file,
        serial,
    })
}

impl YubiKey {
    fn run(&self, args: &[&str]) -> Output {
        let pass = self.tmp.path().join("passphrase");
        std::fs::write(&pass, PASSPHRASE).expect("passphrase");
        Command::new(env!("CARGO_BIN_EXE_nasring"))
            .args(args)
            .env("NASRING_VAULT", self.tmp.path().join("keyring.nasring"))
            .env("NASRING_PASSPHRASE_FILE", &pass)
            .env("NASRING_PIN_FILE", &self.pin_file)
            .stdin(Stdio::null())
            .output()
            .expect("run nasring")
    }
}

#[test]
fn keygen_init_attestation_and_unlock_on_a_real_yubikey() {
    let Some(yk) = yubikey() else { return };
    let keygen = yk.run(&[
        "--json",
        "token",
        "keygen",
        "--token",
        &yk.uri,
        "--overwrite",
        "--keep-default-management-key",
    ]);
    assert_ok(&keygen, "keygen");
    let made: serde_json::Value = serde_json::from_slice(&keygen.stdout).expect("json");
    assert!(made["token"].as_str().expect("token").contains(&yk.serial));

    let init = yk.run(&[
        "init",
        "--no-recovery-code",
        "--name",
        "yubikey",
        "--token",
        &yk.uri,
        "--kdf-memory-mib",
        "8",
    ]);
    assert_ok(&init, "init");
    assert!(
        stderr(&init).contains("Key attestation: made on the card"),
        "{}",
        text(&init)
    );

    let info = yk.run(&["--json", "info"]);
    let view: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    let attestation = view["unlockers"][0]["attestation"]
        .as_str()
        .expect("attested");
    assert!(attestation.contains("made on the card"), "{attestation}");
    assert_eq!(view["unlockers"][0]["fingerprint"], made["fingerprint"]);

    assert_ok(&yk.run(&["unlock", "--offline"]), "unlock");

    // A key already there is used as it is: its public key comes from the slot's metadata.
    let keep = yk.run(&["token", "keygen", "--token", &yk.uri]);
    assert_code(&keep, 1, "keygen over the key");
    assert!(
        stderr(&keep).contains("already holds key"),
        "{}",
        text(&keep)
    );
}
