//! The TrueNAS client's WebSocket and JSON-RPC handling, fed raw bytes as the NAS's side.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    nasring::truenas::fuzzing::raw_stream(bytes);
});
