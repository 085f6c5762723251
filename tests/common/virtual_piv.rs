//! The virtual PIV cards of `hsm-test/virtual-piv` (pcscd, vpcd and piv-authenticator), given
//! to one test at a time in factory state, and a world to run `nasring` against them.
//!
//! The cards and pcscd are shared by every process on the machine, so a test holds an
//! exclusive `flock` on a file beside the script's state while it uses them. If pcscd or
//! vpcd is not installed the tests fail and say what to install; setting
//! `NASRING_TEST_SKIP_VIRTUAL_PIV=1` opts out of them explicitly.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use super::{project_root, PASSPHRASE};

/// The factory PIN, PUK and the cards' readers.
pub const FACTORY_PIN: &str = "123456";
pub const READERS: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];

/// The variable that opts out of the virtual PIV tests.
pub const SKIP_VAR: &str = "NASRING_TEST_SKIP_VIRTUAL_PIV";

static IN_PROCESS: Mutex<()> = Mutex::new(());

/// Holds the cards for one test.
pub struct Cards {
    _lock: File,
    _guard: MutexGuard<'static, ()>,
}

/// `Some` with `n` cards in factory state, or `None` when the user opted out.
pub fn cards(n: usize) -> Option<Cards> {
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: the virtual PIV card tests are skipped on request");
        return None;
    }
    check_installed();
    let guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let lock = machine_lock();
    virtual_piv(&["restart", "--cards", &n.to_string()]);
    Some(Cards {
        _lock: lock,
        _guard: guard,
    })
}

impl Cards {
    /// Leaves `n` cards in the readers (0 removes them all), keeping those that stay.
    pub fn keep(&self, n: usize) {
        virtual_piv(&["start", "--cards", &n.to_string()]);
    }
}

fn check_installed() {
    let missing: Vec<&str> = [
        ("/usr/sbin/pcscd", "pcscd"),
        (
            "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
            "vsmartcard-vpcd",
        ),
        ("/usr/bin/opensc-tool", "opensc"),
    ]
    .iter()
    .filter(|(path, _)| !Path::new(path).exists())
    .map(|(_, package)| *package)
    .collect();
    assert!(
        missing.is_empty(),
        "the virtual PIV card tests need {}: apt-get install pcscd vsmartcard-vpcd opensc \
         libclang-dev (libclang-dev builds the card), or set {SKIP_VAR}=1 to skip these tests",
        missing.join(", ")
    );
}

fn machine_lock() -> File {
    let dir = project_root().join("hsm-test/state/virtual-piv");
    std::fs::create_dir_all(&dir).expect("state folder");
    let file = File::create(dir.join("tests.lock")).expect("lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    file
}

fn virtual_piv(args: &[&str]) {
    let out = Command::new(project_root().join("hsm-test/virtual-piv"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hsm-test/virtual-piv");
    assert!(
        out.status.success(),
        "hsm-test/virtual-piv {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `piv:` URI of the card in reader `i`.
pub fn card_uri(i: usize) -> String {
    format!("piv:reader={}", READERS[i].replace(' ', "%20"))
}

/// One test's world: a folder, a keyring path, passphrase and PIN files.
pub struct PivWorld {
    pub tmp: tempfile::TempDir,
    pub vault: PathBuf,
    pub passphrase_file: PathBuf,
    pub pin_file: PathBuf,
}

impl PivWorld {
    pub fn new() -> PivWorld {
        let tmp = tempfile::tempdir().expect("tempdir");
        let passphrase_file = tmp.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).expect("passphrase");
        let pin_file = tmp.path().join("pin");
        std::fs::write(&pin_file, format!("{FACTORY_PIN}\n")).expect("pin");
        PivWorld {
            vault: tmp.path().join("keyring.nasring"),
            passphrase_file,
            pin_file,
            tmp,
        }
    }

    pub fn set_pin(&self, pin: &str) {
        std::fs::write(&self.pin_file, format!("{pin}\n")).expect("pin");
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nasring"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("NASRING_VAULT", &self.vault)
            .env("NASRING_PASSPHRASE_FILE", &self.passphrase_file)
            .env("NASRING_PIN_FILE", &self.pin_file)
            .env("NASRING_CARD_WAIT", "2")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run nasring")
    }

    /// `token keygen` on `uri`; returns the new key's fingerprint.
    pub fn keygen_ok(&self, uri: &str) -> String {
        let out = self.run(&[
            "--json",
            "token",
            "keygen",
            "--token",
            uri,
            "--keep-default-management-key",
        ]);
        super::assert_ok(&out, "token keygen");
        let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("keygen json");
        made["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    }

    pub fn init_ok(&self, uri: &str) {
        let out = self.run(&[
            "init",
            "--no-recovery-code",
            "--name",
            "lab",
            "--token",
            uri,
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ]);
        super::assert_ok(&out, "init");
    }
}
