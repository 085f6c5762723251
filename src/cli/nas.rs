//! The command line's side of talking to a NAS: choosing the TLS trust, logging in with
//! credentials (and a one-time code), creating keys, and the async runtime.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use time::OffsetDateTime;

use super::args::{NetArgs, TlsArgs};
use super::{CliError, Context};
use crate::secret::{read_secret_file, OtpCode, Password};
use crate::truenas::{
    fetch_certificate, CertFingerprint, ClientError, CreatedKey, Limits, PasswordLogin, Session,
    SystemUrl, TlsTrust,
};

/// The command's one network runtime. A session made in one `block_on` is used in the next
/// (connect, log in, create a key), so its sockets must stay registered with the same
/// reactor: one runtime serves the whole command.
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Runs async client code on the command's runtime, starting it on first use.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, CliError> {
    let runtime = match RUNTIME.get() {
        Some(runtime) => runtime,
        None => {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Failed(format!("cannot start the network runtime: {e}")))?;
            RUNTIME.get_or_init(|| built)
        }
    };
    Ok(runtime.block_on(future))
}

pub fn limits(net: &NetArgs) -> Result<Limits, CliError> {
    let secs = |v: f64, what: &str| {
        if v.is_finite() && v > 0.0 && v <= 3600.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(CliError::Usage(format!(
                "{what} must be between 0 and 3600 seconds"
            )))
        }
    };
    Ok(Limits {
        connect_timeout: secs(net.connect_timeout, "--connect-timeout")?,
        call_timeout: secs(net.deadline, "--deadline")?.min(Duration::from_secs(60)),
        ..Limits::default()
    })
}

pub fn parse_url(text: &str) -> Result<SystemUrl, CliError> {
    SystemUrl::parse(text).map_err(|e| client_error(text, e))
}

/// A client error about one system, with its remedy on the next line.
pub fn client_error(system: &str, e: ClientError) -> CliError {
    CliError::Failed(format!(
        "{system}: {}\n{}",
        lower_first(&e.to_string()),
        e.remedy(system)
    ))
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if chars.clone().next().is_some_and(char::is_lowercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

/// The vault's record of a trust decision (see `vault::SystemEntry::tls`).
pub fn trust_record(trust: &TlsTrust) -> String {
    match trust {
        TlsTrust::Pin(fp) => fp.to_string(),
        TlsTrust::Ca(pem) => format!("ca:{}", String::from_utf8_lossy(pem)),
        TlsTrust::PlainLoopback => "loopback".into(),
    }
}

/// Reads a trust record back; `None` if the system's certificate was never trusted.
pub fn trust_from_record(record: &str) -> Option<TlsTrust> {
    if let Some(pem) = record.strip_prefix("ca:") {
        return Some(TlsTrust::Ca(pem.as_bytes().to_vec()));
    }
    match record {
        "" => None,
        "loopback" => Some(TlsTrust::PlainLoopback),
        fp => CertFingerprint::parse(fp).ok().map(TlsTrust::Pin),
    }
}

/// The trust named on the command line, or `None` if the user must decide now.
pub fn trust_from_args(url: &SystemUrl, tls: &TlsArgs) -> Result<Option<TlsTrust>, CliError> {
    if !url.is_tls() {
        return Ok(Some(TlsTrust::PlainLoopback));
    }
    if let Some(fp) = &tls.tls_fingerprint {
        let fp = CertFingerprint::parse(fp)
            .map_err(|e| CliError::Usage(format!("{e} {}", e.remedy(""))))?;
        return Ok(Some(TlsTrust::Pin(fp)));
    }
    if let Some(path) = &tls.tls_ca {
        let pem = std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        return Ok(Some(TlsTrust::Ca(pem)));
    }
    Ok(None)
}

/// Shows the certificate a system presents and asks whether to pin it. Without a terminal
/// the user is told to check it and pass --tls-fingerprint.
pub fn ask_to_pin(
    ctx: &mut Context,
    name: &str,
    url: &SystemUrl,
    limits: &Limits,
) -> Result<TlsTrust, CliError> {
    let cert = block_on(fetch_certificate(url, limits))?.map_err(|e| client_error(name, e))?;
    let shown = format!(
        "{url} presents a certificate that nothing vouches for (TrueNAS's default is self-signed):\n  \
         subject      {}\n  issuer       {}\n  valid        {} to {}\n  names        {}\n  fingerprint  {}\n\
         Compare the fingerprint with the one in the NAS's web interface \
         (Credentials > Certificates) before trusting it.",
        cert.subject,
        cert.issuer,
        cert.not_before.date(),
        cert.not_after.date(),
        cert.subject_alt_names.join(", "),
        cert.fingerprint
    );
    ctx.ui.notice(&shown);
    let answer = ctx
        .ui
        .line("Trust this certificate for this system? Type yes to pin it: ")
        .map_err(|_| {
            CliError::Usage(format!(
                "{name}: the certificate must be checked before it is trusted.\n\
             After checking it, pass --tls-fingerprint {} (or --tls-ca FILE).",
                cert.fingerprint
            ))
        })?;
    if answer.trim() != "yes" {
        return Err(CliError::Aborted(
            "the certificate was not trusted; nothing was stored".into(),
        ));
    }
    Ok(TlsTrust::Pin(cert.fingerprint))
}

/// Credentials for one login, from files or asked.
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password_file: Option<&'a Path>,
    pub otp_file: Option<&'a Path>,
}

fn file_secret(path: &Path, what: &str) -> Result<String, CliError> {
    read_secret_file(path)
        .map(|s| s.as_str().to_string())
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))
        })
}

pub fn password(
    ctx: &mut Context,
    creds: &Credentials,
    system: &str,
) -> Result<Password, CliError> {
    let text = match creds.password_file {
        Some(p) => file_secret(p, "password")?,
        None => ctx
            .ui
            .secret(&format!("Password of {} on {system}: ", creds.username))?
            .as_str()
            .to_string(),
    };
    Ok(Password::new(text))
}

const OTP_TRIES: u32 = 3;

/// Connects and logs in with the password, asking the one-time code if the account wants one.
pub fn login_with_password(
    ctx: &mut Context,
    name: &str,
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
    creds: &Credentials,
    password: &Password,
) -> Result<Session, CliError> {
    let mut session =
        block_on(Session::connect(url, trust, limits))?.map_err(|e| client_error(name, e))?;
    let mut step = block_on(session.login_password(creds.username, password))?
        .map_err(|e| client_error(name, e))?;
    let mut tries = 0;
    while step == PasswordLogin::OtpRequired {
        tries += 1;
        if tries > OTP_TRIES || (tries > 1 && creds.otp_file.is_some()) {
            return Err(client_error(name, ClientError::AuthFailed));
        }
        if tries > 1 {
            ctx.ui
                .notice("That code was not accepted; wait for the next one.");
        }
        let code = match creds.otp_file {
            Some(p) => file_secret(p, "one-time code")?,
            None => ctx
                .ui
                .secret(&format!(
                    "Two-factor code for {} on {name}: ",
                    creds.username
                ))?
                .as_str()
                .to_string(),
        };
        step = block_on(session.continue_otp(&OtpCode::new(code.trim().to_string())))?
            .map_err(|e| client_error(name, e))?;
    }
    Ok(session)
}

/// The name a created key gets on the NAS, so the admin recognises it in the API key list.
pub fn key_name(keyring: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let stamp = OffsetDateTime::now_utc();
    format!(
        "nasring {keyring} on {host} {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    )
}

/// Tries with `NAME #2`, `NAME #3`, … when the NAS already has a key of that name (a key made
/// by the same keyring on the same machine in the same second, as `--replace` does).
const KEY_NAME_TRIES: u32 = 5;

pub fn create_key(
    session: &mut Session,
    name: &str,
    keyring: &str,
    username: &str,
    expires_in_days: Option<u32>,
) -> Result<CreatedKey, CliError> {
    let expires =
        expires_in_days.map(|d| OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
    let base = key_name(keyring);
    let mut attempt = 1;
    loop {
        let key_name = match attempt {
            1 => base.clone(),
            n => format!("{base} #{n}"),
        };
        match block_on(session.create_api_key(&key_name, username, expires))? {
            Err(e) if is_name_taken(&e) && attempt < KEY_NAME_TRIES => attempt += 1,
            other => return other.map_err(|e| client_error(name, e)),
        }
    }
}

/// TrueNAS refuses a second API key with the same name as a validation error on `name`.
fn is_name_taken(e: &ClientError) -> bool {
    matches!(e, ClientError::Rpc { method, reason, .. }
        if method == "api_key.create" && reason.contains("must be unique"))
}

/// Logs in with an API key on a fresh connection: proves the key works before it is stored.
pub fn try_key(
    name: &str,
    url: &SystemUrl,
    trust: &TlsTrust,
    limits: &Limits,
    username: &str,
    key: &crate::secret::ApiKey,
) -> Result<(), CliError> {
    block_on(async {
        let mut session = Session::connect(url, trust, limits).await?;
        let result = session.login_api_key(username, key).await;
        session.close().await;
        result
    })?
    .map_err(|e| client_error(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_records_round_trip() {
        let fp = CertFingerprint::from_bytes([0xab; 32]);
        for trust in [
            TlsTrust::Pin(fp),
            TlsTrust::Ca(b"PEM".to_vec()),
            TlsTrust::PlainLoopback,
        ] {
            assert_eq!(trust_from_record(&trust_record(&trust)), Some(trust));
        }
        assert_eq!(trust_from_record(""), None);
    }

    #[test]
    fn key_names_say_what_made_them() {
        let name = key_name("lab");
        assert!(name.starts_with("nasring lab on "), "{name}");
        assert!(name.len() <= 200);
    }
}
