//! The JSON-RPC reply handling of the TrueNAS client, one text message per line of input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    nasring::truenas::fuzzing::text_messages(input);
});
