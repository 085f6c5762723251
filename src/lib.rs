//! nasring: a hardware-backed keyring for the API keys of TrueNAS systems.
//!
//! The rooms, and their one-way doors:
//! - [`vault`]: the keyring file and its cryptography. Knows tokens only through the
//!   [`token::Token`] trait, and nothing of the network.
//! - [`token`]: PKCS#11 tokens and PIV cards.
//! - [`truenas`]: the TrueNAS client (JSON-RPC over a verified TLS WebSocket).
//! - [`cli`]: the command line, which calls all of the above.

pub mod cli;
pub mod secret;
pub mod token;
pub mod truenas;
pub mod vault;
