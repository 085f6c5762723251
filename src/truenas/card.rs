//! A one-glance summary of a system: version, uptime, pools and alerts.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rpc::parse;
use super::{ClientError, Session};

/// What `nasring status` shows for one system; its JSON form is a stable contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemCard {
    pub hostname: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// The CPU model, as `system.info` reports it.
    pub model: String,
    pub pools: Vec<PoolHealth>,
    /// Alerts that are not dismissed, counted by level.
    pub alerts: AlertCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHealth {
    pub name: String,
    pub status: String,
    pub healthy: bool,
}

/// Counts of non-dismissed alerts per TrueNAS alert level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    pub info: u32,
    pub notice: u32,
    pub warning: u32,
    pub error: u32,
    pub critical: u32,
    pub alert: u32,
    pub emergency: u32,
}

#[derive(Deserialize)]
struct SystemInfo {
    hostname: String,
    version: String,
    uptime_seconds: f64,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Alert {
    level: String,
    #[serde(default)]
    dismissed: bool,
}

impl AlertCounts {
    pub fn total(&self) -> u32 {
        self.info
            + self.notice
            + self.warning
            + self.error
            + self.critical
            + self.alert
            + self.emergency
    }

    fn count(alerts: &[Alert]) -> Self {
        let mut counts = Self::default();
        for alert in alerts.iter().filter(|alert| !alert.dismissed) {
            *counts.slot(&alert.level) += 1;
        }
        counts
    }

    /// The counter for `level`; a level this version does not know counts as a warning.
    fn slot(&mut self, level: &str) -> &mut u32 {
        match level {
            "INFO" => &mut self.info,
            "NOTICE" => &mut self.notice,
            "ERROR" => &mut self.error,
            "CRITICAL" => &mut self.critical,
            "ALERT" => &mut self.alert,
            "EMERGENCY" => &mut self.emergency,
            _ => &mut self.warning,
        }
    }
}

impl Session {
    /// Reads `system.info`, `pool.query` and `alert.list` into one card.
    pub async fn system_card(&mut self) -> Result<SystemCard, ClientError> {
        let info: SystemInfo = parse("system.info", self.call("system.info", json!([])).await?)?;
        let pools: Vec<PoolHealth> =
            parse("pool.query", self.call("pool.query", json!([])).await?)?;
        let alerts: Vec<Alert> = parse("alert.list", self.call("alert.list", json!([])).await?)?;

        Ok(SystemCard {
            hostname: info.hostname,
            version: info.version,
            uptime_seconds: info.uptime_seconds.max(0.0) as u64,
            model: info.model.unwrap_or_default(),
            pools,
            alerts: AlertCounts::count(&alerts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dismissed_alerts_are_not_counted() {
        let alerts: Vec<Alert> = serde_json::from_value(json!([
            {"level": "WARNING", "dismissed": false},
            {"level": "WARNING", "dismissed": true},
            {"level": "CRITICAL", "dismissed": false},
            {"level": "SOMETHING_NEW", "dismissed": false},
        ]))
        .expect("alerts");
        let counts = AlertCounts::count(&alerts);
        assert_eq!((counts.warning, counts.critical, counts.total()), (2, 1, 3));
    }
}
