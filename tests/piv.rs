//! PIV cards: the real binary against virtual PIV cards behind a real pcscd
//! (`hsm-test/virtual-piv`). One test at a time holds the cards, restarted in factory state.

mod common;

use common::virtual_piv::{card_uri, cards, PivWorld, FACTORY_PIN};
use common::*;
use nasring::secret::Pin;
use nasring::token::{self, Find, TokenError, TokenUri};

fn unlock(w: &PivWorld) -> std::process::Output {
    w.run(&["unlock", "--offline"])
}

#[test]
fn keygen_in_9d_then_init_unlock_and_info() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    let fingerprint = w.keygen_ok("piv:");

    // The slot now holds a key: keygen refuses to replace it unless told to.
    let again = w.run(&["token", "keygen", "--token", "piv:slot=9d"]);
    assert_code(&again, 1, "keygen over a key");
    assert!(
        stderr(&again).contains("already holds key"),
        "{}",
        text(&again)
    );
    assert!(stderr(&again).contains("--overwrite"), "{}", text(&again));

    let init = w.run(&[
        "init",
        "--no-recovery-code",
        "--name",
        "lab",
        "--token",
        "piv:",
        "--kdf-memory-mib",
        "8",
    ]);
    assert_ok(&init, "init");
    assert!(stdout(&init).contains(&fingerprint), "{}", text(&init));
    assert!(
        stderr(&init).contains("asked separately"),
        "{}",
        text(&init)
    );
    assert!(stderr(&init).contains("factory PIN"), "{}", text(&init));

    assert_ok(&unlock(&w), "unlock");

    let info = w.run(&["--json", "info"]);
    assert_ok(&info, "info");
    let view: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info json");
    let unlocker = &view["unlockers"][0];
    assert_eq!(unlocker["backend"], "piv");
    assert_eq!(unlocker["fingerprint"], fingerprint.as_str());
    assert_eq!(unlocker["separate_pin"], true);
    assert_eq!(unlocker["uri"], "piv:");
    // The virtual card answers as a YubiKey but cannot attest keys: nothing is claimed.
    assert_eq!(unlocker["attestation"], serde_json::Value::Null);
    let info_text = stdout(&w.run(&["info"]));
    assert!(info_text.contains("attestation: none"), "{info_text}");

    // With --overwrite the slot gets a new key, which this keyring does not know.
    let out = w.run(&[
        "--json",
        "token",
        "keygen",
        "--token",
        "piv:",
        "--overwrite",
        "--keep-default-management-key",
        "--touch-policy",
        "never",
        "--pin-policy",
        "once",
    ]);
    assert_ok(&out, "keygen --overwrite");
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(made["fingerprint"], fingerprint.as_str());
    assert_eq!(made["management_key"], "factory default");
    let refused = unlock(&w);
    assert_code(&refused, 1, "unlock with a replaced key");
}

#[test]
fn an_existing_key_made_with_another_tool_is_used_as_it_is() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    // A key and certificate put there by nasring's keygen stand for any tool's: init
    // without --generate-key reads the public key from the slot's certificate.
    let fingerprint = w.keygen_ok(&card_uri(0));
    w.init_ok(&card_uri(0));
    let info = stdout(&w.run(&["--json", "info"]));
    assert!(info.contains(&fingerprint), "{info}");
    assert_ok(&unlock(&w), "unlock");
}

#[test]
fn init_with_generate_key_on_an_empty_slot() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    let out = w.run(&[
        "init",
        "--no-recovery-code",
        "--name",
        "lab",
        "--token",
        "piv:",
        "--generate-key",
        "--kdf-memory-mib",
        "8",
    ]);
    assert_ok(&out, "init --generate-key");
    assert_ok(&unlock(&w), "unlock");
}

#[test]
fn wrong_pin_shows_tries_left_then_blocks_with_the_puk_remedy() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    w.keygen_ok("piv:");
    w.init_ok("piv:");

    w.set_pin("654321");
    let first = unlock(&w);
    assert_code(&first, 3, "wrong PIN");
    assert!(
        stderr(&first).contains("wrong PIN (2 tries left)"),
        "{}",
        text(&first)
    );
    assert!(stderr(&first).contains("never retries"), "{}", text(&first));

    // The right PIN resets the counter; reading the tries spent none.
    w.set_pin(FACTORY_PIN);
    assert_ok(&unlock(&w), "unlock with the right PIN");
    w.set_pin("654321");
    assert!(stderr(&unlock(&w)).contains("2 tries left"));
    let last = unlock(&w);
    assert!(stderr(&last).contains("1 try left"), "{}", text(&last));
    assert!(
        stderr(&last).contains("next wrong PIN blocks"),
        "{}",
        text(&last)
    );
    let blocking = unlock(&w);
    assert_code(&blocking, 3, "third wrong PIN");
    assert!(stderr(&blocking).contains("blocked"), "{}", text(&blocking));

    // Once blocked, even the right PIN is not sent: the way out is the PUK.
    w.set_pin(FACTORY_PIN);
    let blocked = unlock(&w);
    assert_code(&blocked, 3, "blocked PIN");
    let err = stderr(&blocked);
    assert!(
        err.contains("PIN is blocked") && err.contains("PUK"),
        "{err}"
    );
    assert!(err.contains("unblock-pin"), "{err}");
}

#[test]
fn a_pin_of_the_wrong_length_never_reaches_the_card() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    w.keygen_ok("piv:");
    w.init_ok("piv:");
    for bad in ["12345", "123456789"] {
        w.set_pin(bad);
        let out = unlock(&w);
        assert_code(&out, 3, "PIN of the wrong length");
        assert!(stderr(&out).contains("6 to 8"), "{}", text(&out));
        assert!(
            !stderr(&out).contains(bad),
            "the PIN was echoed: {}",
            text(&out)
        );
    }
    // No try was spent: the first wrong PIN still leaves two.
    w.set_pin("654321");
    assert!(stderr(&unlock(&w)).contains("2 tries left"));
}

#[test]
fn a_second_process_cannot_ride_on_the_first_ones_pin() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    w.keygen_ok("piv:");
    w.init_ok("piv:");
    assert_ok(&unlock(&w), "unlock");

    // This test process opens the card after `nasring unlock` verified the PIN and ended:
    // the card was reset when nasring let it go, so key agreement needs the PIN again.
    let uri = TokenUri::parse("piv:").expect("uri");
    let mut card = token::open(&uri).expect("open the card");
    let peer = p256::SecretKey::random(&mut rand::rngs::OsRng).public_key();
    let refused = card.agree(&peer).err().expect("agreement without the PIN");
    assert!(refused.to_string().contains("wants its PIN"), "{refused}");
    card.login(&Pin::new(FACTORY_PIN.into())).expect("login");
    card.agree(&peer).expect("agreement after the PIN");
}

#[test]
fn with_no_card_nasring_waits_a_bounded_time_and_says_what_to_insert() {
    let Some(cards) = cards(1) else { return };
    let w = PivWorld::new();
    let fingerprint = w.keygen_ok("piv:");
    w.init_ok("piv:");
    cards.keep(0);
    let out = w
        .cmd()
        .args(["unlock", "--offline"])
        .env("NASRING_CARD_WAIT", "1")
        .output()
        .expect("run");
    assert_code(&out, 1, "unlock without a card");
    let err = stderr(&out);
    assert!(err.contains("Waiting up to 1 s"), "{err}");
    assert!(
        err.contains("insert it") && err.contains(&fingerprint),
        "{err}"
    );
    assert!(err.contains("Insert one of the keyring's tokens"), "{err}");

    let keygen = w.run(&["token", "keygen", "--token", "piv:", "--card-wait", "0"]);
    assert_code(&keygen, 1, "keygen without a card");
    assert!(
        stderr(&keygen).contains("no token matching piv:"),
        "{}",
        text(&keygen)
    );
    assert!(
        stderr(&keygen).contains("Insert a YubiKey or PIV card"),
        "{}",
        text(&keygen)
    );
}

#[test]
fn with_two_cards_the_keyring_finds_its_own_by_public_key() {
    let Some(_cards) = cards(2) else { return };
    let w = PivWorld::new();
    let first = w.keygen_ok(&card_uri(0));
    let second = w.keygen_ok(&card_uri(1));
    assert_ne!(first, second);

    // A bare piv: fits both cards: nasring asks which one instead of taking the first.
    let ambiguous = w.run(&["token", "keygen", "--token", "piv:", "--overwrite"]);
    assert_code(&ambiguous, 1, "keygen with two cards");
    assert!(
        stderr(&ambiguous).contains("fits 2 cards"),
        "{}",
        text(&ambiguous)
    );

    // The keyring records the second card's key and a bare piv: URI.
    w.init_ok(&card_uri(1));
    let info = w.run(&["--json", "info"]);
    let view: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info json");
    assert_eq!(view["unlockers"][0]["fingerprint"], second.as_str());
    assert_eq!(view["unlockers"][0]["uri"], "piv:");
    assert_ok(&unlock(&w), "unlock with two cards present");

    // The first card was looked at but never given a PIN: its tries are all there.
    let uri = TokenUri::parse(&card_uri(0)).expect("uri");
    let mut card0 = token::open(&uri).expect("card 0");
    assert_eq!(card0.pin_status().expect("status").tries_left, Some(3));
    drop(card0);

    // The library's choice, directly: the key decides, not the order of the readers.
    let want = p256::PublicKey::from_sec1_bytes(&public_key_of(&w)).expect("key");
    let mut quiet = |_: &str| {};
    let bare = TokenUri::parse("piv:").expect("uri");
    let mut find = Find {
        key: Some(&want),
        wait: std::time::Duration::ZERO,
        notify: &mut quiet,
    };
    let mut chosen = token::open_with(&bare, &mut find).expect("open by key");
    assert_eq!(chosen.public_key().expect("key"), want);
    let both = token::open(&bare).err().expect("two cards fit a bare piv:");
    assert!(matches!(both, TokenError::BadUri { .. }), "{both}");
}

fn public_key_of(w: &PivWorld) -> Vec<u8> {
    let text = std::fs::read_to_string(&w.vault).expect("keyring");
    let start = text.find("\"public_key\":\"").expect("public key") + 14;
    let end = start + text[start..].find('"').expect("end");
    base64_decode(&text[start..end])
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn a_card_held_exclusively_by_another_program_is_named_with_its_remedy() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    w.keygen_ok("piv:");
    w.init_ok("piv:");
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcsc");
    let reader = std::ffi::CString::new(common::virtual_piv::READERS[0]).expect("name");
    let held = ctx
        .connect(&reader, pcsc::ShareMode::Exclusive, pcsc::Protocols::ANY)
        .expect("hold the card exclusively");
    let out = unlock(&w);
    assert_code(&out, 1, "unlock while another program holds the card");
    let err = stderr(&out);
    assert!(err.contains("held exclusively by another program"), "{err}");
    assert!(err.contains("gpgconf --kill scdaemon"), "{err}");
    drop(held);
    assert_ok(&unlock(&w), "unlock once the card is free");
}

#[test]
fn pcscd_not_running_has_its_own_message() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    // A client whose pcscd socket is missing sees what it sees when pcscd is stopped.
    let gone = w.tmp.path().join("no-pcscd.comm");
    let out = w
        .cmd()
        .args(["token", "keygen", "--token", "piv:"])
        .env("PCSCLITE_CSOCK_NAME", &gone)
        .output()
        .expect("run");
    assert_code(&out, 1, "keygen without pcscd");
    let err = stderr(&out);
    assert!(err.contains("pcscd) is not running"), "{err}");
    assert!(err.contains("systemctl start pcscd"), "{err}");
}

#[test]
fn keygen_moves_a_factory_management_key_under_the_pin() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    let out = w.run(&[
        "--json",
        "token",
        "keygen",
        "--token",
        "piv:",
        "--protect-management-key",
    ]);
    assert_ok(&out, "keygen --protect-management-key");
    assert!(
        stderr(&out).contains("factory management key"),
        "{}",
        text(&out)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(made["management_key"], "moved to a PIN-protected key");

    // The factory key no longer works, and nasring finds the new one under the PIN.
    let again = w.run(&[
        "--json",
        "token",
        "keygen",
        "--token",
        "piv:",
        "--overwrite",
    ]);
    assert_ok(&again, "keygen with the PIN-protected management key");
    assert!(
        !stderr(&again).contains("factory management key"),
        "{}",
        text(&again)
    );
    let made: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(made["management_key"], "not the factory default");
}

#[test]
fn without_a_terminal_keygen_keeps_a_factory_management_key_and_names_the_flag() {
    let Some(_cards) = cards(1) else { return };
    let w = PivWorld::new();
    let out = w.run(&["--json", "token", "keygen", "--token", "piv:"]);
    assert_ok(&out, "keygen");
    assert!(
        stderr(&out).contains("--protect-management-key"),
        "{}",
        text(&out)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(made["management_key"], "factory default");
}

#[test]
fn the_agent_outlives_other_uses_of_the_card_and_ends_when_it_is_removed() {
    let Some(cards) = cards(1) else { return };
    let w = PivWorld::new();
    w.keygen_ok("piv:");
    w.init_ok("piv:");
    let runtime = w.tmp.path().join("run");
    std::fs::create_dir(&runtime).expect("runtime folder");
    let with_runtime = |args: &[&str]| {
        w.cmd()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(args)
            .output()
            .expect("run nasring")
    };
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    assert_ok(&with_runtime(&["unlock", "--offline"]), "unlock");
    let agent: serde_json::Value =
        serde_json::from_slice(&with_runtime(&["agent", "--json"]).stdout).expect("agent json");
    let pid = agent["pid"].as_u64().expect("an agent after unlock");
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();

    // Another process uses the card, and resets it when done: the agent stays.
    assert_ok(
        &unlock(&w),
        "a second unlock, without the agent's runtime folder",
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        alive(),
        "the agent ended when another process used the card"
    );

    cards.keep(0);
    let start = std::time::Instant::now();
    while alive() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive(), "the agent outlived the card's removal");
}

/// A pcscd of this test's own, with no reader configured, in a mount namespace whose
/// /run/pcscd is a fresh tmpfs: nasring talks to it and finds no reader at all.
#[test]
fn no_reader_at_all_has_its_own_message() {
    let w = PivWorld::new();
    let empty = w.tmp.path().join("no-readers.conf");
    std::fs::write(&empty, "").expect("empty reader configuration");
    let script = format!(
        "mount -t tmpfs none /run/pcscd || exit 90
         pcscd --foreground -c '{conf}' >/dev/null 2>&1 &
         pid=$!
         for _ in $(seq 100); do [ -S /run/pcscd/pcscd.comm ] && break; sleep 0.05; done
         '{nasring}' token keygen --token piv:
         status=$?
         kill $pid
         wait $pid
         exit $status",
        conf = empty.display(),
        nasring = env!("CARGO_BIN_EXE_nasring"),
    );
    let base = w.cmd();
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .env_clear()
        .envs(base.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("NASRING_CARD_WAIT", "1")
        .args(["-m", "sh", "-c", &script]);
    let out = unshare.output().expect("unshare -m (util-linux, as root)");
    assert_code(&out, 1, "keygen with no reader");
    assert!(
        stderr(&out).contains("no smart card reader is connected"),
        "{}",
        text(&out)
    );
}
