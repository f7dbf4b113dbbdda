//! The farm config as the rest of kiln uses it: ready to use, every name
//! checked and every reference known to resolve.

use super::packaging::OrigRule;
use super::triggers::{Hooks, Irc, Notifier, Smtp, VcsSource};
use crate::channel::{Channel, SecretRef};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct FarmConfig {
    pub master: MasterSection,
    pub workers: Vec<WorkerDef>,
    pub targets: Vec<Target>,
    pub components: Vec<Component>,
    /// The repositories builds publish into ([`Channel::defaults`] when none are configured).
    pub channels: Vec<Channel>,
    /// Timed requests (nightlies).
    pub schedules: Vec<Schedule>,
    /// Where finished builds are reported.
    pub notifiers: Vec<Notifier>,
    /// Where forges post push events.
    pub hooks: Hooks,
    /// How mail notifications are sent.
    pub smtp: Option<Smtp>,
    /// The IRC bot.
    pub irc: Option<Irc>,
    /// How source uploads are authenticated.
    pub uploads: UploadsSection,
    /// What is kept, and for how long.
    pub retention: super::retention::Retention,
}

/// `[uploads]`: who may sign source uploads, and whether they must. As
/// Debian's archive and reprepro's `uploaders` do, a signature by a key of
/// the keyring names the person the upload is from; the API token only says
/// who carried it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadsSection {
    /// An armored OpenPGP public keyring (one or more keys), relative to
    /// the config file's directory unless absolute. The master reads it.
    pub keyring: Option<String>,
    /// Accept only uploads whose `.changes` (or, without one, `.dsc`) is
    /// clear-signed by a key of `keyring`.
    pub require_signature: bool,
    /// A directory the master watches for uploads dropped by scp, sftp or
    /// dput (relative to the config file's directory unless absolute).
    pub incoming_dir: Option<String>,
    /// How long a dropped upload's files must stay unchanged before it is taken.
    pub incoming_quiet: Duration,
    /// How long an incomplete upload (a `.changes` whose files never all
    /// arrive) waits before it is rejected.
    pub incoming_wait: Duration,
    /// Who hears of every upload taken from the incoming directory, besides
    /// its uploader (mail, through `[smtp]`).
    pub mail: Vec<String>,
}

impl Default for UploadsSection {
    fn default() -> Self {
        UploadsSection {
            keyring: None,
            require_signature: false,
            incoming_dir: None,
            incoming_quiet: Duration::from_secs(10),
            incoming_wait: Duration::from_secs(3600),
            mail: Vec::new(),
        }
    }
}

/// A request made at the times a cron expression names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub cron: crate::cron::CronSpec,
    /// The cron text as written (for display).
    pub cron_text: String,
    /// An IANA time zone name (`Europe/Amsterdam`); UTC when absent.
    pub timezone: Option<String>,
    /// Components to build; empty means every component.
    pub components: Vec<String>,
    /// Targets; empty means each component's every target.
    pub targets: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// Request only the components whose source or definition changed since
    /// this schedule last requested them.
    pub only_if_changed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MasterSection {
    /// Web UI, JSON API and change hooks.
    pub listen: SocketAddr,
    /// Where workers connect.
    pub worker_listen: SocketAddr,
    /// Relative to the config file's directory unless absolute.
    pub data_dir: String,
    /// A `postgres://` or `sqlite:` URL; an SQLite file in `data_dir` when absent.
    pub database: Option<String>,
    /// How long a worker may be silent (or away) before its builds are re-queued.
    pub worker_timeout: Duration,
    /// How often workers send a heartbeat.
    pub heartbeat: Duration,
    /// A master sharing the database that has not renewed its lease for
    /// this long is taken for gone, and the others take over its builds.
    pub lease: Duration,
    /// Time between SIGTERM and SIGKILL when a step is cancelled or times out.
    pub kill_grace: Duration,
    /// Serve the worker port over TLS with this certificate and key (PEM files).
    pub worker_tls: Option<TlsFiles>,
    /// Serve the web pages and API over TLS (HTTPS) with this certificate
    /// and key; `client_ca` lets users log in with certificates.
    pub tls: Option<TlsFiles>,
    /// How long a web client may take to send a request's headers (and a
    /// TLS handshake) before its connection is closed.
    pub header_timeout: Duration,
    /// The largest artifact a worker may upload, in bytes.
    pub max_artifact_size: u64,
    /// Whether pages and API reads are open to anyone (default); when false
    /// they need a logged-in session or a token. Repositories stay public.
    pub anonymous_read: bool,
    /// Who kiln's changelog entries for nightlies are from (`Name <address>`);
    /// when absent the master makes one from its URL's or its host's name.
    pub changelog_maintainer: Option<String>,
    /// The master's address as clients and build roots reach it
    /// (repositories are served under `URL/repos/`); `http://LISTEN` when absent.
    pub url: Option<String>,
}

impl MasterSection {
    /// The base URL the master is reached at, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{}://{}", if self.tls.is_some() { "https" } else { "http" }, self.listen),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    /// A CA whose certificates may log in as clients (mutual TLS): on the
    /// worker port, the workers' CA (a certificate names its worker); on
    /// the web port, the users' CA (a certificate names its user's email).
    /// Keep the two CAs apart, so a user's certificate can never connect
    /// as a worker.
    pub client_ca: Option<String>,
}

impl Default for MasterSection {
    fn default() -> Self {
        MasterSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8010)),
            worker_listen: SocketAddr::from(([127, 0, 0, 1], 9989)),
            data_dir: "data".into(),
            database: None,
            worker_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            worker_tls: None,
            tls: None,
            header_timeout: Duration::from_secs(30),
            max_artifact_size: 4 << 30,
            url: None,
            anonymous_read: true,
            changelog_maintainer: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDef {
    pub name: String,
    /// File holding the worker's token, relative to the config file.
    /// The file holding its token; none when it logs in by certificate
    /// only (mutual TLS, `[master.worker_tls] client_ca`).
    pub token_file: Option<String>,
    /// The targets it may serve (`targets`): builds for others are not
    /// given to it whatever it claims when it connects. `None`: whatever
    /// it claims.
    pub targets: Option<Vec<String>>,
}

impl WorkerDef {
    /// Whether this worker may take builds for `target`.
    pub fn may_serve(&self, target: &str) -> bool {
        self.targets.as_ref().is_none_or(|ts| ts.iter().any(|t| t == target))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Deb,
    Rpm,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Deb => "deb",
            Family::Rpm => "rpm",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub family: Family,
    /// Debian/Ubuntu suite of the build root, e.g. `bookworm`.
    pub suite: Option<String>,
    /// Architecture to build for; the worker's own when absent.
    pub arch: Option<String>,
    /// Package mirror the build root comes from.
    pub mirror: Option<String>,
    /// Archive components of the mirror (default `main`).
    pub components: Vec<String>,
    /// A cached build root older than this is made again (mock's default: 15 days).
    pub max_age: Duration,
    /// Where the standard pipeline's build runs.
    pub executor: Executor,
    /// More suites of the same archive for a deb build root
    /// (`bookworm-updates`, `bookworm-security`), trusted like `suite`.
    pub suites: Vec<AptSuite>,
    /// The cached root's package lists are fetched again when older than
    /// this (not on every build).
    pub lists_max_age: Duration,
    /// More package repositories for a deb build root (backports, a
    /// vendor's archive), each trusted through its own key only.
    pub repositories: Vec<AptRepository>,
    /// The mock configuration (`mock -r`) of an rpm target built with mock.
    pub mock_config: Option<String>,
    /// A deb build's Build-Depends are checked against what its build root
    /// will see before it goes to a worker (default true).
    pub check_build_depends: bool,
}

/// A further suite of a deb target's archive, on its own mirror or the
/// target's: `deb MIRROR SUITE COMPONENTS` beside the target's own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSuite {
    pub suite: String,
    pub mirror: String,
}

/// A deb target's `mirror` (or a further suite's) that means: the mirror
/// each worker's own apt reads that suite from.
pub const HOST_MIRROR: &str = "host";

/// How long a cached build root's package lists serve before apt fetches
/// them again: the archive changes a few times a day.
pub const DEFAULT_LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// A package repository a deb build root installs build dependencies from,
/// beside its mirror: `deb [signed-by=KEY] URL SUITE COMPONENTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptRepository {
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    /// The repository's signing key (an armored OpenPGP key file), relative
    /// to the config file or absolute.
    pub key: String,
}

impl AptRepository {
    /// The words after `deb [...]` in a sources.list line.
    pub fn source(&self) -> String {
        format!("{} {} {}", self.url, self.suite, self.components.join(" "))
    }
}

/// How the standard pipeline isolates a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// bubblewrap over a fresh, unpacked build root: no network while
    /// building, an unprivileged user, no capabilities.
    Bwrap,
    /// Directly on the worker host (trusted builds only).
    Host,
    /// Debian's sbuild in its unshare mode, over the cached root tarball
    /// (deb targets; the worker's user needs subuid/subgid ranges).
    Sbuild,
    /// mock, with the target's `mock_config` (rpm targets on workers that
    /// have mock: real RHEL/Fedora machines).
    Mock,
}

impl Executor {
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Bwrap => "bwrap",
            Executor::Host => "host",
            Executor::Sbuild => "sbuild",
            Executor::Mock => "mock",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory, relative to the config file; each build gets a fresh copy.
    Path(String),
    /// A git or Mercurial repository; each build checks out one revision.
    Vcs(VcsSource),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub source: Option<Source>,
    pub depends_on: Vec<String>,
    /// `None`: every target of the farm.
    pub targets: Option<Vec<String>>,
    pub steps: Vec<StepSpec>,
    /// Steps before and after the standard pipeline (components without `steps`).
    pub before: Vec<StepSpec>,
    pub after: Vec<StepSpec>,
    /// Properties every build of this component starts with.
    pub properties: BTreeMap<String, String>,
    /// Files the build produces (glob patterns relative to the build's work
    /// dir, e.g. `out/*.deb`), uploaded to the master when it succeeds.
    pub artifacts: Vec<String>,
    /// Files kept when a build fails (glob patterns): of the work dir for a
    /// component with `steps`; of the build tree (where the package was
    /// being built) for the standard pipelines, besides their defaults.
    pub artifacts_on_failure: Vec<String>,
    /// Package names this component takes over from the component that
    /// published them first (a library that moved to another source). A
    /// name belongs to the first component that publishes it; another's
    /// build that produces it is refused unless it adopts the name.
    pub adopts: Vec<String>,
    /// The `.spec` for rpm targets, relative to the source tree; found in
    /// the tree when absent.
    pub spec: Option<String>,
    /// Where a `3.0 (quilt)` tree's upstream tarball comes from.
    pub orig: OrigRule,
    /// Wall-clock limit of a whole build.
    pub timeout: Option<Duration>,
    /// Default for steps: stop one that prints nothing for this long.
    pub no_output_timeout: Option<Duration>,
    /// Memory limit of a build (cgroups), in bytes.
    pub memory: Option<u64>,
    /// CPU limit of a build (cgroups), in thousandths of a CPU.
    pub millicpus: Option<u32>,
    /// When newer builds of the same builder with the same request
    /// properties join the queue, older ones still waiting are skipped.
    pub collapse: bool,
    /// Uploads of a source package of this component's name publish as
    /// this component (its releases uploaded, its nightlies built from its
    /// source). Without it an upload owns its names apart, so an uploader
    /// cannot replace a component's packages by naming its source.
    pub takes_uploads: bool,
    /// Dependencies whose publish triggers a rebuild of this component on
    /// the same target (as the Open Build Service rebuilds dependents).
    pub rebuild_after: Vec<String>,
    /// Secrets its steps get as environment variables (masked in logs).
    pub secrets: BTreeMap<String, SecretRef>,
}

/// The names of the steps kiln's own standard pipelines use
/// ([`crate::pipeline`]): a component's `before` and `after` steps may not
/// take them, so every step of a build has a name of its own.
pub const STEP_NAMES: &[&str] = &["checkout", "source", "root", "deps", "build"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    /// A shell command line, run with `sh -c`.
    pub run: String,
    /// Sets this property to the step's trimmed stdout.
    pub set_property: Option<String>,
    pub timeout: Option<Duration>,
    /// Stop the step when it prints nothing for this long.
    pub no_output_timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// Stop the build when this step fails (default true).
    pub halt_on_failure: bool,
    /// Run even after a failure or a cancel, e.g. for cleanup.
    pub always_run: bool,
}

impl FarmConfig {
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerDef> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// The targets a component builds on, in config order.
    pub fn targets_of<'a>(&'a self, component: &'a Component) -> impl Iterator<Item = &'a Target> + 'a {
        self.targets.iter().filter(move |t| match &component.targets {
            None => true,
            Some(names) => names.iter().any(|n| n == &t.name),
        })
    }

    pub fn builds_on(&self, component: &Component, target: &str) -> bool {
        self.targets_of(component).any(|t| t.name == target)
    }
}
