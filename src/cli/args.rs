//! The command line's shape. Only clap types live here, so that the man page and the shell
//! completions are generated from the same definitions.

use std::path::PathBuf;

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
    /// Open the keyring and connect to every system
    Unlock(CheckArgs),
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
    /// Work with security tokens: make a key on one
    Token(TokenArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Write the man pages
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A name for the keyring
    #[arg(long)]
    pub name: String,
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
pub struct ImportArgs {
    /// JSON lines: {"name", "url", "username", "api_key"[, "tls_fingerprint"]} per line
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub name: String,
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
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a P-256 key-agreement key on a token (PIV slot 9D by default)
    Keygen(KeygenArgs),
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
