//! Changing repositories: promote, remove, snapshot and roll back. The
//! publisher makes the change (it is the one task that writes channels);
//! live pages are told once it is made, whichever door asked.

use super::OpError;
use crate::caller::Caller;
use crate::events::{PublishRequest, RepoOp, RepoRefusal};
use crate::shared::Shared;
use kiln_core::perm::Permission;
use tokio::sync::oneshot;

/// Makes `op` (server_admin only) and returns the publisher's summary.
pub async fn change(s: &Shared, caller: &Caller, op: RepoOp) -> Result<String, OpError> {
    caller.require(Permission::ServerAdmin)?;
    let (tx, rx) = oneshot::channel();
    let gone = || OpError::Unavailable("the master is shutting down".into());
    s.publisher.send(PublishRequest::Op(op.clone(), tx)).map_err(|_| gone())?;
    let outcome = rx.await.map_err(|_| gone())?;
    match outcome {
        Ok(summary) => {
            tracing::info!(by = %caller.name, change = ?op, "repository changed: {summary}");
            s.changed();
            Ok(summary)
        }
        Err(RepoRefusal::NotFound(e)) => Err(OpError::NotFound(e)),
        Err(RepoRefusal::Conflict(e)) => Err(OpError::Conflict(e)),
        Err(RepoRefusal::Invalid(e)) => Err(OpError::Invalid(e)),
        Err(RepoRefusal::Failed(e)) => Err(OpError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{user, Tester};

    #[tokio::test]
    async fn a_change_needs_server_admin_and_reaches_the_publisher_once() {
        let mut t = Tester::new().await;
        let op = RepoOp::Remove { channel: "dev".into(), name: "hello".into(), version: None };
        let ann = user("ann@example.org", &[Permission::OwnJobs, Permission::KillAnyJob]);
        assert!(matches!(change(&t.shared, &ann, op.clone()).await, Err(OpError::Forbidden(_))));
        assert!(t.publish.try_recv().is_err(), "nothing may reach the publisher");
        let mut publish = std::mem::replace(&mut t.publish, tokio::sync::mpsc::unbounded_channel().1);
        let publisher = tokio::spawn(async move {
            for answer in
                [Ok("removed 1 file(s) of hello from dev".to_string()), Err(RepoRefusal::NotFound("gone".into()))]
            {
                match publish.recv().await {
                    Some(PublishRequest::Op(_, reply)) => {
                        let _ = reply.send(answer);
                    }
                    _ => panic!("expected a repository change"),
                }
            }
        });
        let mut live = t.shared.changes.subscribe();
        let before = *live.borrow_and_update();
        assert_eq!(
            change(&t.shared, &Caller::admin(), op.clone()).await,
            Ok("removed 1 file(s) of hello from dev".into())
        );
        assert_ne!(*live.borrow_and_update(), before, "live pages are told");
        assert_eq!(change(&t.shared, &Caller::admin(), op).await, Err(OpError::NotFound("gone".into())));
        publisher.await.expect("publisher");
    }
}
