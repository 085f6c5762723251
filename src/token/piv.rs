//! PIV cards (YubiKey and others) through PC/SC.
// Placeholder until the PIV backend lands; replaced whole by it.

use std::fmt;

use super::{KeygenOptions, PinStatus, Token, TokenError, TokenInfo};
use crate::secret::{Pin, SharedSecret};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PivUri {
    text: String,
}

impl PivUri {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        Ok(Self {
            text: text.to_string(),
        })
    }
}

impl fmt::Display for PivUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

pub struct PivToken;

impl PivToken {
    pub fn open(_uri: &PivUri) -> Result<Self, TokenError> {
        Err(TokenError::Unavailable(
            "PIV cards are not supported by this build".into(),
        ))
    }
}

impl Token for PivToken {
    fn info(&self) -> TokenInfo {
        unreachable!("never constructed")
    }
    fn public_key(&mut self) -> Result<p256::PublicKey, TokenError> {
        unreachable!("never constructed")
    }
    fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
        unreachable!("never constructed")
    }
    fn login(&mut self, _pin: &Pin) -> Result<(), TokenError> {
        unreachable!("never constructed")
    }
    fn agree(&mut self, _peer: &p256::PublicKey) -> Result<SharedSecret, TokenError> {
        unreachable!("never constructed")
    }
    fn generate_key(&mut self, _o: &KeygenOptions) -> Result<p256::PublicKey, TokenError> {
        unreachable!("never constructed")
    }
}
