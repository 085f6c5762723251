//! Finding the card a `piv:` URI names among the readers, waiting a bounded time for it.

use std::thread;
use std::time::{Duration, Instant};

use p256::PublicKey;
use tracing::debug;

use super::card::{ReaderState, Service};
use super::{PivToken, PivUri};
use crate::token::{fingerprint, Find, Token, TokenError};

/// How often the readers are looked at again while waiting.
const POLL: Duration = Duration::from_millis(250);

/// What one look at the readers found.
#[derive(Default)]
struct Scan {
    found: Vec<PivToken>,
    readers: Vec<String>,
    busy: Vec<String>,
    not_piv: Vec<String>,
    other_keys: Vec<String>,
}

/// Opens the card `uri` names. With `want.key`, only a card whose slot holds that key
/// counts; several cards are then told apart by their keys, not by their order.
pub fn find(uri: &PivUri, want: &mut Find<'_>) -> Result<PivToken, TokenError> {
    let deadline = Instant::now() + want.wait;
    let mut told = false;
    loop {
        let service = Service::connect()?;
        let mut scan = look(&service, uri, want.key)?;
        if scan.found.len() == 1 {
            return Ok(scan.found.remove(0));
        }
        if scan.found.len() > 1 {
            let err = several(uri, &scan);
            // None of them was used: leave them as they were.
            for token in &mut scan.found {
                token.card.release_in_place();
            }
            return Err(err);
        }
        if let Some(reader) = scan.busy.first() {
            return Err(TokenError::CardBusy {
                reader: reader.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(absent(uri, want.key, &scan));
        }
        if !told {
            (want.notify)(&format!(
                "Waiting up to {} s for {}…",
                want.wait.as_secs(),
                what_to_insert(uri, want.key)
            ));
            told = true;
        }
        thread::sleep(POLL);
    }
}

fn look(service: &Service, uri: &PivUri, key: Option<&PublicKey>) -> Result<Scan, TokenError> {
    let mut scan = Scan {
        readers: service.readers()?,
        ..Scan::default()
    };
    for reader in scan.readers.clone() {
        if uri
            .reader
            .as_deref()
            .is_some_and(|r| !reader.starts_with(r))
        {
            continue;
        }
        let card = match service.open(&reader)? {
            ReaderState::Card(card) => card,
            ReaderState::Empty => continue,
            ReaderState::Busy => {
                scan.busy.push(reader);
                continue;
            }
            ReaderState::NotPiv(why) => {
                debug!(reader, why, "not a PIV card");
                scan.not_piv.push(reader);
                continue;
            }
        };
        let version = card.yubikey_version()?;
        let serial = match version {
            Some(_) => card.yubikey_serial()?,
            None => None,
        };
        if !uri.admits(&reader, serial) {
            card.release();
            continue;
        }
        let mut token = PivToken::new(card, uri.clone(), serial, version);
        match key {
            None => scan.found.push(token),
            Some(want) => match token.public_key() {
                Ok(have) if have == *want => scan.found.push(token),
                Ok(have) => {
                    scan.other_keys.push(fingerprint(&have));
                    token.card.release_in_place();
                }
                Err(e) => {
                    debug!(reader, error = %e, "card without a readable key");
                    token.card.release_in_place();
                }
            },
        }
    }
    Ok(scan)
}

fn what_to_insert(uri: &PivUri, key: Option<&PublicKey>) -> String {
    let card = match uri.serial {
        Some(s) => format!("the YubiKey or PIV card with serial {s}"),
        None => "a YubiKey or PIV card".to_string(),
    };
    match key {
        Some(k) => format!("{card} that holds key {}: insert it", fingerprint(k)),
        None => format!("{card}: insert it"),
    }
}

fn several(uri: &PivUri, scan: &Scan) -> TokenError {
    let names: Vec<String> = scan.found.iter().map(|t| t.info().uri).collect();
    TokenError::BadUri {
        uri: uri.to_string(),
        reason: format!(
            "it fits {} cards ({}); name one with serial=N or reader=NAME",
            names.len(),
            names.join(", ")
        ),
    }
}

fn absent(uri: &PivUri, key: Option<&PublicKey>, scan: &Scan) -> TokenError {
    if scan.readers.is_empty() {
        return TokenError::NoReader;
    }
    let mut remedy = format!(
        "Insert {}.",
        what_to_insert(uri, key).trim_end_matches(": insert it")
    );
    if !scan.other_keys.is_empty() {
        remedy.push_str(&format!(
            " The cards present hold other keys ({}).",
            scan.other_keys.join(", ")
        ));
    }
    if !scan.not_piv.is_empty() {
        remedy.push_str(&format!(
            " No PIV application on the card in {}.",
            scan.not_piv.join(", ")
        ));
    }
    remedy.push_str(&format!(" Readers seen: {}.", scan.readers.join(", ")));
    TokenError::TokenNotFound {
        uri: uri.to_string(),
        remedy,
    }
}
