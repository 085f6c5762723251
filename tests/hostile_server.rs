//! TrueNAS imposters on 127.0.0.1 (`common/imposter.rs`): servers that answer garbage,
//! oversized frames, endless streams, wrong JSON-RPC ids or a slow trickle, or present a
//! certificate other than the pinned one. nasring must refuse each within its timeouts, and an
//! API key may reach only a server that holds the pinned certificate's key. Every imposter
//! records all the bytes it receives, so the tests can look for the key in them.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::imposter::*;
use common::*;
use serde_json::{json, Value};

fn add_system(w: &World, name: &str, url: &str, fingerprint: &str) {
    let key_file = w.write(&format!("{name}.key"), &format!("{API_KEY}\n"));
    let out = w.run(&[
        "add",
        name,
        "--url",
        url,
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        fingerprint,
        "--no-check",
    ]);
    assert_ok(&out, "add --no-check");
}

/// Runs `nasring` with `args`, killing it (and failing) if it has not ended within a minute,
/// far beyond its own timeouts; returns its output and how long it took.
fn run_bounded(w: &World, args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let child = w
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nasring");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let out = child.wait_with_output().expect("wait");
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("nasring {args:?} did not end within a minute");
    }
    (waiter.join().expect("waiter"), start.elapsed())
}

const NET: [&str; 4] = ["--connect-timeout", "1", "--deadline", "4"];

#[test]
fn status_refuses_every_imposter_and_sends_the_key_only_behind_the_pin() {
    let w = World::with_keyring();
    let pinned: Vec<(Mode, Imposter)> = ALL_MODES
        .iter()
        .map(|m| (*m, Imposter::start(*m)))
        .collect();
    let unpinned: Vec<(Mode, Imposter)> = ALL_MODES
        .iter()
        .map(|m| (*m, Imposter::start(*m)))
        .collect();
    let other_pin = format!("sha256:{}", "5a".repeat(32));
    for (mode, imposter) in &pinned {
        add_system(
            &w,
            &format!("pinned-{}", mode.name()),
            &imposter.url(),
            &imposter.fingerprint,
        );
    }
    for (mode, imposter) in &unpinned {
        add_system(
            &w,
            &format!("other-{}", mode.name()),
            &imposter.url(),
            &other_pin,
        );
    }
    let before = std::fs::read(&w.vault).expect("vault");

    for command in ["status", "unlock"] {
        check_every_imposter(&w, command, &pinned, &unpinned);
        assert_eq!(
            std::fs::read(&w.vault).expect("vault"),
            before,
            "{command} changed the keyring"
        );
    }
}

/// Runs `command` (`status` or `unlock`) over every imposter at once and checks each report
/// and what each imposter received.
fn check_every_imposter(
    w: &World,
    command: &str,
    pinned: &[(Mode, Imposter)],
    unpinned: &[(Mode, Imposter)],
) {
    let mut args = vec![command, "--json"];
    args.extend_from_slice(&NET);
    let (out, took) = run_bounded(w, &args);
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).expect("report json");
    let status_of = |name: &str| -> (String, String) {
        let r = reports
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no report for {name}: {}", text(&out)));
        assert_eq!(
            r["connected"].as_bool(),
            Some(r["status"] == "connected"),
            "{r}"
        );
        (
            r["status"].as_str().unwrap_or_default().to_owned(),
            r["detail"].as_str().unwrap_or_default().to_owned(),
        )
    };

    let mut lines = Vec::new();
    for (mode, imposter) in pinned {
        let (status, detail) = status_of(&format!("pinned-{}", mode.name()));
        let got_key = contains(&imposter.received(), secret());
        lines.push(format!(
            "pinned {mode:?}: {status} ({detail}); key arrived: {got_key}"
        ));
        if *mode == Mode::Genuine {
            assert_eq!(
                status, "connected",
                "the genuine server must connect: {detail}"
            );
            assert!(got_key, "the genuine server must receive the key");
            continue;
        }
        assert_ne!(status, "connected", "{mode:?} was accepted: {detail}");
        if mode.fails_before_login() {
            assert!(
                !got_key,
                "{mode:?} received the API key before any login was possible"
            );
        }
    }
    for (mode, imposter) in unpinned {
        let (status, detail) = status_of(&format!("other-{}", mode.name()));
        let received = imposter.received();
        lines.push(format!("unpinned {mode:?}: {status} ({detail})"));
        assert_ne!(
            status, "connected",
            "{mode:?} with another certificate: {detail}"
        );
        assert!(
            !contains(&received, secret()),
            "{mode:?} without the pin got the key"
        );
        assert!(
            !contains(&received, "auth.login_ex"),
            "{mode:?} without the pin got a login"
        );
        if !matches!(mode, Mode::NotTls | Mode::Silent) {
            assert_eq!(status, "pin_mismatch", "{mode:?}: {detail}");
        }
    }
    let all = text(&out);
    assert!(!all.contains(secret()), "the key was printed:\n{all}");
    eprintln!(
        "{command} over {} imposters took {took:?}\n{}",
        reports.len(),
        lines.join("\n")
    );
}

#[test]
fn add_with_a_check_stores_nothing_from_an_imposter() {
    let w = World::with_keyring();
    let key_file = w.write("nas.key", &format!("{API_KEY}\n"));
    for mode in ALL_MODES.iter().filter(|m| **m != Mode::Genuine) {
        let imposter = Imposter::start(*mode);
        let url = imposter.url();
        let mut args = vec![
            "add",
            "nas",
            "--url",
            &url,
            "--username",
            "admin",
            "--api-key-file",
            key_file.to_str().expect("utf8"),
            "--tls-fingerprint",
            &imposter.fingerprint,
        ];
        args.extend_from_slice(&NET);
        let (out, _) = run_bounded(&w, &args);
        assert_code(&out, 1, &format!("add against {mode:?}"));
        assert!(
            !text(&out).contains(secret()),
            "{mode:?}: the key was printed"
        );
        if mode.fails_before_login() {
            assert!(
                !contains(&imposter.received(), secret()),
                "{mode:?} got the key"
            );
        }
        let list = w.run(&["list", "--json"]);
        let rows: Value = serde_json::from_slice(&list.stdout).expect("list json");
        assert_eq!(rows, json!([]), "{mode:?}: add stored the system");
    }
}

#[test]
fn add_sends_no_key_to_a_certificate_other_than_the_pinned_one() {
    let w = World::with_keyring();
    let key_file = w.write("nas.key", &format!("{API_KEY}\n"));
    let genuine = Imposter::start(Mode::Genuine);
    let imposter = Imposter::start(Mode::Genuine);
    let url = imposter.url();
    let mut args = vec![
        "add",
        "nas",
        "--url",
        &url,
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &genuine.fingerprint,
    ];
    args.extend_from_slice(&NET);
    let (out, _) = run_bounded(&w, &args);
    assert_code(&out, 1, "add against a server with another certificate");
    assert!(stderr(&out).contains("not the pinned"), "{}", text(&out));
    assert!(
        !contains(&imposter.received(), secret()),
        "the imposter got the key"
    );
    assert!(
        genuine.received().is_empty(),
        "nothing was meant for the genuine server"
    );
}

#[test]
fn no_password_reaches_a_certificate_other_than_the_trusted_one() {
    let w = World::with_keyring();
    let password = "Imposter-must-never-see-this-password";
    let password_file = w.write("password", &format!("{password}\n"));
    let genuine = Imposter::start(Mode::Genuine);
    let imposter = Imposter::start(Mode::Genuine);
    let url = imposter.url();
    // A CA that did not issue the imposter's certificate.
    let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("ca");
    let ca_file = w.write("ca.pem", &ca.cert.pem());
    let ca_path = ca_file.to_str().expect("utf8").to_owned();
    for trust in [
        ["--tls-fingerprint", genuine.fingerprint.as_str()],
        ["--tls-ca", ca_path.as_str()],
    ] {
        let mut args = vec!["add", "nas", "--url", &url, "--username", "admin"];
        args.extend(["--password-file", password_file.to_str().expect("utf8")]);
        args.extend(trust);
        args.extend_from_slice(&NET);
        let (out, _) = run_bounded(&w, &args);
        assert_code(
            &out,
            1,
            &format!("add {trust:?} against another certificate"),
        );
        assert!(!text(&out).contains(password), "the password was printed");
        let err = stderr(&out);
        assert!(
            err.contains("not the pinned") || err.contains("not trusted"),
            "{trust:?}: {err}"
        );
    }
    let received = imposter.received();
    assert!(
        !contains(&received, password),
        "the imposter got the password"
    );
    assert!(
        !contains(&received, "auth.login_ex"),
        "the imposter got a login"
    );
}

#[test]
fn trust_refuses_an_imposter_and_a_fingerprint_it_does_not_present() {
    let w = World::with_keyring();
    let genuine = Imposter::start(Mode::Genuine);
    add_system(&w, "nas", &genuine.url(), &genuine.fingerprint);
    let before = std::fs::read(&w.vault).expect("vault");

    // The system moved to an imposter's address: trust with the old, checked fingerprint.
    for mode in [Mode::NotTls, Mode::Silent, Mode::Genuine] {
        let imposter = Imposter::start(mode);
        let url = imposter.url();
        // Point the system at the imposter by adding a second entry with its URL.
        let name = format!("moved-{}", mode.name());
        add_system(&w, &name, &url, &genuine.fingerprint);
        let moved = std::fs::read(&w.vault).expect("vault");
        let mut args = vec!["trust", &name, "--tls-fingerprint", &genuine.fingerprint];
        args.extend_from_slice(&NET);
        let (out, _) = run_bounded(&w, &args);
        assert_code(&out, 1, &format!("trust against {mode:?}"));
        assert_eq!(
            std::fs::read(&w.vault).expect("vault"),
            moved,
            "{mode:?}: trust wrote"
        );
        assert!(
            !contains(&imposter.received(), secret()),
            "{mode:?} got the key"
        );
        assert_ok(&w.run(&["remove", &name]), "remove");
    }
    let after = w.run(&["unlock", "--offline", "--json"]);
    assert_ok(&after, "unlock after the trust attempts");
    assert_ne!(before.len(), 0);
}
