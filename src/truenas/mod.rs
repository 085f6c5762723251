//! The TrueNAS client.
