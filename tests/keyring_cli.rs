//! The keyring commands, run as the real binary against a real SoftHSM token.

mod common;

use common::*;

#[test]
fn round_trip_init_add_list_unlock_remove_reset() {
    let w = World::with_keyring();
    w.add_ok("nas1", API_KEY);
    w.add_ok("nas2", "13-abcdefghijABCDEFGHIJ0123456789");

    let list = w.run(&["list", "--json"]);
    assert_ok(&list, "list");
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list json");
    let names: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["nas1", "nas2"]);
    assert_eq!(rows[0]["key_stored"], true);
    assert_eq!(rows[0]["connected"], serde_json::Value::Null);
    assert!(rows[0]["detail"].is_string());

    let unlock = w.run(&["unlock", "--offline"]);
    assert_ok(&unlock, "unlock");
    let table = stdout(&unlock);
    assert!(table.starts_with("TrueNAS"), "{table}");
    assert!(
        table.contains("nas1") && table.contains("stored"),
        "{table}"
    );

    assert_ok(&w.run(&["remove", "nas1"]), "remove");
    let list = stdout(&w.run(&["list"]));
    assert!(!list.contains("nas1") && list.contains("nas2"), "{list}");

    let reset = w.run(&["reset", "--yes"]);
    assert_ok(&reset, "reset");
    assert!(!w.vault.exists(), "reset left the keyring file");
    let after = w.run(&["list"]);
    assert_code(&after, 1, "list after reset");
    assert!(stderr(&after).contains("nasring init"), "{}", text(&after));

    // Afterwards init starts afresh, with the key already on the token.
    let again = w.run(&[
        "init",
        "--no-recovery-code",
        "--name",
        "lab2",
        "--token",
        &w.hsm.uri,
        "--kdf-memory-mib",
        "8",
    ]);
    assert_ok(&again, "init after reset");
    assert_ok(
        &w.run(&["unlock", "--offline"]),
        "unlock of the new keyring",
    );
}

#[test]
fn every_command_but_init_says_there_is_no_keyring() {
    let w = World::new();
    for args in [
        vec!["list"],
        vec!["info"],
        vec!["unlock"],
        vec!["remove", "x"],
        vec!["reset", "--yes"],
        vec!["import", "/dev/null"],
    ] {
        let out = w.run(&args);
        assert_code(&out, 1, &args.join(" "));
        let err = stderr(&out);
        assert!(
            err.contains("there is no keyring") && err.contains("nasring init"),
            "{err}"
        );
    }
}

#[test]
fn init_refuses_a_second_keyring_and_bad_names() {
    let w = World::with_keyring();
    let before = std::fs::read(&w.vault).expect("vault");
    let out = w.run(&["init", "--name", "other", "--token", &w.hsm.uri]);
    assert_code(&out, 1, "second init");
    assert!(stderr(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(std::fs::read(&w.vault).expect("vault"), before);

    let fresh = World::new();
    let out = fresh.run(&["init", "--name", "", "--token", &fresh.hsm.uri]);
    assert_code(&out, 1, "empty name");
    assert!(
        stderr(&out).contains("keyring name is not valid"),
        "{}",
        text(&out)
    );
}

#[test]
fn weak_passphrase_is_refused_unless_accepted() {
    let w = World::new();
    let weak = w.write("weak", "password1\n");
    let out = w
        .cmd()
        .env("NASRING_PASSPHRASE_FILE", &weak)
        .args([
            "init",
            "--no-recovery-code",
            "--name",
            "lab",
            "--token",
            &w.hsm.uri,
            "--generate-key",
        ])
        .output()
        .expect("run");
    assert_code(&out, 2, "weak passphrase");
    assert!(stderr(&out).contains("too easy to guess"), "{}", text(&out));
    assert!(!stderr(&out).contains("password1"));
    assert!(!w.vault.exists());
}

#[test]
fn wrong_passphrase_is_refused_and_nothing_is_written() {
    let w = World::with_keyring();
    w.add_ok("nas1", API_KEY);
    let before = std::fs::read(&w.vault).expect("vault");
    let wrong = w.write("wrong", "not-the-passphrase-at-all-42\n");
    for args in [vec!["unlock"], vec!["remove", "nas1"]] {
        let out = w
            .cmd()
            .env("NASRING_PASSPHRASE_FILE", &wrong)
            .args(&args)
            .output()
            .expect("run");
        assert_code(&out, 3, "wrong passphrase");
    }
    assert_eq!(std::fs::read(&w.vault).expect("vault"), before);
}

#[test]
fn a_different_token_or_key_is_refused() {
    let w = World::with_keyring();
    // Another token with the same label but its own key, in another SoftHSM folder.
    let twin = SoftHsm::new(&w.path("twin"), "nasring-test", &w.passphrase_file, false);
    let out = w
        .cmd()
        .env("SOFTHSM2_CONF", twin.conf())
        .args([
            "init",
            "--no-recovery-code",
            "--name",
            "twin",
            "--token",
            &twin.uri,
            "--generate-key",
        ])
        .env("NASRING_VAULT", w.path("twin.nasring"))
        .args(["--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .output()
        .expect("init twin");
    assert_ok(&out, "init twin");

    let out = w
        .cmd()
        .env("SOFTHSM2_CONF", twin.conf())
        .arg("unlock")
        .output()
        .expect("run");
    assert_code(&out, 3, "unlock with the twin token");
    assert!(stderr(&out).contains("not enrolled"), "{}", text(&out));

    let out = w.run(&["--use-token", "pkcs11:token=no-such-token", "unlock"]);
    assert_code(&out, 1, "a token that is not present");
    assert!(stderr(&out).contains("no token matching"), "{}", text(&out));
}

#[test]
fn an_absent_token_gives_a_clear_error() {
    let w = World::with_keyring();
    let empty = w.path("empty");
    std::fs::create_dir_all(empty.join("tokens")).expect("mkdir");
    let conf = empty.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            empty.join("tokens").display()
        ),
    )
    .expect("conf");
    let out = w
        .cmd()
        .env("SOFTHSM2_CONF", &conf)
        .arg("unlock")
        .output()
        .expect("run");
    assert_code(&out, 1, "token absent");
    let err = stderr(&out);
    assert!(err.contains("Insert one of the keyring's tokens"), "{err}");

    let out = w
        .cmd()
        .env("SOFTHSM2_CONF", w.path("missing.conf"))
        .arg("unlock")
        .output()
        .expect("run");
    assert_code(&out, 1, "SoftHSM misconfigured");
    assert!(stderr(&out).contains("SOFTHSM2_CONF"), "{}", text(&out));
}

#[test]
fn separate_pin_needs_both_right() {
    let w = World::new();
    let pin = w.write("pin", "8642-token-pin\n");
    let hsm = SoftHsm::new(&w.path("pinhsm"), "pin-token", &pin, false);
    let run = |pass: &std::path::Path, pin: &std::path::Path, args: &[&str]| {
        w.cmd()
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("NASRING_PASSPHRASE_FILE", pass)
            .env("NASRING_PIN_FILE", pin)
            .args(args)
            .output()
            .expect("run")
    };
    let init = run(
        &w.passphrase_file,
        &pin,
        &[
            "init",
            "--no-recovery-code",
            "--name",
            "lab",
            "--token",
            &hsm.uri,
            "--generate-key",
            "--separate-pin",
        ],
    );
    assert_ok(&init, "init with a separate PIN");
    assert_ok(
        &run(&w.passphrase_file, &pin, &["unlock", "--offline"]),
        "unlock",
    );

    let wrong_pass = w.write("wrong-pass", "completely-different-words-123\n");
    let out = run(&wrong_pass, &pin, &["unlock", "--offline"]);
    assert_code(&out, 3, "right PIN, wrong passphrase");
    assert!(
        stderr(&out).contains("wrong passphrase or wrong token"),
        "{}",
        text(&out)
    );

    let wrong_pin = w.write("wrong-pin", "0000-not-it\n");
    let out = run(&w.passphrase_file, &wrong_pin, &["unlock", "--offline"]);
    assert_code(&out, 3, "wrong PIN, right passphrase");
    assert!(stderr(&out).contains("wrong PIN"), "{}", text(&out));
}

#[test]
fn eight_processes_adding_at_once_lose_nothing() {
    let w = World::with_keyring();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let key = w.write(&format!("k{i}"), &format!("{}-abcdefgh{i}\n", 100 + i));
            w.add_unchecked(&format!("sys{i}"), &key)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn add")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_ok(&out, "concurrent add");
    }
    let list = w.run(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let mut names: Vec<String> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    let want: Vec<String> = (0..8).map(|i| format!("sys{i}")).collect();
    assert_eq!(names, want);
    assert_ok(
        &w.run(&["unlock", "--offline"]),
        "unlock after concurrent adds",
    );
}

#[test]
fn import_adds_many_in_one_unlock_and_rejects_bad_lines_whole() {
    let w = World::with_keyring();
    let good: String = (0..20)
        .map(|i| {
            format!(
                "{{\"name\":\"n{i}\",\"url\":\"https://127.0.0.1:{}\",\"username\":\"admin\",\"api_key\":\"{}-key{i}ABC\"}}\n",
                9000 + i,
                i + 1
            )
        })
        .collect();
    let bad = format!("{good}{{\"name\":\"x\",\"url\":\"https://h\",\"username\":\"u\"}}\n");
    let bad_file = w.write("bad.jsonl", &bad);
    let out = w.run(&["import", bad_file.to_str().expect("path")]);
    assert_code(&out, 2, "bad inventory");
    assert!(stderr(&out).contains("line 21"), "{}", text(&out));
    let list = w.run(&["list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout).expect("json"),
        serde_json::json!([])
    );

    let good_file = w.write("good.jsonl", &good);
    assert_ok(
        &w.run(&["import", good_file.to_str().expect("path")]),
        "import",
    );
    let list = w.run(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(rows.as_array().expect("array").len(), 20);
}

#[test]
fn info_states_the_policy_and_the_token() {
    let w = World::with_keyring();
    let out = w.run(&["info", "--json"]);
    assert_ok(&out, "info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["name"], "lab");
    assert_eq!(info["systems"], 0);
    let unlockers = info["unlockers"].as_array().expect("unlockers");
    assert_eq!(unlockers.len(), 2);
    assert_eq!(unlockers[0]["backend"], "pkcs11");
    assert!(unlockers[0]["fingerprint"]
        .as_str()
        .expect("fp")
        .starts_with("sha256:"));
    assert_eq!(unlockers[1]["kind"], "recovery");
    let policy = info["policy"].as_str().expect("policy");
    assert!(
        policy.contains("passphrase and the token")
            && policy.ends_with("or the recovery code alone"),
        "{policy}"
    );
}

#[test]
fn the_vault_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::with_keyring();
    w.add_ok("nas1", API_KEY);
    let mode = std::fs::metadata(&w.vault)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&w.vault).expect("read");
    assert!(!text.contains(API_KEY), "the API key is stored in clear");
}

#[test]
fn exit_codes_are_as_documented() {
    let w = World::new();
    assert_code(&w.run(&["frobnicate"]), 2, "unknown command");
    assert_code(&w.run(&["list", "--no-such-flag"]), 2, "unknown flag");
    assert_code(&w.run(&["list"]), 1, "no keyring");
    assert_code(&w.run(&["--version"]), 0, "version");
}

#[test]
fn man_page_and_completions_are_generated() {
    let w = World::new();
    let man = w.run(&["man"]);
    assert_ok(&man, "man");
    assert!(stdout(&man).contains(".TH nasring"), "{}", text(&man));
    let dir = w.path("man");
    assert_ok(
        &w.run(&["man", "--out-dir", dir.to_str().expect("path")]),
        "man --out-dir",
    );
    assert!(dir.join("nasring-init.1").exists());
    for shell in ["bash", "zsh", "fish"] {
        let out = w.run(&["completions", shell]);
        assert_ok(&out, shell);
        assert!(
            stdout(&out).contains("unlock"),
            "{shell} completions lack a command"
        );
    }
}

/// The private key objects on the world's token, as pkcs11-tool lists them.
fn private_keys(w: &World) -> String {
    let pin = std::fs::read_to_string(&w.passphrase_file).expect("pin");
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
        ])
        .arg("nasring-test")
        .args([
            "--login",
            "--pin",
            "env:NASRING_TEST_PIN",
            "--list-objects",
            "--type",
            "privkey",
        ])
        .env("NASRING_TEST_PIN", pin.trim())
        .env("SOFTHSM2_CONF", w.hsm.conf())
        .output()
        .expect("pkcs11-tool");
    assert_ok(&out, "pkcs11-tool --list-objects");
    stdout(&out)
}

#[test]
fn a_generated_key_is_sensitive_not_extractable_and_derives_only() {
    let w = World::with_keyring();
    let listing = private_keys(&w);
    assert!(
        listing.contains("Usage:      derive\n"),
        "derive only:\n{listing}"
    );
    assert!(
        listing.contains("sensitive") && listing.contains("never extractable"),
        "{listing}"
    );
}

#[test]
fn an_extractable_key_gets_a_warning_and_a_missing_key_or_module_a_remedy() {
    let w = World::new();
    let pin = std::fs::read_to_string(&w.passphrase_file).expect("pin");
    let made = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "nasring-test",
        ])
        .args(["--login", "--pin", "env:NASRING_TEST_PIN", "--keypairgen"])
        .args([
            "--key-type",
            "EC:prime256v1",
            "--usage-derive",
            "--extractable",
        ])
        .args(["--label", "loose", "--id", "42"])
        .env("NASRING_TEST_PIN", pin.trim())
        .env("SOFTHSM2_CONF", w.hsm.conf())
        .output()
        .expect("pkcs11-tool");
    assert_ok(&made, "pkcs11-tool --keypairgen --extractable");
    let module = "module-path=/usr/lib/softhsm/libsofthsm2.so";
    let init = |object: &str, module: &str| {
        let uri = format!("pkcs11:token=nasring-test;object={object}?{module}");
        w.run(&[
            "init",
            "--name",
            "lab",
            "--token",
            &uri,
            "--kdf-memory-mib",
            "8",
            "--no-recovery-code",
        ])
    };

    let out = init("absent", module);
    assert_code(&out, 1, "init with a key that is not there");
    assert!(stderr(&out).contains("--generate-key"), "{}", text(&out));
    let out = init("loose", "module-path=/nonexistent/libpkcs11.so");
    assert_code(&out, 1, "init with a module that is not there");
    assert!(stderr(&out).contains("was not found"), "{}", text(&out));
    assert!(!w.vault.exists(), "no keyring made by a failed init");

    let out = init("loose", module);
    assert_ok(&out, "init with an extractable key");
    assert!(stderr(&out).contains("extractable"), "{}", text(&out));
}

#[test]
fn init_asks_for_the_name_on_the_terminal_when_not_given() {
    let w = World::new();
    let init = |answer: &str| {
        let args = format!(
            "init --token '{}' --generate-key --kdf-memory-mib 8 --no-recovery-code",
            w.hsm.uri
        );
        on_terminal(&w.cmd(), &args, answer)
    };

    let out = init("\n");
    assert!(
        !out.status.success(),
        "an empty name is refused\n{}",
        text(&out)
    );
    assert!(stdout(&out).contains("Keyring name:"), "{}", text(&out));
    assert!(!w.vault.exists(), "nothing written for an empty name");

    let out = init("homelab\n");
    assert_ok(&out, "init with the name typed");
    let info = w.run(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info json");
    assert_eq!(info["name"], "homelab");
}
