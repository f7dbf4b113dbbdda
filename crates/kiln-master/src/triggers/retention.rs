//! The daily garbage collection (`[retention] daily_at`, UTC): claimed in
//! the database like a schedule's run, so masters sharing it collect once
//! between them, and a master down at the time collects when it is back.

use crate::caller::Caller;
use crate::clock::now_us;
use crate::shared::Shared;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Its run is recorded among the schedules' under a name no
/// `[[schedule]]` can have.
const RUN_NAME: &str = "kiln:retention";
/// The longest it sleeps (config reloads are seen within this).
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub async fn run(shared: Arc<Shared>) {
    loop {
        let sleep = match due(&shared).await {
            Ok(None) => MAX_SLEEP,
            Ok(Some(wait)) => wait.min(MAX_SLEEP),
            Err(e) => {
                tracing::error!(error = %e, "cannot check when garbage collection is due");
                MAX_SLEEP
            }
        };
        tokio::time::sleep(sleep).await;
    }
}

/// Collects if a run is due (and this master claims it); says how long
/// until the next one (none: no daily run is configured).
async fn due(shared: &Shared) -> anyhow::Result<Option<Duration>> {
    let Some((hour, minute)) = shared.farm().cfg.retention.daily_at else { return Ok(None) };
    let cron = kiln_core::cron::CronSpec::parse(&format!("{minute} {hour} * * *"))
        .map_err(|e| anyhow::anyhow!("daily_at: {e}"))?;
    let Some(last) = shared.store.schedule_last_run(RUN_NAME).await? else {
        // The first run is at the next daily time, not at once after an upgrade.
        shared.store.claim_schedule_run(RUN_NAME, None, now_us()).await?;
        return Ok(Some(MAX_SLEEP));
    };
    let now = Timestamp::now();
    let Some(due) = super::schedule::next_after(&cron, &TimeZone::UTC, Timestamp::from_microsecond(last)?) else {
        return Ok(None);
    };
    if due > now {
        return Ok(Some(Duration::from_secs((due.as_second() - now.as_second()).max(1) as u64)));
    }
    if shared.store.claim_schedule_run(RUN_NAME, Some(last), now_us()).await? {
        let caller = Caller::maintenance("retention");
        if let Err(e) = crate::ops::retention::gc(shared, &caller, false).await {
            tracing::error!(error = %e, "the daily garbage collection failed");
        }
    }
    Ok(Some(MAX_SLEEP))
}
