//! The card as vpcd sees it: the PIV applet behind an adapter that closes the gaps between
//! the applet and what PIV clients (yubico-piv-tool, OpenSC, the `yubikey` crate) send.
//!
//! The adapter
//! - joins chained command APDUs and hands out long responses in `61 xx` pieces through
//!   GET RESPONSE;
//! - answers with the data when a command has no Le, as real cards do, instead of `61 xx`;
//! - accepts SELECT with any prefix of the PIV application identifier of at least 5 bytes;
//! - answers the YubiKey GET VERSION and GET SERIAL commands itself, with a 5.x version
//!   (the `yubikey` crate accepts only 4.x and 5.x) and a serial of the card's own;
//! - records a reset or power-off, so that the caller can drop every volatile state
//!   (a verified PIN, an authenticated management key) as a real card does.

use iso7816::{command::FromSliceError, Command, Instruction, Status};
use piv_authenticator::Authenticator;

use crate::platform::Client;

/// The largest command and response the card handles, after chaining.
const BUFFER_LEN: usize = 7609;

/// The full PIV application identifier (NIST SP 800-73-4, part 1, 2.2).
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// The shortest prefix of the identifier clients use: the registered application provider.
const PIV_RID_LEN: usize = 5;

const INS_GET_VERSION: u8 = 0xFD;
const INS_GET_SERIAL: u8 = 0xF8;

/// The YubiKey firmware version the card reports.
pub const FIRMWARE_VERSION: [u8; 3] = [5, 4, 3];

/// The ATR of a YubiKey 5 (CCID), so that tools that look at it treat the card alike.
const ATR: &[u8] = &[
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

pub struct Card<'a> {
    applet: Authenticator<Client<'a>>,
    serial: u32,
    chained: Option<Command<BUFFER_LEN>>,
    response: heapless::Vec<u8, BUFFER_LEN>,
    sent: usize,
    was_reset: bool,
}

impl<'a> Card<'a> {
    pub fn new(applet: Authenticator<Client<'a>>, serial: u32) -> Self {
        Self {
            applet,
            serial,
            chained: None,
            response: heapless::Vec::new(),
            sent: 0,
            was_reset: false,
        }
    }

    /// True once vpcd has reset the card or cut its power.
    pub fn was_reset(&self) -> bool {
        self.was_reset
    }

    /// Runs one command APDU; returns how many response bytes the client may receive.
    fn handle(&mut self, apdu: &[u8]) -> Result<usize, Status> {
        let command = Command::<BUFFER_LEN>::try_from(apdu).map_err(parse_status)?;
        let Some(mut command) = self.unchain(command)? else {
            return Ok(0);
        };
        let limit = response_limit(&command);
        if command.instruction() == Instruction::GetResponse {
            return Ok(limit);
        }

        self.response.clear();
        self.sent = 0;
        match u8::from(command.instruction()) {
            INS_GET_VERSION => self.reply(&FIRMWARE_VERSION)?,
            INS_GET_SERIAL => self.reply(&self.serial.to_be_bytes())?,
            _ => {
                widen_select(&mut command);
                let reply = self.response.as_mut_view();
                self.applet.respond(command.as_view(), reply)?;
            }
        }
        Ok(limit)
    }

    fn reply(&mut self, data: &[u8]) -> Result<(), Status> {
        self.response
            .extend_from_slice(data)
            .map_err(|_| Status::UnspecifiedNonpersistentExecutionError)
    }

    /// Joins chained commands: `None` until the last one of a chain has come.
    fn unchain(
        &mut self,
        command: Command<BUFFER_LEN>,
    ) -> Result<Option<Command<BUFFER_LEN>>, Status> {
        let last = command.class().chain().last_or_only();
        let joined = match self.chained.take() {
            Some(mut head) => {
                head.extend_from_command(&command)
                    .map_err(|_| Status::WrongLength)?;
                head
            }
            None => command,
        };
        if last {
            Ok(Some(joined))
        } else {
            self.chained = Some(joined);
            Ok(None)
        }
    }

    /// The next piece of the pending response, and its status word.
    fn next_piece(&mut self, limit: usize) -> (Vec<u8>, Status) {
        let rest = &self.response[self.sent..];
        let piece = rest[..limit.min(rest.len())].to_vec();
        self.sent += piece.len();
        let left = self.response.len() - self.sent;
        let status = match left {
            0 => Status::Success,
            n => Status::MoreAvailable(u8::try_from(n).unwrap_or(0)),
        };
        (piece, status)
    }
}

impl vpicc::VSmartCard for Card<'_> {
    fn atr(&self) -> &[u8] {
        ATR
    }

    fn power_off(&mut self) {
        self.was_reset = true;
    }

    fn reset(&mut self) {
        self.was_reset = true;
    }

    fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        let (mut response, status) = match self.handle(apdu) {
            Ok(limit) => self.next_piece(limit),
            Err(status) => {
                self.response.clear();
                self.sent = 0;
                (Vec::new(), status)
            }
        };
        log::debug!(
            "INS {:02X?}: {} bytes, {:?}",
            apdu.get(1),
            response.len(),
            status
        );
        response.extend_from_slice(&<[u8; 2]>::from(status));
        response
    }
}

/// How much of the response one reply may carry. With no Le, the whole response (up to what
/// a short reply holds) rather than nothing: real cards and PIV clients behave so.
fn response_limit(command: &Command<BUFFER_LEN>) -> usize {
    match command.expected() {
        0 if command.extended => BUFFER_LEN,
        0 => 256,
        n => n,
    }
}

/// Replaces a short PIV application identifier in a SELECT by the full one.
fn widen_select(command: &mut Command<BUFFER_LEN>) {
    let is_select_by_name = command.instruction() == Instruction::Select && command.p1 == 0x04;
    let data = command.data();
    let is_short_piv =
        data.len() >= PIV_RID_LEN && data.len() < PIV_AID.len() && PIV_AID.starts_with(data);
    if is_select_by_name && is_short_piv {
        let data = command.data_mut();
        data.clear();
        data.extend_from_slice(&PIV_AID)
            .expect("the identifier fits in a command");
    }
}

fn parse_status(error: FromSliceError) -> Status {
    match error {
        FromSliceError::InvalidClass => Status::ClassNotSupported,
        FromSliceError::InvalidFirstBodyByteForExtended => Status::UnspecifiedCheckingError,
        _ => Status::WrongLength,
    }
}
