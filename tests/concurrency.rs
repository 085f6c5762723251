//! Many `nasring` processes on one keyring at once: adders, removers and readers. Every
//! command succeeds, every reader sees a whole keyring, and every committed change is there
//! afterwards.

mod common;

use std::collections::BTreeSet;
use std::process::Output;

use common::*;
use serde_json::Value;

const ADDERS: usize = 6;
const ADDS_EACH: usize = 4;
const REMOVERS: usize = 4;
const REMOVES_EACH: usize = 3;
const READERS: usize = 4;
const READS_EACH: usize = 8;

fn add(w: &World, name: &str) -> Output {
    let key_file = w.path("shared.key");
    let fp = format!("sha256:{}", "ab".repeat(32));
    w.run(&[
        "add",
        name,
        "--url",
        "https://127.0.0.1:9",
        "--username",
        "admin",
        "--api-key-file",
        key_file.to_str().expect("utf8"),
        "--tls-fingerprint",
        &fp,
        "--no-check",
    ])
}

/// The names in a `list --json` or `unlock --offline --json` answer; every key must open.
fn names(out: &Output, what: &str) -> BTreeSet<String> {
    assert_ok(out, what);
    let rows: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e})\n{}", text(out)));
    rows.as_array()
        .unwrap_or_else(|| panic!("{what}: not an array"))
        .iter()
        .map(|row| {
            assert_eq!(row["key_stored"], true, "{what}: {row}");
            row["name"].as_str().expect("name").to_owned()
        })
        .collect()
}

#[test]
fn adders_removers_and_readers_at_once_lose_nothing() {
    let w = World::with_keyring();
    w.write("shared.key", &format!("{API_KEY}\n"));
    let old: Vec<String> = (0..REMOVERS * REMOVES_EACH)
        .map(|i| format!("old{i}"))
        .collect();
    for name in &old {
        assert_ok(&add(&w, name), "seed");
    }
    let universe: BTreeSet<String> = old
        .iter()
        .cloned()
        .chain((0..ADDERS).flat_map(|a| (0..ADDS_EACH).map(move |i| format!("new{a}-{i}"))))
        .collect();

    let reads = std::thread::scope(|scope| {
        let w = &w;
        for a in 0..ADDERS {
            scope.spawn(move || {
                for i in 0..ADDS_EACH {
                    assert_ok(&add(w, &format!("new{a}-{i}")), "concurrent add");
                }
            });
        }
        for r in 0..REMOVERS {
            scope.spawn(move || {
                for i in 0..REMOVES_EACH {
                    let name = format!("old{}", r * REMOVES_EACH + i);
                    assert_ok(&w.run(&["remove", &name]), "concurrent remove");
                }
            });
        }
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let universe = &universe;
                scope.spawn(move || {
                    for i in 0..READS_EACH {
                        let args: &[&str] = if (r + i) % 2 == 0 {
                            &["list", "--json"]
                        } else {
                            &["unlock", "--offline", "--json"]
                        };
                        let seen = names(&w.run(args), &args.join(" "));
                        assert!(seen.is_subset(universe), "a reader saw {seen:?}");
                    }
                    READS_EACH
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .sum::<usize>()
    });

    let want: BTreeSet<String> = universe
        .iter()
        .filter(|n| n.starts_with("new"))
        .cloned()
        .collect();
    let listed = names(&w.run(&["list", "--json"]), "list");
    let opened = names(&w.run(&["unlock", "--offline", "--json"]), "unlock");
    assert_eq!(listed, want, "the keyring lost or kept something");
    assert_eq!(opened, want);
    eprintln!(
        "concurrency: {} adds, {} removes and {reads} reads at once; {} systems afterwards",
        ADDERS * ADDS_EACH,
        REMOVERS * REMOVES_EACH,
        want.len()
    );
}
