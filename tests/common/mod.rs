//! Shared fixtures for the integration tests: a private SoftHSM token, and the real
//! `nasring` binary run against a keyring in a temporary folder.

#![allow(dead_code)]

pub mod double;
pub mod imposter;
pub mod soft_token;
pub mod virtual_piv;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASSPHRASE: &str = "tarnished-otter-violin-97-quietly";
pub const API_KEY: &str = "12-Zq7XvB1mK9pLr3TtY6uW2nE5sD8fG0hJ4kA7cV1bN3mQ5wE9rT2yU6iO8pL0aS4d";

/// The project's root, where `hsm-test/` lives.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A SoftHSM token in its own folder, made by `hsm-test/softhsm-token`.
pub struct SoftHsm {
    pub dir: PathBuf,
    pub uri: String,
}

impl SoftHsm {
    /// A token whose user PIN is the first line of `pin_file`, with or without a key.
    pub fn new(dir: &Path, label: &str, pin_file: &Path, with_key: bool) -> SoftHsm {
        let mut cmd = Command::new(project_root().join("hsm-test/softhsm-token"));
        cmd.arg(dir)
            .arg("--label")
            .arg(label)
            .env("NASRING_PIN_FILE", pin_file);
        if !with_key {
            cmd.arg("--no-key");
        }
        let out = cmd.output().expect("run hsm-test/softhsm-token");
        assert!(
            out.status.success(),
            "softhsm-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string();
        SoftHsm {
            dir: dir.to_path_buf(),
            uri,
        }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }
}

/// One test's world: a folder, a keyring path, a passphrase file, a SoftHSM token.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub vault: PathBuf,
    pub passphrase_file: PathBuf,
    pub hsm: SoftHsm,
}

impl World {
    /// A fresh token whose PIN is the passphrase; no keyring yet.
    pub fn new() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let passphrase_file = tmp.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).expect("write passphrase");
        let hsm = SoftHsm::new(
            &tmp.path().join("hsm"),
            "nasring-test",
            &passphrase_file,
            false,
        );
        World {
            vault: tmp.path().join("keyring.nasring"),
            passphrase_file,
            hsm,
            tmp,
        }
    }

    /// A world with a keyring made by `init --generate-key` at low KDF cost.
    pub fn with_keyring() -> World {
        let w = World::new();
        w.init_ok(&[]);
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// `nasring` with this world's keyring, passphrase file and token folder.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nasring"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("NASRING_VAULT", &self.vault)
            .env("NASRING_PASSPHRASE_FILE", &self.passphrase_file)
            .env("SOFTHSM2_CONF", self.hsm.conf())
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run nasring")
    }

    /// Where `init_ok` writes the keyring's recovery code.
    pub fn recovery_code_file(&self) -> PathBuf {
        self.path("recovery-code")
    }

    /// `init` at low KDF cost, with the recovery code written to [`World::recovery_code_file`]
    /// (unless `extra` says `--no-recovery-code`).
    pub fn init_ok(&self, extra: &[&str]) {
        let code_file = self.recovery_code_file();
        let _ = std::fs::remove_file(&code_file);
        let code_file = code_file.to_str().expect("utf8 path").to_string();
        let mut args = vec![
            "init",
            "--name",
            "lab",
            "--token",
            &self.hsm.uri,
            "--generate-key",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ];
        if !extra.contains(&"--no-recovery-code") {
            args.extend_from_slice(&["--save-recovery-code", &code_file]);
        }
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_ok(&out, "init");
    }

    /// `add NAME` importing the key in `key_file`, untried (`--no-check`), for a system at a
    /// loopback port that nothing answers on, pinned to a made-up fingerprint.
    pub fn add_unchecked(&self, name: &str, key_file: &Path) -> Command {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let mut cmd = self.cmd();
        cmd.args([
            "add",
            name,
            "--url",
            "https://127.0.0.1:9",
            "--username",
            "admin",
        ])
        .arg("--api-key-file")
        .arg(key_file)
        .args(["--tls-fingerprint", &fp, "--no-check"]);
        cmd
    }

    /// Adds a system by importing a key, pinned to a made-up fingerprint.
    pub fn add_ok(&self, name: &str, key: &str) {
        let key_file = self.write(&format!("{name}.key"), &format!("{key}\n"));
        let out = self
            .add_unchecked(name, &key_file)
            .output()
            .expect("run nasring");
        assert_ok(&out, "add");
    }
}

/// Runs `nasring ARGS` on a pseudo-terminal (util-linux `script`), with the environment `cmd`
/// was given, and types `input` at it. What the terminal showed comes back as stdout.
pub fn on_terminal(cmd: &Command, args: &str, input: &str) -> Output {
    let mut script = Command::new("script");
    script
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .args(["-q", "-e", "-c"])
        .arg(format!("{} {args}", env!("CARGO_BIN_EXE_nasring")))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = script.spawn().expect("run script (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("type at the terminal");
    drop(stdin);
    child.wait_with_output().expect("wait for script")
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed\n{}", text(out));
}

pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: wrong exit code\n{}",
        text(out)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
