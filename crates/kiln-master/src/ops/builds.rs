//! Cancelling a build: a queued one leaves the queue, a running one is
//! stopped by its worker (its `always_run` steps still run).

use super::OpError;
use crate::caller::{Caller, Forbidden};
use crate::events::{CancelOutcome, Event};
use crate::shared::Shared;
use kiln_core::perm::Permission;
use tokio::sync::oneshot;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The build ended `cancelled` now.
    Now,
    /// Its worker was told to stop it; it ends `cancelled` shortly.
    Stopping,
}

/// Who may cancel a build: its requester with own_jobs (for a signed
/// upload, the caller who carried it in), anyone with kill_any_job (or
/// server_admin).
pub fn may_cancel(caller: &Caller, requested_by: Option<&str>) -> Result<(), Forbidden> {
    let own =
        requested_by.is_some_and(|r| r == caller.name || crate::uploads::uploaded_via(r) == Some(caller.name.as_str()));
    if own {
        caller.require(Permission::OwnJobs)
    } else {
        caller.require(Permission::KillAnyJob)
    }
}

/// Cancels build `id` for `caller`.
pub async fn cancel(s: &Shared, caller: &Caller, id: i64) -> Result<Cancelled, OpError> {
    let Some(build) = s.store.build(id).await? else { return Err(OpError::NotFound(format!("no build {id}"))) };
    may_cancel(caller, build.requested_by.as_deref())?;
    let (tx, rx) = oneshot::channel();
    s.send(Event::Cancel { build_id: id, by: caller.name.clone(), reply: tx });
    match rx.await.map_err(|_| OpError::Unavailable("the master is shutting down".into()))? {
        CancelOutcome::Cancelled => Ok(Cancelled::Now),
        CancelOutcome::Stopping => Ok(Cancelled::Stopping),
        CancelOutcome::AlreadyFinished(st) => Err(OpError::Conflict(format!("build {id} already finished: {st}"))),
        CancelOutcome::NotFound => Err(OpError::NotFound(format!("no build {id}"))),
        CancelOutcome::Busy(why) => Err(OpError::Conflict(format!("build {id} cannot be cancelled now: {why}"))),
        CancelOutcome::Failed(e) => Err(OpError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::requests::{submit, NewRequest};
    use crate::ops::testing::{user, Tester};
    use kiln_core::matrix::RequestSpec;
    use kiln_core::BuildState;

    /// Queues one build of `hello` for `who` and returns its id.
    async fn queue_one(t: &mut Tester, who: &Caller) -> i64 {
        let spec = RequestSpec { components: vec!["hello".into()], all: false, targets: Vec::new() };
        let made = submit(&t.shared, who, NewRequest { spec, properties: Default::default(), reason: None })
            .await
            .expect("queued");
        assert!(matches!(t.next_event(), Some(Event::Queued(_))));
        made.builds[0].id
    }

    /// Answers the next cancel the dispatcher gets with `outcome`.
    fn dispatcher_answers(t: &mut Tester, outcome: CancelOutcome) -> tokio::task::JoinHandle<(i64, String)> {
        let mut events = std::mem::replace(&mut t.events, tokio::sync::mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            match events.recv().await {
                Some(Event::Cancel { build_id, by, reply }) => {
                    let _ = reply.send(outcome);
                    (build_id, by)
                }
                _ => panic!("expected a cancel"),
            }
        })
    }

    #[tokio::test]
    async fn the_requester_cancels_a_queued_build_and_a_finished_one_conflicts() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let id = queue_one(&mut t, &ann).await;
        let asked = dispatcher_answers(&mut t, CancelOutcome::Cancelled);
        assert_eq!(cancel(&t.shared, &ann, id).await, Ok(Cancelled::Now));
        assert_eq!(asked.await.expect("dispatcher"), (id, "ann@example.org".to_string()));
        let mut t2 = Tester::new().await;
        let id = queue_one(&mut t2, &ann).await;
        let _asked = dispatcher_answers(&mut t2, CancelOutcome::AlreadyFinished(BuildState::Succeeded));
        assert_eq!(
            cancel(&t2.shared, &ann, id).await,
            Err(OpError::Conflict(format!("build {id} already finished: succeeded")))
        );
    }

    #[test]
    fn the_caller_who_carried_a_signed_upload_in_may_cancel_its_builds() {
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let bob = user("bob@example.org", &[Permission::OwnJobs]);
        let by = crate::uploads::signed_requester("Jane Doe <jane@example.org>", "ann@example.org");
        assert_eq!(may_cancel(&ann, Some(&by)), Ok(()));
        assert!(may_cancel(&bob, Some(&by)).is_err());
    }

    #[tokio::test]
    async fn someone_elses_build_needs_kill_any_job() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let bob = user("bob@example.org", &[Permission::OwnJobs]);
        let id = queue_one(&mut t, &ann).await;
        let refused = cancel(&t.shared, &bob, id).await.expect_err("refused");
        assert_eq!(refused, OpError::Forbidden("bob@example.org lacks the kill_any_job permission this needs".into()));
        assert!(t.next_event().is_none(), "the dispatcher must not be asked");
        let kim = user("kim@example.org", &[Permission::KillAnyJob]);
        let _asked = dispatcher_answers(&mut t, CancelOutcome::Stopping);
        assert_eq!(cancel(&t.shared, &kim, id).await, Ok(Cancelled::Stopping));
        assert_eq!(cancel(&t.shared, &kim, 999).await, Err(OpError::NotFound("no build 999".into())));
    }
}
