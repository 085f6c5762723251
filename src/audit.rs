//! The audit log: one JSON line for every unlock, lock and key handed out, in a file beside
//! the keyring. It holds names, process ids, commands and times, never a secret.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

/// One line of the log. Its JSON form is the `nasring log --json` contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    /// `unlock`, `lock`, `key` (a key handed out) or `refused` (a request turned away).
    pub event: String,
    /// `agent` when the agent acted, `self` when a command unlocked the keyring by itself.
    pub by: String,
    /// The nasring command that asked: `unlock`, `status`, `get`, `exec`, `api`, `lock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The system whose key was handed out; `*` for every system at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The process that asked (for the agent, read from the socket's peer credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Why a lock happened, which agent started, why a request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event stamped now.
    pub fn now(event: &str, by: &str) -> Self {
        // Always three digits of milliseconds, so that the times line up in `nasring log`.
        let time = OffsetDateTime::now_utc()
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_default();
        Self {
            time,
            event: event.into(),
            by: by.into(),
            ..Self::default()
        }
    }

    pub fn command(mut self, command: &str) -> Self {
        self.command = Some(command.into());
        self
    }

    pub fn system(mut self, system: &str) -> Self {
        self.system = Some(system.into());
        self
    }

    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The log of the keyring at `vault`: `<keyring file>.audit.jsonl` beside it.
pub fn path_for(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".audit.jsonl");
    vault.with_file_name(name)
}

/// Appends one line with a single write on a file opened for appending, so lines written
/// by several processes at once never interleave. The file is made readable by its owner
/// only.
pub fn append(log: &Path, event: &Event) -> io::Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    file.write_all(&line)
}

/// Reads every line; a line that is not an event (a torn write after a crash) is skipped and
/// counted.
pub fn read(log: &Path) -> io::Result<(Vec<Event>, usize)> {
    let file = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut events = Vec::new();
    let mut skipped = 0;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(event) => events.push(event),
            Err(_) => skipped += 1,
        }
    }
    Ok((events, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = path_for(&dir.path().join("k.nasring"));
        let first = Event::now("key", "agent")
            .command("get")
            .system("nas1")
            .pid(7);
        append(&log, &first).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(b"{\"time\":\n"))
            .expect("torn line");
        append(&log, &Event::now("lock", "agent").detail("idle timeout")).expect("append");
        let (events, skipped) = read(&log).expect("read");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], first);
        assert_eq!(skipped, 1);
        let mode = std::fs::metadata(&log).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
