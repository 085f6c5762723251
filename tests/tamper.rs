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

/// A loopback listener standing in for the keyring's system; counts the connections made.
struct Listener {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        Listener { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A keyring whose two systems point at `listener` over plain loopback, so that `status`
/// would send their keys there at once if it accepted the file.
fn world_with_listener(listener: &Listener) -> World {
    let w = World::with_keyring();
    for (name, key) in [("nas1", API_KEY), ("nas2", OTHER_KEY)] {
        let key_file = w.write(&format!("{name}.key"), &format!("{key}\n"));
        let out = w.run(&[
            "add",
            name,
            "--url",
            &format!("http://127.0.0.1:{}", listener.port),
            "--username",
            "admin",
            "--api-key-file",
            key_file.to_str().expect("utf8"),
            "--no-check",
        ]);
        assert_ok(&out, "add");
    }
    w
}

const OTHER_KEY: &str = "14-Pq9WcN3vB7xZ1mL5kJ8hG2fD4sA6qW0eR3tY7uI9oP1aS5dF8gH2jK4lZ6xC8vB";

/// Runs `status` on `copy`: true if it was refused before any connection to the systems.
fn refused_before_any_key_left(w: &World, copy: &std::path::Path, listener: &Listener) -> bool {
    let before = listener.connections();
    let out = w
        .cmd()
        .env("NASRING_VAULT", copy)
        .args([
            "status",
            "--json",
            "--connect-timeout",
            "1",
            "--deadline",
            "2",
        ])
        .output()
        .expect("run nasring");
    let all = text(&out);
    for key in [API_KEY, OTHER_KEY] {
        let secret = key.split_once('-').expect("key").1;
        assert!(
            !all.contains(secret),
            "a key was printed for a tampered file:\n{all}"
        );
    }
    let refused = !out.status.success() && stdout(&out).is_empty();
    refused && listener.connections() == before
}

/// The same byte, changed to another letter or digit of its kind, so that the file stays
/// well-formed JSON and base64 and only the cryptography can notice.
fn lookalike(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => Some(byte + 1),
        b'9' => Some(b'0'),
        b'z' => Some(b'a'),
        b'Z' => Some(b'A'),
        _ => None,
    }
}

#[test]
fn changing_any_letter_or_digit_to_another_is_caught_before_a_key_leaves() {
    let listener = Listener::start();
    let w = world_with_listener(&listener);
    let original = std::fs::read(&w.vault).expect("vault");
    // The control: the untouched keyring does connect.
    let out = w.run(&[
        "status",
        "--json",
        "--connect-timeout",
        "1",
        "--deadline",
        "2",
    ]);
    assert_ok(&out, "status of the untouched keyring");
    assert!(
        listener.connections() >= 2,
        "the control made no connection"
    );

    let positions: Vec<usize> = (0..original.len())
        .filter(|&i| lookalike(original[i]).is_some())
        .collect();
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (t, chunk) in positions.chunks(positions.len().div_ceil(2)).enumerate() {
            let (w, original, failures, listener) = (&w, &original, &failures, &listener);
            scope.spawn(move || {
                let copy = w.path(&format!("lookalike{t}.nasring"));
                for &i in chunk {
                    let mut changed = original.clone();
                    changed[i] = lookalike(changed[i]).expect("a letter or digit");
                    std::fs::write(&copy, &changed).expect("write copy");
                    if !refused_before_any_key_left(w, &copy, listener) {
                        failures.lock().expect("lock").push(i);
                    }
                    assert_eq!(
                        std::fs::read(&copy).expect("read"),
                        changed,
                        "it was written"
                    );
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "changes at these offsets were accepted: {failures:?}"
    );
    eprintln!(
        "lookalike changes: {} of {} bytes changed, all refused",
        positions.len(),
        original.len()
    );
}

#[test]
fn every_truncation_is_refused_before_a_key_leaves() {
    let listener = Listener::start();
    let w = world_with_listener(&listener);
    let original = std::fs::read(&w.vault).expect("vault");
    let copy = w.path("truncated.nasring");
    let mut accepted = Vec::new();
    for len in 0..original.len() {
        std::fs::write(&copy, &original[..len]).expect("write");
        let out = w
            .cmd()
            .env("NASRING_VAULT", &copy)
            .args(["unlock", "--offline", "--json"])
            .output()
            .expect("run");
        let err = stderr(&out);
        let clear = err.contains("damaged") || err.contains("not a nasring keyring");
        if out.status.code() != Some(1) || !clear || !stdout(&out).is_empty() {
            accepted.push(len);
        }
    }
    // With trailing bytes added instead, and the two files joined.
    for tail in [&b"\n"[..], b"x", b"mac:AAAA\n", &original] {
        let mut longer = original.clone();
        longer.extend_from_slice(tail);
        std::fs::write(&copy, &longer).expect("write");
        if !refused_before_any_key_left(&w, &copy, &listener) {
            accepted.push(longer.len());
        }
    }
    assert!(accepted.is_empty(), "lengths accepted: {accepted:?}");
    eprintln!(
        "truncations: {} lengths and 4 extensions refused",
        original.len()
    );
}

/// The keyring file's parts, to swap fields and entries as an attacker with write access
/// to the file could.
fn parts(bytes: &[u8]) -> (nasring::vault::Document, Vec<u8>) {
    let parsed = nasring::vault::format::parse(bytes).expect("parse");
    let signed = nasring::vault::format::signed_bytes(&parsed.document).expect("encode");
    assert_eq!(signed, parsed.signed, "the encoding is not canonical");
    (parsed.document, parsed.mac)
}

fn file(doc: &nasring::vault::Document, mac: &[u8]) -> Vec<u8> {
    let signed = nasring::vault::format::signed_bytes(doc).expect("encode");
    nasring::vault::format::with_mac(signed, mac)
}

#[test]
fn field_swaps_and_an_entry_moved_from_another_keyring_are_caught() {
    let listener = Listener::start();
    let a = world_with_listener(&listener);
    // A second keyring on the same token, with the same passphrase and a system of the same
    // name: the strongest case for moving an entry across.
    let b_vault = a.path("other.nasring");
    let out = a
        .cmd()
        .env("NASRING_VAULT", &b_vault)
        .args(["init", "--name", "other", "--token", &a.hsm.uri])
        .args([
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
            "--no-recovery-code",
        ])
        .output()
        .expect("init");
    assert_ok(&out, "init of the second keyring");
    let key_file = a.write(
        "b.key",
        "15-Bb1CdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvW\n",
    );
    let out = a
        .cmd()
        .env("NASRING_VAULT", &b_vault)
        .args(["add", "nas1", "--url"])
        .arg(format!("http://127.0.0.1:{}", listener.port))
        .args(["--username", "admin", "--api-key-file"])
        .arg(&key_file)
        .arg("--no-check")
        .output()
        .expect("add");
    assert_ok(&out, "add to the second keyring");

    let (doc, mac) = parts(&std::fs::read(&a.vault).expect("a"));
    let (other, other_mac) = parts(&std::fs::read(&b_vault).expect("b"));
    type Swap = Box<dyn Fn(&mut nasring::vault::Document, &mut Vec<u8>)>;
    let (o, om) = (other.clone(), other_mac.clone());
    let swaps: Vec<(&str, Swap)> = vec![
        (
            "systems in the other order",
            Box::new(|d, _| d.systems.reverse()),
        ),
        (
            "ciphertexts swapped",
            Box::new(|d, _| {
                let c = d.systems[0].ciphertext.clone();
                d.systems[0].ciphertext = std::mem::replace(&mut d.systems[1].ciphertext, c);
            }),
        ),
        (
            "ciphertexts and nonces swapped",
            Box::new(|d, _| {
                let (c, n) = (d.systems[0].ciphertext.clone(), d.systems[0].nonce.clone());
                d.systems[0].ciphertext = std::mem::replace(&mut d.systems[1].ciphertext, c);
                d.systems[0].nonce = std::mem::replace(&mut d.systems[1].nonce, n);
            }),
        ),
        (
            "names swapped",
            Box::new(|d, _| {
                let n = d.systems[0].name.clone();
                d.systems[0].name = std::mem::replace(&mut d.systems[1].name, n);
            }),
        ),
        (
            "ids swapped",
            Box::new(|d, _| {
                let n = d.systems[0].id.clone();
                d.systems[0].id = std::mem::replace(&mut d.systems[1].id, n);
            }),
        ),
        (
            "URL changed to another system's",
            Box::new(|d, _| {
                d.systems[1].url = "http://127.0.0.2:1".into();
            }),
        ),
        (
            "trust record changed",
            Box::new(|d, _| d.systems[0].tls = format!("sha256:{}", "00".repeat(32))),
        ),
        (
            "a system dropped",
            Box::new(|d, _| {
                d.systems.pop();
            }),
        ),
        (
            "created and updated dates swapped",
            Box::new(|d, _| {
                std::mem::swap(&mut d.created_at, &mut d.updated_at);
                d.updated_at = "2020-01-01T00:00:00Z".into();
            }),
        ),
        ("KDF cost lowered", Box::new(|d, _| d.kdf.iterations += 1)),
        ("keyring id of the other keyring", {
            let o = o.clone();
            Box::new(move |d, _| d.keyring_id = o.keyring_id.clone())
        }),
        ("unlockers of the other keyring", {
            let o = o.clone();
            Box::new(move |d, _| d.unlockers = o.unlockers.clone())
        }),
        ("the other keyring's MAC", {
            let om = om.clone();
            Box::new(move |_, m| *m = om.clone())
        }),
        ("an entry moved in from the other keyring", {
            let o = o.clone();
            Box::new(move |d, _| d.systems[0] = o.systems[0].clone())
        }),
        ("an entry of this keyring moved into the other", {
            let (o, om) = (o.clone(), om.clone());
            Box::new(move |d, m| {
                let moved = d.systems[1].clone();
                *d = o.clone();
                d.systems.push(moved);
                *m = om.clone();
            })
        }),
    ];
    let copy = a.path("swapped.nasring");
    let mut accepted = Vec::new();
    for (what, swap) in &swaps {
        let (mut d, mut m) = (doc.clone(), mac.clone());
        swap(&mut d, &mut m);
        std::fs::write(&copy, file(&d, &m)).expect("write");
        if !refused_before_any_key_left(&a, &copy, &listener) {
            accepted.push(*what);
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
    // The untouched files still open, so the refusals above are the swaps' doing.
    std::fs::write(&copy, file(&doc, &mac)).expect("write");
    assert_ok(
        &a.cmd()
            .env("NASRING_VAULT", &copy)
            .args(["unlock", "--offline"])
            .output()
            .expect("run"),
        "the untouched copy",
    );
    eprintln!("field swaps: {} refused", swaps.len());
}
