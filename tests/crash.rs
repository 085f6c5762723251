//! Crash harness: kills `nasring` with SIGKILL at random moments while it changes the keyring
//! (add, remove, import, rekey, and rotation of an API key on the TrueNAS test double),
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
    /// A new master key: the same systems, every key encrypted again.
    Rekey,
    /// A new API key for [`ROTATING`] on the NAS, then the old one deleted there.
    Rotate,
}

/// The system on the TrueNAS test double whose key the harness rotates; never removed.
const ROTATING: &str = "rotating";

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
            Op::Rekey => vec!["rekey".into()],
            Op::Rotate => [
                "rotate",
                ROTATING,
                "--connect-timeout",
                "5",
                "--deadline",
                "20",
            ]
            .map(String::from)
            .to_vec(),
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
            Op::Rekey | Op::Rotate => true,
        };
        state
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Import { .. } => "import",
            Op::Rekey => "rekey",
            Op::Rotate => "rotate",
        }
    }
}

fn next_op(w: &World, rng: &mut StdRng, state: &State, serial: usize) -> Op {
    match rng.gen_range(0..10) {
        0 => return Op::Rekey,
        1 => return Op::Rotate,
        _ => {}
    }
    let removable: Vec<&String> = state.systems.iter().filter(|s| *s != ROTATING).collect();
    let n = removable.len();
    if n < 10 && rng.gen_bool(0.15) {
        return import_op(w, serial);
    }
    if n < 2 || (n < 12 && rng.gen_bool(0.5)) {
        return Op::Add {
            name: format!("sys{serial}"),
        };
    }
    let name = removable[rng.gen_range(0..n)].clone();
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

/// How long one command of each kind takes when left alone (the median of three runs), to
/// spread the kills over its whole run.
fn calibrate(w: &World, state: &mut State) -> std::collections::BTreeMap<&'static str, Duration> {
    let mut typical = std::collections::BTreeMap::new();
    let name = |i: usize| format!("calibrate{i}");
    let kinds: [Box<dyn Fn(usize) -> Op>; 4] = [
        Box::new(|i| Op::Add { name: name(i) }),
        Box::new(|i| Op::Remove { name: name(i) }),
        Box::new(|_| Op::Rekey),
        Box::new(|_| Op::Rotate),
    ];
    for make in &kinds {
        let mut took = Vec::new();
        for i in 0..3 {
            let op = make(i);
            let start = Instant::now();
            let out = w.cmd().args(op.args(w)).output().expect("run");
            assert_ok(&out, op.kind());
            took.push(start.elapsed());
            *state = op.after(state);
        }
        took.sort();
        typical.insert(make(0).kind(), took[1]);
    }
    typical.insert("import", typical["add"]);
    typical
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
    let nas = common::double::Double::numbered(1);
    add_rotating(&w, &nas);
    let mut state = State {
        systems: BTreeSet::from([ROTATING.to_string()]),
        passphrase_file: w.passphrase_file.clone(),
    };
    let typical = calibrate(&w, &mut state);
    let token = token_file(&w);
    let mut good_token = std::fs::read(&token).expect("token file");
    let mut tally = Tally::default();
    let start = Instant::now();

    for serial in 0..kills {
        let op = next_op(&w, &mut rng, &state, serial);
        let after = op.after(&state);
        let file_before = std::fs::read(&w.vault).expect("keyring file");
        let delay = typical[op.kind()].mul_f64(1.2 * rng.gen_range(0.0..1.0));
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
        let written = std::fs::read(&w.vault).expect("keyring file") != file_before;
        kind.1 += usize::from(killed && names == after.systems && written);
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
    let leftovers = temporaries(&w);
    let keys = rotation_settles(&w, &nas);
    // That last rotation wrote the keyring, which clears the copies killed writers left.
    let after_a_write = temporaries(&w);
    eprintln!(
        "crash harness: after the last rotation the NAS holds {keys} key(s) for {ROTATING}, \
         the stored one"
    );
    eprintln!(
        "crash harness: {} commands in {:?} (typical {typical:?}): {} killed, {} finished before \
         the kill; states verified {}: {} before, {} after; {leftovers} temporary files left by the \
         last kills, {after_a_write} after one more write; SoftHSM token file restored {} times",
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
        eprintln!(
            "crash harness: {kind}: {killed} killed, {after} of them had already written the keyring"
        );
    }
    assert_eq!(tally.verified, kills);
    assert_eq!(
        after_a_write, 0,
        "a write removes the copies of killed writers"
    );
    assert!(
        tally.kills * 2 >= kills,
        "most commands must really be interrupted"
    );
}

/// SIGKILL's number on Linux.
fn libc_sigkill() -> i32 {
    9
}

/// A system on the TrueNAS test double, with a key made there and checked when stored.
fn add_rotating(w: &World, nas: &common::double::Double) {
    let key = w.write("rotating.key", &format!("{}\n", nas.issue_key("nas1")));
    let out = w.run(&[
        "add",
        ROTATING,
        "--url",
        &nas.url("nas1"),
        "--username",
        common::double::ADMIN,
        "--api-key-file",
        key.to_str().expect("utf8"),
        "--tls-fingerprint",
        &nas.fingerprint("nas1"),
    ]);
    assert_ok(&out, "add the rotating system");
}

/// One rotation left alone finishes whatever the kills left pending: afterwards the stored key
/// connects and it is the only key on the NAS (no orphan of an interrupted rotation is left).
fn rotation_settles(w: &World, nas: &common::double::Double) -> usize {
    let out = w.run(&["rotate", ROTATING, "--connect-timeout", "5"]);
    assert_ok(&out, "a last rotation");
    let out = w.run(&["status", "--json", "--no-cards", "--connect-timeout", "5"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == ROTATING))
        .expect("the rotating system");
    assert_eq!(row["connected"], true, "the stored key works: {row}");
    let live: Vec<_> = nas
        .keys("nas1")
        .into_iter()
        .filter(|k| k["revoked"] != true)
        .collect();
    assert_eq!(
        live.len(),
        1,
        "one key left on the NAS, the stored one: {live:?}"
    );
    live.len()
}

/// The `.tmp` copies beside the keyring.
fn temporaries(w: &World) -> usize {
    std::fs::read_dir(w.tmp.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count()
}
