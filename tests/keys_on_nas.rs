//! Keys on the NAS: rotation (also when killed at each step, then run again) and revocation
//! by `remove --revoke` and `reset --revoke`, against the TrueNAS double over TLS on 127.0.0.1.

mod common;

use common::double::{system, Double, ADMIN};
use common::*;
use serde_json::Value;

/// The TrueNAS double's systems `nas1` … `nasN`.
fn start(count: usize) -> Double {
    Double::start((1..=count).map(|i| system(&format!("nas{i}"))).collect())
}

/// Adds a system of the double with a key made on it, checked against it.
fn add_system(w: &World, nas: &Double, name: &str) {
    let (_, key) = nas.create_key(name, "made by hand");
    let key_file = w.write(&format!("{name}.key"), &format!("{key}\n"));
    let out = w.run(&[
        "add",
        name,
        "--url",
        &nas.url(name),
        "--username",
        ADMIN,
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &nas.fingerprint(name),
    ]);
    assert_ok(&out, "add");
}

/// `(id, name)` of every key on a system of the double.
fn keys(nas: &Double, name: &str) -> Vec<(u64, String)> {
    let mut all: Vec<(u64, String)> = nas
        .keys(name)
        .iter()
        .map(|k| {
            (
                k["id"].as_u64().expect("id"),
                k["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

fn stored(w: &World, name: &str) -> Value {
    let text = std::fs::read_to_string(&w.vault).expect("vault");
    let doc: Value = serde_json::from_str(text.lines().nth(1).expect("line")).expect("json");
    doc["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The stored key of `name` logs in to its NAS.
fn assert_connects(w: &World, name: &str) {
    let out = w.run(&["unlock", "--json", "--no-cards"]);
    assert_ok(&out, "unlock");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == name)
        .expect("row")
        .clone();
    assert_eq!(row["connected"], true, "{row}");
}

/// The NAS holds exactly one key, and it is the one stored.
fn assert_only_the_stored_key(w: &World, nas: &Double, name: &str) {
    let entry = stored(w, name);
    let keys = keys(nas, name);
    assert_eq!(keys.len(), 1, "keys on {name}: {keys:?}");
    assert_eq!(Some(keys[0].0), entry["api_key_id"].as_u64(), "{entry}");
    assert_eq!(Some(keys[0].1.as_str()), entry["api_key_name"].as_str());
    assert_eq!(entry["rotation"], Value::Null);
}

#[test]
fn rotate_stores_a_new_key_and_deletes_the_old_one() {
    let nas = start(2);
    let w = World::with_keyring();
    add_system(&w, &nas, "nas1");
    add_system(&w, &nas, "nas2");
    let old = keys(&nas, "nas1");

    let out = w.run(&["rotate", "nas1", "--json"]);
    assert_ok(&out, "rotate nas1");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report[0]["old_key_deleted"], true, "{report}");
    assert_only_the_stored_key(&w, &nas, "nas1");
    assert_ne!(keys(&nas, "nas1")[0].0, old[0].0);
    assert!(keys(&nas, "nas1")[0].1.contains("rotation"));
    assert_connects(&w, "nas1");

    let before = (keys(&nas, "nas1"), keys(&nas, "nas2"));
    assert_ok(&w.run(&["rotate", "--all"]), "rotate --all");
    for name in ["nas1", "nas2"] {
        assert_only_the_stored_key(&w, &nas, name);
        assert_connects(&w, name);
    }
    assert_ne!((keys(&nas, "nas1"), keys(&nas, "nas2")), before);
}

#[test]
fn a_rotation_killed_at_any_step_is_finished_by_a_rerun() {
    let nas = start(1);
    let w = World::with_keyring();
    add_system(&w, &nas, "nas1");
    for step in ["recorded", "created", "stored", "deleted"] {
        let crashed = w
            .cmd()
            .env("NASRING_TEST_CRASH_AT", step)
            .args(["rotate", "nas1"])
            .output()
            .expect("run");
        assert_eq!(
            crashed.status.code(),
            None,
            "{step}: not killed\n{}",
            text(&crashed)
        );
        let entry = stored(&w, "nas1");
        let pending = entry["rotation"]["new_key_name"]
            .as_str()
            .expect("recorded");
        let keys = keys(&nas, "nas1");
        match step {
            "recorded" => assert_eq!(keys.len(), 1, "{step}: {keys:?}"),
            // The new key exists on the NAS but not in the keyring: it is found by its name.
            "created" => {
                assert_eq!(keys.len(), 2, "{step}: {keys:?}");
                assert!(keys.iter().any(|k| k.1 == pending), "{step}: {keys:?}");
                assert_ne!(entry["api_key_name"].as_str(), Some(pending));
            }
            // Stored: the old key is still on the NAS, its id recorded.
            "stored" => {
                assert_eq!(keys.len(), 2, "{step}: {keys:?}");
                assert_eq!(entry["api_key_name"].as_str(), Some(pending));
                let old = entry["rotation"]["old_key_id"].as_u64().expect("old id");
                assert!(keys.iter().any(|k| k.0 == old), "{step}: {keys:?}");
            }
            _ => assert_eq!(keys.len(), 1, "{step}: {keys:?}"),
        }
        // Whatever the step, the stored key still works.
        assert_connects(&w, "nas1");
        let rerun = w.run(&["rotate", "nas1"]);
        assert_ok(&rerun, &format!("rerun after {step}"));
        assert_only_the_stored_key(&w, &nas, "nas1");
        assert_connects(&w, "nas1");
    }
}

#[test]
fn remove_and_reset_revoke_delete_keys_first_and_list_what_failed() {
    let nas = start(3);
    let w = World::with_keyring();
    for name in ["nas1", "nas2", "nas3"] {
        add_system(&w, &nas, name);
    }
    let out = w.run(&["remove", "nas1", "--revoke"]);
    assert_ok(&out, "remove --revoke");
    assert!(keys(&nas, "nas1").is_empty(), "{:?}", keys(&nas, "nas1"));
    assert_eq!(stored(&w, "nas1"), Value::Null);

    nas.set_mode("nas2", "offline");
    let out = w.run(&["reset", "--revoke", "--yes", "--connect-timeout", "2"]);
    assert_code(&out, 1, "reset --revoke with a system offline");
    let err = stderr(&out);
    assert!(
        err.contains("nas2") && !err.contains("nas3:"),
        "{}",
        text(&out)
    );
    assert!(err.contains("stays valid"), "{}", text(&out));
    assert!(!w.vault.exists(), "reset must still remove the keyring");
    assert!(keys(&nas, "nas3").is_empty(), "{:?}", keys(&nas, "nas3"));
    assert_eq!(
        keys(&nas, "nas2").len(),
        1,
        "the offline system keeps its key"
    );
}
