//! Commands for scripts: `get` prints a key, `exec` runs a program with one system's key in
//! its environment, `api` calls a middleware method with the stored key.
//!
//! Each takes its keys from the agent when one runs and opens the keyring itself otherwise.
//! The URL, user name and TLS trust always come with the key from the authenticated keyring.

use std::io::{IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::agent::{self, Want};
use super::args::{ApiArgs, ExecArgs, GetArgs};
use super::nas::{self, block_on, client_error};
use super::{CliError, Context};
use crate::agent::protocol::UnlockedSystem;
use crate::secret::ApiKey;
use crate::truenas::{ClientError, Limits, Session, SystemUrl, TlsTrust};

/// The environment `exec` gives the command; documented in the README and `docs/ci.md`.
pub mod env {
    pub const SYSTEM: &str = "NASRING_SYSTEM";
    pub const URL: &str = "NASRING_URL";
    pub const USERNAME: &str = "NASRING_USERNAME";
    pub const API_KEY: &str = "NASRING_API_KEY";
    /// `sha256:HEX` of the pinned certificate, when the system's certificate is pinned.
    pub const TLS_FINGERPRINT: &str = "NASRING_TLS_FINGERPRINT";
    /// The PEM of the CA, when the system is trusted through a CA.
    pub const TLS_CA: &str = "NASRING_TLS_CA";
}

fn one(ctx: &mut Context, name: &str, command: &str) -> Result<(UnlockedSystem, ApiKey), CliError> {
    let mut systems = agent::systems(ctx, Want::One(name), command)?;
    let mut system = systems
        .pop()
        .ok_or_else(|| CliError::Failed(format!("there is no system named \"{name}\"")))?;
    let key = system.api_key.take().ok_or_else(|| {
        CliError::Failed(format!(
            "the stored key of {name} does not open.\nReplace it: nasring add {name} --replace"
        ))
    })?;
    Ok((system, key))
}

/// `get NAME`: the key on stdout, never to a terminal without --force.
pub fn get(ctx: &mut Context, args: GetArgs) -> Result<(), CliError> {
    if std::io::stdout().is_terminal() && !args.force {
        return Err(CliError::Usage(format!(
            "the API key of {} would be shown on the terminal (and kept in its scrollback).\n\
             Pipe it to the program that needs it, use nasring exec, or pass --force.",
            args.name
        )));
    }
    let (_, key) = one(ctx, &args.name, "get")?;
    let mut line = zeroize::Zeroizing::new(key.expose().as_bytes().to_vec());
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Failed(format!("cannot write the key: {e}")))
}

/// `exec NAME -- COMMAND [ARGS]`: replaces nasring with the command, whose environment holds
/// the system's URL, user name, API key and trust. The key is never in any argv.
pub fn exec(ctx: &mut Context, args: ExecArgs) -> Result<(), CliError> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(CliError::Usage("name the command to run after --".into()));
    };
    let (system, key) = one(ctx, &args.name, "exec")?;
    let mut command = std::process::Command::new(program);
    command
        .args(rest)
        .env(env::SYSTEM, &system.name)
        .env(env::URL, &system.url)
        .env(env::USERNAME, &system.username)
        .env(env::API_KEY, key.expose())
        .env_remove(env::TLS_FINGERPRINT)
        .env_remove(env::TLS_CA);
    match nas::trust_from_record(&system.tls) {
        Some(TlsTrust::Pin(fp)) => {
            command.env(env::TLS_FINGERPRINT, fp.to_string());
        }
        Some(TlsTrust::Ca(pem)) => {
            command.env(env::TLS_CA, String::from_utf8_lossy(&pem).as_ref());
        }
        _ => {}
    }
    drop(key);
    let e = command.exec();
    Err(CliError::Failed(format!(
        "cannot run {}: {e}.\nCheck the command's name and PATH.",
        program.to_string_lossy()
    )))
}

/// `api [--all] [NAME] METHOD [PARAMS_JSON]`.
pub fn api(ctx: &mut Context, args: ApiArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.net)?;
    let (name, method, params) = api_words(&args)?;
    let params = match params {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::Usage(format!(
                "PARAMS_JSON is not JSON ({e}).\nGive the arguments as a JSON array, e.g. '[\"x\"]'."
            ))
        })?,
        None => Value::Null,
    };
    match name {
        Some(name) => api_one(ctx, name, method, params, limits),
        None => api_all(ctx, &args, method, params, limits),
    }
}

fn api_words(args: &ApiArgs) -> Result<(Option<&str>, &str, Option<&str>), CliError> {
    let w: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match (args.all, w.as_slice()) {
        (true, [method]) => Ok((None, method, None)),
        (true, [method, params]) => Ok((None, method, Some(params))),
        (false, [name, method]) => Ok((Some(name), method, None)),
        (false, [name, method, params]) => Ok((Some(name), method, Some(params))),
        _ => Err(CliError::Usage(
            "give NAME METHOD [PARAMS_JSON], or --all METHOD [PARAMS_JSON]".into(),
        )),
    }
}

fn api_one(
    ctx: &mut Context,
    name: &str,
    method: &str,
    params: Value,
    limits: Limits,
) -> Result<(), CliError> {
    let (system, key) = one(ctx, name, "api")?;
    let result = block_on(call(&system, key, method.to_string(), params, limits))?
        .map_err(|e| client_error(name, e))?;
    super::output::say(&result.to_string())
}

fn api_all(
    ctx: &mut Context,
    args: &ApiArgs,
    method: &str,
    params: Value,
    limits: Limits,
) -> Result<(), CliError> {
    let systems = agent::systems(ctx, Want::All, "api")?;
    let lines = block_on(call_all(
        systems,
        method,
        params,
        limits,
        args.parallel.max(1),
    ))?;
    let failed = lines.iter().filter(|l| l.get("error").is_some()).count();
    for line in &lines {
        super::output::say(&line.to_string())?;
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{method} failed on {failed} of {} system(s); see their lines.",
            lines.len()
        )));
    }
    Ok(())
}

async fn call_all(
    systems: Vec<UnlockedSystem>,
    method: &str,
    params: Value,
    limits: Limits,
    parallel: usize,
) -> Vec<Value> {
    let permits = Arc::new(Semaphore::new(parallel));
    let mut set = JoinSet::new();
    let total = systems.len();
    for (index, mut system) in systems.into_iter().enumerate() {
        let (permits, method, params) = (Arc::clone(&permits), method.to_string(), params.clone());
        set.spawn(async move {
            let _permit = permits.acquire().await;
            let outcome = match system.api_key.take() {
                Some(key) => call(&system, key, method, params, limits).await,
                None => Err(ClientError::KeyRejected),
            };
            (index, line(&system.name, outcome))
        });
    }
    let mut lines: Vec<Option<Value>> = vec![None; total];
    while let Some(Ok((index, value))) = set.join_next().await {
        lines[index] = Some(value);
    }
    lines.into_iter().flatten().collect()
}

fn line(name: &str, outcome: Result<Value, ClientError>) -> Value {
    match outcome {
        Ok(result) => json!({"system": name, "result": result}),
        Err(e) => json!({
            "system": name,
            "error": {"kind": e.kind(), "message": e.to_string(), "remedy": e.remedy(name)}
        }),
    }
}

/// Connects with the keyring's trust for the system, logs in with its key, makes one call.
async fn call(
    system: &UnlockedSystem,
    key: ApiKey,
    method: String,
    params: Value,
    limits: Limits,
) -> Result<Value, ClientError> {
    let url = SystemUrl::parse(&system.url)?;
    let trust = nas::trust_from_record(&system.tls).ok_or_else(|| ClientError::TlsUntrusted {
        detail: "its certificate has not been trusted yet, so no key was sent".into(),
    })?;
    let mut session = Session::connect(&url, &trust, &limits).await?;
    let outcome = async {
        session.login_api_key(&system.username, &key).await?;
        session.call(&method, params).await
    }
    .await;
    session.close().await;
    outcome
}
