//! The one rule about where a password, one-time code or API key may be written.

use std::net::SocketAddr;

use super::{ClientError, TlsTrust};

/// How the bytes of a connection are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Security {
    /// TLS whose handshake succeeded with the verifier built from the session's [`TlsTrust`].
    VerifiedTls,
    /// Plain TCP.
    Plain,
}

/// What is known about an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transport {
    pub(super) security: Security,
    pub(super) peer: SocketAddr,
}

/// Allows a secret onto `transport` only if it is TLS verified against a pin or a CA, or plain
/// to a loopback address under [`TlsTrust::PlainLoopback`].
///
/// Every login goes through here just before its request is written.
pub(super) fn check_may_send_secret(
    transport: &Transport,
    trust: &TlsTrust,
) -> Result<(), ClientError> {
    let allowed = match (trust, transport.security) {
        (TlsTrust::Pin(_) | TlsTrust::Ca(_), Security::VerifiedTls) => true,
        (TlsTrust::PlainLoopback, Security::Plain) => transport.peer.ip().is_loopback(),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ClientError::InsecureUrl {
            url: transport.peer.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truenas::CertFingerprint;

    fn transport(security: Security, peer: &str) -> Transport {
        Transport {
            security,
            peer: peer.parse().expect("socket address"),
        }
    }

    fn allowed(security: Security, peer: &str, trust: &TlsTrust) -> bool {
        check_may_send_secret(&transport(security, peer), trust).is_ok()
    }

    #[test]
    fn verified_tls_may_carry_secrets_anywhere() {
        let pin = TlsTrust::Pin(CertFingerprint::from_bytes([7; 32]));
        let ca = TlsTrust::Ca(b"pem".to_vec());
        for peer in ["192.0.2.10:443", "127.0.0.1:443", "[2001:db8::1]:443"] {
            assert!(allowed(Security::VerifiedTls, peer, &pin), "{peer}");
            assert!(allowed(Security::VerifiedTls, peer, &ca), "{peer}");
        }
    }

    #[test]
    fn plain_may_carry_secrets_only_to_loopback() {
        let trust = TlsTrust::PlainLoopback;
        assert!(allowed(Security::Plain, "127.0.0.1:80", &trust));
        assert!(allowed(Security::Plain, "127.4.5.6:80", &trust));
        assert!(allowed(Security::Plain, "[::1]:80", &trust));
        assert!(!allowed(Security::Plain, "192.0.2.10:80", &trust));
        assert!(!allowed(Security::Plain, "[::ffff:192.0.2.10]:80", &trust));
        assert!(!allowed(Security::Plain, "[2001:db8::1]:80", &trust));
    }

    #[test]
    fn a_mismatch_between_trust_and_transport_is_refused() {
        let pin = TlsTrust::Pin(CertFingerprint::from_bytes([7; 32]));
        assert!(!allowed(Security::Plain, "127.0.0.1:80", &pin));
        assert!(!allowed(
            Security::Plain,
            "192.0.2.10:80",
            &TlsTrust::Ca(Vec::new())
        ));
        assert!(!allowed(
            Security::VerifiedTls,
            "127.0.0.1:443",
            &TlsTrust::PlainLoopback
        ));
    }
}
