//! `docs/ci.md` says what it does: every `sh` block of it, run in order by bash against the
//! TrueNAS double, with the real binary first on PATH.

mod common;

use std::path::Path;
use std::process::Command;

use common::double::{Double, ADMIN};
use common::*;

/// The `sh` blocks of a Markdown page, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_ci_page_runs_as_written() {
    let page = std::fs::read_to_string(project_root().join("docs/ci.md")).expect("docs/ci.md");
    let blocks = sh_blocks(&page);
    assert!(blocks.len() >= 6, "found {} sh blocks", blocks.len());
    let script = format!("set -euo pipefail\n{}", blocks.concat());

    let double = Double::numbered(2);
    let keys = [double.issue_key("nas1"), double.issue_key("nas2")];
    let inventory: Vec<String> = ["nas1", "nas2"]
        .iter()
        .zip(&keys)
        .map(|(name, key)| {
            serde_json::json!({
                "name": name, "url": double.url(name), "username": ADMIN,
                "api_key": key, "tls_fingerprint": double.fingerprint(name),
            })
            .to_string()
        })
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    let bin = Path::new(env!("CARGO_BIN_EXE_nasring"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env("HOME", work.path())
        .env("WORK", work.path())
        .env("NASRING_PASSPHRASE", PASSPHRASE)
        .env("NASRING_INVENTORY", inventory.join("\n"))
        .output()
        .expect("run bash");
    assert_ok(&out, "the sh blocks of docs/ci.md");

    let said = stdout(&out);
    assert!(
        said.contains(&format!("\"hostname\":\"{}\"", double.hostname("nas1"))),
        "{said}"
    );
    let pongs: Vec<serde_json::Value> = said
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["result"] == "pong")
        .collect();
    assert_eq!(pongs.len(), 2, "{said}");
    assert_eq!(
        (&pongs[0]["system"], &pongs[1]["system"]),
        (&"nas1".into(), &"nas2".into())
    );
    assert!(said.contains(&format!("deploying to {} as {ADMIN}", double.url("nas1"))));
    assert!(
        said.contains("got a key") && said.contains("Locked:"),
        "{said}"
    );
    let everything = text(&out);
    for key in &keys {
        assert!(
            !everything.contains(key.split_once('-').expect("key").1),
            "{everything}"
        );
    }
    let audit = std::fs::read_to_string(work.path().join("nasring-audit.json")).expect("log");
    let events: Vec<serde_json::Value> = serde_json::from_str(&audit).expect("json");
    assert!(events
        .iter()
        .any(|e| e["command"] == "exec" && e["system"] == "nas1"));
    assert!(events.iter().any(|e| e["detail"] == "nasring lock"));
}
