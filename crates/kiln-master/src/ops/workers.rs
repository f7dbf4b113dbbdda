//! Draining a worker for maintenance and resuming it: a drained worker
//! finishes what it runs and is given nothing new. The drain is stored, so
//! it holds across a restart of the master.

use super::OpError;
use crate::caller::Caller;
use crate::events::Event;
use crate::shared::Shared;
use kiln_core::perm::Permission;
use kiln_db::DrainRow;

/// A drain's reason is shown on pages and in the API: one short line.
const MAX_REASON: usize = 200;

/// Drains worker `name` for `caller` (server_admin). Draining a drained
/// worker keeps the first drain.
pub async fn drain(s: &Shared, caller: &Caller, name: &str, reason: Option<&str>) -> Result<DrainRow, OpError> {
    caller.require(Permission::ServerAdmin)?;
    known_worker(s, name)?;
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = reason {
        if r.chars().count() > MAX_REASON || r.chars().any(char::is_control) {
            return Err(OpError::Invalid(format!(
                "a drain's reason must be one line of at most {MAX_REASON} characters"
            )));
        }
    }
    let row = s.store.drain_worker(name, &caller.name, reason, crate::clock::now_us()).await?;
    tracing::info!(worker = %name, by = %row.drained_by, reason = row.reason.as_deref().unwrap_or(""), "worker drained");
    tell_dispatcher(s).await?;
    Ok(row)
}

/// Resumes drained worker `name` for `caller` (server_admin).
pub async fn resume(s: &Shared, caller: &Caller, name: &str) -> Result<(), OpError> {
    caller.require(Permission::ServerAdmin)?;
    known_worker(s, name)?;
    if !s.store.resume_worker(name).await? {
        return Err(OpError::Conflict(format!("worker {name} is not drained")));
    }
    tracing::info!(worker = %name, by = %caller.name, "worker resumed");
    tell_dispatcher(s).await
}

/// A worker of the config, or one connected now (or before, since start).
fn known_worker(s: &Shared, name: &str) -> Result<(), OpError> {
    if s.farm().cfg.worker(name).is_some() || s.workers().contains_key(name) {
        return Ok(());
    }
    Err(OpError::NotFound(format!("no worker {name}")))
}

/// Tells the dispatcher the drains changed (it reads them from the store),
/// and waits until the workers' list shows them (so a page loaded next does).
async fn tell_dispatcher(s: &Shared) -> Result<(), OpError> {
    let (done, shown) = tokio::sync::oneshot::channel();
    s.send(Event::DrainsChanged { done });
    shown.await.map_err(|_| OpError::Unavailable("the master is shutting down".into()))
}

/// Every worker the farm knows, as this master sees it, with those
/// connected to other live masters sharing the database shown connected
/// there (`master`): any master answers for the whole farm.
pub async fn list(s: &Shared) -> std::collections::BTreeMap<String, kiln_proto::api::WorkerInfo> {
    let mut infos = s.workers().clone();
    let me = s.store.owner().map(str::to_string);
    for info in infos.values_mut().filter(|i| i.connected) {
        info.master.clone_from(&me);
    }
    let sessions = match s.store.worker_sessions().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read where workers are connected");
            return infos;
        }
    };
    let elsewhere: Vec<_> = sessions.into_iter().filter(|w| Some(&w.master) != me.as_ref()).collect();
    if elsewhere.is_empty() {
        return infos;
    }
    let (lease, now) = (s.farm().cfg.master.lease, crate::clock::now_us());
    let live: std::collections::HashSet<String> = s
        .store
        .masters()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|m| crate::lease::alive(m.heartbeat_at, lease, now))
        .map(|m| m.id)
        .collect();
    for w in elsewhere.into_iter().filter(|w| live.contains(&w.master)) {
        let info = infos.entry(w.name.clone()).or_insert_with(|| kiln_proto::api::WorkerInfo::never_seen(&w.name));
        if !info.connected {
            info.connected = true;
            info.address = Some(w.address);
            info.last_seen = None;
            info.master = Some(w.master);
        }
    }
    infos
}

/// The masters sharing the database, alive or gone, as their leases say.
pub async fn masters(s: &Shared) -> Result<Vec<kiln_proto::api::MasterInfo>, OpError> {
    let (lease, now) = (s.farm().cfg.master.lease, crate::clock::now_us());
    Ok(s.store
        .masters()
        .await?
        .into_iter()
        .map(|m| kiln_proto::api::MasterInfo {
            alive: crate::lease::alive(m.heartbeat_at, lease, now),
            started_at: crate::clock::rfc3339(m.started_at),
            heartbeat_at: crate::clock::rfc3339(m.heartbeat_at),
            id: m.id,
            address: m.address,
            epoch: m.epoch,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{user, Tester};

    /// Stands in for the dispatcher: answers `n` drain changes with what
    /// the store holds then, and hands that back, in order.
    fn dispatcher(t: &mut Tester, n: usize) -> tokio::task::JoinHandle<Vec<Vec<DrainRow>>> {
        let mut events = std::mem::replace(&mut t.events, tokio::sync::mpsc::unbounded_channel().1);
        let shared = t.shared.clone();
        tokio::spawn(async move {
            let mut told = Vec::new();
            while told.len() < n {
                let Some(ev) = events.recv().await else { break };
                if let Event::DrainsChanged { done } = ev {
                    told.push(shared.store.drained_workers().await.expect("drains"));
                    let _ = done.send(());
                }
            }
            told
        })
    }

    #[tokio::test]
    async fn an_admin_drains_and_resumes_a_worker_and_the_dispatcher_is_told() {
        let mut t = Tester::new().await;
        let told = dispatcher(&mut t, 3);
        let kim = user("kim@example.org", &[Permission::ServerAdmin]);
        let row = drain(&t.shared, &kim, "w1", Some(" new disk ")).await.expect("drained");
        assert_eq!((row.drained_by.as_str(), row.reason.as_deref()), ("kim@example.org", Some("new disk")));
        // Again: the first drain stays.
        let again = drain(&t.shared, &kim, "w1", None).await.expect("drained again");
        assert_eq!(again, row);
        resume(&t.shared, &kim, "w1").await.expect("resumed");
        assert_eq!(resume(&t.shared, &kim, "w1").await, Err(OpError::Conflict("worker w1 is not drained".into())));
        assert_eq!(told.await.expect("dispatcher"), [vec![row.clone()], vec![row], vec![]]);
    }

    #[tokio::test]
    async fn draining_needs_server_admin_a_known_worker_and_a_short_reason() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs, Permission::KillAnyJob]);
        assert_eq!(
            drain(&t.shared, &ann, "w1", None).await,
            Err(OpError::Forbidden("ann@example.org lacks the server_admin permission this needs".into()))
        );
        assert!(resume(&t.shared, &ann, "w1").await.is_err());
        let kim = user("kim@example.org", &[Permission::ServerAdmin]);
        assert_eq!(drain(&t.shared, &kim, "w7", None).await, Err(OpError::NotFound("no worker w7".into())));
        let long = "x".repeat(MAX_REASON + 1);
        assert!(matches!(drain(&t.shared, &kim, "w1", Some(&long)).await, Err(OpError::Invalid(_))));
        assert!(matches!(drain(&t.shared, &kim, "w1", Some("a\nb")).await, Err(OpError::Invalid(_))));
        assert!(t.next_event().is_none(), "nothing refused reaches the dispatcher");
        assert!(t.shared.store.drained_workers().await.expect("list").is_empty());
    }
}
