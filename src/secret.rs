//! One type per kind of secret.
//!
//! Every type here wipes its memory when dropped and has no `Debug`, `Display` or `Serialize`,
//! and exposes its bytes only through an explicitly named method, so that a secret cannot
//! reach a log line, an error message or a file by accident.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

macro_rules! text_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name(String);

        impl $name {
            /// Takes ownership of `value`; the caller keeps no copy.
            pub fn new(value: String) -> Self {
                Self(value)
            }

            /// The secret's text, for the one place that must hand it on.
            pub fn expose(&self) -> &str {
                &self.0
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            pub fn len(&self) -> usize {
                self.0.chars().count()
            }
        }

    };
}

text_secret!(
    /// The keyring passphrase, which is also the token PIN unless a separate PIN is enrolled.
    Passphrase
);
text_secret!(
    /// A token PIN, when it differs from the passphrase.
    Pin
);
text_secret!(
    /// A TrueNAS API key, `<id>-<64 letters and digits>`.
    ApiKey
);
text_secret!(
    /// A TrueNAS account password, used once to create an API key and never stored.
    Password
);
text_secret!(
    /// A one-time code from an authenticator app.
    OtpCode
);
text_secret!(
    /// The recovery code, which opens the keyring without any token.
    RecoveryCode
);

impl From<&Passphrase> for Pin {
    fn from(p: &Passphrase) -> Self {
        Pin(p.0.clone())
    }
}

macro_rules! key_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Copies from a slice that must be 32 bytes long; `None` otherwise.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                let mut key = [0u8; 32];
                if bytes.len() != key.len() {
                    return None;
                }
                key.copy_from_slice(bytes);
                let out = Self(key);
                key.zeroize();
                Some(out)
            }

            pub fn expose(&self) -> &[u8; 32] {
                &self.0
            }
        }

    };
}

key_secret!(
    /// The random key that everything in one keyring is encrypted under.
    MasterKey
);
key_secret!(
    /// A key-encryption key that opens one unlocker's copy of the master key.
    WrappingKey
);
key_secret!(
    /// The passphrase after Argon2id.
    StretchedPassphrase
);
key_secret!(
    /// The shared secret of a key agreement with a token.
    SharedSecret
);
key_secret!(
    /// The random key that the passphrase unmasks and every token unlocker mixes in: what
    /// makes the passphrase a factor without tying it to each token's wrapping.
    PassphraseKey
);

impl PassphraseKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let key = Self(bytes);
        bytes.zeroize();
        key
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let key = Self(bytes);
        bytes.zeroize();
        key
    }
}

/// Plaintext that has just been decrypted, wiped when dropped.
pub type Plaintext = Zeroizing<Vec<u8>>;

/// Reads a secret from the first line of a file, for scripts and CI.
///
/// A trailing newline (LF or CRLF) is removed; everything else is kept as it is.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(std::fs::read_to_string(path)?);
    let end = text.find(['\n', '\r']).unwrap_or(text.len());
    text.truncate(end);
    Ok(text)
}

/// Keeps this process's memory, which holds secrets for a while, out of core dumps: the core
/// size limit goes to zero and the process is marked not dumpable (which also keeps other
/// processes of the user from reading its memory through ptrace or /proc). Best effort: a
/// system that refuses either still runs nasring. A command started by `nasring exec`
/// inherits the zero core limit.
// Limitation: only the agent locks its memory against swapping; a command's own memory is
// not locked (Argon2id's 64 MiB would exceed the usual locked-memory limit).
pub fn keep_out_of_core_dumps() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = nix::sys::prctl::set_dumpable(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_keeps_only_the_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        std::fs::write(&path, "correct horse\r\nsecond").expect("write");
        assert_eq!(
            read_secret_file(&path).expect("read").as_str(),
            "correct horse"
        );
    }
}
