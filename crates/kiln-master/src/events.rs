//! Messages between the master's tasks and the replies they carry: what the
//! dispatcher, the publisher and the IRC bot are asked, and what they
//! answer. No logic, and nothing of the master imported: every task and
//! every operation may use these without importing each other.

use kiln_core::BuildState;
use kiln_db::BuildRow;
use kiln_proto::wire::{Hello, MasterMsg, WorkerMsg};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// What the dispatcher is told, one at a time.
pub enum Event {
    /// A worker connected, said hello and was authenticated by the worker
    /// port; the reply is the list of builds it should abandon, or none
    /// when this master cannot take it now.
    Hello {
        conn: u64,
        hello: Box<Hello>,
        address: String,
        tx: UnboundedSender<MasterMsg>,
        /// None: not now (the worker is to try another master).
        reply: oneshot::Sender<Option<Vec<i64>>>,
    },
    FromWorker {
        conn: u64,
        worker: String,
        msg: WorkerMsg,
    },
    /// A worker's connection carried something (log output, artifact
    /// pieces): it is alive even if its heartbeat waits behind that.
    Seen {
        conn: u64,
        worker: String,
    },
    Gone {
        conn: u64,
        worker: String,
    },
    /// New builds were stored as queued.
    Queued(Vec<BuildRow>),
    Cancel {
        build_id: i64,
        by: String,
        reply: oneshot::Sender<CancelOutcome>,
    },
    ConfigChanged,
    /// The build dependencies of a queued build were checked.
    Checked {
        build_id: i64,
        verdict: kiln_core::builddeps::Verdict,
    },
    /// The drained workers changed in the store. Answered once the
    /// workers' list shows them as stored.
    DrainsChanged {
        done: oneshot::Sender<()>,
    },
    /// The publisher finished with a build's packages.
    Published {
        build_id: i64,
        outcome: PublishOutcome,
    },
    /// This master's lease was taken while it was away; it holds a new one.
    Rejoined,
    /// This master cannot renew its lease: its workers are let go.
    LeaseInDoubt,
    /// This master fenced master `master` and took its running builds over.
    TookOver {
        master: String,
        ids: Vec<i64>,
    },
    /// Another master changed the queue (it said so through the database).
    Poll,
}

/// What became of a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Removed from the queue, or ended while its worker was away.
    Cancelled,
    /// The worker was told to stop it; the build ends `cancelled` shortly.
    Stopping,
    AlreadyFinished(BuildState),
    NotFound,
    /// It cannot be cancelled now (its packages are being published, or
    /// another master handles it), and why.
    Busy(String),
    /// The store failed; the master's log has more.
    Failed(String),
}

/// What the publisher made of a build's packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Published: a summary such as "2 to dev".
    Published(String),
    Failed(String),
}

/// A change to the repositories.
pub enum PublishRequest {
    /// Publish a finished build's packages; the outcome goes to the dispatcher.
    Build(i64),
    /// An operator's change; the outcome goes to `reply`.
    Op(RepoOp, oneshot::Sender<Result<String, RepoRefusal>>),
}

/// An operator's change to the repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoOp {
    Promote {
        name: String,
        version: String,
        from: String,
        to: String,
        replace: bool,
    },
    Remove {
        channel: String,
        name: String,
        version: Option<String>,
    },
    Snapshot {
        channel: String,
        name: String,
    },
    Rollback {
        channel: String,
        name: String,
    },
    /// Sign every RPM of a channel (and each `.deb`, for a channel that
    /// signs them) again with its current key: after a key rotation.
    Resign {
        channel: String,
    },
    /// Publish an advisory (YUM `updateinfo.xml`) for packages the channel holds.
    AddAdvisory {
        channel: String,
        request: kiln_core::advisory::AdvisoryRequest,
    },
    RemoveAdvisory {
        channel: String,
        id: String,
    },
}

/// Why the publisher did not make a repository change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoRefusal {
    /// A channel, package or snapshot the change names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts what the channels hold or allow.
    #[error("{0}")]
    Conflict(String),
    /// The change is malformed (a snapshot name that is not a name).
    #[error("{0}")]
    Invalid(String),
    /// Writing the change failed.
    #[error("{0}")]
    Failed(String),
}

/// A line for an IRC channel.
#[derive(Debug, Clone)]
pub struct Say {
    pub channel: String,
    pub text: String,
}

/// A ready deb build whose build dependencies are to be checked before it
/// goes to a worker (by `buildable`).
#[derive(Debug, Clone)]
pub struct Check {
    pub build_id: i64,
    pub component: String,
    pub target: String,
    pub properties: kiln_core::props::Properties,
}
