//! This master's lease among those sharing the database: taken at start
//! (a new epoch), renewed every third of `[master] lease`, taken again
//! under a new epoch when it was lost (the dispatcher then starts afresh).
//! After each renewal this task fences the masters whose heartbeat is
//! older than the lease and takes their running builds over; the running
//! builds of a live master are left to it.

use crate::clock::now_us;
use crate::events::Event;
use crate::shared::Shared;
use kiln_db::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This master's id among those sharing the database: its host name and
/// web port (stable across restarts, distinct for two masters on a host).
pub fn master_id(http_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}:{http_port}", if host.is_empty() { "master" } else { host })
}

/// Whether a master whose last heartbeat was at `heartbeat_at` is alive
/// at `now_us` (within `lease`).
pub fn alive(heartbeat_at: i64, lease: Duration, now_us: i64) -> bool {
    now_us.saturating_sub(heartbeat_at) < lease.as_micros() as i64
}

/// Takes this master's lease in the store `shared` acts through; returns its epoch.
pub async fn take(store: &Store, address: &str) -> Result<i64, kiln_db::StoreError> {
    store.take_lease(address, now_us(), kiln_db::latest_schema_version()).await
}

/// Renews the lease for ever. When it was lost (a survivor fenced this
/// master while it was paused or cut off, or the same id started
/// elsewhere), takes a new one and tells the dispatcher, which drops what
/// it held and loads the queue again: nothing it held is trusted. When it
/// cannot be renewed for half the lease (the database is out of reach),
/// the master lets its workers go, so they carry their builds to another
/// master before this one is fenced, and takes none back until it can.
pub async fn keep(shared: Arc<Shared>, address: String, lease: Duration) {
    let store = shared.store.clone();
    let id = store.owner().unwrap_or_default().to_string();
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tick.tick().await;
        match store.renew_lease(now_us()).await {
            Ok(true) => {
                renewed = Instant::now();
                if !shared.set_lease_held(true) {
                    tracing::warn!(master = %id, "renewed this master's lease again; taking workers again");
                }
                // Here, not in the dispatcher: a paused master's row locks
                // may hold the dispatcher up until the fence ends them.
                for (master, ids) in fence_gone(&shared).await {
                    if !ids.is_empty() {
                        shared.send(Event::TookOver { master, ids });
                    }
                }
            }
            Ok(false) => {
                tracing::error!(master = %id, epoch = store.epoch(), "this master lost its lease (it was away past it, and another master took its builds over); taking a new one");
                match take(&store, &address).await {
                    Ok(epoch) => {
                        renewed = Instant::now();
                        tracing::warn!(master = %id, epoch, "holding this master's lease again");
                        shared.set_lease_held(true);
                        shared.send(Event::Rejoined);
                    }
                    Err(e) => tracing::error!(master = %id, error = %e, "cannot take this master's lease again"),
                }
            }
            Err(e) => {
                tracing::warn!(master = %id, error = %e, "cannot renew this master's lease");
                if renewed.elapsed() > lease / 2 && shared.set_lease_held(false) {
                    tracing::error!(master = %id, "this master's lease is in doubt; letting its workers go to other masters");
                    shared.send(Event::LeaseInDoubt);
                }
            }
        }
    }
}

/// Fences every other master whose lease expired and takes its running
/// builds over for this one (`Store::take_over_master`: its sessions are
/// ended, so the row locks a paused master holds go too); returns the
/// builds taken, by master.
pub async fn fence_gone(shared: &Shared) -> Vec<(String, Vec<i64>)> {
    let store = &shared.store;
    let Some(me) = store.owner().map(str::to_string) else { return Vec::new() };
    let lease = shared.farm().cfg.master.lease;
    let now = now_us();
    let gone: Vec<String> = match store.masters().await {
        Ok(ms) => ms
            .into_iter()
            .filter(|m| m.id != me && m.fenced_at.is_none() && !alive(m.heartbeat_at, lease, now))
            .map(|m| m.id)
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the masters' leases");
            return Vec::new();
        }
    };
    let mut taken = Vec::new();
    for master in gone {
        let stale_before = now - lease.as_micros() as i64;
        match store.take_over_master(&master, stale_before, now).await {
            Ok(ids) => {
                tracing::warn!(master = %master, builds = ids.len(), "a master's lease expired; fenced it and took its running builds over");
                taken.push((master, ids));
            }
            Err(e) => tracing::error!(master = %master, error = %e, "cannot take over a gone master's builds"),
        }
    }
    taken
}
