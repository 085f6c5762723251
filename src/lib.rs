//! nasring: a hardware-backed keyring for the API keys of TrueNAS systems.
//!
//! The rooms, and their one-way doors:
//! - [`vault`]: the keyring file and its cryptography. Knows tokens only through the
//!   [`token::Token`] trait, and nothing of the network.
//! - [`token`]: PKCS#11 tokens and PIV cards.
//! - [`truenas`]: the TrueNAS client (JSON-RPC over a verified TLS WebSocket).
//! - [`agent`]: the process that holds an open keyring for a bounded time, its socket and
//!   protocol. Calls the vault, the token trait and the audit log.
//! - [`audit`]: the log of unlocks, locks and keys handed out.
//! - [`cli`]: the command line, which calls all of the above.

pub mod agent;
pub mod audit;
pub mod cli;
pub mod secret;
pub mod token;
pub mod truenas;
pub mod vault;
