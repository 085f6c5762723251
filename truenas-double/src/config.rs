//! The configuration file (`--config FILE`) and the `--generate` shortcut.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profile::Release;

/// The whole file: `{"systems": [...]}`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoubleConfig {
    pub systems: Vec<SystemConfig>,
}

/// One simulated NAS.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub name: String,
    /// `system.info.hostname`; the name when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default = "default_version")]
    pub version: String,
    /// Serve HTTPS/WSS.
    #[serde(default = "yes")]
    pub tls: bool,
    /// Also serve plain HTTP/WS on a second port.
    #[serde(default)]
    pub plain: bool,
    /// The TLS port; 0 lets the system choose.
    #[serde(default)]
    pub port: u16,
    /// The plain port; 0 lets the system choose.
    #[serde(default)]
    pub plain_port: u16,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Count loopback peers on the plain port as insecure, so that the revocation of keys sent
    /// over plain transport can be tested on 127.0.0.1. Real TrueNAS trusts loopback.
    #[serde(default)]
    pub treat_loopback_as_insecure: bool,
    /// When set, `auth.login_ex` answers REDIRECT with these URLs, like an HA standby node.
    #[serde(default)]
    pub redirect_urls: Option<Vec<String>>,
    /// Delay before answering a failed login. TrueNAS waits 1 to 2 s; tests want 0.
    #[serde(default)]
    pub fail_delay_ms: u64,
    /// The middleware's limit of 20 unauthenticated calls per method and peer in 60 s. Off by
    /// default because tests log in often from one address.
    #[serde(default)]
    pub rate_limit: bool,
    /// OTP time steps accepted on either side of the current one.
    #[serde(default = "one")]
    pub otp_window: u64,
    #[serde(default = "default_pools")]
    pub pools: Vec<PoolConfig>,
    #[serde(default)]
    pub alerts: Vec<AlertConfig>,
}

/// A local account.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// `None` disables password logins for the account.
    #[serde(default)]
    pub password: Option<String>,
    /// Base32 TOTP secret; set means two-factor authentication is on for the account.
    #[serde(default)]
    pub otp_secret: Option<String>,
    /// Privilege roles, e.g. FULL_ADMIN, READONLY_ADMIN, API_KEY_WRITE. Empty means no API access.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default = "online_status")]
    pub status: String,
    #[serde(default = "yes")]
    pub healthy: bool,
    #[serde(default)]
    pub warning: bool,
    #[serde(default = "default_pool_size")]
    pub size: u64,
    #[serde(default = "default_pool_allocated")]
    pub allocated: u64,
}

/// An alert that `alert.list` shows besides the generated ApiKeyRevoked ones.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    pub klass: String,
    #[serde(default = "warning_level")]
    pub level: String,
    pub text: String,
    #[serde(default)]
    pub dismissed: bool,
}

/// How a system behaves on the network. Switchable at run time through the control API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answers normally.
    #[default]
    Online,
    /// Listeners closed: connections are refused.
    Offline,
    /// Accepts TCP connections and never sends a byte.
    Blackhole,
    /// Answers each call with text that is not JSON.
    Garbage,
    /// Answers each call with one 100 MiB message, streamed.
    Oversized,
    /// Sends each answer one byte per second.
    Trickle,
    /// Answers each call with a different id.
    WrongId,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        f.write_str(text.as_deref().unwrap_or("?"))
    }
}

/// A configuration that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl DoubleConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: DoubleConfig = serde_json::from_str(text)
            .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.systems.is_empty() {
            return Err(ConfigError("the configuration names no system".into()));
        }
        let mut names = HashSet::new();
        for system in &self.systems {
            system.validate()?;
            if !names.insert(system.name.as_str()) {
                return Err(ConfigError(format!(
                    "system name {:?} is used twice",
                    system.name
                )));
            }
        }
        Ok(())
    }
}

impl SystemConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok || self.name.starts_with('.') {
            return Err(ConfigError(format!(
                "system name {:?} must be letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        Release::parse(&self.version)
            .map_err(|e| ConfigError(format!("system {}: {e}", self.name)))?;
        if !self.tls && !self.plain {
            return Err(ConfigError(format!(
                "system {} serves neither TLS nor plain",
                self.name
            )));
        }
        let mut users = HashSet::new();
        for user in &self.users {
            if !users.insert(user.username.as_str()) {
                return Err(ConfigError(format!(
                    "system {}: user {:?} is listed twice",
                    self.name, user.username
                )));
            }
            let bad_secret = user
                .otp_secret
                .as_deref()
                .is_some_and(|s| crate::totp::decode_base32(s).is_none());
            if bad_secret {
                return Err(ConfigError(format!(
                    "system {}: the otp_secret of {:?} is not base32",
                    self.name, user.username
                )));
            }
        }
        Ok(())
    }
}

/// Parameters of `--generate`.
pub struct GenerateOptions {
    pub count: usize,
    pub latency_ms: u64,
    pub blackhole_percent: u8,
    pub password: Option<String>,
    pub version: String,
    pub admin_user: String,
}

/// N systems named `nas1` to `nasN`, one full admin each. The blackholed ones are spread
/// evenly: system i (from 0) is blackholed when `floor((i+1)·p/100)` steps past `floor(i·p/100)`.
pub fn generate(options: &GenerateOptions) -> DoubleConfig {
    let percent = usize::from(options.blackhole_percent.min(100));
    let systems = (0..options.count)
        .map(|i| {
            let blackholed = (i + 1) * percent / 100 != i * percent / 100;
            SystemConfig {
                name: format!("nas{}", i + 1),
                hostname: Some(format!("nas{}.lab", i + 1)),
                version: options.version.clone(),
                tls: true,
                plain: false,
                port: 0,
                plain_port: 0,
                latency_ms: options.latency_ms,
                mode: if blackholed {
                    Mode::Blackhole
                } else {
                    Mode::Online
                },
                users: vec![UserConfig {
                    username: options.admin_user.clone(),
                    password: options.password.clone(),
                    otp_secret: None,
                    roles: vec!["FULL_ADMIN".into()],
                    full_name: Some("Administrator".into()),
                    uid: Some(950),
                }],
                treat_loopback_as_insecure: false,
                redirect_urls: None,
                fail_delay_ms: 0,
                rate_limit: false,
                otp_window: 1,
                pools: default_pools(),
                alerts: Vec::new(),
            }
        })
        .collect();
    DoubleConfig { systems }
}

fn default_version() -> String {
    "25.10.1".into()
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

fn online_status() -> String {
    "ONLINE".into()
}

fn warning_level() -> String {
    "WARNING".into()
}

fn default_pool_size() -> u64 {
    3_985_729_650_688
}

fn default_pool_allocated() -> u64 {
    1_154_234_142_720
}

fn default_pools() -> Vec<PoolConfig> {
    vec![PoolConfig {
        name: "tank".into(),
        status: online_status(),
        healthy: true,
        warning: false,
        size: default_pool_size(),
        allocated: default_pool_allocated(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"{"systems":[{"name":"nas1","hostname":"nas1.lab","version":"25.10.1","tls":true,
            "plain":false,"port":0,"latency_ms":0,"mode":"online","users":[{"username":"admin",
            "password":"pw","otp_secret":null,"roles":["FULL_ADMIN"]}]}]}"#;
        let config = DoubleConfig::parse(text).expect("valid");
        assert_eq!(config.systems[0].users[0].roles, ["FULL_ADMIN"]);
        assert_eq!(config.systems[0].mode, Mode::Online);
        assert_eq!(config.systems[0].pools.len(), 1);
    }

    #[test]
    fn rejects_unknown_fields_versions_and_duplicates() {
        assert!(DoubleConfig::parse(r#"{"systems":[{"name":"a","colour":"red"}]}"#).is_err());
        assert!(DoubleConfig::parse(r#"{"systems":[{"name":"a","version":"22.12"}]}"#).is_err());
        assert!(DoubleConfig::parse(r#"{"systems":[{"name":"a"},{"name":"a"}]}"#).is_err());
        assert!(DoubleConfig::parse(r#"{"systems":[{"name":"../x"}]}"#).is_err());
        assert!(DoubleConfig::parse(r#"{"systems":[{"name":"a","mode":"sleepy"}]}"#).is_err());
    }

    #[test]
    fn generate_spreads_blackholes() {
        let config = generate(&GenerateOptions {
            count: 20,
            latency_ms: 50,
            blackhole_percent: 10,
            password: None,
            version: "25.10.1".into(),
            admin_user: "truenas_admin".into(),
        });
        let holes: Vec<usize> = config
            .systems
            .iter()
            .enumerate()
            .filter(|(_, s)| s.mode == Mode::Blackhole)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(holes, [9, 19]);
        assert!(config.validate().is_ok());
        assert_eq!(config.systems[3].name, "nas4");
        assert_eq!(config.systems[3].latency_ms, 50);
    }
}
