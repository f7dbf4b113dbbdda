//! Schedules: requests made at the times a `[[schedule]]`'s cron expression
//! names, in its time zone. The last run of each is in the database, so a
//! master that was down when a run was due makes it once when it comes back
//! (not once per missed time), and masters sharing a database make it once
//! between them (the run is claimed by a conditional update).

use crate::caller::Caller;
use crate::clock::now_us;
use crate::ops::requests::NewRequest;
use crate::shared::Shared;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use kiln_core::config::Schedule;
use kiln_core::cron::CronSpec;
use kiln_core::matrix::RequestSpec;
use kiln_core::props::{request_properties, PropertySource};
use std::sync::Arc;
use std::time::Duration;

/// The longest the scheduler sleeps (config reloads are seen within this).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The first time strictly after `after` that `cron` names in `tz`, within a year.
pub fn next_after(cron: &CronSpec, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let minute = SignedDuration::from_secs(60);
    // The next whole minute.
    let secs = after.as_second().div_euclid(60) * 60 + 60;
    let mut t = Timestamp::from_second(secs).ok()?;
    for _ in 0..(366 * 24 * 60) {
        let z = t.to_zoned(tz.clone());
        let (mi, h, d, mo, wd) = (z.minute(), z.hour(), z.day(), z.month(), z.weekday().to_sunday_zero_offset());
        if cron.matches(mi as u32, h as u32, d as u32, mo as u32, wd as u32) {
            return Some(t);
        }
        t = t.checked_add(minute).ok()?;
    }
    None
}

fn zone(s: &Schedule) -> Result<TimeZone, String> {
    match &s.timezone {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| format!("schedule {}: time zone {name:?}: {e}", s.name)),
    }
}

/// Checks every schedule's time zone (so a typo stops the master at start).
pub fn check(cfg: &kiln_core::config::FarmConfig) -> anyhow::Result<()> {
    for s in &cfg.schedules {
        zone(s).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

pub async fn run(shared: Arc<Shared>) {
    loop {
        let farm = shared.farm();
        let now = Timestamp::now();
        let mut sleep = MAX_SLEEP;
        for s in &farm.cfg.schedules {
            let tz = match zone(s) {
                Ok(tz) => tz,
                Err(e) => {
                    tracing::error!(error = %e, "schedule skipped");
                    continue;
                }
            };
            let last = match shared.store.schedule_last_run(&s.name).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(schedule = %s.name, error = %e, "cannot read the schedule's last run");
                    continue;
                }
            };
            let Some(last) = last else {
                // A new schedule starts counting now; it does not fire for times before it existed.
                let _ = shared.store.claim_schedule_run(&s.name, None, now_us()).await;
                continue;
            };
            let Ok(last_ts) = Timestamp::from_microsecond(last) else { continue };
            let Some(due) = next_after(&s.cron, &tz, last_ts) else { continue };
            if due > now {
                let wait = Duration::from_secs((due.as_second() - now.as_second()).max(1) as u64);
                sleep = sleep.min(wait);
                continue;
            }
            // Due (or missed while the master was down): run once, now.
            match shared.store.claim_schedule_run(&s.name, Some(last), now_us()).await {
                Ok(true) => fire(&shared, s, due).await,
                Ok(false) => {} // another master took it
                Err(e) => tracing::error!(schedule = %s.name, error = %e, "cannot record the schedule's run"),
            }
        }
        tokio::time::sleep(sleep).await;
    }
}

/// A fingerprint of what a build of `component` would build: its definition
/// and, for a path source, every file's path, size and modification time
/// (for a git source, the caller adds the branch's tip).
fn fingerprint(farm: &crate::farm::LoadedFarm, component: &kiln_core::config::Component) -> String {
    use sha2::{Digest, Sha256};
    fn walk(dir: &std::path::Path, base: &std::path::Path, h: &mut Sha256) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.is_dir() {
                walk(&path, base, h);
            } else {
                let rel = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into_owned();
                let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                h.update(format!("{rel}\0{}\0{:?}\n", meta.len(), mtime).as_bytes());
            }
        }
    }
    let mut h = Sha256::new();
    h.update(format!("{component:?}").as_bytes());
    if let Some(kiln_core::config::Source::Path(p)) = &component.source {
        let dir = farm.resolve(p);
        walk(&dir, &dir, &mut h);
    }
    hex::encode(h.finalize())
}

async fn fire(shared: &Arc<Shared>, s: &Schedule, due: Timestamp) {
    let mut spec =
        RequestSpec { components: s.components.clone(), all: s.components.is_empty(), targets: s.targets.clone() };
    let mut fingerprints = Vec::new();
    if s.only_if_changed {
        let farm = shared.farm();
        let before = shared.store.schedule_fingerprints(&s.name).await.unwrap_or_default();
        let mut tips = std::collections::HashMap::new();
        for c in farm.cfg.components.iter().filter(|c| s.components.is_empty() || s.components.contains(&c.name)) {
            let mut fp = fingerprint(&farm, c);
            if let Some(kiln_core::config::Source::Vcs(g)) = &c.source {
                // A git source changed when its branch points elsewhere
                // (asked once per repository and branch, however many components share it).
                let key = (g.url.clone(), g.branch.clone());
                if !tips.contains_key(&key) {
                    let tip = super::poller::remote_tip(&farm.data_dir(), g.vcs, &g.url, &g.branch).await;
                    tips.insert(key.clone(), tip);
                }
                match &tips[&key] {
                    Ok(tip) => fp.push_str(&format!(" {tip}")),
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, component = %c.name, error = %e, "cannot read the branch tip; building")
                    }
                }
            }
            if before.get(&c.name) != Some(&fp) {
                fingerprints.push((c.name.clone(), fp));
            }
        }
        if fingerprints.is_empty() {
            tracing::info!(schedule = %s.name, "nothing changed since the last run; no builds");
            return;
        }
        spec = RequestSpec {
            components: fingerprints.iter().map(|(c, _)| c.clone()).collect(),
            all: false,
            targets: s.targets.clone(),
        };
    }
    let mut given = s.properties.clone();
    given.insert("schedule".into(), s.name.clone());
    let properties = match request_properties(&given, PropertySource::Request) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(schedule = %s.name, error = %e, "schedule properties refused");
            return;
        }
    };
    let reason = format!("schedule {} ({}) due {due}", s.name, s.cron_text);
    let req = NewRequest { spec, properties, reason: Some(reason) };
    match crate::ops::requests::submit(shared, &Caller::system(format!("schedule:{}", s.name)), req).await {
        Ok(created) => {
            for (component, fp) in &fingerprints {
                if let Err(e) = shared.store.set_schedule_fingerprint(&s.name, component, fp).await {
                    tracing::error!(schedule = %s.name, error = %e, "cannot record what was requested");
                }
            }
            tracing::info!(schedule = %s.name, request = created.request_id, builds = created.builds.len(), "scheduled builds requested")
        }
        Err(e) => tracing::error!(schedule = %s.name, error = %e, "scheduled request failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_run_in_a_time_zone_and_across_days() {
        let cron = CronSpec::parse("0 3 * * *").expect("cron");
        let after: Timestamp = "2026-11-22T10:00:00Z".parse().expect("ts");
        assert_eq!(next_after(&cron, &TimeZone::UTC, after).expect("next").to_string(), "2026-11-23T03:00:00Z");
        let ams = TimeZone::get("Europe/Amsterdam").expect("tzdata");
        // 03:00 in Amsterdam (UTC+1 in November) is 02:00 UTC.
        assert_eq!(next_after(&cron, &ams, after).expect("next").to_string(), "2026-11-23T02:00:00Z");
        let weekly = CronSpec::parse("30 6 * * mon").expect("cron");
        assert_eq!(next_after(&weekly, &TimeZone::UTC, after).expect("next").to_string(), "2026-11-23T06:30:00Z");
    }
}
