//! What a dashboard reads: `system.info`, `pool.query`, `alert.list`.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::{CallFailure, CallResult};
use super::{params, query, Ctx};
use crate::config::PoolConfig;
use crate::keystore::ApiKeyRecord;
use crate::system::{lock, now_ms, System};

pub(super) fn call(ctx: &Ctx<'_>, method: &str, params: &[Value]) -> CallResult {
    match method {
        "system.info" => params::check_count(params, &[]).map(|()| system_info(ctx.system)),
        "pool.query" => {
            params::check_count(params, &["filters", "options"])?;
            query::apply(pools(ctx.system), params.first(), params.get(1))
        }
        "alert.list" => params::check_count(params, &[]).map(|()| Value::Array(alerts(ctx.system))),
        _ => Err(CallFailure::call(
            super::error::ENOMETHOD,
            format!("Method {method:?} not found"),
        )),
    }
}

pub fn system_info(system: &System) -> Value {
    let now = now_ms();
    let uptime_ms = (now - system.boot_ms).max(0);
    json!({
        "version": system.release.system_info_version(),
        "buildtime": {"$date": system.boot_ms - 30 * 86_400_000},
        "hostname": system.hostname,
        "physmem": 16_642_998_272u64,
        "model": "Simulated CPU @ 2.20GHz",
        "cores": 4,
        "physical_cores": 2,
        "loadavg": [0.12, 0.08, 0.05],
        "uptime": uptime_text(uptime_ms),
        "uptime_seconds": uptime_ms as f64 / 1000.0,
        "system_serial": format!("SIM-{}", system.name),
        "system_product": "truenas-double",
        "system_product_version": "1.0",
        "license": null,
        "boottime": {"$date": system.boot_ms},
        "datetime": {"$date": now},
        "timezone": "UTC",
        "system_manufacturer": "nasring test double",
        "ecc_memory": false,
    })
}

/// Python's `str(timedelta)`: `H:MM:SS.ffffff`, with days in front when there are any.
fn uptime_text(ms: i64) -> String {
    let seconds = ms / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let clock = format!(
        "{}:{:02}:{:02}.{:06}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        (ms % 1000) * 1000
    );
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        n => format!("{n} days, {clock}"),
    }
}

pub fn pools(system: &System) -> Vec<Value> {
    system
        .pools
        .iter()
        .enumerate()
        .map(|(i, pool)| pool_entry(i as u64 + 1, pool))
        .collect()
}

fn pool_entry(id: u64, pool: &PoolConfig) -> Value {
    let free = pool.size.saturating_sub(pool.allocated);
    json!({
        "id": id,
        "name": pool.name,
        "guid": format!("{}", 1_000_000_000_000_000u64 + id * 7_919),
        "status": pool.status,
        "path": format!("/mnt/{}", pool.name),
        "scan": {
            "function": "SCRUB", "state": "FINISHED", "start_time": {"$date": 1_735_689_600_000i64},
            "end_time": {"$date": 1_735_693_200_000i64}, "percentage": 100.0, "bytes_to_process": pool.allocated,
            "bytes_processed": pool.allocated, "bytes_issued": pool.allocated, "pause": null, "errors": 0,
            "total_secs_left": null,
        },
        "expand": null,
        "is_upgraded": true,
        "healthy": pool.healthy,
        "warning": pool.warning,
        "status_code": if pool.healthy { Value::from("OK") } else { Value::from("CORRUPT_DATA") },
        "status_detail": if pool.healthy { Value::Null } else { Value::from("One or more devices has experienced an error") },
        "size": pool.size,
        "allocated": pool.allocated,
        "free": free,
        "freeing": 0,
        "dedup_table_size": 0,
        "dedup_table_quota": "auto",
        "fragmentation": "3",
        "size_str": pool.size.to_string(),
        "allocated_str": pool.allocated.to_string(),
        "free_str": free.to_string(),
        "freeing_str": "0",
        "autotrim": {"parsed": "off", "rawvalue": "off", "source": "DEFAULT", "value": "off"},
        "topology": null,
    })
}

/// Configured alerts plus one ApiKeyRevoked alert for each revoked key.
pub fn alerts(system: &System) -> Vec<Value> {
    let mut list: Vec<Value> = system
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let uuid = stable_uuid(&format!("{}/alert/{i}", system.name));
            alert(
                &uuid,
                &a.klass,
                &a.level,
                &a.text,
                &a.text,
                json!(null),
                system.boot_ms,
                a.dismissed,
            )
        })
        .collect();
    let keys = lock(&system.keys);
    list.extend(
        keys.all()
            .filter(|k| k.revoked)
            .map(|k| revoked_alert(system, k)),
    );
    list
}

fn revoked_alert(system: &System, key: &ApiKeyRecord) -> Value {
    let reason = key.revoked_reason.as_deref().unwrap_or("Unknown");
    let text = "%(key_name)s: API key has been revoked and must either be renewed or deleted. \
                Revoke reason: %(reason)s. Once the maintenance is complete, API client configuration \
                must be updated to use the renewed API key.";
    let formatted = text
        .replace("%(key_name)s", &key.name)
        .replace("%(reason)s", reason);
    let at = key.revoked_at_ms.unwrap_or(system.boot_ms);
    let uuid = stable_uuid(&format!("{}/ApiKeyRevoked/{}/{at}", system.name, key.id));
    let args = json!({"key_name": key.name, "reason": reason});
    alert(
        &uuid,
        "ApiKeyRevoked",
        "WARNING",
        text,
        &formatted,
        args,
        at,
        false,
    )
}

#[allow(clippy::too_many_arguments)]
fn alert(
    uuid: &str,
    klass: &str,
    level: &str,
    text: &str,
    formatted: &str,
    args: Value,
    at_ms: i64,
    dismissed: bool,
) -> Value {
    json!({
        "uuid": uuid,
        "source": "",
        "klass": klass,
        "args": args,
        "node": "A",
        "key": format!("[\"{uuid}\"]"),
        "datetime": {"$date": at_ms},
        "last_occurrence": {"$date": at_ms},
        "dismissed": dismissed,
        "mail": null,
        "text": text,
        "id": uuid,
        "level": level,
        "formatted": formatted,
        "one_shot": false,
    })
}

/// A UUID-shaped identifier derived from `seed`, stable across calls.
fn stable_uuid(seed: &str) -> String {
    let h = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_like_python_timedelta() {
        assert_eq!(uptime_text(4_278_208), "1:11:18.208000");
        assert_eq!(uptime_text(90_061_000), "1 day, 1:01:01.000000");
    }
}
