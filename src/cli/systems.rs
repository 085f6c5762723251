//! Commands that change the systems of a keyring without the network: import and remove,
//! and the API key checks shared with `add`.

use std::io::BufRead;

use zeroize::Zeroizing;

use super::args::{ImportArgs, RemoveArgs};
use super::open::open_for_update;
use super::{output, CliError, Context};
use crate::secret::{read_secret_file, ApiKey};
use crate::vault::NewSystem;

/// Checks the TrueNAS key format `<id>-<letters and digits>` and returns the id.
/// The key itself never appears in the message.
pub fn api_key_id(key: &ApiKey) -> Result<u64, CliError> {
    let bad = || {
        CliError::Usage(
            "the API key is not in TrueNAS's format (a number, '-', then letters and digits).\n\
             Copy it again from the NAS's API key screen."
                .into(),
        )
    };
    let (id, rest) = key.expose().split_once('-').ok_or_else(bad)?;
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    id.parse().map_err(|_| bad())
}

pub fn read_api_key_file(path: &std::path::Path) -> Result<ApiKey, CliError> {
    let text = read_secret_file(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the API key file {}: {e}",
            path.display()
        ))
    })?;
    Ok(ApiKey::new(text.trim().to_string()))
}

pub fn normalise_fingerprint(text: &str) -> Result<String, CliError> {
    let hex_part = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .replace(':', "")
        .to_ascii_lowercase();
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "{text} is not a SHA-256 fingerprint: write sha256: and 64 hex digits"
        )));
    }
    Ok(format!("sha256:{hex_part}"))
}

/// One line of an import file, with its key held in a wiped buffer.
struct ImportLine {
    new: NewSystem,
    key: ApiKey,
}

/// The JSON form of an import line. Every field is a string, so serde's messages (which
/// may quote a wrong non-string value) never quote the key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryLine {
    name: String,
    url: String,
    username: String,
    api_key: Zeroizing<String>,
    tls_fingerprint: Option<String>,
}

fn import_line(number: usize, text: &str) -> Result<ImportLine, CliError> {
    let bad = |what: &str| CliError::Usage(format!("line {number}: {what}; nothing was imported"));
    let line: InventoryLine = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => bad(&e.to_string()),
        _ => bad(&format!("not a JSON object (column {})", e.column())),
    })?;
    let key = ApiKey::new(line.api_key.as_str().to_string());
    let key_id = api_key_id(&key).map_err(|_| bad("api_key is not in TrueNAS's format"))?;
    let tls = match &line.tls_fingerprint {
        Some(fp) => normalise_fingerprint(fp).map_err(|e| bad(&e.to_string()))?,
        None => String::new(),
    };
    crate::vault::check_name("name", &line.name).map_err(|e| bad(&e.to_string()))?;
    Ok(ImportLine {
        new: NewSystem {
            name: line.name,
            url: line.url,
            username: line.username,
            tls,
            api_key_id: Some(key_id),
            api_key_name: None,
            api_key_expires_at: None,
        },
        key,
    })
}

fn read_inventory(path: &std::path::Path) -> Result<Vec<ImportLine>, CliError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut lines = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let text = Zeroizing::new(
            line.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
        );
        if text.trim().is_empty() {
            continue;
        }
        let parsed = import_line(i + 1, &text)?;
        if !names.insert(parsed.new.name.clone()) {
            return Err(CliError::Usage(format!(
                "line {}: the name \"{}\" appears twice; nothing was imported",
                i + 1,
                parsed.new.name
            )));
        }
        lines.push(parsed);
    }
    Ok(lines)
}

pub fn import(ctx: &mut Context, args: ImportArgs) -> Result<(), CliError> {
    let lines = read_inventory(&args.file)?;
    let (lock, mut keyring) = open_for_update(ctx)?;
    let count = lines.len();
    for line in lines {
        keyring.add_system(line.new, &line.key)?;
    }
    keyring.save(&ctx.vault, &lock)?;
    if ctx.json {
        return output::json(&serde_json::json!({"imported": count}));
    }
    output::say(&format!(
        "Imported {count} system(s) into keyring \"{}\".",
        keyring.name()
    ))
}

pub fn remove(ctx: &mut Context, args: RemoveArgs) -> Result<(), CliError> {
    if args.revoke {
        return remove_revoking(ctx, args);
    }
    let (lock, mut keyring) = open_for_update(ctx)?;
    let removed = keyring.remove_system(&args.name)?;
    keyring.save(&ctx.vault, &lock)?;
    if ctx.json {
        return output::json(&serde_json::json!({"removed": removed.name}));
    }
    output::say(&format!(
        "Removed \"{}\" from the keyring. Its API key (id {}) is still valid on the NAS until deleted there.",
        removed.name,
        removed.api_key_id.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into())
    ))
}

// Limitation: a system whose key could not be deleted is forgotten all the same (and listed).
/// `remove --revoke`: the key is deleted on the NAS first, then the system is forgotten; if
/// the NAS could not be reached it is forgotten all the same and the failure is listed.
fn remove_revoking(ctx: &mut Context, args: RemoveArgs) -> Result<(), CliError> {
    let limits = super::nas::limits(&args.net)?;
    let mut keyring = super::open::open_keyring(ctx)?;
    keyring.system(&args.name)?;
    let results = super::rotate::revoke_all(&keyring, std::slice::from_ref(&args.name), &limits);
    let lock = super::open::relock(ctx, &mut keyring)?;
    keyring.remove_system(&args.name)?;
    keyring.save(&ctx.vault, &lock)?;
    drop(lock);
    if ctx.json {
        output::json(&serde_json::json!({"removed": args.name, "revocations": results}))?;
    } else if results.iter().all(|r| r.revoked) {
        output::say(&format!(
            "Deleted the API key of \"{}\" on the NAS ({}) and removed it from the keyring.",
            args.name, results[0].detail
        ))?;
    }
    match super::rotate::unrevoked_error(&results) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_format() {
        let good = ApiKey::new("12-abcDEF123".into());
        assert_eq!(api_key_id(&good).expect("valid"), 12);
        for bad in ["abc", "12-", "-abc", "x-abc", "12-ab cd", "12-ab-cd"] {
            let err = api_key_id(&ApiKey::new(bad.into())).expect_err(bad);
            assert!(!err.to_string().contains(bad) || bad.len() < 4, "{err}");
        }
    }

    #[test]
    fn import_errors_name_the_line_and_never_the_key() {
        let secret = "7-SECRETsecretSECRET";
        let line = format!(
            r#"{{"name":"a","url":"https://x","username":"u","api_key":"{secret}","extra":1}}"#
        );
        let err = import_line(3, &line).err().expect("unknown field refused");
        let text = err.to_string();
        assert!(text.starts_with("line 3:"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        let err = import_line(
            4,
            r#"{"name":"a","url":"https://x","username":"u","api_key":"not a key"}"#,
        )
        .err()
        .expect("bad key refused");
        assert!(!err.to_string().contains("not a key"));
    }

    #[test]
    fn fingerprints_are_normalised() {
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            normalise_fingerprint(&colons).expect("ok"),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert!(normalise_fingerprint("sha256:1234").is_err());
    }
}
