//! The master↔worker protocol.
//!
//! A worker dials the master's worker port (so it works behind NAT) and the
//! two exchange frames: a 4-byte big-endian length, then a JSON message
//! ([`WorkerMsg`] one way, [`MasterMsg`] the other). The stream may be TLS.
//!
//! A session: the worker sends `Hello` (name, token, targets, slots, the
//! builds it is still running and finished ones not yet acknowledged); the master
//! answers `Welcome` (which running builds to keep, which to abandon) or
//! `Refused`. Then the master sends `Assign`/`Cancel`, and the worker reports
//! steps, log output and results, and a `Heartbeat` when otherwise silent.
//! The master acknowledges each `BuildFinished`; the worker keeps a result
//! until then, and re-sends it after a reconnect. The master pings; a worker
//! that hears nothing for `fence_ms` stops its builds (they are about to be
//! re-queued), so a partitioned worker never runs a build alongside another.

use bytes::Bytes;
use kiln_core::{BuildState, StepState};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_util::codec::LengthDelimitedCodec;

pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (a job carries its source archive).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    Hello(Hello),
    Heartbeat,
    StepStarted {
        build_id: i64,
        step: u32,
    },
    Log {
        build_id: i64,
        step: u32,
        offset: u64,
        data: String,
    },
    StepFinished(StepResult),
    /// A piece of an artifact file, base64-encoded, at a byte offset. An
    /// upload starting again at offset 0 replaces a partial one.
    ArtifactChunk {
        build_id: i64,
        name: String,
        offset: u64,
        data: String,
    },
    /// The artifact is complete: the master checks size and SHA-256.
    ArtifactDone {
        build_id: i64,
        name: String,
        size: u64,
        sha256: String,
    },
    /// Sent after the build's artifacts.
    BuildFinished(BuildResult),
}

/// Size of the artifact pieces a worker sends (before base64).
pub const ARTIFACT_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub name: String,
    pub token: String,
    pub targets: Vec<String>,
    pub slots: u32,
    pub version: String,
    /// Builds this worker is running now (after a reconnect).
    pub running: Vec<i64>,
    /// Finished builds whose results the master has not acknowledged; their
    /// artifacts and results follow the welcome.
    pub finished: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub build_id: i64,
    pub step: u32,
    pub state: StepState,
    pub exit_code: Option<i32>,
    /// Set by a `set_property` step: the name and the trimmed stdout.
    pub property: Option<(String, String)>,
    /// Why the step ended as it did, e.g. "timed out after 15m".
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildResult {
    pub build_id: i64,
    pub state: BuildState,
    pub reason: Option<String>,
    /// Every step's final result, so the master can reconcile what it missed.
    pub steps: Vec<StepResult>,
    /// The artifacts uploaded before this result; the master checks that
    /// each one arrived whole.
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MasterMsg {
    /// `fence_ms`: a worker that hears nothing from the master for this long
    /// stops its builds, because the master is about to give them to others.
    Welcome {
        heartbeat_ms: u64,
        fence_ms: u64,
        abandon: Vec<i64>,
    },
    /// Sent every heartbeat interval so the worker knows the master is there.
    Ping,
    Refused {
        reason: String,
    },
    Assign(Box<Job>),
    Cancel {
        build_id: i64,
    },
    Ack {
        build_id: i64,
    },
}

/// Everything a worker needs to run a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub build_id: i64,
    pub component: String,
    pub target: String,
    pub properties: BTreeMap<String, String>,
    pub steps: Vec<JobStep>,
    /// The component's source tree as a gzipped tar, base64-encoded.
    pub source_tgz: Option<String>,
    pub kill_grace_ms: u64,
    /// Glob patterns of files to upload when the build succeeds.
    pub artifacts: Vec<String>,
    /// Glob patterns of files to upload when it fails (logs), each named
    /// by `kiln_core::pipeline::failure_artifact_name`.
    #[serde(default)]
    pub artifacts_on_failure: Vec<String>,
    /// The build's wall-clock limit.
    pub timeout_ms: Option<u64>,
    /// Memory limit of the whole build, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit of the whole build, in CPUs.
    pub cpus: Option<f64>,
    /// Environment the master sets for every step, e.g. the farm's own
    /// package repository for build roots (`KILN_APT_SOURCE`, `KILN_APT_KEY`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret values for the steps' environment; masked in every log.
    #[serde(default)]
    pub secrets: Secrets,
}

/// The step environment variable that lists a deb build root's package
/// repositories beside its mirror (JSON: a list of [`BuildRootRepo`]).
pub const APT_REPOS_ENV: &str = "KILN_APT_REPOS";

/// Set (to `1`) in every step's environment when the build's source is
/// untrusted: a test build of a pull request from a fork, which gets no
/// secrets. The checkout then fetches only submodules relative to the
/// repository. Set by the master alone, never from a property.
pub const UNTRUSTED_SOURCE_ENV: &str = "KILN_SOURCE_UNTRUSTED";

/// Who kiln's changelog entries are from (`Name <address>`), set by the
/// master for the standard deb pipeline.
pub const CHANGELOG_MAINTAINER_ENV: &str = "KILN_CHANGELOG_MAINTAINER";

/// A package repository a deb build root installs build dependencies from:
/// the farm's own channel or one of the target's `repositories`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRootRepo {
    /// A short name for the files it gets in the root (`kiln-NAME.list`).
    pub name: String,
    /// `URL SUITE COMPONENT...`, the words after `deb [...]`.
    pub source: String,
    /// The repository's armored OpenPGP key; apt trusts it for this
    /// repository only (`signed-by`).
    pub key: String,
}

/// Secret values by environment variable. Their `Debug` form names the
/// variables only, so a logged job never shows a value.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStep {
    pub name: String,
    pub run: String,
    pub set_property: Option<String>,
    pub timeout_ms: Option<u64>,
    /// Stop the step when it prints nothing for this long.
    pub no_output_timeout_ms: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub halt_on_failure: bool,
    pub always_run: bool,
    /// One of kiln's own steps (checkout, the standard pipeline's helpers),
    /// which keep the worker's privileges: they mount roots and drop
    /// privileges themselves. Every other step runs as the build user.
    #[serde(default)]
    pub privileged: bool,
}

/// The largest frame a connection may send before its hello is accepted:
/// an unauthenticated peer makes the master hold no more than this.
pub const MAX_HELLO_FRAME: usize = 64 * 1024;

/// The framing both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

/// The framing of a connection whose peer is not admitted yet: frames up
/// to [`MAX_HELLO_FRAME`]; raise it with `set_max_frame_length(MAX_FRAME)`
/// once the peer is known.
pub fn hello_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_HELLO_FRAME).new_codec()
}

#[derive(Debug, thiserror::Error)]
#[error("malformed protocol message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    // Serializing these plain data types cannot fail: every map key is a string.
    Bytes::from(serde_json::to_vec(msg).unwrap_or_default())
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    Ok(serde_json::from_slice(frame)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = WorkerMsg::Log { build_id: 7, step: 1, offset: 10, data: "hé\n".into() };
        let back: WorkerMsg = decode(&encode(&m)).expect("decodes");
        assert_eq!(back, m);
        let text = String::from_utf8(encode(&MasterMsg::Cancel { build_id: 3 }).to_vec()).expect("utf8");
        assert_eq!(text, r#"{"type":"cancel","build_id":3}"#);
        assert!(decode::<MasterMsg>(b"{\"type\":\"explode\"}").is_err());
    }
}
