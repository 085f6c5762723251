//! Crash harness: kills `nasring` with SIGKILL at random moments while it changes the keyring
//! (add, remove, import),
//! and after every kill checks that the keyring opens and holds exactly the state before or
//! the state after the interrupted command.
//!
//! `NASRING_CRASH_KILLS` sets the number of interrupted commands (default 1000) and
//! `NASRING_CRASH_SEED` the random seed (printed, so that a failure can be replayed).
//! A new command that changes the keyring becomes one more [`Op`] variant: the arguments it
//! runs with and the state it leaves.
//!
//! SoftHSM's file store rewrites its `token.object` in place at every login, so a kill at that
//! moment can leave the *token* empty (not the keyring). A hardware token has no such file; the
//! harness puts the token's last good file back, and counts how often it had to.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the keyring holds, as far as the harness checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    systems: BTreeSet<String>,
    /// The passphrase file that opens the keyring (a rekey would change it).
    passphrase_file: PathBuf,
}

/// One command that changes the keyring.
#[derive(Clone, Debug)]
enum Op {
    Add {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Several systems from an inventory in one command: all of them or none.
    Import {
        names: Vec<String>,
        inventory: PathBuf,
    },
}

impl Op {
    fn args(&self, w: &World) -> Vec<String> {
        match self {
            Op::Add { name } => {
                let key = w.path("api.key");
                vec![
                    "add".into(),
                    name.clone(),
                    "--url".into(),
                    "https://127.0.0.1:9".into(),
                    "--username".into(),
                    "admin".into(),
                    "--api-key-file".into(),
                    key.display().to_string(),
                    "--tls-fingerprint".into(),
                    format!("sha256:{}", "cd".repeat(32)),
                    "--no-check".into(),
                ]
            }
            Op::Remove { name } => vec!["remove".into(), name.clone()],
            Op::Import { inventory, .. } => vec!["import".into(), inventory.display().to_string()],
        }
    }

    fn after(&self, before: &State) -> State {
        let mut state = before.clone();
        match self {
            Op::Add { name } => state.systems.insert(name.clone()),
            Op::Remove { name } => state.systems.remove(name),
            Op::Import { names, .. } => {
                state.systems.extend(names.iter().cloned());
                true
            }
        };
        state
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Import { .. } => "import",
        }
    }
}

fn next_op(w: &World, rng: &mut StdRng, state: &State, serial: usize) -> Op {
    let n = state.systems.len();
    if n < 10 && rng.gen_bool(0.15) {
        return import_op(w, serial);
    }
    if n < 2 || (n < 12 && rng.gen_bool(0.5)) {
        return Op::Add {
            name: format!("sys{serial}"),
        };
    }
    let pick = rng.gen_range(0..n);
    let name = state.systems.iter().nth(pick).cloned().unwrap_or_default();
    Op::Remove { name }
}

fn import_op(w: &World, serial: usize) -> Op {
    let names: Vec<String> = (0..3).map(|i| format!("imp{serial}-{i}")).collect();
    let lines: String = names
        .iter()
        .map(|name| {
            let line = serde_json::json!({"name": name, "url": "https://127.0.0.1:9",
                "username": "admin", "api_key": API_KEY,
                "tls_fingerprint": format!("sha256:{}", "cd".repeat(32))});
            format!("{line}\n")
        })
        .collect();
    let inventory = w.write("inventory.jsonl", &lines);
    Op::Import { names, inventory }
}

/// Opens the keyring (MAC and every key checked) and returns the systems in it.
fn observed(w: &World, state: &State) -> Result<BTreeSet<String>, String> {
    let out = w
        .cmd()
        .env("NASRING_PASSPHRASE_FILE", &state.passphrase_file)
        .args(["unlock", "--offline", "--json"])
        .output()
        .expect("run nasring");
    if !out.status.success() {
        return Err(text(&out));
    }
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut names = BTreeSet::new();
    for row in rows.as_array().ok_or("not an array")? {
        if row["key_stored"] != true || row["status"] != "not_checked" {
            return Err(format!("a key does not open: {row}"));
        }
        names.insert(row["name"].as_str().unwrap_or_default().to_owned());
    }
    Ok(names)
}

/// How long one command takes when left alone, to spread the kills over its whole run.
fn calibrate(w: &World, state: &mut State) -> Duration {
    let mut took = Vec::new();
    for i in 0..6 {
        let op = if i % 2 == 0 {
            Op::Add {
                name: format!("calibrate{i}"),
            }
        } else {
            Op::Remove {
                name: format!("calibrate{}", i - 1),
            }
        };
        let start = Instant::now();
        let out = w.cmd().args(op.args(w)).output().expect("run");
        assert_ok(&out, op.kind());
        took.push(start.elapsed());
        *state = op.after(state);
    }
    took.sort();
    took[took.len() / 2]
}

/// SoftHSM's token file, which a kill during `C_Login` can truncate.
fn token_file(w: &World) -> PathBuf {
    let tokens = w.hsm.dir.join("tokens");
    let slot = std::fs::read_dir(&tokens)
        .expect("token folder")
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir())
        .expect("one token");
    slot.path().join("token.object")
}

/// Puts back the token file if the kill truncated it; true if it had to.
fn repair_token(path: &PathBuf, good: &[u8]) -> bool {
    let now = std::fs::read(path).unwrap_or_default();
    if now.len() >= good.len() {
        return false;
    }
    std::fs::write(path, good).expect("restore the SoftHSM token file");
    true
}

#[derive(Default)]
struct Tally {
    kills: usize,
    finished_first: usize,
    before: usize,
    after: usize,
    verified: usize,
    token_repairs: usize,
    /// Per kind of command: interrupted, and of those left in the state after.
    by_kind: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

#[test]
fn sigkill_at_random_moments_leaves_the_state_before_or_after() {
    let kills: usize = std::env::var("NASRING_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed: u64 = std::env::var("NASRING_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("crash harness: {kills} interrupted commands, NASRING_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let w = World::with_keyring();
    w.write("api.key", &format!("{API_KEY}\n"));
    let mut state = State {
        systems: BTreeSet::new(),
        passphrase_file: w.passphrase_file.clone(),
    };
    let typical = calibrate(&w, &mut state);
    let token = token_file(&w);
    let mut good_token = std::fs::read(&token).expect("token file");
    let window = typical.mul_f64(1.2);
    let mut tally = Tally::default();
    let start = Instant::now();

    for serial in 0..kills {
        let op = next_op(&w, &mut rng, &state, serial);
        let after = op.after(&state);
        let delay = window.mul_f64(rng.gen_range(0.0..1.0));
        let mut child = w
            .cmd()
            .args(op.args(&w))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nasring");
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let killed = status.signal() == Some(libc_sigkill());
        tally.kills += usize::from(killed);
        tally.finished_first += usize::from(!killed);
        if !killed {
            assert!(status.success(), "{op:?} failed on its own: {status:?}");
        }
        tally.token_repairs += usize::from(repair_token(&token, &good_token));

        let names = observed(&w, &after)
            .or_else(|_| observed(&w, &state))
            .unwrap_or_else(|e| {
                panic!("after {op:?} (seed {seed}) the keyring does not open: {e}")
            });
        let kind = tally.by_kind.entry(op.kind()).or_default();
        kind.0 += usize::from(killed);
        kind.1 += usize::from(killed && names == after.systems);
        if names == after.systems {
            tally.after += 1;
            state = after;
        } else {
            assert!(
                killed && names == state.systems,
                "after {op:?} (killed: {killed}, seed {seed}) the keyring holds {names:?}, \
                 neither {:?} nor {:?}",
                state.systems,
                after.systems
            );
            tally.before += 1;
        }
        tally.verified += 1;
        good_token = std::fs::read(&token).expect("token file");
    }
    let leftovers = std::fs::read_dir(w.tmp.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    eprintln!(
        "crash harness: {} commands in {:?} (typical {typical:?}): {} killed, {} finished before \
         the kill; states verified {}: {} before, {} after; {leftovers} temporary files left; \
         SoftHSM token file restored {} times",
        kills,
        start.elapsed(),
        tally.kills,
        tally.finished_first,
        tally.verified,
        tally.before,
        tally.after,
        tally.token_repairs
    );
    for (kind, (killed, after)) in &tally.by_kind {
        eprintln!("crash harness: {kind}: {killed} killed, {after} of them already committed");
    }
    assert_eq!(tally.verified, kills);
    assert!(
        tally.kills * 2 >= kills,
        "most commands must really be interrupted"
    );
}

/// SIGKILL's number on Linux.
fn libc_sigkill() -> i32 {
    9
}
