//! The vault's cryptography: every derivation the format specifies, and nothing else.
//!
//! `docs/vault-format.md` is the specification; the names here follow it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdh::EphemeralSecret;
use p256::PublicKey;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secret::{
    MasterKey, Passphrase, PassphraseKey, Plaintext, RecoveryCode, SharedSecret,
    StretchedPassphrase, WrappingKey,
};

pub const NONCE_LEN: usize = 12;
pub const MAC_LEN: usize = 32;

const INFO_TOKEN_UNLOCKER: &[u8] = b"nasring v1 token unlocker";
const INFO_RECOVERY_UNLOCKER: &[u8] = b"nasring v1 recovery unlocker";
const INFO_RECOVERY_KEY: &[u8] = b"nasring v1 recovery key";
const INFO_PASSPHRASE_MASK: &[u8] = b"nasring v1 passphrase mask";
/// Random bytes in a recovery code: 160 bits, 32 base32 letters.
pub const RECOVERY_CODE_BYTES: usize = 20;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const INFO_DOCUMENT_MAC: &[u8] = b"nasring v1 document mac";
const INFO_ENTRY_KEY: &[u8] = b"nasring v1 entry key";
pub const AAD_UNLOCKER: &[u8] = b"nasring v1 master key";
pub const AAD_ENTRY: &[u8] = b"nasring v1 api key";

/// Argon2id parameters, as stored in the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfCost {
    /// 64 MiB, three passes, one lane: about a quarter of a second on a small server.
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    /// The least nasring accepts when creating or opening a keyring.
    pub const MINIMUM: KdfCost = KdfCost {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    /// The most nasring accepts when opening a keyring (a hostile file must not exhaust memory).
    pub const MAXIMUM_MEMORY_KIB: u32 = 4 * 1024 * 1024;
}

/// Failures of the primitives. Deliberately without detail: which check failed is not said.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("decryption failed")]
    Open,
    #[error("the key-derivation parameters are out of range")]
    Parameters,
    #[error("a public key in the keyring is not a valid P-256 point")]
    PublicKey,
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// Argon2id(passphrase, salt) → 32 bytes.
pub fn stretch_passphrase(
    passphrase: &Passphrase,
    salt: &[u8],
    cost: KdfCost,
) -> Result<StretchedPassphrase, CryptoError> {
    if cost.memory_kib < KdfCost::MINIMUM.memory_kib
        || cost.memory_kib > KdfCost::MAXIMUM_MEMORY_KIB
        || cost.iterations < 1
        || cost.iterations > 64
        || cost.parallelism < 1
        || cost.parallelism > 16
    {
        return Err(CryptoError::Parameters);
    }
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(32))
        .map_err(|_| CryptoError::Parameters)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.expose().as_bytes(), salt, out.as_mut())
        .map_err(|_| CryptoError::Parameters)?;
    Ok(StretchedPassphrase::from_bytes(*out))
}

/// A fresh ephemeral key pair for enrolling a token: the shared secret it agrees with the
/// token's public key, and the ephemeral public key to store. The private half is dropped.
pub fn enrol_ephemeral(token_key: &PublicKey) -> (SharedSecret, PublicKey) {
    let ephemeral = EphemeralSecret::random(&mut OsRng);
    let public = ephemeral.public_key();
    let shared = ephemeral.diffie_hellman(token_key);
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new((*shared.raw_secret_bytes()).into());
    (SharedSecret::from_bytes(*bytes), public)
}

/// The key that opens a token unlocker's copy of the master key:
/// HKDF-SHA256(salt = keyring id, ikm = Z ‖ P, info = label ‖ 0 ‖ unlocker id ‖ 0 ‖ E ‖ T),
/// where `P` is the passphrase key.
pub fn token_wrapping_key(
    keyring_id: &[u8],
    unlocker_id: &str,
    shared: &SharedSecret,
    passphrase_key: &PassphraseKey,
    ephemeral: &PublicKey,
    token: &PublicKey,
) -> WrappingKey {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(shared.expose());
    ikm[32..].copy_from_slice(passphrase_key.expose());
    let info = unlocker_info(INFO_TOKEN_UNLOCKER, unlocker_id, ephemeral, token);
    WrappingKey::from_bytes(hkdf32(keyring_id, ikm.as_ref(), &info))
}

/// The key that opens the recovery unlocker's copy of the master key:
/// HKDF-SHA256(salt = keyring id, ikm = Z, info = label ‖ 0 ‖ unlocker id ‖ 0 ‖ E ‖ Q).
pub fn recovery_wrapping_key(
    keyring_id: &[u8],
    unlocker_id: &str,
    shared: &SharedSecret,
    ephemeral: &PublicKey,
    recovery: &PublicKey,
) -> WrappingKey {
    let info = unlocker_info(INFO_RECOVERY_UNLOCKER, unlocker_id, ephemeral, recovery);
    WrappingKey::from_bytes(hkdf32(keyring_id, shared.expose(), &info))
}

fn unlocker_info(
    label: &[u8],
    unlocker_id: &str,
    ephemeral: &PublicKey,
    key: &PublicKey,
) -> Vec<u8> {
    let mut info = Vec::with_capacity(200);
    info.extend_from_slice(label);
    info.push(0);
    info.extend_from_slice(unlocker_id.as_bytes());
    info.push(0);
    info.extend_from_slice(p256::EncodedPoint::from(ephemeral).as_bytes());
    info.extend_from_slice(p256::EncodedPoint::from(key).as_bytes());
    info
}

/// `P ⊕ HKDF-SHA256(salt = keyring id, ikm = K, info = "nasring v1 passphrase mask")`: masks
/// the passphrase key for storage and unmasks it again. There is no tag on purpose, so that
/// the file alone lets no one test a passphrase guess.
pub fn mask_passphrase_key(
    keyring_id: &[u8],
    stretched: &StretchedPassphrase,
    key: &[u8; 32],
) -> PassphraseKey {
    let mut out = Zeroizing::new(hkdf32(keyring_id, stretched.expose(), INFO_PASSPHRASE_MASK));
    for (o, k) in out.iter_mut().zip(key) {
        *o ^= k;
    }
    PassphraseKey::from_bytes(*out)
}

/// The P-256 private key a recovery code stands for: the first
/// HKDF-SHA256(salt = keyring id, ikm = code bytes, info = "nasring v1 recovery key" ‖ c),
/// c = 0, 1, …, that is a valid scalar (1 to n − 1).
pub fn recovery_secret_key(keyring_id: &[u8], code: &[u8]) -> p256::SecretKey {
    for counter in 0u8..=255 {
        let mut info = INFO_RECOVERY_KEY.to_vec();
        info.push(counter);
        let candidate = Zeroizing::new(hkdf32(keyring_id, code, &info));
        if let Ok(key) = p256::SecretKey::from_slice(candidate.as_ref()) {
            return key;
        }
    }
    unreachable!("256 HKDF outputs in a row outside the P-256 scalar range")
}

/// ECDH between a software private key (a recovery key) and an ephemeral public key.
pub fn agree_software(key: &p256::SecretKey, peer: &PublicKey) -> SharedSecret {
    let shared = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), peer.as_affine());
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new((*shared.raw_secret_bytes()).into());
    SharedSecret::from_bytes(*bytes)
}

/// A new recovery code: 160 random bits as 32 base32 letters in eight groups of four.
pub fn new_recovery_code() -> RecoveryCode {
    let raw = Zeroizing::new(random_bytes::<RECOVERY_CODE_BYTES>());
    recovery_code_from_bytes(&raw)
}

/// The recovery code for 20 given bytes (the test vectors use fixed ones).
pub fn recovery_code_from_bytes(raw: &[u8; RECOVERY_CODE_BYTES]) -> RecoveryCode {
    let mut text = String::with_capacity(40);
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut letters = 0;
    for byte in raw.iter() {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 5 {
            count -= 5;
            if letters > 0 && letters % 4 == 0 {
                text.push('-');
            }
            text.push(BASE32[((bits >> count) & 31) as usize] as char);
            letters += 1;
        }
    }
    zeroize::Zeroize::zeroize(&mut bits);
    RecoveryCode::new(text)
}

/// The 20 bytes of a recovery code as typed: case, spaces and dashes do not matter.
/// `None` if it is not 32 base32 letters.
pub fn recovery_code_bytes(code: &RecoveryCode) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(RECOVERY_CODE_BYTES));
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut letters = 0;
    for c in code.expose().chars().filter(|c| !matches!(c, '-' | ' ')) {
        let value = BASE32
            .iter()
            .position(|b| *b as char == c.to_ascii_uppercase())?;
        bits = (bits << 5) | value as u32;
        count += 5;
        letters += 1;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    zeroize::Zeroize::zeroize(&mut bits);
    (letters == 32 && out.len() == RECOVERY_CODE_BYTES).then_some(out)
}

/// Subkey for the whole-document MAC.
pub fn document_mac_key(keyring_id: &[u8], master: &MasterKey) -> WrappingKey {
    WrappingKey::from_bytes(hkdf32(keyring_id, master.expose(), INFO_DOCUMENT_MAC))
}

/// Subkey that encrypts the stored API keys.
pub fn entry_key(keyring_id: &[u8], master: &MasterKey) -> WrappingKey {
    WrappingKey::from_bytes(hkdf32(keyring_id, master.expose(), INFO_ENTRY_KEY))
}

fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    if hk.expand(info, &mut out).is_err() {
        unreachable!("HKDF-SHA256 can always produce 32 bytes");
    }
    out
}

/// AES-256-GCM seal with a fresh random nonce: returns (nonce, ciphertext ‖ tag).
pub fn seal(key: &WrappingKey, plaintext: &[u8], aad: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
    let nonce = random_bytes::<NONCE_LEN>();
    (nonce, seal_with_nonce(key, &nonce, plaintext, aad))
}

pub fn seal_with_nonce(
    key: &WrappingKey,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.expose().into());
    match cipher.encrypt(
        &Nonce::from(*nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        Ok(ct) => ct,
        Err(_) => unreachable!("AES-GCM encryption of a short message cannot fail"),
    }
}

pub fn open(
    key: &WrappingKey,
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Plaintext, CryptoError> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    let cipher = Aes256Gcm::new(key.expose().into());
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Open)
}

pub fn mac(key: &WrappingKey, data: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

pub fn mac_matches(key: &WrappingKey, data: &[u8], tag: &[u8]) -> bool {
    tag.len() == MAC_LEN && bool::from(mac(key, data).ct_eq(tag))
}

/// Length-prefixed concatenation, so that no two field lists give the same bytes.
pub fn bind_fields(label: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(label);
    for f in fields {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::SecretKey;

    #[test]
    fn ephemeral_agreement_matches_the_token_side() {
        let token = SecretKey::random(&mut OsRng);
        let (shared, eph) = enrol_ephemeral(&token.public_key());
        let other = p256::ecdh::diffie_hellman(token.to_nonzero_scalar(), eph.as_affine());
        let other: [u8; 32] = (*other.raw_secret_bytes()).into();
        assert_eq!(shared.expose(), &other);
    }

    #[test]
    fn seal_open_and_tamper() {
        let key = WrappingKey::from_bytes([9; 32]);
        let (nonce, mut ct) = seal(&key, b"secret", b"aad");
        assert_eq!(
            open(&key, &nonce, &ct, b"aad").expect("open").as_slice(),
            b"secret"
        );
        assert!(open(&key, &nonce, &ct, b"other aad").is_err());
        ct[0] ^= 1;
        assert!(open(&key, &nonce, &ct, b"aad").is_err());
    }

    #[test]
    fn bound_fields_are_unambiguous() {
        assert_ne!(
            bind_fields(b"x", &[b"ab", b"c"]),
            bind_fields(b"x", &[b"a", b"bc"])
        );
    }

    #[test]
    fn recovery_codes_round_trip_and_refuse_typos_of_length() {
        let code = new_recovery_code();
        assert_eq!(code.expose().len(), 39);
        let bytes = recovery_code_bytes(&code).expect("decodes");
        let sloppy = RecoveryCode::new(code.expose().to_lowercase().replace('-', " "));
        assert_eq!(recovery_code_bytes(&sloppy).expect("decodes"), bytes);
        let short = RecoveryCode::new(code.expose()[..30].to_string());
        assert!(recovery_code_bytes(&short).is_none());
        assert!(recovery_code_bytes(&RecoveryCode::new("1".repeat(32))).is_none());
    }

    #[test]
    fn the_mask_is_its_own_inverse() {
        let k = StretchedPassphrase::from_bytes([3; 32]);
        let p = [7u8; 32];
        let masked = mask_passphrase_key(b"id", &k, &p);
        assert_ne!(masked.expose(), &p);
        assert_eq!(mask_passphrase_key(b"id", &k, masked.expose()).expose(), &p);
    }

    #[test]
    fn refuses_cost_below_the_floor() {
        let p = Passphrase::new("x".into());
        let cheap = KdfCost {
            memory_kib: 1024,
            ..KdfCost::MINIMUM
        };
        assert!(stretch_passphrase(&p, &[0; 16], cheap).is_err());
    }
}
