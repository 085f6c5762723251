//! Which certificate to trust, and the TLS handshake that checks it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{transport, ClientError, Limits, Phase, SystemUrl};

/// The SHA-256 of a certificate's DER encoding, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads `sha256:HEX`, plain hex, or colon-separated hex as browsers and openssl print it.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let digits = ["sha256:", "sha256 fingerprint=", "sha256="]
            .iter()
            .find_map(|prefix| lower.strip_prefix(prefix))
            .unwrap_or(&lower);
        let bytes = hex::decode(without_colons(digits)?).map_err(|_| bad_fp("it is not hex"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad_fp("it does not have 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

fn without_colons(digits: &str) -> Result<String, ClientError> {
    if !digits.contains(':') {
        return Ok(digits.to_owned());
    }
    if digits.split(':').all(|pair| pair.len() == 2) {
        Ok(digits.replace(':', ""))
    } else {
        Err(bad_fp("the colons must separate pairs of hex digits"))
    }
}

fn bad_fp(reason: &str) -> ClientError {
    ClientError::BadFingerprint {
        reason: reason.to_owned(),
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CertFingerprint {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// What makes a NAS's TLS certificate trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// Exactly this end-entity certificate; names, chain and dates are not checked, but the
    /// handshake signatures are.
    Pin(CertFingerprint),
    /// A chain to this CA (PEM), valid for the host name of the URL.
    Ca(Vec<u8>),
    /// No TLS; only for `http://` to a loopback address.
    PlainLoopback,
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsTrust::Pin(fp) => write!(f, "Pin({fp})"),
            TlsTrust::Ca(pem) => write!(f, "Ca({} bytes of PEM)", pem.len()),
            TlsTrust::PlainLoopback => f.write_str("PlainLoopback"),
        }
    }
}

/// The certificate a NAS presented, for the user to decide whether to pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub fingerprint: CertFingerprint,
    pub subject: String,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names and IP addresses the certificate is valid for.
    pub subject_alt_names: Vec<String>,
}

/// Runs a TLS handshake that accepts any certificate, sends nothing after it, and returns the
/// certificate that the NAS presented.
pub async fn fetch_certificate(
    url: &SystemUrl,
    limits: &Limits,
) -> Result<PresentedCertificate, ClientError> {
    if !url.is_tls() {
        return Err(ClientError::BadUrl {
            reason: "a plain http:// address has no certificate".into(),
        });
    }
    let deadline = Instant::now() + limits.connect_timeout;
    let (tcp, _peer) = transport::connect_tcp(url, deadline).await?;
    let config = client_config(Arc::new(AnyCertificate::new()))?;
    let tls = handshake(config, url, tcp, deadline).await?;

    let (_, connection) = tls.get_ref();
    let der = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ClientError::protocol("the NAS presented no certificate"))?;
    describe(der)
}

/// The TLS configuration for `trust`, or `None` when the connection is plain.
pub(super) fn config_for(trust: &TlsTrust) -> Result<Option<Arc<ClientConfig>>, ClientError> {
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        TlsTrust::Pin(expected) => Arc::new(PinnedCertificate::new(*expected)),
        TlsTrust::Ca(pem) => ca_verifier(pem)?,
        TlsTrust::PlainLoopback => return Ok(None),
    };
    client_config(verifier).map(Some)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, ClientError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsFailed {
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // TrueNAS's nginx offers HTTP/2, on which a WebSocket upgrade does not work.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn ca_verifier(pem: &[u8]) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
    let bad_ca = |detail: String| ClientError::BadCa { detail };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad_ca(format!("the PEM cannot be read ({e})")))?;
        roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad_ca("it holds no certificate".into()));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| bad_ca(e.to_string()))?;
    Ok(verifier)
}

/// Runs the TLS handshake on `tcp`, before `deadline`.
pub(super) async fn handshake(
    config: Arc<ClientConfig>,
    url: &SystemUrl,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = ServerName::try_from(url.host().to_owned()).map_err(|_| ClientError::BadUrl {
        reason: "its host is not a valid TLS server name".into(),
    })?;
    let connect = TlsConnector::from(config).connect(name, tcp);
    match timeout_at(deadline, connect).await {
        Err(_) => Err(ClientError::TimedOut { phase: Phase::Tls }),
        Ok(Err(e)) => Err(handshake_error(&e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

fn handshake_error(error: &std::io::Error) -> ClientError {
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other)))) => {
            match other.downcast_ref::<PinMismatch>() {
                Some(m) => ClientError::PinMismatch {
                    expected: m.expected,
                    presented: m.presented,
                },
                None => untrusted(other),
            }
        }
        Some(rustls::Error::InvalidCertificate(e)) => untrusted(e),
        Some(e) => ClientError::TlsFailed {
            detail: e.to_string(),
        },
        None => ClientError::TlsFailed {
            detail: format!("the connection failed ({error})"),
        },
    }
}

fn untrusted(e: &impl fmt::Display) -> ClientError {
    ClientError::TlsUntrusted {
        detail: e.to_string(),
    }
}

fn describe(der: &CertificateDer<'_>) -> Result<PresentedCertificate, ClientError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| ClientError::protocol(format!("the certificate cannot be read ({e})")))?;
    let validity = cert.validity();
    Ok(PresentedCertificate {
        fingerprint: CertFingerprint::of_der(der),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        subject_alt_names: alt_names(&cert),
    })
}

fn alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let ip = |bytes: &[u8]| match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        _ => None,
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip(bytes),
            _ => None,
        })
        .collect()
}

/// Why a pinned certificate was refused; carried through rustls to [`handshake_error`].
#[derive(Debug)]
struct PinMismatch {
    expected: CertFingerprint,
    presented: CertFingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "presented {}, pinned {}", self.presented, self.expected)
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly one end-entity certificate, and checks the handshake signatures made
/// with its key.
#[derive(Debug)]
struct PinnedCertificate {
    expected: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    fn new(expected: CertFingerprint) -> Self {
        Self {
            expected,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of_der(end_entity);
        if presented == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            expected: self.expected,
            presented,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any certificate, for [`fetch_certificate`] only: a connection made with it never
/// becomes a [`super::Session`], so no secret is ever written to it.
#[derive(Debug)]
struct AnyCertificate(PinnedCertificate);

impl AnyCertificate {
    fn new() -> Self {
        Self(PinnedCertificate::new(CertFingerprint([0; 32])))
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn fingerprint_reads_the_usual_spellings() {
        let expected = format!("sha256:{HEX}");
        let colons = HEX
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            expected.clone(),
            HEX.to_uppercase(),
            colons.clone(),
            format!("SHA256:{colons}"),
            format!("sha256 Fingerprint={colons}"),
        ] {
            let fp = CertFingerprint::parse(&text).expect(&text);
            assert_eq!(fp.to_string(), expected, "{text}");
        }
    }

    #[test]
    fn fingerprint_refuses_wrong_lengths_and_letters() {
        for text in [
            "sha256:",
            "sha256:0011",
            &HEX[1..],
            "sha256:zz",
            "00:112:23",
        ] {
            let err = CertFingerprint::parse(text).expect_err(text);
            assert_eq!(err.kind(), "bad_fingerprint", "{text}");
        }
    }

    #[test]
    fn a_ca_without_certificates_is_refused() {
        let err = config_for(&TlsTrust::Ca(b"not a pem".to_vec())).expect_err("empty CA");
        assert_eq!(err.kind(), "bad_ca");
    }

    #[test]
    fn plain_loopback_has_no_tls_config() {
        assert!(matches!(config_for(&TlsTrust::PlainLoopback), Ok(None)));
    }

    #[test]
    fn the_pin_verifier_refuses_other_certificates() {
        let pinned = PinnedCertificate::new(CertFingerprint::of_der(b"one"));
        let name = ServerName::try_from("localhost").expect("name");
        let other = CertificateDer::from(b"two".to_vec());
        let err = pinned
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .expect_err("other certificate");
        let same = CertificateDer::from(b"one".to_vec());
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)));
        assert!(pinned
            .verify_server_cert(&same, &[], &name, &[], UnixTime::now())
            .is_ok());
    }
}
