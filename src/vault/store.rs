//! The keyring file on disk: where it lives, the lock that serialises writers, and
//! atomic replacement (temporary file, fsync, rename, fsync of the folder), mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::VaultError;

/// How long a command waits for another nasring process to finish with the keyring.
const LOCK_WAIT: Duration = Duration::from_secs(60);

fn io_error(action: impl Into<String>, path: &Path, e: io::Error) -> VaultError {
    VaultError::Io {
        action: format!("{} {}", action.into(), path.display()),
        detail: e.to_string(),
        remedy: io_remedy(&e),
    }
}

/// What to do about a failed file operation. A failed write leaves the keyring as it was.
fn io_remedy(e: &io::Error) -> &'static str {
    use nix::libc::{EDQUOT, ENOSPC, EROFS};
    match e.raw_os_error() {
        Some(ENOSPC) | Some(EDQUOT) => {
            "Free some space on that file system (or raise your quota), then try again; the \
             keyring was left as it was."
        }
        Some(EROFS) => {
            "That file system is mounted read-only: remount it writable, or keep the keyring \
             elsewhere with --vault PATH."
        }
        _ => match e.kind() {
            io::ErrorKind::PermissionDenied => {
                "Check that you own the keyring's folder and may write to it, then try again."
            }
            io::ErrorKind::NotFound => "Check that the keyring's folder exists, then try again.",
            _ => "Check the keyring's folder and its file system, then try again.",
        },
    }
}

/// The default keyring file: `$XDG_DATA_HOME/nasring/keyring.nasring`, else
/// `~/.local/share/nasring/keyring.nasring`.
pub fn default_path() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("nasring").join("keyring.nasring"))
}

/// A held lock on a keyring (its `.lock` file beside it). Released when dropped. A reader on
/// a read-only file system holds none where no lock file can exist: nobody can write there.
pub struct KeyringLock {
    _file: Option<File>,
}

fn lock_path(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    vault.with_file_name(name)
}

/// Takes the keyring's lock, exclusive for writers and shared for readers, waiting for
/// other nasring processes for up to a minute.
pub fn lock(vault: &Path, exclusive: bool) -> Result<KeyringLock, VaultError> {
    ensure_folder(vault)?;
    let path = lock_path(vault);
    let file = match open_lock_file(&path, exclusive) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(KeyringLock { _file: None }),
        Err(e) => return Err(io_error("opening the lock file", &path, e)),
    };
    let start = Instant::now();
    loop {
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => return Ok(KeyringLock { _file: Some(file) }),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(VaultError::Busy),
            Err(fs::TryLockError::Error(e)) => return Err(io_error("locking", &path, e)),
        }
    }
}

/// Opens (or makes) the lock file. A reader on a read-only file system opens an existing one
/// read-only, which `flock` accepts; where there is none, it needs none (`Ok(None)`).
fn open_lock_file(path: &Path, exclusive: bool) -> io::Result<Option<File>> {
    let writable = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    match writable {
        Err(e) if !exclusive && e.raw_os_error() == Some(nix::libc::EROFS) => {
            match File::open(path) {
                Ok(file) => Ok(Some(file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }
        other => other.map(Some),
    }
}

/// Makes the keyring's folder (0700) if it is missing.
fn ensure_folder(vault: &Path) -> Result<(), VaultError> {
    let Some(dir) = vault.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| io_error("creating the folder", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error("setting permissions of", dir, e))
}

/// Reads the keyring file, or `None` if there is none.
pub fn read(vault: &Path) -> Result<Option<Vec<u8>>, VaultError> {
    match fs::read(vault) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", vault, e)),
    }
}

/// Replaces the keyring file atomically. The caller holds the exclusive lock.
pub fn write_atomic(vault: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    ensure_folder(vault)?;
    remove_stale_temporaries(vault);
    let dir = vault
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = vault.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = vault.with_file_name(tmp_name);
    let result = write_then_rename(&tmp, vault, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_folder(dir)
}

/// Removes `<file>.<pid>.tmp` copies left by nasring processes that were killed while they
/// wrote (their pid no longer runs). A copy of a process that still runs is left alone.
fn remove_stale_temporaries(vault: &Path) {
    let (Some(dir), Some(name)) = (vault.parent(), vault.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn write_then_rename(tmp: &Path, vault: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| io_error("creating", tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("writing", tmp, e))?;
    file.sync_all().map_err(|e| io_error("flushing", tmp, e))?;
    drop(file);
    fs::rename(tmp, vault).map_err(|e| io_error("replacing", vault, e))
}

fn sync_folder(dir: &Path) -> Result<(), VaultError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("flushing the folder", dir, e))
}

/// Removes the keyring file. The caller holds the exclusive lock.
pub fn remove(vault: &Path) -> Result<bool, VaultError> {
    match fs::remove_file(vault) {
        Ok(()) => {
            let dir = vault
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            sync_folder(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("removing", vault, e)),
    }
}

/// A keyring file readable by others is reported, since its metadata (system names, URLs)
/// is not encrypted.
pub fn is_private(vault: &Path) -> bool {
    fs::metadata(vault)
        .map(|m| m.permissions().mode() & 0o077 == 0)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("k.nasring");
        let _lock = lock(&path, true).expect("lock");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn copies_left_by_killed_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.nasring");
        // No process has a pid this large (the kernel's limit is 2^22).
        let dead = dir.path().join("k.nasring.4294967295.tmp");
        // Process 1 always runs.
        let live = dir.path().join("k.nasring.1.tmp");
        let other = dir.path().join("other.nasring.4294967295.tmp");
        for f in [&dead, &live, &other] {
            fs::write(f, b"left over").expect("write");
        }
        let _lock = lock(&path, true).expect("lock");
        write_atomic(&path, b"one").expect("write");
        assert!(!dead.exists(), "a dead writer's copy is removed");
        assert!(live.exists(), "a running writer's copy is kept");
        assert!(other.exists(), "another keyring's copy is not touched");
    }
}
