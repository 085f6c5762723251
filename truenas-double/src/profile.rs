//! Version profiles: which parts of the API a simulated TrueNAS release has.

use std::fmt;

/// The release families whose API differs in ways a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// 24.10: legacy `/websocket` and REST only; no JSON-RPC endpoint.
    V24_10,
    /// 25.04: JSON-RPC 2.0 at `/api/current`, user-linked API keys.
    V25_04,
    /// 25.10: adds `revoked_reason` and the 10-keys-per-user limit.
    V25_10,
    /// 26: REST removed, DENIED for users without API access, one OTP try.
    V26,
}

/// A simulated release, e.g. `25.10.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub profile: Profile,
    /// The version text as configured, e.g. `25.10.1` or `26.0.0-BETA.3`.
    pub text: String,
    /// The third number (`1` in `25.10.1`); 0 when absent.
    pub patch: u32,
}

/// The error for a version the double does not simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl fmt::Display for UnknownVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {:?} is not simulated; use one starting with 24.10, 25.04, 25.10 or 26",
            self.0
        )
    }
}

impl std::error::Error for UnknownVersion {}

impl Release {
    pub fn parse(text: &str) -> Result<Self, UnknownVersion> {
        let numbers: Vec<&str> = text.split(['.', '-']).collect();
        let profile = match (numbers.first().copied(), numbers.get(1).copied()) {
            (Some("24"), Some("10")) => Profile::V24_10,
            (Some("25"), Some("04")) => Profile::V25_04,
            (Some("25"), Some("10")) => Profile::V25_10,
            (Some("26"), _) => Profile::V26,
            _ => return Err(UnknownVersion(text.to_string())),
        };
        let patch = numbers.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
        let text = if numbers.len() == 2 && profile != Profile::V26 {
            format!("{text}.0")
        } else {
            text.to_string()
        };
        Ok(Release {
            profile,
            text,
            patch,
        })
    }

    pub fn has_jsonrpc(&self) -> bool {
        self.profile >= Profile::V25_04
    }

    pub fn has_rest(&self) -> bool {
        self.profile <= Profile::V25_10
    }

    /// `system.info.version`: 24.10 reports the full product name, later releases the short
    /// version.
    pub fn system_info_version(&self) -> String {
        match self.profile {
            Profile::V24_10 => format!("TrueNAS-SCALE-{}", self.text),
            _ => self.text.clone(),
        }
    }

    /// The list `GET /api/versions` answers: every API version the release still serves.
    pub fn api_versions(&self) -> Vec<String> {
        let mut versions = Vec::new();
        if self.profile < Profile::V25_04 {
            return versions;
        }
        let v25_04_last = if self.profile == Profile::V25_04 {
            self.patch.min(2)
        } else {
            2
        };
        versions.extend((0..=v25_04_last).map(|p| format!("v25.04.{p}")));
        if self.profile >= Profile::V25_10 {
            let last = if self.profile == Profile::V25_10 {
                self.patch.min(5)
            } else {
                5
            };
            versions.extend((0..=last).map(|p| format!("v25.10.{p}")));
        }
        if self.profile >= Profile::V26 {
            versions.push("v26.0.0".to_string());
        }
        versions
    }

    /// The API flavour served at `/api/current`.
    pub fn current_api(&self) -> ApiFlavor {
        match self.profile {
            Profile::V24_10 | Profile::V25_04 => ApiFlavor::V25_04,
            Profile::V25_10 => ApiFlavor::V25_10,
            Profile::V26 => ApiFlavor::V26,
        }
    }

    /// The flavour for a path segment such as `current` or `v25.04.2`, if served.
    pub fn api_for_path(&self, segment: &str) -> Option<ApiFlavor> {
        if !self.has_jsonrpc() {
            return None;
        }
        if segment == "current" {
            return Some(self.current_api());
        }
        if !self.api_versions().iter().any(|v| v == segment) {
            return None;
        }
        Some(if segment.starts_with("v25.04") {
            ApiFlavor::V25_04
        } else if segment.starts_with("v25.10") {
            ApiFlavor::V25_10
        } else {
            ApiFlavor::V26
        })
    }

    /// Unauthenticated `auth.mechanism_choices` raises AttributeError on 25.04.2 to 25.10.x.
    pub fn mechanism_choices_crashes_unauthenticated(&self) -> bool {
        match self.profile {
            Profile::V25_04 => self.patch >= 2,
            Profile::V25_10 => true,
            _ => false,
        }
    }

    /// The per-user API key limit (25.10 and later).
    pub fn max_keys_per_user(&self) -> Option<usize> {
        (self.profile >= Profile::V25_10).then_some(10)
    }

    /// How many OTP codes a login may try: 25.x allows three, 26 fails at the first wrong one.
    pub fn otp_attempts(&self) -> u32 {
        if self.profile >= Profile::V26 {
            1
        } else {
            3
        }
    }

    /// 26 answers DENIED where 25.x answers AUTH_ERR for users without API access.
    pub fn denies_unprivileged(&self) -> bool {
        self.profile >= Profile::V26
    }

    /// 26 adds `reconnect_token` to SUCCESS responses and login options.
    pub fn has_reconnect_token(&self) -> bool {
        self.profile >= Profile::V26
    }

    /// 25.04 and later revoke a correct API key that arrives over an insecure transport.
    pub fn revokes_insecure_keys(&self) -> bool {
        self.profile >= Profile::V25_04
    }

    /// The legacy socket answers `{"msg":"ping"}` only on 24.10.
    pub fn legacy_ping(&self) -> bool {
        self.profile == Profile::V24_10
    }
}

/// The API version a connection speaks, which decides the shape of some results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiFlavor {
    /// `v25.04.x`: API key entries without `revoked_reason`, `username` never null.
    V25_04,
    /// `v25.10.x`: `revoked_reason`, `keyhash`.
    V25_10,
    /// `v26.0.0`: SCRAM material (`iterations`, `salt`, `stored_key`, `server_key`).
    V26,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles() {
        assert_eq!(
            Release::parse("24.10").map(|r| r.profile),
            Ok(Profile::V24_10)
        );
        assert_eq!(Release::parse("25.04.2").map(|r| r.patch), Ok(2));
        assert_eq!(
            Release::parse("25.10.1").map(|r| r.profile),
            Ok(Profile::V25_10)
        );
        assert_eq!(Release::parse("26").map(|r| r.profile), Ok(Profile::V26));
        assert_eq!(
            Release::parse("26.0.0-BETA.3").map(|r| r.profile),
            Ok(Profile::V26)
        );
        assert!(Release::parse("23.10").is_err());
    }

    #[test]
    fn version_formatting_per_profile() {
        let old = Release::parse("24.10.2").expect("valid");
        assert_eq!(old.system_info_version(), "TrueNAS-SCALE-24.10.2");
        let new = Release::parse("25.10.1").expect("valid");
        assert_eq!(new.system_info_version(), "25.10.1");
    }

    #[test]
    fn api_versions_and_paths() {
        let r = Release::parse("25.10.1").expect("valid");
        assert_eq!(
            r.api_versions(),
            ["v25.04.0", "v25.04.1", "v25.04.2", "v25.10.0", "v25.10.1"]
        );
        assert_eq!(r.api_for_path("v25.04.1"), Some(ApiFlavor::V25_04));
        assert_eq!(r.api_for_path("current"), Some(ApiFlavor::V25_10));
        assert_eq!(r.api_for_path("v25.10.4"), None);
        let old = Release::parse("24.10").expect("valid");
        assert!(old.api_versions().is_empty());
        assert_eq!(old.api_for_path("current"), None);
    }
}
