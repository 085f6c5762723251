//! Any change to a keyring file is detected when it is opened: every single byte is
//! flipped in turn, and the real binary must refuse each copy without writing anything,
//! whether it is opened with a token and the passphrase or with the recovery code.

mod common;

use common::double::{system, Double, ADMIN};
use common::*;

/// Opens `copy` with the binary and these extra arguments; returns true if it was refused.
fn refused_with(w: &World, copy: &std::path::Path, extra: &[&str]) -> bool {
    let out = w
        .cmd()
        .env("NASRING_VAULT", copy)
        .args(["unlock", "--offline", "--json"])
        .args(extra)
        .output()
        .expect("run nasring");
    let leaked = String::from_utf8_lossy(&out.stdout).contains(API_KEY)
        || String::from_utf8_lossy(&out.stderr).contains(API_KEY);
    assert!(!leaked, "the API key was printed for a tampered file");
    !out.status.success()
}

#[test]
fn flipping_any_single_byte_is_detected() {
    let w = World::with_keyring();
    w.add_ok("nas1", API_KEY);
    flip_every_byte(&w, &[]);
}

/// Every field: two tokens, the recovery code, the masked passphrase key, and a system
/// with a rotation in progress (the process was killed after recording it).
#[test]
fn flipping_any_byte_of_every_new_field_is_detected_with_the_recovery_code_too() {
    let nas = Double::start(vec![system("nas1")]);
    let w = World::with_keyring();
    let second = SoftHsm::new(&w.hsm.dir, "second", &w.passphrase_file, true);
    assert_ok(
        &w.run(&["token", "add", "--token", &second.uri]),
        "token add",
    );
    let (_, key) = nas.create_key("nas1", "made by hand");
    let key_file = w.write("nas1.key", &format!("{key}\n"));
    let added = w.run(&[
        "add",
        "nas1",
        "--url",
        &nas.url("nas1"),
        "--username",
        ADMIN,
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &nas.fingerprint("nas1"),
    ]);
    assert_ok(&added, "add");
    let crashed = w
        .cmd()
        .env("NASRING_TEST_CRASH_AT", "recorded")
        .args(["rotate", "nas1"])
        .output()
        .expect("run");
    assert_eq!(crashed.status.code(), None, "{}", text(&crashed));
    let doc = std::fs::read_to_string(&w.vault).expect("vault");
    for field in [
        "\"rotation\":{",
        "\"kind\":\"recovery\"",
        "masked_passphrase_key",
        "second",
    ] {
        assert!(doc.contains(field), "{field} missing from {doc}");
    }
    let code = w.recovery_code_file();
    flip_every_byte(&w, &["--recovery-code-file", code.to_str().expect("utf8")]);
    flip_every_byte(&w, &["--use-token", &second.uri]);
}

fn flip_every_byte(w: &World, extra: &[&str]) {
    let original = std::fs::read(&w.vault).expect("vault");
    assert!(
        !refused_with(w, &w.vault, extra),
        "the untouched keyring must open"
    );

    let positions: Vec<usize> = (0..original.len()).collect();
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (t, chunk) in positions.chunks(original.len().div_ceil(2)).enumerate() {
            let (original, failures) = (&original, &failures);
            scope.spawn(move || {
                let copy = w.path(&format!("copy{t}.nasring"));
                for &i in chunk {
                    let mut flipped = original.clone();
                    flipped[i] ^= 0x01;
                    std::fs::write(&copy, &flipped).expect("write copy");
                    if !refused_with(w, &copy, extra) {
                        failures.lock().expect("lock").push(i);
                    }
                    assert_eq!(
                        std::fs::read(&copy).expect("read"),
                        flipped,
                        "a refused open wrote the file"
                    );
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "flips at these offsets were accepted: {failures:?}"
    );
}

#[test]
fn truncation_and_a_newer_version_are_refused_with_a_clear_message() {
    let w = World::with_keyring();
    let original = std::fs::read(&w.vault).expect("vault");
    let copy = w.path("copy.nasring");
    for len in [0, 10, original.len() / 2, original.len() - 1] {
        std::fs::write(&copy, &original[..len]).expect("write");
        let out = w
            .cmd()
            .env("NASRING_VAULT", &copy)
            .arg("list")
            .output()
            .expect("run");
        assert_code(&out, 1, "truncated");
        let err = stderr(&out);
        assert!(
            err.contains("damaged") || err.contains("not a nasring keyring"),
            "{err}"
        );
    }
    let newer = String::from_utf8(original).expect("utf8").replacen(
        "nasring-keyring v1",
        "nasring-keyring v2",
        1,
    );
    std::fs::write(&copy, newer).expect("write");
    let out = w
        .cmd()
        .env("NASRING_VAULT", &copy)
        .arg("list")
        .output()
        .expect("run");
    assert_code(&out, 1, "newer format");
    assert!(stderr(&out).contains("newer nasring"), "{}", text(&out));
}
