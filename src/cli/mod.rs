//! The command line: parses, asks, calls the vault, the tokens and the TrueNAS client, and
//! reports. Nothing below this module prints.

mod add;
mod agent;
pub mod args;
mod check;
mod keyring;
mod nas;
mod open;
mod output;
pub mod prompt;
mod rotate;
mod scripts;
mod systems;
mod token;
mod unlockers;

use std::path::PathBuf;

use args::{Cli, Command, GlobalArgs};
use prompt::{Prompter, SecretSources};

use crate::token::TokenError;
use crate::vault::{Vault, VaultError};

/// Exit codes, defined once; the README documents them.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The passphrase, PIN or token was refused.
    pub const REFUSED: i32 = 3;
}

/// Every way a command can fail. Messages are one sentence of what happened, then a line
/// of what to do; none contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "the passphrase is too easy to guess: {detail}.\n\
         Choose a longer one (several unrelated words work well), or pass --accept-weak-passphrase."
    )]
    WeakPassphrase { detail: String },
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("{0}")]
    Failed(String),
    #[error("stopped: {0}")]
    Aborted(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::WeakPassphrase { .. } => exit::USAGE,
            CliError::Vault(e) if e.is_refusal() => exit::REFUSED,
            CliError::Token(e) if e.is_refusal() => exit::REFUSED,
            _ => exit::FAILURE,
        }
    }
}

/// What every command needs: where the keyring is, how to ask, how to print.
pub struct Context<'a> {
    pub vault: Vault,
    pub json: bool,
    pub secrets: SecretSources,
    pub use_token: Option<String>,
    /// How long to wait for a PIV card that is not inserted.
    pub card_wait: std::time::Duration,
    pub ui: &'a mut dyn Prompter,
}

impl<'a> Context<'a> {
    pub fn new(global: &GlobalArgs, ui: &'a mut dyn Prompter) -> Result<Self, CliError> {
        let path = match &global.vault {
            Some(p) => p.clone(),
            None => crate::vault::store::default_path().ok_or_else(|| {
                CliError::Usage(
                    "cannot find a home folder for the keyring: pass --vault PATH".into(),
                )
            })?,
        };
        Ok(Self {
            vault: Vault::at(path),
            json: global.json,
            secrets: SecretSources {
                passphrase_file: global.passphrase_file.clone(),
                pin_file: global.pin_file.clone(),
                recovery_code_file: global.recovery_code_file.clone(),
                ask_recovery_code: global.recovery_code,
            },
            use_token: global.use_token.clone(),
            card_wait: std::time::Duration::from_secs(global.card_wait),
            ui,
        })
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli, ui: &mut dyn Prompter) -> Result<(), CliError> {
    match &cli.command {
        Command::Completions(a) => return output::completions(a.shell),
        Command::Man(a) => return output::man_pages(a.out_dir.as_deref()),
        Command::Agent(a) if a.serve => return agent::serve(),
        _ => {}
    }
    let mut ctx = Context::new(&cli.global, ui)?;
    match cli.command {
        Command::Init(a) => keyring::init(&mut ctx, a),
        Command::Info => keyring::info(&mut ctx),
        Command::List => keyring::list(&mut ctx),
        Command::Reset(a) => keyring::reset(&mut ctx, a),
        Command::Add(a) => add::add(&mut ctx, a),
        Command::Import(a) => systems::import(&mut ctx, a),
        Command::Remove(a) => systems::remove(&mut ctx, a),
        Command::Unlock(a) => check::unlock(&mut ctx, a),
        Command::Status(a) => check::check(&mut ctx, a),
        Command::Lock => agent::lock(&mut ctx),
        Command::Get(a) => scripts::get(&mut ctx, a),
        Command::Exec(a) => scripts::exec(&mut ctx, a),
        Command::Api(a) => scripts::api(&mut ctx, a),
        Command::Log => agent::log(&mut ctx),
        Command::Agent(_) => agent::status(&mut ctx),
        Command::Trust(a) => add::trust(&mut ctx, a),
        Command::Login(a) => add::login(&mut ctx, a),
        Command::Token(c) => unlockers::token(&mut ctx, c),
        Command::Recovery(args::RecoveryCommand::Regenerate(a)) => {
            unlockers::recovery_regenerate(&mut ctx, a)
        }
        Command::Passwd(a) => unlockers::passwd(&mut ctx, a),
        Command::Rekey => unlockers::rekey(&mut ctx),
        Command::Rotate(a) => rotate::rotate(&mut ctx, a),
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

/// The file that keeps the last check's results beside the keyring (no secrets in it).
pub fn status_cache_path(vault: &Vault) -> PathBuf {
    let mut name = vault.path().file_name().unwrap_or_default().to_os_string();
    name.push(".status.json");
    vault.path().with_file_name(name)
}
