//! One PIV card over PC/SC: finding it among the readers, and the APDUs every PIV card
//! understands (SELECT, VERIFY, GENERAL AUTHENTICATE, GET DATA) plus the two YubiKey ones
//! that name the card (GET VERSION, GET SERIAL), which other cards simply refuse.

use std::ffi::{CStr, CString};

use pcsc::{Context, Disposition, Protocols, Scope, ShareMode};
use tracing::debug;
use zeroize::Zeroizing;

use super::super::TokenError;

/// The PIV application identifier (NIST SP 800-73-4), without its version suffix.
const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

/// A status word from the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sw(pub u16);

impl Sw {
    pub const OK: Sw = Sw(0x9000);
    pub const SECURITY_NOT_SATISFIED: Sw = Sw(0x6982);
    pub const AUTH_BLOCKED: Sw = Sw(0x6983);
    pub const NOT_FOUND: Sw = Sw(0x6A82);

    /// `63 Cx`: a wrong PIN (or a status query) with x tries left.
    pub fn tries_left(self) -> Option<u32> {
        (self.0 & 0xFFF0 == 0x63C0).then_some(u32::from(self.0 & 0x000F))
    }
}

/// A response: data and status word.
pub struct Response {
    pub data: Zeroizing<Vec<u8>>,
    pub sw: Sw,
}

/// The PC/SC service, for listing readers and connecting to cards.
pub struct Service {
    ctx: Context,
}

/// What was in one reader when nasring looked.
pub enum ReaderState {
    Card(Card),
    Empty,
    /// Another program holds the card exclusively.
    Busy,
    /// A card that has no PIV application, or that did not answer.
    NotPiv(String),
}

impl Service {
    pub fn connect() -> Result<Self, TokenError> {
        match Context::establish(Scope::User) {
            Ok(ctx) => Ok(Self { ctx }),
            Err(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => {
                Err(TokenError::ServiceNotRunning)
            }
            Err(e) => Err(pcsc_error("connecting to pcscd", e)),
        }
    }

    /// The readers' names; empty when there are none.
    pub fn readers(&self) -> Result<Vec<String>, TokenError> {
        match self.ctx.list_readers_owned() {
            Ok(names) => Ok(names
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => {
                Err(TokenError::ServiceNotRunning)
            }
            Err(e) => Err(pcsc_error("listing the readers", e)),
        }
    }

    /// Connects to the card in `reader` (shared) and selects its PIV application.
    pub fn open(&self, reader: &str) -> Result<ReaderState, TokenError> {
        let name = CString::new(reader).map_err(|_| TokenError::Device {
            operation: "connecting to the reader".into(),
            detail: "its name holds a NUL byte".into(),
        })?;
        let card = match self.connect_card(&name) {
            Ok(card) => card,
            Err(
                pcsc::Error::NoSmartcard
                | pcsc::Error::RemovedCard
                | pcsc::Error::UnpoweredCard
                | pcsc::Error::UnknownReader
                | pcsc::Error::ReaderUnavailable,
            ) => return Ok(ReaderState::Empty),
            Err(pcsc::Error::SharingViolation) => return Ok(ReaderState::Busy),
            Err(e) => return Ok(ReaderState::NotPiv(format!("it did not answer ({e})"))),
        };
        let card = Card {
            card: Some(card),
            reader: reader.to_string(),
            sent: std::cell::Cell::new(0),
        };
        match card.command(0x00, 0xA4, 0x04, 0x00, &PIV_AID) {
            Ok(r) if r.sw == Sw::OK => Ok(ReaderState::Card(card)),
            Ok(r) => Ok(ReaderState::NotPiv(format!(
                "it has no PIV application (SELECT answered {:04X})",
                r.sw.0
            ))),
            Err(TokenError::CardBusy { .. }) => Ok(ReaderState::Busy),
            Err(e) => Ok(ReaderState::NotPiv(e.to_string())),
        }
    }

    fn connect_card(&self, name: &CStr) -> Result<pcsc::Card, pcsc::Error> {
        self.ctx.connect(name, ShareMode::Shared, Protocols::ANY)
    }
}

/// A connected card with its PIV application selected. Dropping it resets the card, so
/// that a verified PIN does not outlive this process's use of it.
pub struct Card {
    card: Option<pcsc::Card>,
    pub reader: String,
    /// Commands sent to the card, continuations included (for the benchmark).
    pub sent: std::cell::Cell<u32>,
}

impl Card {
    /// Sends one command (short APDU, Le = 00) and collects `61 xx` continuations.
    pub fn command(
        &self,
        cla: u8,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Response, TokenError> {
        let mut apdu = Zeroizing::new(vec![cla, ins, p1, p2]);
        if !data.is_empty() {
            let lc = u8::try_from(data.len()).map_err(|_| TokenError::Device {
                operation: "building a card command".into(),
                detail: "its data is longer than 255 bytes".into(),
            })?;
            apdu.push(lc);
            apdu.extend_from_slice(data);
        }
        apdu.push(0x00);
        let mut data = Zeroizing::new(Vec::new());
        let mut sw = self.transmit(&apdu, &mut data)?;
        while sw.0 >> 8 == 0x61 {
            sw = self.transmit(&[0x00, 0xC0, 0x00, 0x00, sw.0 as u8], &mut data)?;
        }
        Ok(Response { data, sw })
    }

    /// Sends a command without Le, for VERIFY, which some cards refuse with one.
    pub fn command_no_le(&self, apdu: &[u8]) -> Result<Sw, TokenError> {
        let mut data = Zeroizing::new(Vec::new());
        self.transmit(apdu, &mut data)
    }

    fn transmit(&self, apdu: &[u8], out: &mut Vec<u8>) -> Result<Sw, TokenError> {
        let card = self.card.as_ref().ok_or_else(|| TokenError::Device {
            operation: "talking to the card".into(),
            detail: "the connection was closed".into(),
        })?;
        let mut buf = Zeroizing::new(vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED]);
        self.sent.set(self.sent.get() + 1);
        let reply = card.transmit(apdu, &mut buf).map_err(|e| match e {
            pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard => TokenError::TokenNotFound {
                uri: self.reader.clone(),
                remedy: "The card was removed while nasring used it: insert it and try again."
                    .into(),
            },
            pcsc::Error::ResetCard => TokenError::Device {
                operation: "talking to the card".into(),
                detail: "another program reset the card meanwhile; try again".into(),
            },
            pcsc::Error::SharingViolation => TokenError::CardBusy {
                reader: self.reader.clone(),
            },
            other => pcsc_error("talking to the card", other),
        })?;
        let (body, sw) = reply.split_at(reply.len().saturating_sub(2));
        let sw = match sw {
            [a, b] => Sw(u16::from_be_bytes([*a, *b])),
            _ => {
                return Err(TokenError::Device {
                    operation: "talking to the card".into(),
                    detail: "the card sent a reply without a status word".into(),
                })
            }
        };
        debug!(ins = apdu.get(1).copied(), sw = sw.0, "card command");
        out.extend_from_slice(body);
        Ok(sw)
    }

    /// The YubiKey firmware version, or `None` on a card that does not know the command.
    pub fn yubikey_version(&self) -> Result<Option<[u8; 3]>, TokenError> {
        let r = self.command(0x00, 0xFD, 0x00, 0x00, &[])?;
        Ok(match (r.sw, r.data.as_slice()) {
            (Sw::OK, [a, b, c, ..]) => Some([*a, *b, *c]),
            _ => None,
        })
    }

    /// The YubiKey serial number, or `None` where the card does not tell it.
    pub fn yubikey_serial(&self) -> Result<Option<u32>, TokenError> {
        let r = self.command(0x00, 0xF8, 0x00, 0x00, &[])?;
        Ok(match (r.sw, r.data.as_slice()) {
            (Sw::OK, [a, b, c, d]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        })
    }

    /// A data object (GET DATA), or `None` when the card has none under `tag`.
    pub fn data_object(&self, tag: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, TokenError> {
        let mut query = vec![0x5C, tag.len() as u8];
        query.extend_from_slice(tag);
        let r = self.command(0x00, 0xCB, 0x3F, 0xFF, &query)?;
        match r.sw {
            Sw::OK => Ok(Some(r.data)),
            Sw::NOT_FOUND => Ok(None),
            sw => Err(TokenError::Device {
                operation: "reading a data object".into(),
                detail: format!("the card answered {:04X}", sw.0),
            }),
        }
    }

    /// True while this card is still in its reader; sends the card nothing. A reset by
    /// another program (nasring resets a PIV card after each use) is not a removal: the
    /// connection is renewed. A card taken out, or swapped for another, is gone for good.
    pub fn is_present(&mut self) -> bool {
        let Some(card) = self.card.as_mut() else {
            return false;
        };
        match card.status2_owned() {
            Ok(status) => status.status().contains(pcsc::Status::PRESENT),
            Err(pcsc::Error::ResetCard) => card
                .reconnect(ShareMode::Shared, Protocols::ANY, Disposition::LeaveCard)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Ends the connection without resetting the card (for cards nasring did not use).
    pub fn release(mut self) {
        self.release_in_place();
    }

    /// [`Card::release`] for a card owned by something else.
    pub fn release_in_place(&mut self) {
        if let Some(card) = self.card.take() {
            let _ = card.disconnect(Disposition::LeaveCard);
        }
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            if let Err((_, e)) = card.disconnect(Disposition::ResetCard) {
                debug!(error = %e, "resetting the card on disconnect failed");
            }
        }
    }
}

fn pcsc_error(operation: &str, e: pcsc::Error) -> TokenError {
    TokenError::Device {
        operation: operation.into(),
        detail: format!("PC/SC said: {e}"),
    }
}
