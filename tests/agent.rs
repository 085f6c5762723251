//! The agent, run as the real binary against SoftHSM (and the TrueNAS double for `api`):
//! who may use it, what ends it, and where keys go.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::double::Double;
use common::*;

/// A keyring world with its own runtime folder, so tests run in parallel.
struct Agented {
    w: World,
    runtime: PathBuf,
    agents: Vec<u32>,
}

impl Agented {
    fn new() -> Agented {
        let w = World::with_keyring();
        let runtime = w.path("run");
        std::fs::create_dir(&runtime).expect("runtime folder");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Agented {
            w,
            runtime,
            agents: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.w.cmd();
        cmd.env("XDG_RUNTIME_DIR", &self.runtime);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run nasring")
    }

    /// Runs with a passphrase file that does not exist: only the agent can serve.
    fn run_locked_out(&self, args: &[&str]) -> Output {
        self.cmd()
            .env("NASRING_PASSPHRASE_FILE", self.w.path("no-such-file"))
            .args(args)
            .output()
            .expect("run nasring")
    }

    /// Adds a system from a key file that is removed again, so the key is on disk nowhere
    /// but in the keyring.
    fn add(&self, name: &str, key: &str, url: &str, fingerprint: &str, check: bool) {
        let key_file = self.w.write(&format!("{name}.key"), &format!("{key}\n"));
        let mut args = vec![
            "add",
            name,
            "--url",
            url,
            "--username",
            common::double::ADMIN,
            "--api-key-file",
            key_file.to_str().expect("utf8"),
            "--tls-fingerprint",
            fingerprint,
        ];
        if !check {
            args.push("--no-check");
        }
        assert_ok(&self.run(&args), "add");
        std::fs::remove_file(key_file).expect("remove key file");
    }

    fn add_offline(&self, name: &str, key: &str) {
        let fp = format!("sha256:{}", "ab".repeat(32));
        self.add(name, key, "https://127.0.0.1:9", &fp, false);
    }

    /// `unlock --offline` with extra flags; returns the agent's pid.
    fn unlock(&mut self, extra: &[&str]) -> u32 {
        let mut args = vec!["unlock", "--offline"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_ok(&out, "unlock");
        let pid = self.agent_pid().expect("an agent after unlock");
        self.agents.push(pid);
        pid
    }

    fn agent_pid(&self) -> Option<u32> {
        let out = self.run_locked_out(&["agent", "--json"]);
        assert_ok(&out, "agent --json");
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        view["pid"].as_u64().map(|p| p as u32)
    }

    fn socket_folder(&self) -> PathBuf {
        self.runtime.join("nasring")
    }

    fn sockets(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.socket_folder())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        let sockets = self.sockets();
        assert_eq!(sockets.len(), 1, "one socket: {sockets:?}");
        sockets[0].clone()
    }

    fn log(&self) -> Vec<serde_json::Value> {
        let out = self.run_locked_out(&["log", "--json"]);
        assert_ok(&out, "log");
        serde_json::from_slice(&out.stdout).expect("log json")
    }
}

impl Drop for Agented {
    /// An agent left by a failed test is ended, by the pid this test recorded.
    fn drop(&mut self) {
        for pid in &self.agents {
            if is_running(*pid) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn api_secret(key: &str) -> &str {
    key.split_once('-').expect("key").1
}

#[test]
fn unlock_leaves_an_agent_that_serves_without_asking() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&[]);
    assert_eq!(mode(&a.socket_folder()), 0o700);
    assert_eq!(mode(&a.socket()), 0o600);

    let get = a.run_locked_out(&["get", "nas1"]);
    assert_ok(&get, "get through the agent");
    assert_eq!(stdout(&get), format!("{API_KEY}\n"));
    let status = a.run_locked_out(&["status", "--offline", "--json"]);
    assert_ok(&status, "status through the agent");
    assert!(
        stdout(&status).contains("\"key_stored\": true"),
        "{}",
        text(&status)
    );
    let missing = a.run_locked_out(&["get", "nas9"]);
    assert_code(&missing, 1, "get of an unknown system");
    assert!(
        stderr(&missing).contains("no system named \"nas9\""),
        "{}",
        text(&missing)
    );

    let log = a.log();
    let events: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["command"].as_str().unwrap_or(""),
                e["system"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(events.contains(&("unlock", "unlock", "")), "{log:?}");
    assert!(events.contains(&("key", "get", "nas1")), "{log:?}");
    assert!(events.contains(&("key", "status", "*")), "{log:?}");
    let handout = log
        .iter()
        .find(|e| e["command"] == "get")
        .expect("get event");
    assert!(handout["pid"].as_u64().is_some_and(|p| p as u32 != pid));
    let raw = std::fs::read_to_string(a.w.path("keyring.nasring.audit.jsonl")).expect("log");
    assert!(!raw.contains(api_secret(API_KEY)) && !raw.contains(PASSPHRASE));
    let human = a.run_locked_out(&["log"]);
    assert!(stdout(&human).starts_with("Time"), "{}", text(&human));
}

#[test]
fn another_user_is_refused_by_the_peer_credential_check() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    a.unlock(&[]);
    // Open the way through the file system, so that only the agent's own check remains.
    let socket = a.socket();
    for dir in [a.w.tmp.path(), a.runtime.as_path(), &a.socket_folder()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    // The agent may answer and close before the request is written: ignore SIGPIPE.
    let client = r#"use IO::Socket::UNIX; $SIG{PIPE} = "IGNORE"; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!";
print $s qq({"op":"key","system":"nas1","command":"get"}\n); print scalar <$s>;"#;
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/perl",
            "-e",
        ])
        .arg(client)
        .arg(&socket)
        .output()
        .expect("run setpriv");
    assert_ok(&out, "the other user's client");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["kind"], "not_same_user", "{reply}");
    assert!(!stdout(&out).contains(api_secret(API_KEY)));
    let refused = a.log().into_iter().find(|e| e["event"] == "refused");
    assert_eq!(refused.expect("refusal logged")["uid"], 65534);
    // The owner is still served.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(a.socket_folder(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    assert_ok(&a.run_locked_out(&["get", "nas1"]), "the owner's get");
}

#[test]
fn a_wrong_socket_or_folder_mode_is_refused() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    a.unlock(&[]);
    let socket = a.socket();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let out = a.run_locked_out(&["get", "nas1"]);
    assert_code(&out, 1, "get through a socket of mode 660");
    assert!(
        stderr(&out).contains("has mode 660, not 600"),
        "{}",
        text(&out)
    );
    assert!(!stdout(&out).contains(api_secret(API_KEY)));
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(a.socket_folder(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = a.run_locked_out(&["get", "nas1"]);
    assert_code(&out, 1, "get through a folder of mode 755");
    assert!(
        stderr(&out).contains("has mode 755, not 700"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_agent_is_not_started_in_an_open_folder() {
    let a = Agented::new();
    std::fs::create_dir(a.socket_folder()).expect("mkdir");
    std::fs::set_permissions(a.socket_folder(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = a.run(&["unlock", "--offline"]);
    assert_ok(&out, "unlock (the keyring still opens for the command)");
    assert!(
        stderr(&out).contains("no agent was started"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("has mode 755"), "{}", text(&out));
    assert!(a.sockets().is_empty());
}

/// The agent is gone, its socket too, and a command without the passphrase is refused.
fn assert_access_ended(a: &Agented, pid: u32) {
    assert!(
        wait_until_gone(pid, Duration::from_secs(30)),
        "agent {pid} still runs"
    );
    assert!(a.sockets().is_empty(), "socket left: {:?}", a.sockets());
    let out = a.run_locked_out(&["get", "nas1"]);
    assert_code(
        &out,
        2,
        "get after the agent ended (asks for the passphrase)",
    );
    assert!(!stdout(&out).contains(api_secret(API_KEY)));
}

#[test]
fn the_idle_timeout_ends_access() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&["--idle-timeout", "3s"]);
    assert_ok(
        &a.run_locked_out(&["get", "nas1"]),
        "get before the timeout",
    );
    assert_access_ended(&a, pid);
    let log = a.log();
    let lock = log
        .iter()
        .find(|e| e["event"] == "lock")
        .expect("lock logged");
    assert_eq!(lock["detail"], "idle timeout");
}

#[test]
fn the_maximum_lifetime_ends_access_from_the_environment() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let out = a
        .cmd()
        .env("NASRING_AGENT_MAX_LIFETIME", "2s")
        .args(["unlock", "--offline"])
        .output()
        .expect("unlock");
    assert_ok(&out, "unlock");
    let pid = a.agent_pid().expect("agent");
    a.agents.push(pid);
    assert_access_ended(&a, pid);
    assert!(a.log().iter().any(|e| e["detail"] == "maximum lifetime"));
}

#[test]
fn lock_ends_access_at_once() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&[]);
    let out = a.run_locked_out(&["lock"]);
    assert_ok(&out, "lock");
    assert!(
        stdout(&out).contains(&format!("pid {pid}")),
        "{}",
        text(&out)
    );
    assert!(!is_running(pid), "lock returned before the agent ended");
    assert_access_ended(&a, pid);
    let again = a.run_locked_out(&["lock"]);
    assert_ok(&again, "lock when not unlocked");
    assert!(stdout(&again).contains("not unlocked"), "{}", text(&again));
}

#[test]
fn removing_the_token_ends_the_agent() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&[]);
    let tokens = a.w.hsm.dir.join("tokens");
    std::fs::rename(&tokens, a.w.hsm.dir.join("unplugged")).expect("unplug the token");
    assert!(
        wait_until_gone(pid, Duration::from_secs(30)),
        "agent still runs"
    );
    assert!(a.sockets().is_empty());
    assert!(a.log().iter().any(|e| e["detail"] == "token removed"));
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

#[test]
fn a_killed_agent_leaves_no_key_on_disk() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&[]);
    assert_ok(&a.run_locked_out(&["get", "nas1"]), "get");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(wait_until_gone(pid, Duration::from_secs(10)));

    let mut files = Vec::new();
    files_under(a.w.tmp.path(), &mut files);
    assert!(files.len() > 3, "{files:?}");
    for file in files.iter().filter(|f| **f != a.w.passphrase_file) {
        let bytes = std::fs::read(file).expect("read");
        let body = String::from_utf8_lossy(&bytes);
        assert!(
            !body.contains(api_secret(API_KEY)),
            "the key is in {}",
            file.display()
        );
        assert!(
            !body.contains(PASSPHRASE),
            "the passphrase is in {}",
            file.display()
        );
    }
    // The stale socket serves nothing; a new unlock replaces it.
    assert_code(&a.run_locked_out(&["get", "nas1"]), 2, "get after the kill");
    let pid = a.unlock(&[]);
    assert_ok(
        &a.run_locked_out(&["get", "nas1"]),
        "get from the new agent",
    );
    assert_ok(&a.run_locked_out(&["lock"]), "lock");
    assert!(!is_running(pid));
}

/// Every process's argv, as the kernel shows it.
fn all_cmdlines() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&raw));
            all.push('\n');
        }
    }
    all
}

#[test]
fn exec_passes_the_key_to_the_child_and_nowhere_else() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let agent = a.unlock(&[]);
    let env_file = a.w.path("child-env");
    let ready = a.w.path("child-ready");
    let script = format!(
        "env > {env}; touch {ready}; sleep 3; exit 7",
        env = env_file.display(),
        ready = ready.display()
    );
    let mut child = a
        .cmd()
        .env("NASRING_PASSPHRASE_FILE", a.w.path("no-such-file"))
        .args(["exec", "nas1", "--", "sh", "-c", &script])
        .spawn()
        .expect("exec");
    let until = Instant::now() + Duration::from_secs(20);
    while !ready.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ready.exists(), "the child did not start");
    let cmdlines = all_cmdlines();
    let agent_env = std::fs::read(format!("/proc/{agent}/environ")).expect("agent environ");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7), "exec passes on the exit code");

    assert!(
        !cmdlines.contains(api_secret(API_KEY)),
        "a key in argv:\n{cmdlines}"
    );
    assert!(
        cmdlines.contains("sleep 3"),
        "the child was not seen:\n{cmdlines}"
    );
    assert!(!String::from_utf8_lossy(&agent_env).contains(api_secret(API_KEY)));
    let env = std::fs::read_to_string(&env_file).expect("child env");
    assert!(
        env.contains(&format!("NASRING_API_KEY={API_KEY}\n")),
        "{env}"
    );
    assert!(env.contains("NASRING_URL=https://127.0.0.1:9\n"), "{env}");
    assert!(env.contains("NASRING_USERNAME=truenas_admin\n"), "{env}");
    assert!(env.contains("NASRING_SYSTEM=nas1\n"), "{env}");
    assert!(env.contains(&format!(
        "NASRING_TLS_FINGERPRINT=sha256:{}\n",
        "ab".repeat(32)
    )));
    let log = a.log();
    assert!(
        log.iter()
            .any(|e| e["command"] == "exec" && e["system"] == "nas1"),
        "{log:?}"
    );
}

#[test]
fn exec_and_get_unlock_by_themselves_without_an_agent() {
    let a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let out = a.run(&[
        "exec",
        "nas1",
        "--",
        "sh",
        "-c",
        "printf %s \"$NASRING_API_KEY\"",
    ]);
    assert_ok(&out, "exec without an agent");
    assert_eq!(stdout(&out), API_KEY);
    let out = a.run(&["get", "nas1"]);
    assert_eq!(stdout(&out), format!("{API_KEY}\n"));
    assert!(a.sockets().is_empty(), "exec and get start no agent");
    let log = a.log();
    assert!(log
        .iter()
        .any(|e| e["by"] == "self" && e["command"] == "get" && e["event"] == "key"));
}

#[test]
fn api_calls_one_method_on_one_or_every_system() {
    let double = Double::numbered(2);
    let mut a = Agented::new();
    let keys = [double.issue_key("nas1"), double.issue_key("nas2")];
    for (name, key) in ["nas1", "nas2"].iter().zip(&keys) {
        a.add(
            name,
            key,
            &double.url(name),
            &double.fingerprint(name),
            true,
        );
    }
    let unlock = a.run(&["unlock", "--json"]);
    assert_ok(&unlock, "unlock online");
    a.agents.push(a.agent_pid().expect("agent"));
    assert!(
        stdout(&unlock).contains("\"connected\": true"),
        "{}",
        text(&unlock)
    );

    let info = a.run_locked_out(&["api", "nas1", "system.info"]);
    assert_ok(&info, "api system.info");
    let result: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(result["hostname"], double.hostname("nas1"));

    let all = a.run_locked_out(&["api", "--all", "core.ping"]);
    assert_ok(&all, "api --all core.ping");
    let lines: Vec<serde_json::Value> = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per system"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, name) in lines.iter().zip(["nas1", "nas2"]) {
        assert_eq!(line["system"], name);
        assert_eq!(line["result"], "pong");
    }
    let bad = a.run_locked_out(&["api", "nas1", "pool.query", "not json"]);
    assert_code(&bad, 2, "api with bad params");
    let everything = format!("{}{}", text(&info), text(&all));
    for key in &keys {
        assert!(!everything.contains(api_secret(key)));
    }
    assert!(a
        .log()
        .iter()
        .any(|e| e["command"] == "api" && e["system"] == "*"));
}

#[test]
fn the_agent_memory_is_locked_and_never_dumped() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let pid = a.unlock(&[]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let locked_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck");
    assert!(locked_kib > 0, "no memory locked:\n{status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(String::from_utf8_lossy(&cmdline).ends_with("agent\0--serve\0"));
}

#[test]
fn trace_logs_of_commands_using_the_agent_hold_no_secret() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    let out = a
        .cmd()
        .env("RUST_LOG", "trace")
        .args(["unlock", "--offline"])
        .output();
    let out = out.expect("unlock");
    assert_ok(&out, "unlock");
    a.agents.push(a.agent_pid().expect("agent"));
    let mut all = text(&out);
    for args in [
        vec!["status", "--offline", "--json"],
        vec!["agent", "--json"],
        vec!["exec", "nas1", "--", "true"],
        vec!["log", "--json"],
        vec!["lock"],
    ] {
        let out = a.cmd().env("RUST_LOG", "trace").args(&args).output();
        let out = out.expect("run");
        assert_ok(&out, &args.join(" "));
        all.push_str(&text(&out));
    }
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "no trace logging"
    );
    assert!(
        !all.contains(api_secret(API_KEY)) && !all.contains(PASSPHRASE),
        "{all}"
    );
}

/// Runs `nasring ARGS` on a pseudo-terminal; its output comes back here.
fn on_terminal(a: &Agented, args: &str) -> Output {
    common::on_terminal(&a.cmd(), args, "")
}

#[test]
fn get_prints_to_a_terminal_only_with_force() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    a.unlock(&[]);
    let refused = on_terminal(&a, "get nas1");
    assert_code(&refused, 2, "get to a terminal");
    assert!(
        !stdout(&refused).contains(api_secret(API_KEY)),
        "{}",
        text(&refused)
    );
    assert!(stdout(&refused).contains("--force"), "{}", text(&refused));
    let forced = on_terminal(&a, "get nas1 --force");
    assert_ok(&forced, "get --force to a terminal");
    assert!(stdout(&forced).contains(API_KEY), "{}", text(&forced));
}

#[test]
fn a_new_master_key_ends_the_agent_that_holds_the_old_one() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    for renewal in [
        &["rekey"][..],
        &["recovery", "regenerate", "--save-recovery-code"][..],
    ] {
        let pid = a.unlock(&[]);
        let mut args = renewal.to_vec();
        let code_file = a.w.path("new-code");
        let _ = std::fs::remove_file(&code_file);
        if args.len() > 1 {
            args.push(code_file.to_str().expect("utf8"));
        }
        let out = a.run(&args);
        assert_ok(&out, renewal[0]);
        assert!(
            stderr(&out).contains("held the old master key and has ended"),
            "{}",
            text(&out)
        );
        assert_access_ended(&a, pid);
        // Unlocking again serves the keys under the new master key.
        let out = a.run(&["get", "nas1"]);
        assert_ok(&out, "get after the renewal");
        assert!(stdout(&out).contains(api_secret(API_KEY)));
    }
}

#[test]
fn every_command_runs_without_core_dumps() {
    let mut a = Agented::new();
    a.add_offline("nas1", API_KEY);
    a.unlock(&[]);
    // exec replaces nasring with the command, which keeps nasring's limits.
    let out = a.run_locked_out(&["exec", "nas1", "--", "cat", "/proc/self/limits"]);
    assert_ok(&out, "exec");
    let limits = stdout(&out);
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    assert_ok(&a.run_locked_out(&["lock"]), "lock");
}
