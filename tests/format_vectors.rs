//! Test vectors for the keyring format, version 1 (`docs/vault-format.md`).
//!
//! `tests/vectors/vault-v1.json` lists fixed inputs and every value derived from them;
//! `tests/vectors/vault-v1.nasring` is the keyring file they make. A second implementation
//! can check itself against both. This test recomputes each value with nasring's code,
//! rebuilds the file byte for byte, and opens it.
//!
//! To write the files afresh after a deliberate format change (which, once a version has
//! been released, also needs a new format version):
//! `NASRING_BLESS_VECTORS=1 cargo test --test format_vectors`.

mod common;

use common::soft_token::SoftToken;
use nasring::secret::{MasterKey, Passphrase, RecoveryCode, SharedSecret};
use nasring::vault::crypto::{self, KdfCost};
use nasring::vault::format::{
    self, Document, KdfRecord, PendingRotation, SystemEntry, TokenRecord, Unlocker,
};
use nasring::vault::{entry_aad, unlocker_aad, Sealed};
use p256::SecretKey;
use serde_json::{json, Value};

const PASSPHRASE: &str = "correct horse battery staple";
const API_KEY: &str = "7-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ01";

fn bytes(start: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| start.wrapping_add(i as u8)).collect()
}

fn point_hex(key: &p256::PublicKey) -> String {
    hex::encode(p256::EncodedPoint::from(key).as_bytes())
}

/// Computes every value of the vector from its fixed inputs.
fn compute() -> (Value, Vec<u8>) {
    let salt = bytes(0x10, 16);
    let keyring_id = bytes(0xa0, 16);
    let unlocker_id = "0badc0de";
    let token = SecretKey::from_slice(&bytes(0x01, 32)).expect("token key");
    let ephemeral = SecretKey::from_slice(&bytes(0x21, 32)).expect("ephemeral key");
    let master = MasterKey::from_slice(&bytes(0x41, 32)).expect("master");
    let passphrase_key: [u8; 32] = bytes(0x81, 32).try_into().expect("passphrase key");
    let recovery_id = "5eed5eed";
    let recovery_bytes: [u8; 20] = bytes(0x91, 20).try_into().expect("code bytes");
    let recovery_ephemeral = SecretKey::from_slice(&bytes(0xb1, 32)).expect("ephemeral key");
    let recovery_nonce: [u8; 12] = bytes(0xc1, 12).try_into().expect("nonce");
    let unlocker_nonce: [u8; 12] = bytes(0x61, 12).try_into().expect("nonce");
    let entry_nonce: [u8; 12] = bytes(0x71, 12).try_into().expect("nonce");
    let cost = KdfCost {
        memory_kib: 8192,
        iterations: 1,
        parallelism: 1,
    };

    let stretched = crypto::stretch_passphrase(&Passphrase::new(PASSPHRASE.into()), &salt, cost)
        .expect("argon2");
    let shared = p256::ecdh::diffie_hellman(
        ephemeral.to_nonzero_scalar(),
        token.public_key().as_affine(),
    );
    let shared = SharedSecret::from_bytes((*shared.raw_secret_bytes()).into());
    let masked = crypto::mask_passphrase_key(&keyring_id, &stretched, &passphrase_key);
    let unmasked = crypto::mask_passphrase_key(&keyring_id, &stretched, masked.expose());
    let kek = crypto::token_wrapping_key(
        &keyring_id,
        unlocker_id,
        &shared,
        &unmasked,
        &ephemeral.public_key(),
        &token.public_key(),
    );
    let u_aad = unlocker_aad(&keyring_id, unlocker_id);
    let wrapped = crypto::seal_with_nonce(&kek, &unlocker_nonce, master.expose(), &u_aad);

    let recovery_code = crypto::recovery_code_from_bytes(&recovery_bytes);
    let recovery_key = crypto::recovery_secret_key(&keyring_id, &recovery_bytes);
    let recovery_shared = crypto::agree_software(&recovery_ephemeral, &recovery_key.public_key());
    let recovery_kek = crypto::recovery_wrapping_key(
        &keyring_id,
        recovery_id,
        &recovery_shared,
        &recovery_ephemeral.public_key(),
        &recovery_key.public_key(),
    );
    let r_aad = unlocker_aad(&keyring_id, recovery_id);
    let recovery_wrapped =
        crypto::seal_with_nonce(&recovery_kek, &recovery_nonce, master.expose(), &r_aad);
    let mac_key = crypto::document_mac_key(&keyring_id, &master);
    let entry_key = crypto::entry_key(&keyring_id, &master);

    let mut entry = SystemEntry {
        id: "5ca1ab1e5ca1ab1e".into(),
        name: "nas1".into(),
        url: "https://nas1.example:443".into(),
        username: "admin".into(),
        tls: format!("sha256:{}", "ab".repeat(32)),
        api_key_id: Some(7),
        api_key_name: Some("nasring lab@host".into()),
        api_key_expires_at: None,
        rotation: Some(PendingRotation {
            new_key_name: "nasring vectors rotation 0a0b0c".into(),
            old_key_id: Some(6),
            started_at: "2026-01-01T00:00:00Z".into(),
        }),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        nonce: format::b64(&entry_nonce),
        ciphertext: String::new(),
    };
    let e_aad = entry_aad(&keyring_id, &entry);
    let entry_ct = crypto::seal_with_nonce(&entry_key, &entry_nonce, API_KEY.as_bytes(), &e_aad);
    entry.ciphertext = format::b64(&entry_ct);

    let document = Document {
        keyring_id: hex::encode(&keyring_id),
        name: "vectors".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        kdf: KdfRecord {
            algorithm: "argon2id".into(),
            memory_kib: cost.memory_kib,
            iterations: cost.iterations,
            parallelism: cost.parallelism,
            salt: format::b64(&salt),
        },
        masked_passphrase_key: format::b64(masked.expose()),
        unlockers: vec![
            Unlocker {
                id: unlocker_id.into(),
                kind: "token".into(),
                added_at: "2026-01-01T00:00:00Z".into(),
                recovery_public_key: None,
                token: Some(TokenRecord {
                    backend: "pkcs11".into(),
                    uri: "pkcs11:token=vector".into(),
                    label: "vector".into(),
                    serial: None,
                    public_key: format::b64(
                        p256::EncodedPoint::from(token.public_key()).as_bytes(),
                    ),
                    separate_pin: false,
                    attestation: None,
                }),
                ephemeral_public_key: format::b64(
                    p256::EncodedPoint::from(ephemeral.public_key()).as_bytes(),
                ),
                nonce: format::b64(&unlocker_nonce),
                wrapped_master_key: format::b64(&wrapped),
            },
            Unlocker {
                id: recovery_id.into(),
                kind: "recovery".into(),
                added_at: "2026-01-01T00:00:00Z".into(),
                token: None,
                recovery_public_key: Some(format::b64(
                    p256::EncodedPoint::from(recovery_key.public_key()).as_bytes(),
                )),
                ephemeral_public_key: format::b64(
                    p256::EncodedPoint::from(recovery_ephemeral.public_key()).as_bytes(),
                ),
                nonce: format::b64(&recovery_nonce),
                wrapped_master_key: format::b64(&recovery_wrapped),
            },
        ],
        systems: vec![entry],
    };
    let signed = format::signed_bytes(&document).expect("encode");
    let mac = crypto::mac(&mac_key, &signed);
    let file = format::with_mac(signed, &mac);

    let vector = json!({
        "format_version": 1,
        "passphrase": PASSPHRASE,
        "argon2id": {"memory_kib": cost.memory_kib, "iterations": cost.iterations,
                     "parallelism": cost.parallelism, "salt_hex": hex::encode(&salt)},
        "stretched_passphrase_hex": hex::encode(stretched.expose()),
        "passphrase_key_hex": hex::encode(passphrase_key),
        "masked_passphrase_key_hex": hex::encode(masked.expose()),
        "keyring_id_hex": hex::encode(&keyring_id),
        "unlocker_id": unlocker_id,
        "token_private_key_hex": hex::encode(token.to_bytes()),
        "token_public_key_hex": point_hex(&token.public_key()),
        "ephemeral_private_key_hex": hex::encode(ephemeral.to_bytes()),
        "ephemeral_public_key_hex": point_hex(&ephemeral.public_key()),
        "shared_secret_hex": hex::encode(shared.expose()),
        "wrapping_key_hex": hex::encode(kek.expose()),
        "master_key_hex": hex::encode(master.expose()),
        "unlocker_nonce_hex": hex::encode(unlocker_nonce),
        "unlocker_aad_hex": hex::encode(&u_aad),
        "wrapped_master_key_hex": hex::encode(&wrapped),
        "recovery_unlocker_id": recovery_id,
        "recovery_code": recovery_code.expose(),
        "recovery_code_bytes_hex": hex::encode(recovery_bytes),
        "recovery_private_key_hex": hex::encode(recovery_key.to_bytes()),
        "recovery_public_key_hex": point_hex(&recovery_key.public_key()),
        "recovery_ephemeral_private_key_hex": hex::encode(recovery_ephemeral.to_bytes()),
        "recovery_ephemeral_public_key_hex": point_hex(&recovery_ephemeral.public_key()),
        "recovery_shared_secret_hex": hex::encode(recovery_shared.expose()),
        "recovery_wrapping_key_hex": hex::encode(recovery_kek.expose()),
        "recovery_nonce_hex": hex::encode(recovery_nonce),
        "recovery_unlocker_aad_hex": hex::encode(&r_aad),
        "recovery_wrapped_master_key_hex": hex::encode(&recovery_wrapped),
        "document_mac_key_hex": hex::encode(mac_key.expose()),
        "entry_key_hex": hex::encode(entry_key.expose()),
        "entry_nonce_hex": hex::encode(entry_nonce),
        "entry_aad_hex": hex::encode(&e_aad),
        "api_key": API_KEY,
        "entry_ciphertext_hex": hex::encode(&entry_ct),
        "file_mac_hex": hex::encode(mac),
        "file": "vault-v1.nasring",
    });
    (vector, file)
}

fn vector_dir() -> std::path::PathBuf {
    common::project_root().join("tests/vectors")
}

#[test]
fn vectors_match_the_implementation() {
    let (vector, file) = compute();
    let json_path = vector_dir().join("vault-v1.json");
    let file_path = vector_dir().join("vault-v1.nasring");
    if std::env::var_os("NASRING_BLESS_VECTORS").is_some() {
        std::fs::create_dir_all(vector_dir()).expect("mkdir");
        let text = serde_json::to_string_pretty(&vector).expect("json") + "\n";
        std::fs::write(&json_path, text).expect("write vector");
        std::fs::write(&file_path, &file).expect("write file");
    }
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("read vector")).expect("parse");
    for (field, want) in stored.as_object().expect("object") {
        assert_eq!(&vector[field], want, "vector field {field} differs");
    }
    assert_eq!(
        std::fs::read(&file_path).expect("read file"),
        file,
        "the keyring file differs"
    );
}

#[test]
fn the_vector_file_opens_with_its_token_and_passphrase() {
    let file = std::fs::read(vector_dir().join("vault-v1.nasring")).expect("read file");
    let token_hex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
    let mut token = SoftToken {
        key: SecretKey::from_slice(&hex::decode(token_hex).expect("hex")).expect("key"),
    };
    let sealed = Sealed::parse(&file).expect("parse");
    let keyring = sealed
        .open(&mut token, &Passphrase::new(PASSPHRASE.into()), None)
        .expect("open");
    assert_eq!(keyring.api_key("nas1").expect("key").expose(), API_KEY);

    let sealed = Sealed::parse(&file).expect("parse");
    let wrong = sealed.open(&mut token, &Passphrase::new("wrong".into()), None);
    assert!(matches!(
        wrong,
        Err(nasring::vault::VaultError::WrongPassphraseOrToken)
    ));
}

#[test]
fn the_vector_file_opens_with_its_recovery_code_alone() {
    let file = std::fs::read(vector_dir().join("vault-v1.nasring")).expect("read file");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(vector_dir().join("vault-v1.json")).expect("read"))
            .expect("parse");
    let code = stored["recovery_code"].as_str().expect("code");
    let keyring = Sealed::parse(&file)
        .expect("parse")
        .open_with_recovery_code(&RecoveryCode::new(code.to_lowercase().replace('-', "")))
        .expect("open with the recovery code");
    assert_eq!(keyring.api_key("nas1").expect("key").expose(), API_KEY);
    let mut other = code.to_string();
    other.replace_range(0..1, if other.starts_with('A') { "B" } else { "A" });
    let wrong = Sealed::parse(&file)
        .expect("parse")
        .open_with_recovery_code(&RecoveryCode::new(other));
    assert!(matches!(
        wrong,
        Err(nasring::vault::VaultError::WrongRecoveryCode { .. })
    ));
}
