//! Creating, inspecting and deleting API keys (`api_key.*`).

use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::rpc::{optional_date, parse, EjsonDate};
use super::{ClientError, Session};
use crate::secret::ApiKey;

/// A key that the NAS has just created; `key` is shown by TrueNAS this once only.
pub struct CreatedKey {
    pub id: u64,
    pub name: String,
    pub username: String,
    pub key: ApiKey,
    pub expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("username", &self.username)
            .field("key", &"********")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the NAS says about one of its API keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiKeyInfo {
    pub id: u64,
    pub name: String,
    #[serde(default, deserialize_with = "optional_date")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revoked: bool,
    /// Why it was revoked (TrueNAS 25.10 and later).
    #[serde(default)]
    pub revoked_reason: Option<String>,
}

/// The non-secret fields of an `api_key.create` reply.
#[derive(Deserialize)]
struct Entry {
    id: u64,
    name: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default, deserialize_with = "optional_date")]
    expires_at: Option<OffsetDateTime>,
}

impl Session {
    /// Creates an API key called `name` for `username`, never expiring if `expires_at` is
    /// `None`.
    pub async fn create_api_key(
        &mut self,
        name: &str,
        username: &str,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<CreatedKey, ClientError> {
        let method = "api_key.create";
        let expires_at = expires_at.map_or(Value::Null, EjsonDate::to_value);
        let params = json!([{ "name": name, "username": username, "expires_at": expires_at }]);
        let mut reply = self.call(method, params).await?;

        let key = take_key(method, &mut reply)?;
        let entry: Entry = parse(method, reply)?;
        Ok(CreatedKey {
            id: entry.id,
            name: entry.name,
            username: entry.username.unwrap_or_else(|| username.to_owned()),
            key,
            expires_at: entry.expires_at,
        })
    }

    /// Deletes the API key with `id`.
    pub async fn delete_api_key(&mut self, id: u64) -> Result<(), ClientError> {
        let reply = self.call("api_key.delete", json!([id])).await?;
        match reply {
            Value::Bool(true) => Ok(()),
            _ => Err(ClientError::protocol("api_key.delete did not answer true")),
        }
    }

    /// Reads the state of the API key with `id`: name, expiry, revocation.
    pub async fn api_key_info(&mut self, id: u64) -> Result<ApiKeyInfo, ClientError> {
        let method = "api_key.query";
        let reply = self.call(method, json!([[["id", "=", id]]])).await?;
        let keys: Vec<ApiKeyInfo> = parse(method, reply)?;
        keys.into_iter()
            .find(|key| key.id == id)
            .ok_or(ClientError::KeyNotFound { id })
    }

    /// The keys called exactly `name` (none or one, since TrueNAS keeps names unique).
    pub async fn api_keys_named(&mut self, name: &str) -> Result<Vec<ApiKeyInfo>, ClientError> {
        let method = "api_key.query";
        let reply = self.call(method, json!([[["name", "=", name]]])).await?;
        let keys: Vec<ApiKeyInfo> = parse(method, reply)?;
        Ok(keys.into_iter().filter(|k| k.name == name).collect())
    }

    /// Deletes the key with `id` if the NAS still has it; true if it was there.
    pub async fn delete_api_key_if_present(&mut self, id: u64) -> Result<bool, ClientError> {
        match self.api_key_info(id).await {
            Err(ClientError::KeyNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
            Ok(_) => self.delete_api_key(id).await.map(|()| true),
        }
    }
}

/// Moves the secret out of the reply, so that it is held only as an [`ApiKey`].
fn take_key(method: &str, reply: &mut Value) -> Result<ApiKey, ClientError> {
    let taken = reply.as_object_mut().and_then(|entry| entry.remove("key"));
    match taken {
        Some(Value::String(key)) if !key.is_empty() => Ok(ApiKey::new(key)),
        _ => Err(ClientError::protocol(format!(
            "the reply to {method} holds no key"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_taken_out_of_the_reply() {
        let mut reply = json!({"id": 3, "name": "n", "key": "3-abc"});
        let key = take_key("api_key.create", &mut reply).expect("key");
        assert_eq!(key.expose(), "3-abc");
        assert_eq!(reply, json!({"id": 3, "name": "n"}));
        assert!(take_key("api_key.create", &mut reply).is_err());
    }

    #[test]
    fn key_info_reads_revocation_and_expiry() {
        let entry = json!({"id": 12, "name": "nasring", "username": "svc",
            "keyhash": "********", "created_at": {"$date": 1_735_689_600_000_i64},
            "expires_at": {"$date": 1_767_225_600_000_i64}, "local": true,
            "revoked": true, "revoked_reason": "Attempt to use over an insecure transport"});
        let info: ApiKeyInfo = parse("api_key.query", entry).expect("info");
        assert_eq!(
            info.expires_at,
            Some(time::macros::datetime!(2026-01-01 0:00 UTC))
        );
        assert!(info.revoked);
        assert_eq!(
            info.revoked_reason.as_deref(),
            Some("Attempt to use over an insecure transport")
        );
    }

    #[test]
    fn key_info_from_25_04_has_no_revoked_reason() {
        let entry = json!({"id": 1, "name": "a", "expires_at": null, "revoked": false});
        let info: ApiKeyInfo = parse("api_key.query", entry).expect("info");
        assert_eq!((info.expires_at, info.revoked_reason), (None, None));
    }
}
