//! Per-system TLS identity: a self-signed certificate like the TrueNAS default one
//! (CN=localhost, SAN DNS:localhost, EKU serverAuth, 397 days), kept in the state directory.
//!
//! TrueNAS generates RSA-2048; the double uses ECDSA P-256, because ring cannot generate RSA
//! keys and a thousand RSA keys would slow the start of a benchmark. Clients that pin the
//! certificate fingerprint see no difference.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Lifetime of the TrueNAS default certificate.
const LIFETIME_DAYS: i64 = 397;

/// A certificate, its key loaded into a server configuration, and its fingerprint.
pub struct Identity {
    pub server_config: Arc<ServerConfig>,
    /// `sha256:<hex of SHA-256 of the DER certificate>`.
    pub fingerprint: String,
    pub cert_pem: PathBuf,
}

/// The certificate could not be made, read or written.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Loads `cert.pem` and `key.pem` from `dir`, or creates them.
pub fn load_or_create(dir: &Path) -> Result<Identity, TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        return identity(&cert, &key, cert_path);
    }
    create(dir)
}

/// Creates a new certificate in `dir`, replacing any previous one.
pub fn create(dir: &Path) -> Result<Identity, TlsError> {
    fs::create_dir_all(dir)
        .map_err(|e| TlsError(format!("cannot create {}: {e}", dir.display())))?;
    let (cert_pem, key_pem) = self_signed()?;
    let cert_path = dir.join("cert.pem");
    write_file(&dir.join("key.pem"), key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    identity(cert_pem.as_bytes(), key_pem.as_bytes(), cert_path)
}

/// `sha256:` and the lower-case hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

fn self_signed() -> Result<(String, String), TlsError> {
    let failed = |e: rcgen::Error| TlsError(format!("cannot generate the certificate: {e}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "truenas-double");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(LIFETIME_DAYS);
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn identity(cert_pem: &[u8], key_pem: &[u8], cert_path: PathBuf) -> Result<Identity, TlsError> {
    let cert = CertificateDer::from_pem_slice(cert_pem).map_err(|e| {
        TlsError(format!(
            "{}: not a PEM certificate: {e}",
            cert_path.display()
        ))
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError(format!(
            "the key beside {} is not PEM: {e}",
            cert_path.display()
        ))
    })?;
    let fingerprint = fingerprint(&cert);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError(format!("TLS configuration: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        server_config: Arc::new(config),
        fingerprint,
        cert_pem: cert_path,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let failed = |e: std::io::Error| TlsError(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_persists_and_rotates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(dir.path()).expect("created");
        assert!(first.fingerprint.starts_with("sha256:"));
        assert_eq!(first.fingerprint.len(), "sha256:".len() + 64);
        let again = load_or_create(dir.path()).expect("loaded");
        assert_eq!(first.fingerprint, again.fingerprint);
        let rotated = create(dir.path()).expect("rotated");
        assert_ne!(first.fingerprint, rotated.fingerprint);
        assert_eq!(
            rotated.server_config.alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn fingerprint_matches_pem_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = create(dir.path()).expect("created");
        let pem = fs::read(&id.cert_pem).expect("readable");
        let der = CertificateDer::from_pem_slice(&pem).expect("PEM");
        assert_eq!(fingerprint(&der), id.fingerprint);
    }
}
