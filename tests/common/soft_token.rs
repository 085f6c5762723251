//! A token in software, for the format test vectors: its private key is part of the vector.

use nasring::secret::{Pin, SharedSecret};
use nasring::token::{KeygenOptions, PinStatus, Token, TokenError, TokenInfo};
use p256::{PublicKey, SecretKey};

pub struct SoftToken {
    pub key: SecretKey,
}

impl Token for SoftToken {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            uri: "pkcs11:token=vector".into(),
            label: "vector".into(),
            serial: None,
        }
    }
    fn public_key(&mut self) -> Result<PublicKey, TokenError> {
        Ok(self.key.public_key())
    }
    fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
        Ok(PinStatus::default())
    }
    fn login(&mut self, _pin: &Pin) -> Result<(), TokenError> {
        Ok(())
    }
    fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        let shared = p256::ecdh::diffie_hellman(self.key.to_nonzero_scalar(), peer.as_affine());
        let bytes: [u8; 32] = (*shared.raw_secret_bytes()).into();
        Ok(SharedSecret::from_bytes(bytes))
    }
    fn generate_key(&mut self, _options: &KeygenOptions) -> Result<PublicKey, TokenError> {
        Err(TokenError::Unavailable(
            "the vector token has a fixed key".into(),
        ))
    }
}
