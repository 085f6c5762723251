//! What a YubiKey offers beyond PIV, through the `yubikey` crate: key generation with PIN
//! and touch policies, the management key (default or PIN-protected), and attestation.
//! Slot and PIN metadata are read with raw commands in `mod.rs`, as any card may answer them.

use p256::PublicKey;
use x509_parser::prelude::{FromDer, X509Certificate};
use yubikey::certificate::{CertInfo, Certificate};
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{MgmKey, PinPolicy, TouchPolicy, YubiKey};

use super::cert;
use crate::secret::Pin;
use crate::token::{Attestation, KeygenOptions, TokenError};

/// A connection through the `yubikey` crate to the card in `reader`. It is closed without
/// a reset, so that the PIN state of nasring's own connection is kept.
pub struct Extras {
    yk: Option<YubiKey>,
}

impl Extras {
    pub fn open(reader: &str) -> Result<Self, TokenError> {
        let mut readers =
            yubikey::reader::Context::open().map_err(|e| failed("opening PC/SC", e))?;
        let found = readers
            .iter()
            .map_err(|e| failed("listing the readers", e))?
            .find(|r| r.name() == reader)
            .ok_or_else(|| TokenError::TokenNotFound {
                uri: reader.to_string(),
                remedy: "The card went away: insert it again and retry.".into(),
            })?;
        let yk = found.open().map_err(|e| failed("opening the YubiKey", e))?;
        Ok(Self { yk: Some(yk) })
    }

    fn yk(&mut self) -> &mut YubiKey {
        self.yk.as_mut().expect("present until dropped")
    }

    /// Authenticates with the management key: the PIN-protected one where the card has one,
    /// else the factory default. Returns whether it was the default.
    fn authenticate(&mut self, pin: &Pin) -> Result<bool, TokenError> {
        self.yk()
            .verify_pin(pin.expose().as_bytes())
            .map_err(|e| failed("verifying the PIN", e))?;
        if let Ok(key) = MgmKey::get_protected(self.yk()) {
            if self.yk().authenticate(key).is_ok() {
                return Ok(false);
            }
        }
        self.yk().authenticate(MgmKey::default()).map_err(|_| {
            TokenError::Unavailable(
                "the card's management key is neither the factory default nor PIN-protected, so \
             nasring cannot make a key on it.\nMake a P-256 key in the slot with ykman or \
             yubico-piv-tool (with its certificate), then use it as it is."
                    .into(),
            )
        })?;
        Ok(true)
    }

    /// True when the card still has the factory management key (no try is spent: the
    /// management key has no retry counter).
    pub fn has_default_management_key(&mut self) -> bool {
        self.yk().authenticate(MgmKey::default()).is_ok()
    }

    /// Makes a P-256 key in `slot` with the chosen policies and writes its certificate.
    /// Returns the public key and notes for the user.
    pub fn generate(
        &mut self,
        pin: &Pin,
        slot: u8,
        options: &KeygenOptions,
    ) -> Result<(PublicKey, Vec<String>), TokenError> {
        let mut notes = Vec::new();
        let default_key = self.authenticate(pin)?;
        if default_key && options.protect_management_key {
            let key = MgmKey::generate();
            key.set_protected(self.yk())
                .map_err(|e| failed("storing a PIN-protected management key", e))?;
            notes.push(
                "The card's management key is now random and stored on the card under the PIN."
                    .to_string(),
            );
        }
        let slot_id = SlotId::try_from(slot).map_err(|e| failed("naming the slot", e))?;
        let spki = piv::generate(
            self.yk(),
            slot_id,
            AlgorithmId::EccP256,
            pin_policy(options)?,
            touch_policy(options)?,
        )
        .map_err(|e| failed("generating the key", e))?;
        let public =
            PublicKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).map_err(|_| {
                TokenError::WrongKeyType {
                    detail: "the card returned a key that is not a P-256 point".into(),
                    remedy: "Check that the card supports P-256 keys.".into(),
                }
            })?;
        let der = cert::certificate_for(&public, slot)?;
        Certificate::from_bytes(der)
            .and_then(|c| c.write(self.yk(), slot_id, CertInfo::Uncompressed))
            .map_err(|e| failed("writing the slot's certificate", e))?;
        Ok((public, notes))
    }

    /// Asks the card to prove that the key in `slot` was made on it, and checks the proof:
    /// the attestation certificate names `key` and is signed by the card's attestation key.
    /// `device` is the card's attestation certificate (slot F9), as DER.
    pub fn attest(&mut self, slot: u8, key: &PublicKey, device: Option<&[u8]>) -> Attestation {
        let Ok(slot_id) = SlotId::try_from(slot) else {
            return Attestation::NotOffered("the slot cannot be attested".into());
        };
        let statement = match piv::attest(self.yk(), slot_id) {
            Ok(s) => s,
            Err(yubikey::Error::NotSupported) => {
                return Attestation::NotOffered("the card does not attest keys".into())
            }
            Err(_) => {
                return Attestation::NotOffered(
                    "the card gave no attestation (a key imported into the card has none)".into(),
                )
            }
        };
        let Some(device) = device else {
            return Attestation::Refuted("the card's attestation certificate is missing".into());
        };
        check_attestation(&statement, device, key)
    }
}

impl Drop for Extras {
    fn drop(&mut self) {
        if let Some(yk) = self.yk.take() {
            let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
        }
    }
}

fn check_attestation(statement: &[u8], device_der: &[u8], key: &PublicKey) -> Attestation {
    let Ok((_, statement)) = X509Certificate::from_der(statement) else {
        return Attestation::Refuted("the attestation cannot be parsed".into());
    };
    let Ok((_, device)) = X509Certificate::from_der(device_der) else {
        return Attestation::Refuted("the card's attestation certificate cannot be parsed".into());
    };
    if PublicKey::from_sec1_bytes(&statement.public_key().subject_public_key.data)
        .ok()
        .as_ref()
        != Some(key)
    {
        return Attestation::Refuted("the attestation is for another key".into());
    }
    if statement
        .verify_signature(Some(device.public_key()))
        .is_err()
    {
        return Attestation::Refuted(
            "the attestation is not signed by the card's attestation key".into(),
        );
    }
    Attestation::Proven(format!(
        "made on the card: attested by \"{}\" (issued by \"{}\")",
        device.subject(),
        device.issuer()
    ))
}

fn pin_policy(options: &KeygenOptions) -> Result<PinPolicy, TokenError> {
    match options.pin_policy.as_deref() {
        None | Some("once") => Ok(PinPolicy::Once),
        Some("always") => Ok(PinPolicy::Always),
        Some(other) => Err(TokenError::Unavailable(format!(
            "the PIN policy {other} is not known.\nUse once or always."
        ))),
    }
}

fn touch_policy(options: &KeygenOptions) -> Result<TouchPolicy, TokenError> {
    match options.touch_policy.as_deref() {
        None | Some("never") => Ok(TouchPolicy::Never),
        Some("cached") => Ok(TouchPolicy::Cached),
        Some("always") => Ok(TouchPolicy::Always),
        Some(other) => Err(TokenError::Unavailable(format!(
            "the touch policy {other} is not known.\nUse never, cached or always."
        ))),
    }
}

fn failed(operation: &str, e: yubikey::Error) -> TokenError {
    match e {
        yubikey::Error::WrongPin { tries } => TokenError::WrongPin {
            tries_left: Some(u32::from(tries)),
        },
        yubikey::Error::PinLocked => super::pin_blocked(),
        yubikey::Error::PcscError {
            inner: Some(pcsc::Error::SharingViolation),
        } => TokenError::CardBusy {
            reader: "the YubiKey".into(),
        },
        other => TokenError::Device {
            operation: operation.into(),
            detail: other.to_string(),
        },
    }
}
