//! The command line's side of the agent: starting it on `unlock`, taking keys from it (or
//! unlocking here when none runs), `lock`, `log` and `agent`.

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use super::args::UnlockArgs;
use super::open::{open_keyring, open_keyring_with_token};
use super::{output, CliError, Context};
use crate::agent::client::{self, Client};
use crate::agent::protocol::UnlockedSystem;
use crate::agent::server::Handoff;
use crate::agent::{self, AgentError};
use crate::audit::{self, Event};
use crate::vault::OpenKeyring;

/// Which keys a command needs.
#[derive(Clone, Copy)]
pub enum Want<'a> {
    One(&'a str),
    All,
}

/// `nasring agent --serve`: become the agent.
pub fn serve() -> Result<(), CliError> {
    if std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "nasring agent --serve is started by nasring unlock, not by hand.\n\
             Run nasring unlock instead."
                .into(),
        ));
    }
    match agent::server::serve() {
        0 => Ok(()),
        _ => Err(CliError::Failed("the agent did not start".into())),
    }
}

fn find(ctx: &Context) -> Result<Option<Client>, CliError> {
    Ok(client::find(ctx.vault.path())?)
}

fn log_event(ctx: &Context, event: Event) {
    // The log is best effort: a full disk must not stop a command that has its key.
    let _ = audit::append(&audit::path_for(ctx.vault.path()), &event);
}

fn self_event(event: &str, command: &str) -> Event {
    Event::now(event, "self")
        .command(command)
        .pid(std::process::id())
}

/// The systems asked for, with their keys: from the agent when one holds the keyring open,
/// else by opening the keyring here (which asks the passphrase).
pub fn systems(
    ctx: &mut Context,
    want: Want,
    command: &str,
) -> Result<Vec<UnlockedSystem>, CliError> {
    if let Some(systems) = from_agent(ctx, want, command)? {
        return Ok(systems);
    }
    let keyring = open_keyring(ctx)?;
    log_event(ctx, self_event("unlock", command));
    let systems = from_keyring(&keyring, want)?;
    if let Want::One(name) = want {
        log_event(ctx, self_event("key", command).system(name));
    }
    Ok(systems)
}

fn from_agent(
    ctx: &Context,
    want: Want,
    command: &str,
) -> Result<Option<Vec<UnlockedSystem>>, CliError> {
    let Some(client) = find(ctx)? else {
        return Ok(None);
    };
    let got = match want {
        Want::One(name) => client.key(name, command).map(|s| s.map(|s| vec![s])),
        Want::All => client.all(command),
    };
    match got {
        Err(AgentError::Failed { message, .. }) => Err(CliError::Failed(message)),
        other => Ok(other?),
    }
}

fn from_keyring(keyring: &OpenKeyring, want: Want) -> Result<Vec<UnlockedSystem>, CliError> {
    if let Want::One(name) = want {
        keyring.system(name)?;
    }
    Ok(keyring
        .systems()
        .iter()
        .filter(|s| matches!(want, Want::All) || matches!(want, Want::One(n) if n == s.name))
        .map(|s| UnlockedSystem::from_entry(s, keyring.api_key(&s.name).ok()))
        .collect())
}

/// `unlock`: uses the agent that already holds the keyring open, or opens it and starts one.
pub fn unlock(ctx: &mut Context, args: &UnlockArgs) -> Result<Vec<UnlockedSystem>, CliError> {
    if !args.no_agent {
        if let Some(client) = find(ctx)? {
            if let (Some(status), Some(systems)) = (client.status()?, client.all("unlock")?) {
                ctx.ui.notice(&format!(
                    "The keyring is already unlocked (agent {}, until {}).",
                    status.pid, status.ends_at
                ));
                return Ok(systems);
            }
        }
    }
    // The recovery code stands in for every lost token: there is no token for an agent to
    // watch, and the way forward is to enrol a new one, so no agent is left behind.
    if ctx.secrets.wants_recovery() {
        let keyring = open_keyring(ctx)?;
        let systems = from_keyring(&keyring, Want::All)?;
        log_event(
            ctx,
            self_event("unlock", "unlock").detail("recovery code; no agent"),
        );
        return Ok(systems);
    }
    let (keyring, token_uri) = open_keyring_with_token(ctx)?;
    let systems = from_keyring(&keyring, Want::All)?;
    let mut event = self_event("unlock", "unlock");
    if !args.no_agent {
        match start(ctx, &keyring, token_uri, args) {
            Ok(pid) => {
                event = event.detail(format!("agent {pid} started"));
                ctx.ui.notice(&format!(
                    "Unlocked: the agent (pid {pid}) holds the keyring open for {} at most, \
                     {} without use. nasring lock ends it.",
                    words(args.max_lifetime),
                    words(args.idle_timeout)
                ));
            }
            Err(e) => ctx
                .ui
                .notice(&format!("Warning: no agent was started: {e}")),
        }
    }
    log_event(ctx, event);
    Ok(systems)
}

fn start(
    ctx: &Context,
    keyring: &OpenKeyring,
    token_uri: String,
    args: &UnlockArgs,
) -> Result<u32, AgentError> {
    let folder = agent::socket_folder()?;
    let vault =
        std::path::absolute(ctx.vault.path()).map_err(|e| AgentError::Start(e.to_string()))?;
    let handoff = Handoff {
        socket: agent::socket_path(&folder, &vault),
        vault,
        token_uri,
        keyring_id: keyring.document().keyring_id.clone(),
        master_key: keyring.master_key().clone(),
        idle_timeout: args.idle_timeout,
        max_lifetime: args.max_lifetime,
    };
    client::start(&handoff)
}

fn words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `lock`: ends the agent and waits until it has gone.
/// After a new master key was saved: an agent still holds the old one, which no longer
/// authenticates the file, so it is ended rather than left to report the file as altered.
/// Asks nothing that reads the keyring, since the caller may still hold its lock.
pub fn end_after_renewal(ctx: &mut Context) {
    let Ok(Some(client)) = find(ctx) else { return };
    ctx.ui.notice(match client.lock() {
        Ok(true) => "The agent held the old master key and has ended: run nasring unlock again.",
        _ => "Warning: an agent may still hold the old master key: run nasring lock.",
    });
}

pub fn lock(ctx: &mut Context) -> Result<(), CliError> {
    let client = find(ctx)?;
    let status = match &client {
        Some(c) => c.status()?,
        None => None,
    };
    let (Some(client), Some(status)) = (client, status) else {
        if ctx.json {
            return output::json(&serde_json::json!({"locked": false, "was_unlocked": false}));
        }
        return output::say("The keyring was not unlocked: no agent holds it open.");
    };
    client.lock()?;
    if !client::wait_until_gone(status.pid, Duration::from_secs(10)) {
        return Err(CliError::Failed(format!(
            "the agent (pid {}) was told to end but is still running.\nEnd it with kill {}.",
            status.pid, status.pid
        )));
    }
    if ctx.json {
        return output::json(
            &serde_json::json!({"locked": true, "was_unlocked": true, "pid": status.pid}),
        );
    }
    output::say(&format!(
        "Locked: the agent (pid {}) has ended and its keys are wiped.",
        status.pid
    ))
}

#[derive(Serialize)]
struct AgentView {
    running: bool,
    #[serde(flatten)]
    status: Option<crate::agent::protocol::AgentStatus>,
}

/// `agent`: what the agent holds and until when. Hands out no key.
pub fn status(ctx: &mut Context) -> Result<(), CliError> {
    let status = match find(ctx)? {
        Some(c) => c.status()?,
        None => None,
    };
    if ctx.json {
        return output::json(&AgentView {
            running: status.is_some(),
            status,
        });
    }
    let Some(s) = status else {
        return output::say("No agent holds the keyring open. nasring unlock starts one.");
    };
    output::say(&format!(
        "Agent     pid {}\nKeyring   {} ({})\nToken     {}\nSystems   {}\nStarted   {}\nEnds      {} at the latest\nIdle end  {} unless a key is handed out",
        s.pid, s.keyring, s.vault, s.token, s.systems, s.started_at, s.ends_at, s.idle_ends_at
    ))
}

/// `log`: the audit log, oldest first.
pub fn log(ctx: &mut Context) -> Result<(), CliError> {
    let path = audit::path_for(ctx.vault.path());
    let (events, skipped) = audit::read(&path).map_err(|e| {
        CliError::Failed(format!("cannot read the audit log {}: {e}", path.display()))
    })?;
    if skipped > 0 {
        ctx.ui.notice(&format!(
            "Warning: {skipped} line(s) of {} are not events and were skipped.",
            path.display()
        ));
    }
    if ctx.json {
        return output::json(&events);
    }
    if events.is_empty() {
        return output::say("The audit log is empty: the keyring was not unlocked yet.");
    }
    let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                e.event.clone(),
                e.by.clone(),
                cell(&e.command),
                cell(&e.system),
                e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                cell(&e.detail),
            ]
        })
        .collect();
    output::table(
        &["Time", "Event", "By", "Command", "System", "PID", "Detail"],
        &rows,
    )
}
