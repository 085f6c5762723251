//! The real binary against the TrueNAS test double over TLS on 127.0.0.1: adding systems from
//! credentials or a key, unlock and status with every kind of failure, replace, trust, login,
//! and the refusals that keep a key from going where it must not.

mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::double::{self, Double, ADMIN, ADMIN_PASSWORD};
use common::{assert_code, assert_ok, stderr, stdout, text, World};
use serde_json::Value;

fn password_file(w: &World) -> String {
    w.write("nas-password", &format!("{ADMIN_PASSWORD}\n"))
        .to_string_lossy()
        .into_owned()
}

/// `add NAME` from the admin's credentials, pinned to the certificate the system presents.
fn add_from_credentials(w: &World, d: &Double, name: &str, extra: &[&str]) -> Output {
    let (url, fp, pw) = (d.url(name), d.fingerprint(name), password_file(w));
    let mut args = vec![
        "add",
        name,
        "--url",
        &url,
        "--username",
        ADMIN,
        "--password-file",
        &pw,
        "--tls-fingerprint",
        &fp,
    ];
    args.extend_from_slice(extra);
    w.run(&args)
}

/// `add NAME --api-key-file` with a key made out of band on the system.
fn import_key(w: &World, d: &Double, name: &str) -> u64 {
    let (id, key) = d.create_key(name, &format!("made by hand for {name}"));
    let key_file = w.write(&format!("{name}.key"), &format!("{key}\n"));
    let (url, fp) = (d.url(name), d.fingerprint(name));
    let out = w.run(&[
        "add",
        name,
        "--url",
        &url,
        "--username",
        ADMIN,
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &fp,
    ]);
    assert_ok(&out, "add --api-key-file");
    id
}

/// `status --json` (or `unlock --json`), as a map from system name to its report.
fn reports(w: &World, command: &str, extra: &[&str]) -> (Output, Vec<Value>) {
    let mut args = vec![
        command,
        "--json",
        "--connect-timeout",
        "2",
        "--deadline",
        "20",
    ];
    args.extend_from_slice(extra);
    let out = w.run(&args);
    let parsed: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{command} --json is not JSON ({e})\n{}", text(&out)));
    let list = parsed.as_array().expect("an array").clone();
    (out, list)
}

fn report<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no report for {name} in {list:?}"))
}

#[test]
fn add_from_credentials_creates_a_key_on_the_nas_and_never_stores_the_password() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);

    let out = add_from_credentials(&w, &d, "nas1", &["--expires-in", "30"]);
    assert_ok(&out, "add from credentials");

    let keys = d.keys("nas1");
    assert_eq!(keys.len(), 1, "one key made on the NAS: {keys:?}");
    let key_name = keys[0]["name"].as_str().expect("name");
    assert!(
        key_name.contains("nasring") && key_name.contains("lab"),
        "the key's name tells the admin who made it: {key_name}"
    );
    assert!(
        !keys[0]["expires_at"].is_null(),
        "--expires-in sets an expiry"
    );
    let vault = std::fs::read(&w.vault).expect("vault");
    assert!(
        !String::from_utf8_lossy(&vault).contains(ADMIN_PASSWORD),
        "the password is never stored"
    );

    let (out, list) = reports(&w, "unlock", &[]);
    assert_ok(&out, "unlock");
    let nas1 = report(&list, "nas1");
    assert_eq!(nas1["connected"], true, "{nas1}");
    assert_eq!(nas1["key_stored"], true);
    assert_eq!(
        nas1["card"]["hostname"], "nas1.lab",
        "the system card: {nas1}"
    );
}

#[test]
fn a_wrong_password_stores_nothing_and_says_so() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    let wrong = w.write("wrong", "not-the-password\n");
    let (url, fp) = (d.url("nas1"), d.fingerprint("nas1"));
    let out = w.run(&[
        "add",
        "nas1",
        "--url",
        &url,
        "--username",
        ADMIN,
        "--password-file",
        wrong.to_str().expect("utf8"),
        "--tls-fingerprint",
        &fp,
    ]);
    assert_code(&out, 1, "add with a wrong password");
    assert!(stderr(&out).contains("did not accept"), "{}", text(&out));
    assert!(d.keys("nas1").is_empty(), "no key made");
    let list = stdout(&w.run(&["list"]));
    assert!(!list.contains("nas1"), "nothing stored: {list}");
}

#[test]
fn add_from_credentials_with_a_one_time_code() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system_with_otp("nas1")]);

    let out = add_from_credentials(&w, &d, "nas1", &[]);
    assert_code(&out, 2, "add without the code, not on a terminal");
    assert!(
        stderr(&out).contains("--otp-file"),
        "says how to give the code: {}",
        text(&out)
    );
    assert!(d.keys("nas1").is_empty());

    let otp = w.write("otp", &format!("{}\n", d.otp_code("nas1")));
    let out = add_from_credentials(&w, &d, "nas1", &["--otp-file", otp.to_str().expect("utf8")]);
    assert_ok(&out, "add with the code");
    assert_eq!(d.keys("nas1").len(), 1);
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["connected"], true);
}

#[test]
fn an_imported_key_is_tried_before_it_is_stored() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    import_key(&w, &d, "nas1");
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["connected"], true);

    // A key the NAS does not know is refused and not stored, unless --no-check.
    let bogus = w.write(
        "bogus.key",
        "77-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01\n",
    );
    let (url, fp) = (d.url("nas1"), d.fingerprint("nas1"));
    let add = |extra: &[&str]| {
        let mut args = vec![
            "add",
            "nas2",
            "--url",
            &url,
            "--username",
            ADMIN,
            "--api-key-file",
            bogus.to_str().expect("utf8"),
            "--tls-fingerprint",
            &fp,
        ];
        args.extend_from_slice(extra);
        w.run(&args)
    };
    let out = add(&[]);
    assert_code(&out, 1, "add with an unknown key");
    assert!(stderr(&out).contains("rejected"), "{}", text(&out));
    assert!(!stdout(&w.run(&["list"])).contains("nas2"));
    assert_ok(&add(&["--no-check"]), "add --no-check");
    assert!(stdout(&w.run(&["list"])).contains("nas2"));
}

#[test]
fn unlock_tells_offline_revoked_expired_and_changed_certificate_apart() {
    let w = World::with_keyring();
    let names = ["ok", "down", "revoked", "expired", "recert"];
    let d = Double::start(names.iter().map(|n| double::system(n)).collect());
    let ids: Vec<u64> = names.iter().map(|n| import_key(&w, &d, n)).collect();

    d.set_mode("down", "offline");
    d.key_action("revoked", ids[2], "revoke");
    d.key_action("expired", ids[3], "expire");
    d.rotate_certificate("recert");

    // The keyring opened: unlock succeeds, and says per system who connected.
    let (out, list) = reports(&w, "unlock", &[]);
    assert_ok(&out, "unlock with systems not connected");
    let expect = [
        ("ok", true, "connected"),
        ("down", false, "unreachable"),
        ("revoked", false, "key_rejected"),
        ("expired", false, "key_expired"),
        ("recert", false, "pin_mismatch"),
    ];
    for (name, connected, status) in expect {
        let r = report(&list, name);
        assert_eq!(r["connected"], connected, "{name}: {r}");
        assert_eq!(r["status"], status, "{name}: {r}");
        assert_eq!(r["key_stored"], true, "{name}: {r}");
    }
    assert!(report(&list, "revoked")["remedy"]
        .as_str()
        .is_some_and(|r| r.contains("nasring add revoked --replace")));
    assert!(report(&list, "recert")["remedy"]
        .as_str()
        .is_some_and(|r| r.contains("nasring trust recert")));

    // The human table says the same, with the remedies below it.
    let out = w.run(&["status", "--no-cards", "--connect-timeout", "2"]);
    let table = stdout(&out);
    for line in [
        "refused the connection",
        "rejected the API key",
        "expired",
        "not the pinned",
    ] {
        assert!(table.contains(line), "table lacks {line:?}:\n{table}");
    }
    assert!(table.contains("nasring add expired --replace"), "{table}");

    // list shows the last check with its time, without unlocking.
    let listed = w.run(&["list", "--json"]);
    let listed: Value = serde_json::from_str(&stdout(&listed)).expect("json");
    let down = listed
        .as_array()
        .and_then(|l| l.iter().find(|r| r["name"] == "down"))
        .expect("down listed");
    assert_eq!(down["connected"], false, "{down}");
    assert!(!down["checked_at"].is_null(), "the check's time: {down}");
}

#[test]
fn replace_makes_a_new_key_and_deletes_the_old_one_on_the_nas() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    assert_ok(&add_from_credentials(&w, &d, "nas1", &[]), "add");
    let old = d.keys("nas1")[0]["id"].as_u64().expect("id");
    d.key_action("nas1", old, "revoke");
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["status"], "key_rejected");

    let out = add_from_credentials(&w, &d, "nas1", &[]);
    assert_code(&out, 1, "add over an existing system without --replace");
    assert!(stderr(&out).contains("--replace"), "{}", text(&out));

    assert_ok(
        &add_from_credentials(&w, &d, "nas1", &["--replace"]),
        "add --replace",
    );
    let keys = d.keys("nas1");
    assert_eq!(keys.len(), 1, "the old key is gone from the NAS: {keys:?}");
    assert_ne!(keys[0]["id"].as_u64(), Some(old));
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["connected"], true);
}

#[test]
fn trust_re_pins_a_changed_certificate() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    import_key(&w, &d, "nas1");
    let new = d.rotate_certificate("nas1");

    let out = w.run(&[
        "trust",
        "nas1",
        "--tls-fingerprint",
        &format!("sha256:{}", "0".repeat(64)),
    ]);
    assert_code(&out, 1, "trust with a fingerprint the NAS does not present");
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["status"], "pin_mismatch");

    assert_ok(
        &w.run(&["trust", "nas1", "--tls-fingerprint", &new]),
        "trust",
    );
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "nas1")["connected"], true);
}

#[test]
fn login_authenticates_for_one_command_and_stores_nothing() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    import_key(&w, &d, "nas1");
    let before = std::fs::read(&w.vault).expect("vault");
    let pw = password_file(&w);

    let out = w.run(&["login", "nas1", "--password-file", &pw]);
    assert_ok(&out, "login");
    assert!(
        stdout(&out).contains("nothing was stored"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&w.vault).expect("vault"),
        before,
        "vault unchanged"
    );
    assert_eq!(d.keys("nas1").len(), 1, "no key made");

    let out = w.run(&["login", "nas1", "--password-file", &pw, "--add-to-keyring"]);
    assert_ok(&out, "login --add-to-keyring");
    let keys = d.keys("nas1");
    assert_eq!(keys.len(), 1, "the new key replaced the old one: {keys:?}");
    assert!(keys[0]["name"]
        .as_str()
        .is_some_and(|n| n.contains("nasring")));
}

#[test]
fn plain_http_is_refused_for_other_hosts_and_allowed_on_loopback() {
    let w = World::with_keyring();
    let key = w.write(
        "k",
        "5-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01\n",
    );
    // Run in a network namespace of its own: even a refusal must not depend on the network.
    let out = unshared(
        &w,
        &[
            "add",
            "far",
            "--url",
            "http://192.0.2.10",
            "--username",
            ADMIN,
            "--api-key-file",
            key.to_str().expect("utf8"),
            "--no-check",
        ],
    );
    assert_code(&out, 1, "add with http:// to another host");
    assert!(stderr(&out).contains("https://"), "{}", text(&out));
    assert!(!stdout(&w.run(&["list"])).contains("far"));

    let mut s = double::system("local");
    s["plain"] = serde_json::json!(true);
    let d = Double::start(vec![s]);
    let (_, secret) = d.create_key("local", "for loopback");
    let key = w.write("local.key", &format!("{secret}\n"));
    let out = w.run(&[
        "add",
        "local",
        "--url",
        &d.plain_url("local"),
        "--username",
        ADMIN,
        "--api-key-file",
        key.to_str().expect("utf8"),
    ]);
    assert_ok(&out, "add over plain http to 127.0.0.1");
    let (_, list) = reports(&w, "status", &[]);
    assert_eq!(report(&list, "local")["connected"], true);
}

#[test]
fn a_name_that_does_not_resolve_is_reported_as_such() {
    let w = World::with_keyring();
    let key = w.write(
        "k",
        "5-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01\n",
    );
    let fp = format!("sha256:{}", "ab".repeat(32));
    // Inside a network namespace with no network, a name lookup fails without asking anyone.
    let out = unshared(
        &w,
        &[
            "add",
            "nowhere",
            "--url",
            "https://nas.nowhere.invalid",
            "--username",
            ADMIN,
            "--api-key-file",
            key.to_str().expect("utf8"),
            "--tls-fingerprint",
            &fp,
            "--connect-timeout",
            "3",
        ],
    );
    assert_code(&out, 1, "add to a name that does not resolve");
    assert!(
        stderr(&out).to_lowercase().contains("name"),
        "says the name was not found: {}",
        text(&out)
    );
}

#[test]
fn a_system_that_never_answers_does_not_hang_status() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("ok"), double::system("silent")]);
    import_key(&w, &d, "ok");
    import_key(&w, &d, "silent");
    d.set_mode("silent", "blackhole");

    let child = w
        .cmd()
        .args([
            "status",
            "--json",
            "--connect-timeout",
            "1",
            "--deadline",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = finish_or_kill(child, Duration::from_secs(120));
    let list: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(report(list, "ok")["connected"], true, "{}", text(&out));
    let silent = report(list, "silent");
    assert_eq!(silent["connected"], false, "{silent}");
    assert!(
        ["unreachable", "deadline"].contains(&silent["status"].as_str().unwrap_or("")),
        "{silent}"
    );
}

/// Waits for the child; a child still running after `limit` is killed and the test fails
/// (a hang, not a slow run: the limit is far above the command's own deadline).
fn finish_or_kill(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the command hung: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Runs nasring inside `unshare -n`: a network namespace with only a loopback that is down.
fn unshared(w: &World, args: &[&str]) -> Output {
    let cmd = w.cmd();
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .env_clear()
        .arg("-n")
        .arg("--")
        .arg(cmd.get_program())
        .args(args)
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            unshare.env(key, value);
        }
    }
    unshare
        .output()
        .expect("run unshare -n (util-linux, as root)")
}

#[test]
fn a_key_that_expires_soon_is_flagged() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1")]);
    assert_ok(
        &add_from_credentials(&w, &d, "nas1", &["--expires-in", "3"]),
        "add",
    );
    let (_, list) = reports(&w, "status", &[]);
    let nas1 = report(&list, "nas1");
    assert_eq!(nas1["connected"], true, "{nas1}");
    assert!(!nas1["key_expires_at"].is_null(), "{nas1}");
    assert!(
        nas1["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expires in")),
        "flagged: {nas1}"
    );
}

#[test]
fn a_nas_password_equal_to_the_passphrase_gets_a_warning() {
    let w = World::with_keyring();
    let mut s = double::system("nas1");
    s["users"][0]["password"] = serde_json::json!(common::PASSPHRASE);
    let d = Double::start(vec![s]);
    let (url, fp) = (d.url("nas1"), d.fingerprint("nas1"));
    let pw = w.passphrase_file.to_str().expect("utf8").to_string();
    let out = w.run(&[
        "add",
        "nas1",
        "--url",
        &url,
        "--username",
        ADMIN,
        "--password-file",
        &pw,
        "--tls-fingerprint",
        &fp,
    ]);
    assert_ok(&out, "add");
    assert!(
        stderr(&out).contains("Warning: this NAS password is the keyring passphrase"),
        "{}",
        text(&out)
    );
}

#[test]
fn truenas_24_10_is_reported_as_unsupported() {
    let w = World::with_keyring();
    let mut s = double::system("old");
    s["version"] = serde_json::json!("24.10.2");
    let d = Double::start(vec![s]);
    let (url, fp, pw) = (d.url("old"), d.fingerprint("old"), password_file(&w));
    let out = w.run(&[
        "add",
        "old",
        "--url",
        &url,
        "--username",
        ADMIN,
        "--password-file",
        &pw,
        "--tls-fingerprint",
        &fp,
    ]);
    assert_code(&out, 1, "add to TrueNAS 24.10");
    assert!(stderr(&out).contains("not supported"), "{}", text(&out));
    assert!(
        stderr(&out).contains("25.04"),
        "says what to upgrade to: {}",
        text(&out)
    );
}

#[test]
fn piped_status_prints_nothing_but_the_result() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1"), double::system("nas2")]);
    import_key(&w, &d, "nas1");
    import_key(&w, &d, "nas2");
    let out = w.run(&["status", "--no-cards"]);
    assert_ok(&out, "status");
    assert_eq!(stderr(&out), "", "no progress when not on a terminal");
    let table = stdout(&out);
    assert_eq!(
        table.lines().next(),
        Some("TrueNAS  Key     Connected  Detail"),
        "{table}"
    );
}

#[test]
fn on_a_terminal_status_shows_progress_while_systems_answer() {
    let w = World::with_keyring();
    let d = Double::start(vec![double::system("nas1"), double::system("nas2")]);
    import_key(&w, &d, "nas1");
    import_key(&w, &d, "nas2");
    let out = common::on_terminal(&w.cmd(), "status --no-cards", "");
    assert_ok(&out, "status on a terminal");
    let screen = stdout(&out);
    assert!(screen.contains("Checking systems: 2/2"), "{screen}");
    assert!(screen.contains("nas2     stored  yes"), "{screen}");
}
