//! A full disk and a read-only folder: a command that cannot write leaves the old keyring
//! exactly as it was, and says why.
//!
//! The keyring lives on a 64 KiB tmpfs that the test mounts itself (so it needs root, as CI
//! has; root ignores permission bits, so a read-only mount is the only honest read-only
//! folder) and unmounts when it ends.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs of 64 KiB mounted on a folder of the test; unmounted when dropped.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path) -> SmallFs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    fn remount(&self, option: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {option}");
    }

    /// Fills the file system until a write fails for lack of space.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = [0u8; 1024];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn add(w: &World, vault: &Path, name: &str) -> std::process::Output {
    let key_file = w.write(&format!("{name}.key"), &format!("{API_KEY}\n"));
    w.add_unchecked(name, &key_file)
        .env("NASRING_VAULT", vault)
        .output()
        .expect("run nasring")
}

fn opens_with(w: &World, vault: &Path, names: &[&str]) {
    let out = w
        .cmd()
        .env("NASRING_VAULT", vault)
        .args(["unlock", "--offline", "--json"])
        .output()
        .expect("run nasring");
    assert_ok(&out, "unlock of the old keyring");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let got: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(got, names);
}

fn no_temporary_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files were left: {left:?}");
}

#[test]
fn a_full_disk_and_a_read_only_folder_leave_the_old_keyring_intact() {
    let w = World::with_keyring();
    let fs = SmallFs::mount(&w.path("small"));
    let vault = fs.dir.join("keyring.nasring");
    std::fs::copy(&w.vault, &vault).expect("copy the keyring");
    assert_ok(&add(&w, &vault, "nas1"), "add with room to spare");
    let before = std::fs::read(&vault).expect("vault");

    let filler = fs.fill();
    let out = add(&w, &vault, "nas2");
    assert_code(&out, 1, "add on a full disk");
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{}", text(&out));
    assert!(
        err.contains("Free some space"),
        "says what to do: {}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&vault).expect("vault"),
        before,
        "the keyring changed"
    );
    no_temporary_files(&fs.dir);
    opens_with(&w, &vault, &["nas1"]);
    let out = w
        .cmd()
        .env("NASRING_VAULT", &vault)
        .args(["remove", "nas1"])
        .output()
        .expect("run");
    assert_code(&out, 1, "remove on a full disk");
    assert_eq!(std::fs::read(&vault).expect("vault"), before);
    eprintln!("disk full: {}", err.trim());

    std::fs::remove_file(filler).expect("free the space");
    fs.remount("ro");
    for (args, what) in [
        (vec!["remove", "nas1"], "remove"),
        (vec!["reset", "--yes"], "reset"),
    ] {
        let out = w
            .cmd()
            .env("NASRING_VAULT", &vault)
            .args(&args)
            .output()
            .expect("run");
        assert_code(&out, 1, &format!("{what} on a read-only folder"));
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{what}: {}",
            text(&out)
        );
    }
    let out = add(&w, &vault, "nas2");
    assert_code(&out, 1, "add on a read-only folder");
    let err = stderr(&out);
    assert!(err.contains("Read-only file system"), "{}", text(&out));
    assert!(
        err.contains("remount it writable"),
        "says what to do: {}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&vault).expect("vault"),
        before,
        "the keyring changed"
    );
    eprintln!("read-only: {}", err.trim());
    // Reading needs no write: the keyring opens and lists on the read-only folder.
    opens_with(&w, &vault, &["nas1"]);
    let out = w
        .cmd()
        .env("NASRING_VAULT", &vault)
        .arg("list")
        .output()
        .expect("run");
    assert_ok(&out, "list on a read-only folder");

    fs.remount("rw");
    opens_with(&w, &vault, &["nas1"]);
    assert_ok(&add(&w, &vault, "nas2"), "add once there is room again");
    opens_with(&w, &vault, &["nas1", "nas2"]);
}
