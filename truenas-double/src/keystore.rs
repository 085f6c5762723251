//! The API keys of one simulated system: creation, hashing, checking, revocation, expiry, and
//! persistence in the state directory.
//!
//! TrueNAS 25.x stores PBKDF2-SHA512 hashes with 500 000 rounds. That costs about half a
//! second per check, far too slow for a benchmark that logs in to a thousand systems, so the
//! double stores a salted SHA-256 instead: still never the secret itself, and still compared
//! in constant time.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of the random part of a key, as TrueNAS generates it.
const SECRET_LEN: usize = 64;

/// One stored key. Holds the salted hash, never the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: u64,
    pub name: String,
    pub username: String,
    salt: String,
    hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    pub revoked_reason: Option<String>,
    pub revoked_at_ms: Option<i64>,
}

impl ApiKeyRecord {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The stored hash in a crypt-like notation, what `keyhash` shows to full admins.
    pub fn keyhash(&self) -> String {
        format!("$sha256-salted${}${}", self.salt, self.hash)
    }

    pub fn salt_hex(&self) -> &str {
        &self.salt
    }

    pub fn hash_hex(&self) -> &str {
        &self.hash
    }
}

/// A key just created or reset: its record and the secret `"<id>-<64 alphanumerics>"`, which
/// the double shows once and then forgets.
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub secret: Zeroizing<String>,
}

/// What a presented key string matched.
pub enum KeyCheck<'a> {
    /// Malformed, or no key has that id.
    Unknown,
    /// The id exists and the secret is right.
    Matches(&'a ApiKeyRecord),
    /// The id exists but the secret is wrong.
    WrongSecret(&'a ApiKeyRecord),
}

#[derive(Default, Serialize, Deserialize)]
pub struct KeyStore {
    next_id: u64,
    keys: BTreeMap<u64, ApiKeyRecord>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl KeyStore {
    /// Opens the store persisted at `path`, or an empty one. Without a path nothing is saved.
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let mut store = match &path {
            Some(p) if p.exists() => {
                let text = fs::read_to_string(p)?;
                serde_json::from_str(&text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            }
            _ => KeyStore::default(),
        };
        store.path = path;
        Ok(store)
    }

    pub fn get(&self, id: u64) -> Option<&ApiKeyRecord> {
        self.keys.get(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &ApiKeyRecord> {
        self.keys.values()
    }

    pub fn count_for(&self, username: &str) -> usize {
        self.keys
            .values()
            .filter(|k| k.username == username)
            .count()
    }

    pub fn name_taken(&self, name: &str, except: Option<u64>) -> bool {
        self.keys
            .values()
            .any(|k| k.name == name && Some(k.id) != except)
    }

    pub fn insert(
        &mut self,
        name: &str,
        username: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> IssuedKey {
        self.next_id += 1;
        let id = self.next_id;
        let (random, salt, hash) = fresh_secret();
        let record = ApiKeyRecord {
            id,
            name: name.to_string(),
            username: username.to_string(),
            salt,
            hash,
            created_at_ms: now_ms,
            expires_at_ms,
            revoked: false,
            revoked_reason: None,
            revoked_at_ms: None,
        };
        self.keys.insert(id, record.clone());
        self.save();
        IssuedKey {
            record,
            secret: Zeroizing::new(format!("{id}-{}", random.as_str())),
        }
    }

    /// Gives the key a new secret and lifts a revocation. The old `revoked_reason` stays, as it
    /// does in the middleware's database.
    pub fn reset(&mut self, id: u64) -> Option<IssuedKey> {
        let record = self.keys.get_mut(&id)?;
        let (random, salt, hash) = fresh_secret();
        record.salt = salt;
        record.hash = hash;
        record.revoked = false;
        record.revoked_at_ms = None;
        let record = record.clone();
        self.save();
        Some(IssuedKey {
            secret: Zeroizing::new(format!("{id}-{}", random.as_str())),
            record,
        })
    }

    pub fn update(
        &mut self,
        id: u64,
        name: Option<String>,
        expires_at_ms: Option<Option<i64>>,
    ) -> bool {
        let Some(record) = self.keys.get_mut(&id) else {
            return false;
        };
        if let Some(name) = name {
            record.name = name;
        }
        if let Some(expires) = expires_at_ms {
            record.expires_at_ms = expires;
        }
        self.save();
        true
    }

    /// Revokes like `api_key.revoke`: the expiry is replaced by the revoked marker.
    pub fn revoke(&mut self, id: u64, reason: &str, now_ms: i64) -> bool {
        let Some(record) = self.keys.get_mut(&id) else {
            return false;
        };
        record.revoked = true;
        record.expires_at_ms = None;
        record.revoked_reason = Some(reason.to_string());
        record.revoked_at_ms = Some(now_ms);
        self.save();
        true
    }

    /// Moves the expiry one minute into the past.
    pub fn expire(&mut self, id: u64, now_ms: i64) -> bool {
        let Some(record) = self.keys.get_mut(&id) else {
            return false;
        };
        record.expires_at_ms = Some(now_ms - 60_000);
        self.save();
        true
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let removed = self.keys.remove(&id).is_some();
        if removed {
            self.save();
        }
        removed
    }

    /// Looks up a presented `"<id>-<secret>"` string.
    pub fn check(&self, presented: &str) -> KeyCheck<'_> {
        let Some((id, secret)) = presented.split_once('-') else {
            return KeyCheck::Unknown;
        };
        let Ok(id) = id.parse::<u64>() else {
            return KeyCheck::Unknown;
        };
        let Some(record) = self.keys.get(&id) else {
            return KeyCheck::Unknown;
        };
        let Ok(salt) = hex::decode(&record.salt) else {
            return KeyCheck::WrongSecret(record);
        };
        let Ok(expected) = hex::decode(&record.hash) else {
            return KeyCheck::WrongSecret(record);
        };
        if bool::from(salted_hash(&salt, secret).as_slice().ct_eq(&expected)) {
            KeyCheck::Matches(record)
        } else {
            KeyCheck::WrongSecret(record)
        }
    }

    /// The id a presented key string names, if it is well formed. Ids are not secret.
    pub fn id_of(presented: &str) -> Option<u64> {
        presented
            .split_once('-')
            .and_then(|(id, _)| id.parse().ok())
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let result = serde_json::to_vec_pretty(self)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            .and_then(|bytes| {
                let tmp = path.with_extension("json.tmp");
                fs::write(&tmp, bytes)?;
                fs::rename(&tmp, path)
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not save the API keys");
        }
    }
}

/// A new random secret with its salt and hash (both hex).
fn fresh_secret() -> (Zeroizing<String>, String, String) {
    let random = Zeroizing::new(Alphanumeric.sample_string(&mut OsRng, SECRET_LEN));
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let hash = salted_hash(&salt, &random);
    (random, hex::encode(salt), hex::encode(hash))
}

fn salted_hash(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(salt);
    digest.update(secret.as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_key_has_truenas_format_and_checks() {
        let mut store = KeyStore::default();
        let issued = store.insert("dash", "admin", None, 1_000);
        let (id, random) = issued.secret.split_once('-').expect("id-secret");
        assert_eq!(id, "1");
        assert_eq!(random.len(), 64);
        assert!(random.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(matches!(store.check(&issued.secret), KeyCheck::Matches(r) if r.id == 1));
        let wrong = format!("1-{}", "a".repeat(64));
        assert!(matches!(store.check(&wrong), KeyCheck::WrongSecret(_)));
        assert!(matches!(store.check("7-abc"), KeyCheck::Unknown));
        assert!(matches!(store.check("garbage"), KeyCheck::Unknown));
    }

    #[test]
    fn stored_form_is_a_salted_hash_not_the_secret() {
        let mut store = KeyStore::default();
        let a = store.insert("a", "admin", None, 0);
        let b = store.insert("b", "admin", None, 0);
        let random = a
            .secret
            .split_once('-')
            .map(|(_, r)| r.to_string())
            .expect("id-secret");
        let json = serde_json::to_string(&store).expect("serialises");
        assert!(!json.contains(&random));
        assert_ne!(a.record.hash, b.record.hash);
        assert_ne!(a.record.salt, b.record.salt);
        assert_eq!(a.record.hash.len(), 64);
    }

    #[test]
    fn reset_invalidates_old_secret_and_unrevokes() {
        let mut store = KeyStore::default();
        let old = store.insert("k", "admin", None, 0);
        assert!(store.revoke(1, "test", 5));
        let new = store.reset(1).expect("key exists");
        assert!(matches!(store.check(&old.secret), KeyCheck::WrongSecret(_)));
        assert!(matches!(store.check(&new.secret), KeyCheck::Matches(r) if !r.revoked));
        assert_eq!(new.record.revoked_reason.as_deref(), Some("test"));
    }

    #[test]
    fn expiry_and_persistence() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.json");
        let mut store = KeyStore::open(Some(path.clone())).expect("opens");
        let issued = store.insert("k", "admin", None, 10_000);
        assert!(store.expire(1, 10_000));
        assert!(store.get(1).is_some_and(|k| k.is_expired(10_000)));
        let reopened = KeyStore::open(Some(path)).expect("reopens");
        assert!(matches!(
            reopened.check(&issued.secret),
            KeyCheck::Matches(_)
        ));
        assert_eq!(reopened.get(1).and_then(|k| k.expires_at_ms), Some(-50_000));
    }
}
