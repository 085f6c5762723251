//! `unlock` and `status`: log in to every stored system at once and say who is connected,
//! and why not.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::agent::{self, Want};
use super::args::{CheckArgs, UnlockArgs};
use super::keyring::{connected_word, LastCheck};
use super::nas::{self, block_on};
use super::{output, status_cache_path, CliError, Context};
use crate::agent::protocol::UnlockedSystem;
use crate::secret::ApiKey;
use crate::truenas::{ClientError, Limits, Session, SystemCard, SystemUrl, TlsTrust};

/// Keys expiring within this many days are flagged.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// One system to check, with everything it needs and nothing shared.
struct Job {
    index: usize,
    name: String,
    url: String,
    username: String,
    trust: Option<TlsTrust>,
    key: Option<ApiKey>,
    expires_at: Option<OffsetDateTime>,
}

/// The result for one system; its JSON form is the `--json` contract of unlock and status.
#[derive(Serialize)]
pub struct Report {
    pub name: String,
    pub url: String,
    pub key_stored: bool,
    pub connected: Option<bool>,
    /// `connected`, `unreachable`, `tls`, `pin_mismatch`, `untrusted`, `key_rejected`,
    /// `key_expired`, `denied`, `unsupported_version`, `deadline`, `not_checked`, …
    pub status: String,
    pub detail: String,
    pub remedy: Option<String>,
    pub key_expires_at: Option<String>,
    pub card: Option<SystemCard>,
}

fn jobs(systems: Vec<UnlockedSystem>) -> Vec<Job> {
    systems
        .into_iter()
        .enumerate()
        .map(|(index, s)| Job {
            index,
            trust: nas::trust_from_record(&s.tls),
            expires_at: s
                .api_key_expires_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            name: s.name,
            url: s.url,
            username: s.username,
            key: s.api_key,
        })
        .collect()
}

/// `status`: the keys come from the agent when one runs (nothing is asked), else the
/// keyring is opened for this command.
pub fn check(ctx: &mut Context, args: CheckArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.net)?;
    let systems = agent::systems(ctx, Want::All, "status")?;
    run(ctx, args, limits, systems)
}

/// `unlock`: like `status`, and leaves an agent holding the keyring open.
pub fn unlock(ctx: &mut Context, args: UnlockArgs) -> Result<(), CliError> {
    let limits = nas::limits(&args.check.net)?;
    let systems = agent::unlock(ctx, &args)?;
    run(ctx, args.check, limits, systems)
}

fn run(
    ctx: &mut Context,
    args: CheckArgs,
    limits: Limits,
    systems: Vec<UnlockedSystem>,
) -> Result<(), CliError> {
    let jobs = jobs(systems);
    let reports = if args.offline {
        jobs.into_iter().map(not_checked).collect()
    } else {
        let deadline = Duration::from_secs_f64(args.net.deadline);
        let plan = Plan {
            limits,
            deadline,
            parallel: args.parallel.max(1),
            cards: !args.no_cards,
            progress: std::io::stderr().is_terminal() && !ctx.json,
        };
        let reports = block_on(check_all(jobs, plan))?;
        save_status(ctx, &reports);
        reports
    };
    if ctx.json {
        return output::json(&reports);
    }
    print_reports(&reports)
}

fn not_checked(job: Job) -> Report {
    let mut r = report(&job);
    r.status = "not_checked".into();
    r.detail = if job.key.is_some() {
        "key opens; not contacted (--offline)".into()
    } else {
        "the stored key does not open".into()
    };
    r
}

fn report(job: &Job) -> Report {
    Report {
        name: job.name.clone(),
        url: job.url.clone(),
        key_stored: job.key.is_some(),
        connected: None,
        status: String::new(),
        detail: String::new(),
        remedy: None,
        key_expires_at: job.expires_at.and_then(|t| t.format(&Rfc3339).ok()),
        card: None,
    }
}

#[derive(Clone, Copy)]
struct Plan {
    limits: Limits,
    deadline: Duration,
    parallel: usize,
    cards: bool,
    progress: bool,
}

async fn check_all(jobs: Vec<Job>, plan: Plan) -> Vec<Report> {
    let total = jobs.len();
    let until = Instant::now() + plan.deadline;
    let permits = Arc::new(Semaphore::new(plan.parallel));
    let mut set = JoinSet::new();
    let mut slots: Vec<Option<Report>> = (0..total).map(|_| None).collect();
    for job in jobs {
        let permits = Arc::clone(&permits);
        set.spawn(async move {
            let index = job.index;
            let base = report(&job);
            let work = async {
                let _permit = permits.acquire().await;
                check_one(job, plan).await
            };
            let result = tokio::time::timeout_at(until, work)
                .await
                .unwrap_or_else(|_| deadline_passed(base));
            (index, result)
        });
    }
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((index, report)) = joined {
            slots[index] = Some(report);
        }
        done += 1;
        if plan.progress {
            eprint!("\rChecking systems: {done}/{total}");
            let _ = std::io::stderr().flush();
        }
    }
    if plan.progress && total > 0 {
        eprint!("\r\x1b[K");
    }
    slots.into_iter().flatten().collect()
}

fn deadline_passed(mut r: Report) -> Report {
    r.connected = Some(false);
    r.status = "deadline".into();
    r.detail = "no answer before the overall deadline".into();
    r.remedy = Some(format!(
        "Check that {} is reachable, or give more time with --deadline.",
        r.name
    ));
    r
}

async fn check_one(job: Job, plan: Plan) -> Report {
    let mut r = report(&job);
    let (Some(key), Some(trust)) = (&job.key, &job.trust) else {
        r.connected = Some(false);
        if job.key.is_none() {
            r.status = "key_unreadable".into();
            r.detail = "the stored key does not open".into();
            r.remedy = Some(format!("Replace it: nasring add {} --replace", job.name));
        } else {
            r.status = "untrusted".into();
            r.detail = "its TLS certificate has not been trusted yet; no key was sent".into();
            r.remedy = Some(format!("Check and pin it: nasring trust {}", job.name));
        }
        return r;
    };
    match connect_and_login(&job, trust, key, plan).await {
        Ok(card) => {
            r.connected = Some(true);
            r.status = "connected".into();
            r.detail = "connected".into();
            r.card = card;
        }
        Err(e) => {
            r.connected = Some(false);
            r.status = e.kind().into();
            r.detail = e.to_string();
            r.remedy = Some(e.remedy(&job.name));
        }
    }
    flag_expiry(&mut r, job.expires_at);
    r
}

async fn connect_and_login(
    job: &Job,
    trust: &TlsTrust,
    key: &ApiKey,
    plan: Plan,
) -> Result<Option<SystemCard>, ClientError> {
    let url = SystemUrl::parse(&job.url)?;
    let mut session = Session::connect(&url, trust, &plan.limits).await?;
    let outcome = async {
        session.login_api_key(&job.username, key).await?;
        if plan.cards {
            session.system_card().await.map(Some)
        } else {
            Ok(None)
        }
    }
    .await;
    session.close().await;
    outcome
}

fn flag_expiry(r: &mut Report, expires_at: Option<OffsetDateTime>) {
    let Some(expires) = expires_at else { return };
    let days = (expires - OffsetDateTime::now_utc()).whole_days();
    if (0..=EXPIRY_WARNING_DAYS).contains(&days) {
        r.detail
            .push_str(&format!("; the key expires in {days} day(s)"));
        r.remedy
            .get_or_insert_with(|| format!("Replace it in time: nasring add {} --replace", r.name));
    }
}

fn save_status(ctx: &Context, reports: &[Report]) {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let stamp = now.format(&Rfc3339).ok();
    let cache: BTreeMap<&str, LastCheck> = reports
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                LastCheck {
                    connected: r.connected,
                    detail: r.detail.clone(),
                    checked_at: stamp.clone(),
                },
            )
        })
        .collect();
    if let Ok(bytes) = serde_json::to_vec_pretty(&cache) {
        // Best effort: the cache holds no secret and only serves `nasring list`.
        let _ = crate::vault::store::write_atomic(&status_cache_path(&ctx.vault), &bytes);
    }
}

fn print_reports(reports: &[Report]) -> Result<(), CliError> {
    if reports.is_empty() {
        return output::say("The keyring opened. It holds no system yet.");
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                if r.key_stored {
                    "stored".into()
                } else {
                    "unreadable".into()
                },
                connected_word(r.connected).into(),
                r.detail.clone(),
            ]
        })
        .collect();
    output::table(&["TrueNAS", "Key", "Connected", "Detail"], &rows)?;
    let remedies: Vec<String> = reports
        .iter()
        .filter_map(|r| r.remedy.as_ref().map(|m| format!("  {}: {m}", r.name)))
        .collect();
    if !remedies.is_empty() {
        output::say(&format!("\nWhat to do:\n{}", remedies.join("\n")))?;
    }
    for r in reports {
        if let Some(card) = &r.card {
            output::say(&format!("\n{}", card_text(&r.name, card)))?;
        }
    }
    Ok(())
}

fn card_text(name: &str, card: &SystemCard) -> String {
    let up = card.uptime_seconds;
    let pools: Vec<String> = card
        .pools
        .iter()
        .map(|p| {
            format!(
                "{} {}{}",
                p.name,
                p.status,
                if p.healthy { "" } else { " (unhealthy)" }
            )
        })
        .collect();
    let a = &card.alerts;
    let alerts: Vec<String> = [
        ("emergency", a.emergency),
        ("alert", a.alert),
        ("critical", a.critical),
        ("error", a.error),
        ("warning", a.warning),
        ("notice", a.notice),
        ("info", a.info),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(level, n)| format!("{n} {level}"))
    .collect();
    format!(
        "{name}: {} - TrueNAS {}, up {}d {}h {}m, {}\n  pools:  {}\n  alerts: {}",
        card.hostname,
        card.version,
        up / 86_400,
        up % 86_400 / 3600,
        up % 3600 / 60,
        card.model,
        if pools.is_empty() {
            "none".into()
        } else {
            pools.join(", ")
        },
        if alerts.is_empty() {
            "none".into()
        } else {
            alerts.join(", ")
        }
    )
}
