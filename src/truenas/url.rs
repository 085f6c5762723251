//! The address of a TrueNAS system.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::ClientError;

/// A TrueNAS system's address: `https://HOST[:PORT]`, or plain `http://` to this machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemUrl {
    host: String,
    port: u16,
    tls: bool,
}

impl SystemUrl {
    /// Accepts `https://HOST[:PORT]` or `wss://…`, optionally ending in `/` or `/api/current`.
    ///
    /// `http://` and `ws://` are refused unless the host is a loopback address, because TrueNAS
    /// revokes an API key presented over a connection without TLS.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let parsed = ::url::Url::parse(text.trim()).map_err(|_| bad("it is not a URL"))?;
        let tls = is_tls_scheme(parsed.scheme())?;
        check_nothing_else(&parsed)?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("it has no port"))?;
        let system = Self {
            host: host_of(&parsed)?,
            port,
            tls,
        };

        if !system.tls && !system.is_loopback() {
            return Err(ClientError::InsecureUrl {
                url: system.to_string(),
            });
        }
        Ok(system)
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Is the host `localhost` or an address in 127.0.0.0/8 or `::1`?
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host == "localhost",
        }
    }

    /// The JSON-RPC endpoint, `wss://host:port/api/current`.
    pub fn ws_endpoint(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}:{}/api/current",
            self.host_in_url(),
            self.port
        )
    }

    fn host_in_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for SystemUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host_in_url(), self.port)
    }
}

impl FromStr for SystemUrl {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

fn is_tls_scheme(scheme: &str) -> Result<bool, ClientError> {
    match scheme {
        "https" | "wss" => Ok(true),
        "http" | "ws" => Ok(false),
        _ => Err(bad("it must start with https://")),
    }
}

fn check_nothing_else(parsed: &::url::Url) -> Result<(), ClientError> {
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it must not hold a user name or password"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    match parsed.path() {
        "" | "/" | "/api/current" => Ok(()),
        _ => Err(bad("its path can only be / or /api/current")),
    }
}

fn host_of(parsed: &::url::Url) -> Result<String, ClientError> {
    match parsed.host() {
        Some(::url::Host::Domain(name)) if !name.is_empty() => Ok(name.to_owned()),
        Some(::url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(::url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        _ => Err(bad("it has no host")),
    }
}

fn bad(reason: &str) -> ClientError {
    ClientError::BadUrl {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        SystemUrl::parse(text).expect(text).to_string()
    }

    #[test]
    fn accepts_https_forms_and_prints_them_canonically() {
        assert_eq!(canonical("https://nas.lan"), "https://nas.lan:443");
        assert_eq!(canonical("https://NAS.lan:8443/"), "https://nas.lan:8443");
        assert_eq!(
            canonical("wss://10.0.0.2/api/current"),
            "https://10.0.0.2:443"
        );
        assert_eq!(
            canonical(" https://[fd00::2]:444 "),
            "https://[fd00::2]:444"
        );
    }

    #[test]
    fn gives_host_port_and_endpoint() {
        let url = SystemUrl::parse("https://[fd00::2]:444").expect("parse");
        assert_eq!(url.host(), "fd00::2");
        assert_eq!(url.port(), 444);
        assert!(url.is_tls());
        assert_eq!(url.ws_endpoint(), "wss://[fd00::2]:444/api/current");
    }

    #[test]
    fn refuses_plain_http_to_other_hosts() {
        for text in [
            "http://nas.lan",
            "ws://10.0.0.2:80",
            "http://127.0.0.1.nip.io",
        ] {
            let err = SystemUrl::parse(text).expect_err(text);
            assert!(
                matches!(err, ClientError::InsecureUrl { .. }),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn allows_plain_http_to_loopback() {
        assert_eq!(canonical("http://127.0.0.1:6000"), "http://127.0.0.1:6000");
        assert_eq!(canonical("ws://127.8.9.1"), "http://127.8.9.1:80");
        assert_eq!(canonical("http://localhost:81/"), "http://localhost:81");
        let url = SystemUrl::parse("ws://[::1]:81/api/current").expect("parse");
        assert_eq!(url.ws_endpoint(), "ws://[::1]:81/api/current");
    }

    #[test]
    fn refuses_anything_else() {
        for text in [
            "nas.lan",
            "nas.lan:443",
            "ftp://nas.lan",
            "https://admin:pw@nas.lan",
            "https://nas.lan/ui",
            "https://nas.lan/api/v2.0",
            "https://nas.lan/?x=1",
            "https://nas.lan/#top",
            "https://",
        ] {
            let err = SystemUrl::parse(text).expect_err(text);
            assert!(matches!(err, ClientError::BadUrl { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn a_refused_url_does_not_echo_a_password() {
        let err = SystemUrl::parse("https://admin:hunter2@nas.lan").expect_err("userinfo");
        assert!(!err.to_string().contains("hunter2"));
    }
}
