//! PIV cards (YubiKey, Nitrokey, smart cards) through PC/SC.
//!
//! Key agreement is PIV GENERAL AUTHENTICATE on the slot (ECDH P-256), so any PIV card
//! works. Where the card is a YubiKey, the `yubikey` crate adds key generation with PIN and
//! touch policies and attestation, and the YubiKey's metadata gives the slot's public key,
//! its policies and the PIN's state.

mod card;
mod cert;
mod find;
mod tlv;
mod uri;
mod yubikey;

use p256::PublicKey;
use tracing::debug;
use zeroize::Zeroizing;

pub use find::find;
pub use uri::PivUri;

use super::{AdminStatus, Attestation, KeygenOptions, PinStatus, Token, TokenError, TokenInfo};
use crate::secret::{Pin, SharedSecret};
use card::{Card, Sw};

/// PIV PINs are 6 to 8 characters (SP 800-73-4), padded with FF to 8 bytes.
const PIN_LEN: std::ops::RangeInclusive<usize> = 6..=8;

/// The factory PIN of YubiKeys and most PIV cards.
const DEFAULT_PIN: &str = "123456";

/// The PIN's reference in VERIFY and in the YubiKey's metadata.
const PIN_REF: u8 = 0x80;
const PUK_REF: u8 = 0x81;

/// The YubiKey's attestation certificate (slot F9), which signs attestations.
const ATTESTATION_CERTIFICATE: [u8; 3] = [0x5F, 0xFF, 0x01];

/// YubiKey touch policies in metadata and key generation.
const TOUCH_NEVER: u8 = 1;

/// What the card says about the slot's key, where it has YubiKey metadata.
#[derive(Clone, Debug, Default)]
struct SlotMetadata {
    public: Option<PublicKey>,
    pin_policy: Option<u8>,
    touch_policy: Option<u8>,
    imported: bool,
}

/// An open PIV card and one slot on it.
pub struct PivToken {
    card: Card,
    uri: PivUri,
    serial: Option<u32>,
    version: Option<[u8; 3]>,
    public: Option<PublicKey>,
    metadata: Option<SlotMetadata>,
    /// Kept while the token is open: for a PIN-always key, and for key generation through a
    /// second connection.
    pin: Option<Pin>,
    /// The PIN was verified and no private-key operation has used it since.
    fresh_pin: bool,
    /// The touch policy chosen at key generation in this process.
    touch_policy: Option<u8>,
}

impl PivToken {
    fn new(card: Card, uri: PivUri, serial: Option<u32>, version: Option<[u8; 3]>) -> Self {
        Self {
            card,
            uri,
            serial,
            version,
            public: None,
            metadata: None,
            pin: None,
            fresh_pin: false,
            touch_policy: None,
        }
    }

    /// How many commands this token has sent to its card, continuations included.
    pub fn card_commands(&self) -> u32 {
        self.card.sent.get()
    }

    fn is_yubikey(&self) -> bool {
        self.version.is_some()
    }

    fn slot_name(&self) -> String {
        format!("{:02X}", self.uri.slot)
    }

    /// YubiKey metadata of `reference` (a slot, the PIN or the PUK), if the card has any.
    fn raw_metadata(&self, reference: u8) -> Result<Option<Zeroizing<Vec<u8>>>, TokenError> {
        if !self.is_yubikey() {
            return Ok(None);
        }
        let r = self.card.command(0x00, 0xF7, 0x00, reference, &[])?;
        Ok((r.sw == Sw::OK && !r.data.is_empty()).then_some(r.data))
    }

    fn slot_metadata(&mut self) -> Result<SlotMetadata, TokenError> {
        if let Some(m) = &self.metadata {
            return Ok(m.clone());
        }
        let mut meta = SlotMetadata::default();
        if let Some(raw) = self.raw_metadata(self.uri.slot)? {
            for (tag, value) in tlv::items(&raw) {
                match (tag, value) {
                    (0x02, [pin, touch, ..]) => {
                        meta.pin_policy = Some(*pin);
                        meta.touch_policy = Some(*touch);
                    }
                    (0x03, [origin]) => meta.imported = *origin == 2,
                    (0x04, v) => {
                        meta.public =
                            tlv::find(v, 0x86).and_then(|p| PublicKey::from_sec1_bytes(p).ok())
                    }
                    _ => {}
                }
            }
        }
        self.metadata = Some(meta.clone());
        Ok(meta)
    }

    /// The public key: from YubiKey metadata where the card has it, else from the slot's
    /// certificate.
    fn read_public_key(&mut self) -> Result<PublicKey, TokenError> {
        if let Some(key) = self.slot_metadata()?.public {
            return Ok(key);
        }
        let tag = certificate_tag(self.uri.slot);
        match self.card.data_object(&tag)? {
            Some(object) => cert::public_key_of_object(&object),
            None => {
                Err(TokenError::KeyNotFound {
                    uri: self.info().uri,
                    remedy: format!(
                    "Slot {} shows no key (no certificate{}). Make one with nasring token keygen \
                     --token {}, or import the certificate of the key you made there.",
                    self.slot_name(),
                    if self.is_yubikey() { ", no metadata" } else { "" },
                    self.uri
                ),
                })
            }
        }
    }

    fn read_pin_status(&self) -> Result<PinStatus, TokenError> {
        let sw = self.card.command_no_le(&[0x00, 0x20, 0x00, PIN_REF])?;
        let status = match sw {
            Sw::OK => PinStatus::default(),
            Sw::AUTH_BLOCKED => locked(),
            sw => match sw.tries_left() {
                Some(0) => locked(),
                Some(n) => PinStatus {
                    tries_left: Some(n),
                    final_try: n == 1,
                    ..PinStatus::default()
                },
                None => PinStatus::default(),
            },
        };
        Ok(status)
    }

    fn verify(&mut self, pin: &Pin) -> Result<(), TokenError> {
        let mut apdu = Zeroizing::new(vec![0x00, 0x20, 0x00, PIN_REF, 0x08]);
        apdu.extend_from_slice(pin.expose().as_bytes());
        apdu.resize(5 + 8, 0xFF);
        match self.card.command_no_le(&apdu)? {
            Sw::OK => {
                self.fresh_pin = true;
                Ok(())
            }
            Sw::AUTH_BLOCKED => Err(pin_blocked()),
            sw => match sw.tries_left() {
                Some(0) => Err(pin_blocked()),
                Some(n) => Err(TokenError::WrongPin {
                    tries_left: Some(n),
                }),
                None => Err(TokenError::Device {
                    operation: "VERIFY (PIN)".into(),
                    detail: format!("the card answered {:04X}", sw.0),
                }),
            },
        }
    }

    fn general_authenticate(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        let point = p256::EncodedPoint::from(peer);
        let inner = [&[0x82, 0x00][..], &tlv::encode(0x85, point.as_bytes())].concat();
        let data = tlv::encode(0x7C, &inner);
        let r = self.card.command(0x00, 0x87, 0x11, self.uri.slot, &data)?;
        let had_pin = std::mem::take(&mut self.fresh_pin);
        match r.sw {
            Sw::OK => {}
            Sw::SECURITY_NOT_SATISFIED if had_pin && self.may_need_touch() => {
                return Err(TokenError::TouchTimeout)
            }
            Sw::SECURITY_NOT_SATISFIED => {
                return Err(TokenError::Device {
                    operation: "key agreement".into(),
                    detail: "the card wants its PIN first (it was not verified, or the card was \
                             reset)"
                        .into(),
                })
            }
            sw => {
                return Err(TokenError::WrongKeyType {
                    detail: format!(
                        "the card refused ECDH on slot {} with {:04X}",
                        self.slot_name(),
                        sw.0
                    ),
                    remedy:
                        "Check that the slot holds a P-256 key (nasring token keygen makes one)."
                            .into(),
                })
            }
        }
        let secret = tlv::find(&r.data, 0x7C).and_then(|v| tlv::find(v, 0x82));
        secret
            .and_then(SharedSecret::from_slice)
            .ok_or_else(|| TokenError::Device {
                operation: "key agreement".into(),
                detail: "the card's answer holds no 32-byte shared secret".into(),
            })
    }

    /// True unless the card is known not to ask for a touch on this slot.
    fn may_need_touch(&mut self) -> bool {
        if !self.is_yubikey() {
            return false;
        }
        let policy = self
            .touch_policy
            .or_else(|| self.slot_metadata().ok().and_then(|m| m.touch_policy));
        policy != Some(TOUCH_NEVER)
    }

    fn pin_for_extras(&self) -> Result<&Pin, TokenError> {
        self.pin.as_ref().ok_or_else(|| TokenError::Device {
            operation: "using the card".into(),
            detail: "no PIN was presented yet".into(),
        })
    }
}

impl Token for PivToken {
    fn is_present(&mut self) -> bool {
        self.card.is_present()
    }

    fn info(&self) -> TokenInfo {
        let name = match self.version {
            Some([a, b, c]) => format!("YubiKey {a}.{b}.{c}"),
            None => "PIV card".to_string(),
        };
        let label = match self.serial {
            Some(s) => format!("{name} serial {s}, slot {}", self.slot_name()),
            None => format!("{name} in {}, slot {}", self.card.reader, self.slot_name()),
        };
        TokenInfo {
            uri: self.uri.for_card().to_string(),
            label,
            serial: self.serial.map(|s| s.to_string()),
        }
    }

    fn public_key(&mut self) -> Result<PublicKey, TokenError> {
        if let Some(key) = self.public {
            return Ok(key);
        }
        let key = self.read_public_key()?;
        self.public = Some(key);
        Ok(key)
    }

    fn pin_status(&mut self) -> Result<PinStatus, TokenError> {
        self.read_pin_status()
    }

    fn login(&mut self, pin: &Pin) -> Result<(), TokenError> {
        check_pin_format(pin)?;
        if self.read_pin_status()?.locked {
            return Err(pin_blocked());
        }
        self.verify(pin)?;
        self.pin = Some(pin.clone());
        Ok(())
    }

    fn agree(&mut self, peer: &PublicKey) -> Result<SharedSecret, TokenError> {
        if !self.fresh_pin {
            // A PIN-always key needs the PIN right before each use.
            if let Some(pin) = self.pin.clone() {
                self.verify(&pin)?;
            }
        }
        self.general_authenticate(peer)
    }

    fn generate_key(&mut self, options: &KeygenOptions) -> Result<PublicKey, TokenError> {
        if !options.overwrite {
            if let Ok(existing) = self.public_key() {
                debug!(fingerprint = %super::fingerprint(&existing), "slot already holds a key");
                return Err(TokenError::KeyExists {
                    uri: self.info().uri,
                });
            }
        }
        if !self.is_yubikey() {
            // Limitation: key generation needs the card's management key protocol, which
            // nasring speaks only through the `yubikey` crate, that is, to YubiKeys.
            return Err(TokenError::Unavailable(
                "nasring makes keys only on YubiKeys; this card is another kind of PIV card.\n\
                 Make a P-256 key and its certificate in the slot with the card's own tool, \
                 then use it as it is."
                    .into(),
            ));
        }
        let pin = self.pin_for_extras()?.clone();
        let mut extras = yubikey::Extras::open(&self.card.reader)?;
        let (key, notes) = extras.generate(&pin, self.uri.slot, options)?;
        drop(extras);
        for note in notes {
            debug!(note, "key generation");
        }
        self.public = Some(key);
        self.metadata = None;
        self.touch_policy = Some(match options.touch_policy.as_deref() {
            Some("always") => 2,
            Some("cached") => 3,
            _ => TOUCH_NEVER,
        });
        // The other connection verified the PIN again; this one's is still valid.
        self.fresh_pin = false;
        Ok(key)
    }

    fn warnings(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pin.as_ref().is_some_and(|p| p.expose() == DEFAULT_PIN) {
            out.push(
                "the card still has the factory PIN 123456: change it (ykman piv access \
                 change-pin) before relying on the card."
                    .to_string(),
            );
        }
        if self.slot_metadata().is_ok_and(|m| m.imported) {
            out.push(
                "the slot's key was imported into the card, so a copy of it may exist \
                 elsewhere. Prefer a key made on the card (nasring token keygen)."
                    .to_string(),
            );
        }
        out
    }

    fn pin_must_differ(&self) -> bool {
        true
    }

    fn touch_hint(&mut self) -> Option<String> {
        let policy = self
            .touch_policy
            .or_else(|| self.slot_metadata().ok().and_then(|m| m.touch_policy))?;
        (policy != TOUCH_NEVER)
            .then(|| "Touch the YubiKey when it blinks (it waits about 15 seconds).".to_string())
    }

    fn attestation(&mut self) -> Attestation {
        if !self.is_yubikey() {
            return Attestation::NotOffered("the card is not a YubiKey".into());
        }
        if self.slot_metadata().is_ok_and(|m| m.imported) {
            return Attestation::NotOffered("the key was imported into the card".into());
        }
        let Ok(key) = self.public_key() else {
            return Attestation::NotOffered("the slot shows no key".into());
        };
        let device = self
            .card
            .data_object(&ATTESTATION_CERTIFICATE)
            .ok()
            .flatten();
        let device = device.as_deref().and_then(|o| {
            let inner = tlv::find(o, 0x53).unwrap_or(o);
            tlv::find(inner, 0x70)
        });
        match yubikey::Extras::open(&self.card.reader) {
            Ok(mut extras) => extras.attest(self.uri.slot, &key, device),
            Err(e) => Attestation::NotOffered(format!("the card could not be asked ({e})")),
        }
    }

    fn admin_status(&mut self) -> AdminStatus {
        let default_flag = |tok: &PivToken, reference: u8| {
            tok.raw_metadata(reference)
                .ok()
                .flatten()
                .and_then(|raw| tlv::find(&raw, 0x05).map(|v| v == [1]))
        };
        let default_pin = default_flag(self, PIN_REF)
            .or_else(|| self.pin.as_ref().map(|p| p.expose() == DEFAULT_PIN));
        let default_puk = default_flag(self, PUK_REF);
        let default_management_key = if self.is_yubikey() {
            default_flag(self, 0x9B).or_else(|| {
                yubikey::Extras::open(&self.card.reader)
                    .ok()
                    .map(|mut e| e.has_default_management_key())
            })
        } else {
            None
        };
        AdminStatus {
            default_pin,
            default_puk,
            default_management_key,
        }
    }
}

/// The data object that holds a slot's certificate (SP 800-73-4, part 1, table 3).
fn certificate_tag(slot: u8) -> [u8; 3] {
    let last = match slot {
        0x9A => 0x05,
        0x9C => 0x0A,
        0x9D => 0x0B,
        0x9E => 0x01,
        retired => 0x0D + (retired - 0x82),
    };
    [0x5F, 0xC1, last]
}

/// Refuses a PIN the card would refuse anyway, before it can cost a try.
fn check_pin_format(pin: &Pin) -> Result<(), TokenError> {
    let len = pin.expose().len();
    if !pin.expose().is_ascii() || !PIN_LEN.contains(&len) {
        return Err(TokenError::PinFormat {
            reason: format!(
                "a PIV PIN is 6 to 8 ASCII characters, and this one is {} long; no try was spent",
                pin.len()
            ),
        });
    }
    Ok(())
}

fn locked() -> PinStatus {
    PinStatus {
        tries_left: Some(0),
        locked: true,
        ..PinStatus::default()
    }
}

pub(crate) fn pin_blocked() -> TokenError {
    TokenError::PinLocked {
        remedy: "Unblock it with the PUK: ykman piv access unblock-pin (or yubico-piv-tool -a \
                 unblock-pin), then try again. If the PUK is blocked too, only a reset of the \
                 PIV application helps, and it erases the card's keys."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_outside_six_to_eight_characters_never_reach_the_card() {
        for bad in ["12345", "123456789", "12345é"] {
            let err = check_pin_format(&Pin::new(bad.into())).expect_err(bad);
            assert!(matches!(err, TokenError::PinFormat { .. }), "{bad}");
            assert!(!err.to_string().contains(bad));
        }
        assert!(check_pin_format(&Pin::new("123456".into())).is_ok());
        assert!(check_pin_format(&Pin::new("abcdefgh".into())).is_ok());
    }

    #[test]
    fn certificate_objects_of_the_slots() {
        assert_eq!(certificate_tag(0x9D), [0x5F, 0xC1, 0x0B]);
        assert_eq!(certificate_tag(0x82), [0x5F, 0xC1, 0x0D]);
        assert_eq!(certificate_tag(0x95), [0x5F, 0xC1, 0x20]);
    }
}
