//! The keyring file parser: any bytes give a parsed, validated keyring or an error, the MAC
//! covers every byte before the MAC line, and what parses writes back and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nasring::vault::{format, Sealed};

fuzz_target!(|bytes: &[u8]| {
    let Ok(sealed) = Sealed::parse(bytes) else {
        return;
    };
    let parsed = format::parse(bytes).expect("Sealed::parse accepted it");
    let mac_line = &bytes[parsed.signed.len()..];
    assert_eq!(
        &bytes[..parsed.signed.len()],
        parsed.signed,
        "the MAC covers other bytes"
    );
    assert!(
        mac_line.starts_with(b"mac:"),
        "bytes between the body and the MAC line"
    );

    let signed = format::signed_bytes(sealed.document()).expect("a parsed keyring encodes");
    let rewritten = format::with_mac(signed, &parsed.mac);
    let again = Sealed::parse(&rewritten).expect("a written keyring parses");
    assert_eq!(
        again.document(),
        sealed.document(),
        "the keyring does not round-trip"
    );
});
