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
    w.add_unchecked(name, &w.path("shared.key"))
        .output()
        .expect("run nasring")
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

/// The agent serves keys while other processes add and remove systems: every request it gets
/// is answered from a whole, authenticated keyring, and the changes are all kept.
#[test]
fn the_agent_serves_while_the_keyring_changes() {
    use std::os::unix::fs::PermissionsExt;

    let w = World::with_keyring();
    w.write("shared.key", &format!("{API_KEY}\n"));
    let runtime = w.path("run");
    std::fs::create_dir(&runtime).expect("runtime folder");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_ok(&add(&w, "stable"), "add stable");
    let unlock = w
        .cmd()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["unlock", "--offline"])
        .output()
        .expect("unlock");
    assert_ok(&unlock, "unlock with an agent");
    // Without a passphrase file, only the agent can hand out a key.
    let through_agent = |args: &[&str]| {
        w.cmd()
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("NASRING_PASSPHRASE_FILE", w.path("no-such-file"))
            .args(args)
            .output()
            .expect("run nasring")
    };
    let secret = API_KEY.split_once('-').expect("key").1;

    let added: Vec<String> = std::thread::scope(|s| {
        let changers: Vec<_> = (0..4)
            .map(|t| {
                let w = &w;
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..4 {
                        let name = format!("busy{t}-{i}");
                        assert_ok(&add(w, &name), "add");
                        if i % 2 == 1 {
                            assert_ok(&w.run(&["remove", &name]), "remove");
                        } else {
                            kept.push(name);
                        }
                    }
                    kept
                })
            })
            .collect();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..8 {
                        let out = through_agent(&["get", "stable"]);
                        assert_ok(&out, "get through the agent while the file changes");
                        assert!(stdout(&out).contains(secret), "{}", text(&out));
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().expect("reader");
        }
        changers
            .into_iter()
            .flat_map(|c| c.join().expect("changer"))
            .collect()
    });

    let listed = names(&through_agent(&["list", "--json"]), "list");
    for name in added.iter().chain(std::iter::once(&"stable".to_string())) {
        assert!(listed.contains(name), "{name} lost: {listed:?}");
    }
    assert_eq!(
        listed.len(),
        added.len() + 1,
        "removed systems stay removed: {listed:?}"
    );
    assert_ok(&through_agent(&["lock"]), "lock");
}
