//! What the poller learns of a remote repository, whichever system keeps
//! it (git in `poller`, Mercurial in `hg`).

/// Why a remote's branch tip could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoTip(pub(super) String);

/// The files a change touched (unknown when its old tip is gone), who made
/// it, and its subject.
pub(super) type Description = (Option<Vec<String>>, Option<String>, String);
