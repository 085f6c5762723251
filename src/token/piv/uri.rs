//! `piv:` URIs: which card, and which slot on it.
//!
//! `piv:` names the only PIV card present (or, when opening a keyring, the one whose key the
//! keyring records). Attributes, separated by `;`, narrow it down:
//! `serial=N` (the serial a YubiKey reports), `reader=NAME` (the start of the PC/SC reader
//! name, percent-encoded), `slot=9d` (the key's slot; 9d, key management, by default).

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::token::TokenError;

/// The key-management slot, made for key agreement.
pub const KEY_MANAGEMENT: u8 = 0x9D;

const READER_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b';')
    .add(b'?')
    .add(b'=')
    .add(b'"')
    .add(b'#');

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PivUri {
    pub serial: Option<u32>,
    pub reader: Option<String>,
    pub slot: u8,
}

impl Default for PivUri {
    fn default() -> Self {
        Self {
            serial: None,
            reader: None,
            slot: KEY_MANAGEMENT,
        }
    }
}

impl PivUri {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let bad = |reason: String| TokenError::BadUri {
            uri: text.to_string(),
            reason,
        };
        let rest = text
            .strip_prefix("piv:")
            .ok_or_else(|| bad("it must start with piv:".into()))?;
        let mut uri = PivUri::default();
        for attr in rest.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("attribute {attr} has no value")))?;
            uri.set(name, raw).map_err(&bad)?;
        }
        Ok(uri)
    }

    fn set(&mut self, name: &str, raw: &str) -> Result<(), String> {
        match name {
            "serial" => {
                self.serial = Some(
                    raw.parse()
                        .map_err(|_| format!("serial={raw} is not a number"))?,
                )
            }
            "reader" => {
                let text = percent_decode_str(raw)
                    .decode_utf8()
                    .map_err(|_| "reader is not valid UTF-8".to_string())?;
                self.reader = Some(text.into_owned());
            }
            "slot" => self.slot = parse_slot(raw)?,
            other => return Err(format!("unknown attribute {other} (serial, reader, slot)")),
        }
        Ok(())
    }

    /// True when a card in `reader` with `serial` may be the one this URI names.
    pub fn admits(&self, reader: &str, serial: Option<u32>) -> bool {
        self.reader.as_deref().is_none_or(|r| reader.starts_with(r))
            && self.serial.is_none_or(|s| serial == Some(s))
    }

    /// The URI to record for a card: the slot, and a serial only where the user named one.
    /// Never the reader, whose name changes with the USB port and the order of plugging in:
    /// the card is found again by the public key the keyring records.
    pub fn for_card(&self) -> PivUri {
        PivUri {
            serial: self.serial,
            reader: None,
            slot: self.slot,
        }
    }
}

/// The slots that can hold a key-agreement key: 9a, 9c, 9d, 9e and the retired 82 to 95.
fn parse_slot(raw: &str) -> Result<u8, String> {
    let slot = u8::from_str_radix(raw, 16).map_err(|_| format!("slot={raw} is not a hex slot"))?;
    match slot {
        0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95 => Ok(slot),
        _ => Err(format!(
            "slot={raw} holds no private key (use 9d, key management, or 9a, 9c, 9e, 82 to 95)"
        )),
    }
}

impl fmt::Display for PivUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(serial) = self.serial {
            parts.push(format!("serial={serial}"));
        }
        if let Some(reader) = &self.reader {
            parts.push(format!(
                "reader={}",
                utf8_percent_encode(reader, READER_VALUE)
            ));
        }
        if self.slot != KEY_MANAGEMENT {
            parts.push(format!("slot={:02x}", self.slot));
        }
        write!(f, "piv:{}", parts.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_uri_names_the_key_management_slot() {
        let uri = PivUri::parse("piv:").expect("parse");
        assert_eq!(uri, PivUri::default());
        assert_eq!(uri.to_string(), "piv:");
        assert_eq!(PivUri::parse("piv:slot=9d").expect("parse"), uri);
    }

    #[test]
    fn round_trips_serial_reader_and_slot() {
        let uri = PivUri::parse("piv:serial=123;reader=Yubico%20YubiKey;slot=9A").expect("parse");
        assert_eq!(uri.serial, Some(123));
        assert_eq!(uri.reader.as_deref(), Some("Yubico YubiKey"));
        assert_eq!(uri.slot, 0x9A);
        assert_eq!(PivUri::parse(&uri.to_string()).expect("reparse"), uri);
        assert!(uri.admits("Yubico YubiKey OTP+FIDO+CCID 00 00", Some(123)));
        assert!(!uri.admits("Yubico YubiKey OTP+FIDO+CCID 00 00", Some(124)));
        assert_eq!(uri.for_card().to_string(), "piv:serial=123;slot=9a");
    }

    #[test]
    fn refuses_bad_slots_and_attributes() {
        assert!(PivUri::parse("piv:slot=9b").is_err());
        assert!(PivUri::parse("piv:slot=zz").is_err());
        assert!(PivUri::parse("piv:pin=123456").is_err());
        assert!(PivUri::parse("piv:serial=abc").is_err());
    }
}
