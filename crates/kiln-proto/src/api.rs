//! Objects of the JSON API under `/api/v1`, as the master serves them and
//! `kiln-client` reads them. Times are RFC 3339 strings in UTC.

use kiln_core::props::PropertySource;
use kiln_core::{BuildState, StepState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Build {
    pub id: i64,
    /// Builds asked for together share a request.
    pub request_id: i64,
    pub component: String,
    pub target: String,
    #[schema(value_type = String, example = "running")]
    pub state: BuildState,
    /// Why the build ended as it did, when there is more to say than its state.
    pub reason: Option<String>,
    pub requested_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Who or what asked for the build.
    pub requested_by: Option<String>,
    pub worker: Option<String>,
    /// How many times the build was dispatched (above 1 after a lost worker).
    pub attempt: i64,
    /// Builds of the same request this one waits for.
    pub depends_on: Vec<i64>,
    pub properties: BTreeMap<String, PropertyValue>,
    pub steps: Vec<Step>,
    /// Files the build produced, stored on the master.
    pub artifacts: Vec<Artifact>,
    /// Why a queued build has not started: `kind` (`no_worker`,
    /// `slots_busy`, `dependency`) and a `message`, with the details of
    /// its kind (`target`, `position`, `build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub waiting: Option<kiln_core::schedule::Waiting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Where to download it, relative to the master's URL.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PropertyValue {
    pub value: String,
    #[schema(value_type = String, example = "request")]
    pub source: PropertySource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub index: i64,
    pub name: String,
    #[schema(value_type = String, example = "succeeded")]
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Bytes of log stored so far.
    pub log_size: i64,
}

/// Body of `POST /api/v1/builds`, the same options as `kiln build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequestBody {
    #[serde(default)]
    pub components: Vec<String>,
    /// Restrict to these targets. Empty: each component's every target.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Every target of each component (the default when `targets` is empty).
    #[serde(default)]
    pub all_targets: bool,
    /// Every component of the farm.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// A note on why, shown with the request.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildRequestCreated {
    pub request_id: i64,
    pub builds: Vec<Build>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildPage {
    pub builds: Vec<Build>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// A piece of a step's log, from `offset` (in bytes) on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    pub build_id: i64,
    pub step: String,
    pub offset: u64,
    /// Where the next read should start.
    pub next_offset: u64,
    pub data: String,
    /// The step has finished and `next_offset` is the end of its log.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub name: String,
    pub connected: bool,
    pub targets: Vec<String>,
    pub slots: i64,
    pub running: Vec<i64>,
    pub last_seen: Option<String>,
    pub version: Option<String>,
    pub address: Option<String>,
    /// Set while the worker is drained: it finishes what it runs and is
    /// given nothing new until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<Drained>,
    /// The master it is connected to (its id), when masters share a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

impl WorkerInfo {
    /// A worker that has not connected (since the master started).
    pub fn never_seen(name: &str) -> WorkerInfo {
        WorkerInfo {
            name: name.to_string(),
            connected: false,
            targets: Vec::new(),
            slots: 0,
            running: Vec::new(),
            last_seen: None,
            version: None,
            address: None,
            drained: None,
            master: None,
        }
    }
}

/// Body of `POST /api/v1/workers/{name}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Shown beside the worker (one line).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Who drained a worker, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Drained {
    pub by: String,
    pub reason: Option<String>,
    /// RFC 3339.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuilderInfo {
    pub component: String,
    pub target: String,
    pub family: String,
    pub last_build_id: Option<i64>,
    #[schema(value_type = Option<String>)]
    pub last_state: Option<BuildState>,
    pub queued: i64,
    pub running: i64,
    /// Connected workers that serve this builder's target.
    pub workers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub version: String,
    /// Increases by one on every config (re)load that took effect.
    pub config_generation: u64,
    pub builders: i64,
    pub workers_connected: i64,
    pub builds_queued: i64,
    pub builds_running: i64,
    /// The master that answered (its id among those sharing the database).
    #[serde(default)]
    pub master: Option<String>,
    /// Every master that shares the database, alive or not.
    #[serde(default)]
    pub masters: Vec<MasterInfo>,
    /// How full the data dir's file system is (none: it cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStatus>,
}

/// The data dir's file system, and a warning when it is fuller than
/// `[retention] disk_warn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskStatus {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Percent used, rounded up.
    pub used_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What a garbage collection freed (or, dry, would free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// Builds whose logs and artifacts went (their rows stay).
    pub builds_pruned: u64,
    /// By kind: `logs`, `artifacts`, `uploads`, `rejected_uploads`.
    pub freed: Vec<GcFreed>,
    pub took_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcFreed {
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
}

/// Asks for a garbage collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcRequest {
    /// Say what would go; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Pins or unpins a build: a pinned build keeps its logs and artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PinRequest {
    pub pinned: bool,
}

/// A master sharing the database, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MasterInfo {
    pub id: String,
    /// Its web and API address.
    pub address: String,
    /// Its heartbeat is within the lease.
    pub alive: bool,
    /// Bumped each time it (re)started.
    pub epoch: i64,
    /// RFC 3339.
    pub started_at: String,
    pub heartbeat_at: String,
}

/// Every error response has this body, with a status code that says the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// Answer to `POST /api/v1/uploads`: the upload passed its checks and
/// became builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadAccepted {
    pub upload_id: String,
    pub source: String,
    pub version: String,
    pub request_id: i64,
    pub builds: Vec<Build>,
}

/// A channel: a signed APT and YUM repository the farm publishes into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChannelInfo {
    pub name: String,
    /// Which builds land here by themselves: `nightly`, `release` or `promoted`.
    pub accepts: String,
    pub promote_to: Vec<String>,
    /// Bumped by every change.
    pub revision: i64,
    pub packages: usize,
    /// Where the repository is served, e.g. `http://HOST/repos/dev/`.
    pub url: String,
    /// Fingerprint of the channel's signing key.
    pub fingerprint: String,
}

/// One published file of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `deb`, `dsc` or `rpm`.
    pub kind: String,
    /// `apt:SUITE` or `yum:TARGET`.
    pub repo: String,
    /// Path relative to the channel's URL.
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub build_id: Option<i64>,
    pub published_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub name: String,
    pub version: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub replace: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub name: String,
    pub created_at: String,
    pub revision: i64,
    pub packages: usize,
}

/// An advisory to publish in a channel's YUM repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryBody {
    /// E.g. `KILN-2026-0001`.
    pub id: String,
    /// security, bugfix, enhancement or newpackage.
    #[serde(rename = "type")]
    pub kind: String,
    /// Critical, Important, Moderate or Low.
    #[serde(default)]
    pub severity: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Package names (their latest published version) or `NAME-VERSION-RELEASE[.ARCH]`.
    pub packages: Vec<String>,
    /// URLs (a CVE record, a bug, a page).
    #[serde(default)]
    pub references: Vec<String>,
}

/// An advisory a channel publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdvisoryInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub severity: Option<String>,
    pub title: String,
    pub issued: String,
    /// `NAME-[EPOCH:]VERSION-RELEASE.ARCH` of each package.
    pub packages: Vec<String>,
    pub references: Vec<String>,
}

/// What a repository change did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RepoChange {
    pub message: String,
}

/// A user of the farm and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    pub email: String,
    /// own_jobs, kill_any_job, modify_users, server_admin
    pub permissions: Vec<String>,
    pub created_at: String,
}

/// A new user: their email and permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    /// Permission names; none gives read access only.
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// A new API token. `user` makes one for someone else (needs modify_users).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    pub user: Option<String>,
    /// What the token is for, e.g. "laptop" or "release script".
    #[serde(default)]
    pub name: Option<String>,
}

/// A token just made: shown this once; the master keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub token: String,
}

/// An API token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}
