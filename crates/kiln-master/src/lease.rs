//! This master's lease among those sharing the database: taken at start
//! (a new epoch), renewed every third of `[master] lease`. Another master
//! whose heartbeat is older than the lease is taken for gone: the others
//! take its running builds over (one of them, by a conditional update);
//! the running builds of a live one are left to it.

use crate::clock::now_us;
use kiln_db::{MasterRow, Store};
use std::time::Duration;

/// This master's id among those sharing the database: its host name and
/// web port (stable across restarts, distinct for two masters on a host).
pub fn master_id(http_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}:{http_port}", if host.is_empty() { "master" } else { host })
}

/// Whether `m`'s heartbeat is within `lease` at `now_us`.
pub fn alive(m: &MasterRow, lease: Duration, now_us: i64) -> bool {
    now_us.saturating_sub(m.heartbeat_at) < lease.as_micros() as i64
}

/// Renews the lease for ever; says so loudly when another master took it
/// over (the same id started elsewhere).
pub async fn keep(store: Store, id: String, epoch: i64, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.renew_lease(&id, epoch, now_us()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(master = %id, epoch, "this master's lease was taken by another start of the same master id")
            }
            Err(e) => tracing::warn!(master = %id, error = %e, "cannot renew this master's lease"),
        }
    }
}
