//! More than one way in: backup tokens, the recovery code, passwd and rekey, run as the real
//! binary against SoftHSM tokens.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::Value;

const NEW_PASSPHRASE: &str = "lantern-basalt-orchid-62-slowly";

/// The keyring document (the file's second line).
fn document(vault: &Path) -> Value {
    let text = std::fs::read_to_string(vault).expect("vault");
    serde_json::from_str(text.lines().nth(1).expect("document line")).expect("json")
}

/// A token's public key as PEM SubjectPublicKeyInfo, read with pkcs11-tool as a user would.
fn export_public_key(w: &World, hsm: &SoftHsm, label: &str, name: &str) -> PathBuf {
    let der = w.path(&format!("{name}.der"));
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", hsm.conf())
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            label,
        ])
        .args([
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "nasring",
            "-o",
        ])
        .arg(&der)
        .output()
        .expect("run pkcs11-tool");
    assert!(
        out.status.success(),
        "pkcs11-tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key =
        p256::PublicKey::from_public_key_der(&std::fs::read(&der).expect("der")).expect("key");
    let pem = key.to_public_key_pem(Default::default()).expect("pem");
    let path = w.path(&format!("{name}.pem"));
    std::fs::write(&path, pem).expect("write pem");
    path
}

/// A SoftHSM configuration with no token at all: every enrolled token is absent.
fn no_tokens(w: &World) -> PathBuf {
    let dir = w.path("empty-hsm");
    std::fs::create_dir_all(dir.join("tokens")).expect("mkdir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            dir.display()
        ),
    )
    .expect("conf");
    conf
}

fn unlock_with(w: &World, conf: &Path, extra: &[&str]) -> std::process::Output {
    w.cmd()
        .env("SOFTHSM2_CONF", conf)
        .args(["unlock", "--offline"])
        .args(extra)
        .output()
        .expect("run")
}

fn unlocker_id(w: &World, label: &str) -> String {
    let doc = document(&w.vault);
    doc["unlockers"]
        .as_array()
        .expect("unlockers")
        .iter()
        .find(|u| {
            u["token"]["label"]
                .as_str()
                .is_some_and(|l| l.starts_with(label))
        })
        .and_then(|u| u["id"].as_str())
        .expect("unlocker")
        .to_string()
}

/// A backup token in its own SoftHSM folder (kept in a safe), enrolled from its public key.
fn enrol_backup(w: &World) -> SoftHsm {
    let safe = SoftHsm::new(&w.path("safe"), "safe", &w.passphrase_file, true);
    let pem = export_public_key(w, &safe, "safe", "safe");
    let out = w.run(&[
        "token",
        "add",
        "--public-key",
        pem.to_str().expect("utf8"),
        "--uri",
        &safe.uri,
        "--label",
        "safe",
    ]);
    assert_ok(&out, "token add --public-key");
    assert!(
        stdout(&out).contains("Enrolled token safe"),
        "{}",
        text(&out)
    );
    safe
}

#[test]
fn each_enrolled_token_opens_and_a_removed_one_does_not() {
    let w = World::with_keyring();
    // A second token plugged in beside the first (one SoftHSM folder shows both).
    let second = SoftHsm::new(&w.hsm.dir, "second", &w.passphrase_file, true);
    assert_ok(
        &w.run(&["token", "add", "--token", &second.uri]),
        "token add --token",
    );
    let safe = enrol_backup(&w);
    w.add_ok("nas1", API_KEY);

    assert_ok(
        &w.run(&["unlock", "--offline", "--use-token", &w.hsm.uri]),
        "first token",
    );
    assert_ok(
        &w.run(&["unlock", "--offline", "--use-token", &second.uri]),
        "second token",
    );
    assert_ok(
        &unlock_with(&w, &safe.conf(), &[]),
        "backup token, found by its URI",
    );

    let info: Value = serde_json::from_slice(&w.run(&["info", "--json"]).stdout).expect("json");
    let policy = info["policy"].as_str().expect("policy");
    assert!(policy.contains("any one of 3 tokens"), "{policy}");
    assert!(policy.contains("or the recovery code alone"), "{policy}");
    let list: Value = serde_json::from_slice(&w.run(&["token", "list", "--json"]).stdout)
        .expect("token list json");
    assert_eq!(list.as_array().expect("rows").len(), 4);

    let before = document(&w.vault);
    let removed = w.run(&["token", "remove", &unlocker_id(&w, "second")]);
    assert_ok(&removed, "token remove");
    let after = document(&w.vault);
    assert_ne!(
        before["masked_passphrase_key"], after["masked_passphrase_key"],
        "removing a token must renew the keys"
    );
    let refused = w.run(&["unlock", "--offline", "--use-token", &second.uri]);
    assert_code(&refused, 3, "removed token");
    assert!(
        stderr(&refused).contains("not enrolled"),
        "{}",
        text(&refused)
    );
    assert_ok(
        &w.run(&["unlock", "--offline", "--use-token", &w.hsm.uri]),
        "first token after",
    );
    assert_ok(&unlock_with(&w, &safe.conf(), &[]), "backup token after");

    assert_ok(
        &w.run(&["token", "remove", &unlocker_id(&w, "safe")]),
        "remove backup",
    );
    let last = w.run(&["token", "remove", &unlocker_id(&w, "nasring-test")]);
    assert_code(&last, 1, "removing the last token");
    assert!(stderr(&last).contains("without a token"), "{}", text(&last));
    assert_ok(&w.run(&["unlock", "--offline"]), "still opens");
}

#[test]
fn a_backup_enrolled_without_a_uri_is_used_by_naming_it() {
    let w = World::with_keyring();
    let safe = SoftHsm::new(&w.path("safe"), "safe", &w.passphrase_file, true);
    let pem = export_public_key(&w, &safe, "safe", "safe");
    let out = w.run(&["token", "add", "--public-key", pem.to_str().expect("utf8")]);
    assert_ok(&out, "token add --public-key without --uri");
    assert!(stdout(&out).contains("--use-token"), "{}", text(&out));
    assert_ok(
        &w.run(&["unlock", "--offline"]),
        "the first token is still found",
    );
    let named = w
        .cmd()
        .env("SOFTHSM2_CONF", safe.conf())
        .args(["unlock", "--offline", "--use-token", &safe.uri])
        .output()
        .expect("run");
    assert_ok(&named, "the backup, named with --use-token");
    let unnamed = unlock_with(&w, &safe.conf(), &[]);
    assert_code(&unnamed, 1, "the backup is not looked for without its URI");
    assert!(
        stderr(&unnamed).contains("--use-token"),
        "{}",
        text(&unnamed)
    );
}

#[test]
fn a_bad_public_key_file_is_refused() {
    let w = World::with_keyring();
    let junk = w.write(
        "junk.pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let out = w.run(&["token", "add", "--public-key", junk.to_str().expect("utf8")]);
    assert_code(&out, 2, "junk public key");
    assert!(
        stderr(&out).contains("holds no P-256 public key"),
        "{}",
        text(&out)
    );
    assert_eq!(
        document(&w.vault)["unlockers"].as_array().expect("u").len(),
        2
    );
}

#[test]
fn the_recovery_code_opens_alone_and_leads_to_a_new_token() {
    let w = World::with_keyring();
    w.add_ok("nas1", API_KEY);
    let code = w.recovery_code_file();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&code).expect("code file").permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the recovery code file must be private"
    );
    let none = no_tokens(&w);

    let without = unlock_with(&w, &none, &[]);
    assert_code(&without, 1, "no token present");
    assert!(
        stderr(&without).contains("recovery code"),
        "{}",
        text(&without)
    );

    let code_arg = code.to_str().expect("utf8");
    let opened = unlock_with(&w, &none, &["--recovery-code-file", code_arg]);
    assert_ok(&opened, "unlock with the recovery code");
    assert!(stdout(&opened).contains("nas1"), "{}", text(&opened));
    assert!(
        stderr(&opened).contains("nasring token add"),
        "{}",
        text(&opened)
    );

    let wrong = w.write("wrong-code", "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH\n");
    let refused = unlock_with(
        &w,
        &none,
        &["--recovery-code-file", wrong.to_str().expect("p")],
    );
    assert_code(&refused, 3, "wrong recovery code");
    assert!(
        stderr(&refused).contains("recovery code did not open"),
        "{}",
        text(&refused)
    );

    // Every token lost: a new one is enrolled with the recovery code.
    let fresh = SoftHsm::new(&w.path("fresh"), "fresh", &w.passphrase_file, true);
    let added = w
        .cmd()
        .env("SOFTHSM2_CONF", fresh.conf())
        .args([
            "token",
            "add",
            "--token",
            &fresh.uri,
            "--recovery-code-file",
            code_arg,
        ])
        .output()
        .expect("run");
    assert_ok(&added, "token add with the recovery code");
    assert!(stderr(&added).contains("keeps its PIN"), "{}", text(&added));
    assert_ok(&unlock_with(&w, &fresh.conf(), &[]), "the new token opens");
    let old_token = w
        .cmd()
        .env("NASRING_PIN_FILE", &w.passphrase_file)
        .args(["unlock", "--offline"])
        .output()
        .expect("run");
    assert_ok(&old_token, "the old token, with its PIN asked apart");

    // A new code replaces the old one.
    let code2 = w.path("code2");
    let regenerated = w
        .cmd()
        .env("NASRING_PIN_FILE", &w.passphrase_file)
        .args(["recovery", "regenerate", "--save-recovery-code"])
        .arg(&code2)
        .output()
        .expect("run");
    assert_ok(&regenerated, "recovery regenerate");
    let old = unlock_with(&w, &none, &["--recovery-code-file", code_arg]);
    assert_code(&old, 3, "the replaced code");
    assert_ok(
        &unlock_with(
            &w,
            &none,
            &["--recovery-code-file", code2.to_str().expect("p")],
        ),
        "the new code",
    );
}

#[test]
fn passwd_needs_only_the_present_token() {
    let w = World::with_keyring();
    let safe = enrol_backup(&w);
    w.add_ok("nas1", API_KEY);
    let new = w.write("new-passphrase", &format!("{NEW_PASSPHRASE}\n"));
    let out = w.run(&["passwd", "--new-passphrase-file", new.to_str().expect("p")]);
    assert_ok(&out, "passwd");
    assert!(stderr(&out).contains("Token safe"), "{}", text(&out));

    let with_new = |conf: &Path, pin: Option<&Path>| {
        let mut cmd = w.cmd();
        cmd.env("NASRING_PASSPHRASE_FILE", &new)
            .env("SOFTHSM2_CONF", conf);
        if let Some(pin) = pin {
            cmd.env("NASRING_PIN_FILE", pin);
        }
        cmd.args(["unlock", "--offline"]).output().expect("run")
    };
    assert_ok(
        &with_new(&w.hsm.conf(), None),
        "present token, new passphrase (its PIN too)",
    );
    let old = w.run(&["unlock", "--offline"]);
    assert_code(&old, 3, "old passphrase");
    assert_ok(
        &with_new(&safe.conf(), Some(&w.passphrase_file)),
        "absent token: new passphrase, its PIN still the old one",
    );
    let none = no_tokens(&w);
    let code = w.recovery_code_file();
    assert_ok(
        &unlock_with(
            &w,
            &none,
            &["--recovery-code-file", code.to_str().expect("p")],
        ),
        "recovery code after passwd",
    );
    let info: Value =
        serde_json::from_slice(&w.run(&["token", "list", "--json"]).stdout).expect("json");
    let pins: Vec<Value> = info
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["separate_pin"].clone())
        .collect();
    assert_eq!(pins, [Value::Bool(false), Value::Null, Value::Bool(true)]);

    // Forgotten passphrase: the recovery code sets a new one without the old.
    let third = w.write("third-passphrase", "quartz-meadow-falcon-18-gently\n");
    let reset = w
        .cmd()
        .env("SOFTHSM2_CONF", &none)
        .args(["passwd", "--recovery-code-file", code.to_str().expect("p")])
        .arg("--new-passphrase-file")
        .arg(&third)
        .output()
        .expect("run");
    assert_ok(&reset, "passwd with the recovery code");
    let with_third = w
        .cmd()
        .env("NASRING_PASSPHRASE_FILE", &third)
        .env("NASRING_PIN_FILE", &new)
        .args(["unlock", "--offline"])
        .output()
        .expect("run");
    assert_ok(
        &with_third,
        "third passphrase, the token's PIN (the second) asked apart",
    );
    let old = w
        .cmd()
        .env("NASRING_PASSPHRASE_FILE", &new)
        .env("NASRING_PIN_FILE", &new)
        .args(["unlock", "--offline"])
        .output()
        .expect("run");
    assert_code(&old, 3, "the second passphrase after it was replaced");
}

#[test]
fn rekey_renews_every_unlocker_and_keeps_every_key() {
    let w = World::with_keyring();
    let safe = enrol_backup(&w);
    w.add_ok("nas1", API_KEY);
    w.add_ok("nas2", "13-abcdefghijABCDEFGHIJ0123456789");
    let old_copy = w.path("old-copy.nasring");
    std::fs::copy(&w.vault, &old_copy).expect("copy");
    let before = document(&w.vault);

    let out = w.run(&["rekey", "--json"]);
    assert_ok(&out, "rekey");
    let after = document(&w.vault);
    assert_eq!(before["keyring_id"], after["keyring_id"]);
    assert_ne!(
        before["masked_passphrase_key"],
        after["masked_passphrase_key"]
    );
    for (b, a) in before["unlockers"]
        .as_array()
        .expect("u")
        .iter()
        .zip(after["unlockers"].as_array().expect("u"))
    {
        assert_eq!(b["id"], a["id"]);
        assert_ne!(
            b["ephemeral_public_key"], a["ephemeral_public_key"],
            "not re-wrapped"
        );
        assert_ne!(b["wrapped_master_key"], a["wrapped_master_key"]);
    }
    for (b, a) in before["systems"]
        .as_array()
        .expect("s")
        .iter()
        .zip(after["systems"].as_array().expect("s"))
    {
        assert_ne!(b["ciphertext"], a["ciphertext"], "not encrypted again");
    }

    assert_ok(&w.run(&["unlock", "--offline"]), "token after rekey");
    assert_ok(
        &unlock_with(&w, &safe.conf(), &[]),
        "absent backup token after rekey",
    );
    let none = no_tokens(&w);
    let code = w.recovery_code_file();
    let by_code = unlock_with(
        &w,
        &none,
        &["--recovery-code-file", code.to_str().expect("p")],
    );
    assert_ok(&by_code, "recovery code after rekey");
    assert!(stdout(&by_code).contains("nas2"), "{}", text(&by_code));
    // Documented: an old copy still opens, with what it held then.
    let old = w
        .cmd()
        .env("NASRING_VAULT", &old_copy)
        .args(["unlock", "--offline"])
        .output()
        .expect("run");
    assert_ok(&old, "the old copy still opens the old contents");
}

#[test]
fn init_shows_the_code_once_or_writes_it_only_where_asked() {
    let w = World::new();
    let out = w.run(&[
        "init",
        "--name",
        "lab",
        "--token",
        &w.hsm.uri,
        "--generate-key",
    ]);
    assert_code(&out, 2, "init without a terminal");
    assert!(
        stderr(&out).contains("--save-recovery-code"),
        "{}",
        text(&out)
    );
    assert!(!w.vault.exists(), "nothing may be created");

    w.init_ok(&[]);
    let code = std::fs::read_to_string(w.recovery_code_file()).expect("code");
    let code = code.trim();
    assert_eq!(code.len(), 39, "{code}");
    assert!(!std::fs::read_to_string(&w.vault)
        .expect("vault")
        .contains(code));

    let again = World::new();
    again.init_ok(&["--no-recovery-code"]);
    assert!(!again.recovery_code_file().exists());
    let info: Value = serde_json::from_slice(&again.run(&["info", "--json"]).stdout).expect("j");
    assert!(info["policy"]
        .as_str()
        .expect("p")
        .contains("there is no recovery code"));
}
