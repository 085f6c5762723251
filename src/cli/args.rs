//! The command line's shape. Only clap types live here, so that the man page and the shell
//! completions are generated from the same definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "nasring",
    version,
    about = "A hardware-backed keyring for the API keys of TrueNAS systems",
    long_about = "nasring keeps the API keys of your TrueNAS systems encrypted under a master key \
                  that opens only with your passphrase and your security token (a PKCS#11 token \
                  or a PIV card such as a YubiKey). Unlock once to reach every system.",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 passphrase, PIN or token refused."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The keyring file [default: $XDG_DATA_HOME/nasring/keyring.nasring]
    #[arg(long, global = true, env = "NASRING_VAULT", value_name = "PATH")]
    pub vault: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Read the passphrase from the first line of FILE instead of asking
    #[arg(
        long,
        global = true,
        env = "NASRING_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Read a token PIN that differs from the passphrase from FILE
    #[arg(long, global = true, env = "NASRING_PIN_FILE", value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Use this token instead of the enrolled one found first (pkcs11:… or piv:…)
    #[arg(long = "use-token", global = true, value_name = "URI")]
    pub use_token: Option<String>,
    /// Open the keyring with the recovery code in FILE instead of a token and passphrase
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "use_token")]
    pub recovery_code_file: Option<PathBuf>,
    /// Open the keyring with the recovery code, asked, instead of a token and passphrase
    #[arg(long, global = true, conflicts_with_all = ["use_token", "recovery_code_file"])]
    pub recovery_code: bool,
    /// Seconds to wait for a PIV card or YubiKey that is not inserted
    #[arg(
        long,
        global = true,
        env = "NASRING_CARD_WAIT",
        default_value_t = 15,
        value_name = "SECONDS"
    )]
    pub card_wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a keyring bound to a token
    Init(InitArgs),
    /// Add a system: create an API key from its credentials, or import one
    Add(AddArgs),
    /// Show the systems in the keyring and the last check, without unlocking
    List,
    /// Open the keyring, keep it open in an agent, and connect to every system
    Unlock(UnlockArgs),
    /// End the agent that holds the keyring open; its keys are wiped
    Lock,
    /// Print a system's API key (not to a terminal unless --force)
    Get(GetArgs),
    /// Run a command with a system's URL, user name and API key in its environment
    ///
    /// nasring replaces itself with the command, which gets NASRING_SYSTEM, NASRING_URL,
    /// NASRING_USERNAME, NASRING_API_KEY, and NASRING_TLS_FINGERPRINT (the pinned
    /// certificate's sha256:HEX) or NASRING_TLS_CA (the CA's PEM). The key is never put in
    /// any argv; read it from the environment, and keep it off command lines.
    Exec(ExecArgs),
    /// Call one TrueNAS middleware method with the stored key and print the JSON result
    Api(ApiArgs),
    /// Show the audit log: every unlock, lock and key handed out
    Log,
    /// Show the agent that holds the keyring open
    Agent(AgentArgs),
    /// Connect to every system and show who is connected
    Status(CheckArgs),
    /// Add many systems from a JSON-lines inventory in one unlock
    Import(ImportArgs),
    /// Remove a system and its key from the keyring
    Remove(RemoveArgs),
    /// Re-pin a system's TLS certificate after you have checked it
    Trust(TrustArgs),
    /// Log in to one system with its credentials, for this command only
    Login(LoginArgs),
    /// Remove every stored key and the keyring itself
    Reset(ResetArgs),
    /// Show the keyring: name, unlockers, unlock policy, number of systems
    Info,
    /// Enrol, list and remove the tokens that open the keyring, or make a key on one
    #[command(subcommand)]
    Token(TokenCommand),
    /// Replace the recovery code
    #[command(subcommand)]
    Recovery(RecoveryCommand),
    /// Change the passphrase (no token but the one that opens is needed)
    Passwd(PasswdArgs),
    /// Make a new master key and encrypt everything again under it
    Rekey,
    /// Replace the API key of one system, or of all, with a new one made on the NAS
    Rotate(RotateArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Write the man pages
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A name for the keyring (asked when not given)
    #[arg(long)]
    pub name: Option<String>,
    /// The token that holds the key-agreement key (pkcs11:… or piv:…)
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// Make a new P-256 key on the token (sensitive, not extractable, derive only)
    #[arg(long)]
    pub generate_key: bool,
    /// The token has its own PIN, asked after the passphrase (or --pin-file)
    #[arg(long)]
    pub separate_pin: bool,
    /// Accept a passphrase that the strength estimate calls weak
    #[arg(long)]
    pub accept_weak_passphrase: bool,
    /// Argon2id memory in MiB (at least 8)
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub kdf_memory_mib: u32,
    /// Argon2id passes
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub kdf_iterations: u32,
    #[command(flatten)]
    pub recovery: NewRecoveryCodeArgs,
}

#[derive(Debug, Args)]
pub struct NewRecoveryCodeArgs {
    /// Make no recovery code: losing every token then means losing the keyring
    #[arg(long, conflicts_with = "save_recovery_code")]
    pub no_recovery_code: bool,
    /// Write the new recovery code to FILE (created with mode 0600) instead of showing it on
    /// the terminal
    #[arg(long, value_name = "FILE")]
    pub save_recovery_code: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Enrol another token: present (--token) or from its public key alone (--public-key)
    Add(TokenAddArgs),
    /// Show the tokens and the recovery code that open the keyring
    List,
    /// Remove a token (or the recovery code) by its id; the last token cannot be removed
    Remove(TokenRemoveArgs),
    /// Make a P-256 key-agreement key on a token (PIV slot 9D by default)
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct TokenAddArgs {
    /// The token to enrol, present now (pkcs11:… or piv:…)
    #[arg(long, value_name = "URI", required_unless_present = "public_key")]
    pub token: Option<String>,
    /// Enrol a token that is not present from its P-256 public key: a PEM or DER
    /// SubjectPublicKeyInfo, or a raw 65-byte SEC1 point
    #[arg(long, value_name = "FILE", conflicts_with_all = ["token", "generate_key"])]
    pub public_key: Option<PathBuf>,
    /// With --public-key: the token's URI, to find it when it is plugged in (pkcs11:… or piv:…)
    #[arg(long, value_name = "URI", requires = "public_key")]
    pub uri: Option<String>,
    /// A name for the token, shown by token list
    #[arg(long)]
    pub label: Option<String>,
    /// Make a new P-256 key on the token (sensitive, not extractable, derive only)
    #[arg(long)]
    pub generate_key: bool,
    /// The token has its own PIN (not the passphrase)
    #[arg(long)]
    pub separate_pin: bool,
    /// When a new passphrase is set (after opening with the recovery code): accept a weak one
    #[arg(long)]
    pub accept_weak_passphrase: bool,
}

#[derive(Debug, Args)]
pub struct TokenRemoveArgs {
    /// The unlocker's id, as token list shows it
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum RecoveryCommand {
    /// Make a new recovery code; the old one stops opening the keyring
    Regenerate(NewRecoveryCodeFile),
}

#[derive(Debug, Args)]
pub struct NewRecoveryCodeFile {
    /// Write the new recovery code to FILE (created with mode 0600) instead of showing it on
    /// the terminal
    #[arg(long, value_name = "FILE")]
    pub save_recovery_code: Option<PathBuf>,
    /// When a new passphrase is set (after opening with the recovery code): accept a weak one
    #[arg(long)]
    pub accept_weak_passphrase: bool,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the new passphrase from the first line of FILE instead of asking
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Accept a new passphrase that the strength estimate calls weak
    #[arg(long)]
    pub accept_weak_passphrase: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The system whose key to replace
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Replace the keys of every system
    #[arg(long)]
    pub all: bool,
    /// Make the new API keys expire after DAYS days
    #[arg(long, value_name = "DAYS")]
    pub expires_in: Option<u32>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Trust the system's certificate with this SHA-256 fingerprint (sha256:HEX)
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "tls_ca")]
    pub tls_fingerprint: Option<String>,
    /// Trust certificates issued by this CA (PEM file) for the system's host name
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The system's name in the keyring
    pub name: String,
    /// https://HOST[:PORT]
    #[arg(long)]
    pub url: String,
    /// The TrueNAS account the API key belongs to
    #[arg(long)]
    pub username: String,
    /// Import this existing API key (first line of FILE) instead of creating one
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password_file", "otp_file", "expires_in"])]
    pub api_key_file: Option<PathBuf>,
    /// Read the account's password from FILE instead of asking
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the two-factor one-time code from FILE instead of asking
    #[arg(long, value_name = "FILE")]
    pub otp_file: Option<PathBuf>,
    /// Make the new API key expire after DAYS days
    #[arg(long, value_name = "DAYS")]
    pub expires_in: Option<u32>,
    /// Replace the key of a system already in the keyring
    #[arg(long)]
    pub replace: bool,
    /// Store the key without trying it (for a system not reachable now)
    #[arg(long)]
    pub no_check: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// Seconds to wait for a system to accept a connection
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// Seconds to wait for the whole command
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub deadline: f64,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How many systems to contact at once
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub parallel: usize,
    /// Skip the system cards (hostname, version, pools, alerts)
    #[arg(long)]
    pub no_cards: bool,
    /// Only open the keyring and check the stored keys; contact no system
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub check: CheckArgs,
    /// End the agent after this long without a key handed out (90s, 30m, 8h; plain: seconds)
    #[arg(long, env = "NASRING_AGENT_IDLE_TIMEOUT", default_value = "30m",
          value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// End the agent this long after the unlock, however busy it is
    #[arg(long, env = "NASRING_AGENT_MAX_LIFETIME", default_value = "8h",
          value_name = "DURATION", value_parser = parse_duration)]
    pub max_lifetime: Duration,
    /// Start no agent: the keyring is open for this command only
    #[arg(long)]
    pub no_agent: bool,
}

/// `90`, `90s`, `15m`, `8h` or `2d`; between one second and 31 days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text} is not a duration: write 90s, 30m, 8h or 2d"
            ))
        }
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (1..=31 * 86_400).contains(s))
        .ok_or_else(|| format!("{text} must be between 1 second and 31 days"))?;
    Ok(Duration::from_secs(seconds))
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The system whose API key to print
    pub name: String,
    /// Print the key even when the output is a terminal
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The system whose URL, user name and API key the command gets
    pub name: String,
    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Call the method on every system at once; prints one JSON line per system
    #[arg(long)]
    pub all: bool,
    /// NAME METHOD [PARAMS_JSON], or with --all: METHOD [PARAMS_JSON]. PARAMS_JSON is the
    /// array of the method's arguments (a single value is sent as the only one)
    #[arg(required = true, num_args = 1..=3, value_name = "NAME METHOD PARAMS_JSON")]
    pub words: Vec<String>,
    /// How many systems to contact at once (with --all)
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub parallel: usize,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Run as the agent (started by nasring unlock, which hands it the keyring on stdin)
    #[arg(long, hide = true)]
    pub serve: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSON lines: {"name", "url", "username", "api_key"[, "tls_fingerprint"]} per line
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub name: String,
    /// Delete the API key on the NAS before forgetting it
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    pub name: String,
    /// The fingerprint you have checked (otherwise the presented one is shown and asked)
    #[arg(long, value_name = "sha256:HEX")]
    pub tls_fingerprint: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    pub name: String,
    /// Create an API key with these credentials and store it in the keyring
    #[arg(long)]
    pub add_to_keyring: bool,
    /// Read the account's password from FILE instead of asking
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the two-factor one-time code from FILE instead of asking
    #[arg(long, value_name = "FILE")]
    pub otp_file: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask for the keyring name
    #[arg(long)]
    pub yes: bool,
    /// Open the keyring and delete every API key on its NAS before removing it
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The token and slot (piv:… or pkcs11:…)
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// When the card asks for the PIN: once per session, or before every use (PIV)
    #[arg(long, value_enum, default_value_t = PinPolicyArg::Once)]
    pub pin_policy: PinPolicyArg,
    /// When the card asks for a touch: never, cached for 15 seconds, or every use (YubiKey)
    #[arg(long, value_enum, default_value_t = TouchPolicyArg::Never)]
    pub touch_policy: TouchPolicyArg,
    /// Replace a key that is already in the slot (the old key is lost for good)
    #[arg(long)]
    pub overwrite: bool,
    /// Replace a factory management key by a random one stored under the PIN, without asking
    #[arg(long, conflicts_with = "keep_default_management_key")]
    pub protect_management_key: bool,
    /// Keep a factory management key, without asking
    #[arg(long)]
    pub keep_default_management_key: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PinPolicyArg {
    Once,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TouchPolicyArg {
    Never,
    Cached,
    Always,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write nasring.1 and one page per command into
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(28_800)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0", "5x", "m", "40d", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
