//! The certificate nasring writes beside a key it makes, so that any PIV tool (and nasring
//! itself, on a card without YubiKey metadata) can read the slot's public key later.
//!
//! The certificate is not self-signed: a PIV card's key-management slot may refuse to sign,
//! so it is signed by a throwaway software key. Only its public key matters; nothing trusts
//! its signature.

use p256::PublicKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::tlv;
use crate::token::TokenError;

/// The public key in a certificate object as a PIV card stores it (`53 { 70 cert ... }`).
pub fn public_key_of_object(object: &[u8]) -> Result<PublicKey, TokenError> {
    let inner = tlv::find(object, 0x53).unwrap_or(object);
    let der = tlv::find(inner, 0x70)
        .ok_or_else(|| not_p256("the slot's certificate object holds no certificate"))?;
    public_key_of_certificate(der)
}

/// The P-256 public key of a DER certificate.
pub fn public_key_of_certificate(der: &[u8]) -> Result<PublicKey, TokenError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| not_p256("the slot's certificate cannot be parsed"))?;
    PublicKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
        .map_err(|_| not_p256("the slot's certificate is not for a P-256 key"))
}

fn not_p256(detail: &str) -> TokenError {
    TokenError::WrongKeyType {
        detail: detail.into(),
        remedy: "Make a P-256 key in the slot with nasring token keygen, or put the key's \
                 certificate in the slot."
            .into(),
    }
}

struct SlotKey(Vec<u8>);

impl rcgen::PublicKeyData for SlotKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A DER certificate for `key`, named after the slot, signed by a throwaway key.
pub fn certificate_for(key: &PublicKey, slot: u8) -> Result<Vec<u8>, TokenError> {
    let failed = |e: rcgen::Error| TokenError::Device {
        operation: "making the slot's certificate".into(),
        detail: e.to_string(),
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("nasring key agreement (PIV slot {slot:02X})"),
    );
    let issuer_key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut issuer_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    issuer_params.distinguished_name = rcgen::DistinguishedName::new();
    issuer_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nasring throwaway issuer");
    let issuer = rcgen::Issuer::new(issuer_params, issuer_key);
    let point = p256::EncodedPoint::from(key);
    let cert = params
        .signed_by(&SlotKey(point.as_bytes().to_vec()), &issuer)
        .map_err(failed)?;
    Ok(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_key() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("key");
        let der = certificate_for(&secret.public_key(), 0x9d).expect("certificate");
        assert_eq!(
            public_key_of_certificate(&der).expect("parse"),
            secret.public_key()
        );
        let mut object = vec![0x53, 0x82];
        let body = [
            &[0x70, 0x82][..],
            &(der.len() as u16).to_be_bytes(),
            &der,
            &[0x71, 1, 0],
        ]
        .concat();
        object.extend_from_slice(&(body.len() as u16).to_be_bytes());
        object.extend_from_slice(&body);
        assert_eq!(
            public_key_of_object(&object).expect("object"),
            secret.public_key()
        );
    }
}
