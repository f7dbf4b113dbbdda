//! The farm configuration (`farm.toml`): its model, parsing and validation.
//!
//! A builder is a component × a target. The config names components and
//! targets once each; [`crate::matrix`] expands them, so 70 components on 20
//! targets are 1,400 builders from a few dozen lines.
//!
//! Parsing is pure: it takes the file's text and returns either the model or
//! every problem found, each with its line and column.

pub use crate::channel::{Accepts, Channel, SecretRef};
use crate::duration::parse_duration;
use crate::names::{check_name, check_property_name};
use crate::toml_reader::{Reader, Span, Tbl};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::toml_reader::Diagnostic;
pub use triggers::{
    check_branch, check_git_url, check_revision, ForgeHook, GitSource, Hooks, Irc, Notifier, NotifyVia, Smtp,
    SmtpSecurity,
};

mod triggers;

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
            heartbeat: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            worker_tls: None,
            tls: None,
            header_timeout: Duration::from_secs(30),
            max_artifact_size: 4 << 30,
            url: None,
            anonymous_read: true,
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
    /// More package repositories for a deb build root (backports, a
    /// vendor's archive), each trusted through its own key only.
    pub repositories: Vec<AptRepository>,
    /// The mock configuration (`mock -r`) of an rpm target built with mock.
    pub mock_config: Option<String>,
}

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
    /// A git repository; each build checks out one revision.
    Git(GitSource),
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
    /// The `.spec` for rpm targets, relative to the source tree; found in
    /// the tree when absent.
    pub spec: Option<String>,
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

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// One `file:line:col: message` line per problem.
    pub fn render(&self, file: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| {
                if d.line == 0 {
                    format!("{file}: {}", d.message)
                } else {
                    format!("{file}:{}:{}: {}", d.line, d.col, d.message)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("config"))
    }
}

impl std::error::Error for ConfigErrors {}

const MASTER_KEYS: &[&str] = &[
    "listen",
    "worker_listen",
    "data_dir",
    "database",
    "worker_timeout",
    "heartbeat",
    "kill_grace",
    "worker_tls",
    "tls",
    "header_timeout",
    "max_artifact_size",
    "url",
    "anonymous_read",
];
const TOP_KEYS: &[&str] =
    &["master", "worker", "target", "component", "channel", "schedule", "notify", "hooks", "smtp", "irc"];
const SCHEDULE_KEYS: &[&str] = &["name", "cron", "timezone", "components", "targets", "properties", "only_if_changed"];
const CHANNEL_KEYS: &[&str] =
    &["name", "key", "passphrase", "accepts", "promote_to", "keep", "component", "description", "sign_debs"];
const WORKER_KEYS: &[&str] = &["name", "token_file"];
const TARGET_KEYS: &[&str] =
    &["name", "family", "suite", "arch", "mirror", "components", "max_age", "executor", "repositories", "mock_config"];
const REPOSITORY_KEYS: &[&str] = &["url", "suite", "components", "key"];
const COMPONENT_KEYS: &[&str] = &[
    "name",
    "source",
    "depends_on",
    "targets",
    "steps",
    "properties",
    "artifacts",
    "spec",
    "timeout",
    "no_output_timeout",
    "memory",
    "cpus",
    "collapse",
    "rebuild_after",
    "secrets",
    "before",
    "after",
];
const SOURCE_KEYS: &[&str] = &["path"];
const STEP_KEYS: &[&str] =
    &["name", "run", "set_property", "timeout", "no_output_timeout", "env", "halt_on_failure", "always_run"];

/// Parses and validates a farm config.
pub fn parse(text: &str) -> Result<FarmConfig, ConfigErrors> {
    let mut r = Reader::new(text);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span();
            let msg = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
            r.err(&span, format!("invalid TOML: {msg}"));
            return Err(ConfigErrors { diagnostics: r.diags });
        }
    };
    let root = doc.as_table();
    let root_span: Span = Some(0..0);
    r.check_keys(Tbl { t: root, span: &root_span }, TOP_KEYS, "the config file");

    let master = read_master(&mut r, root.get("master"));

    let mut names: HashMap<&'static str, HashMap<String, Span>> = HashMap::new();
    let mut unique = |r: &mut Reader<'_>, kind: &'static str, name: &str, span: &Span| {
        let seen = names.entry(kind).or_default();
        if let Some(first) = seen.get(name) {
            let where_ = first
                .as_ref()
                .map(|s| {
                    let (l, c) = r.position(s.start);
                    format!(" (first defined at line {l}, column {c})")
                })
                .unwrap_or_default();
            r.err(span, format!("duplicate {kind} name {name:?}{where_}"));
            false
        } else {
            seen.insert(name.to_string(), span.clone());
            true
        }
    };

    let mut workers = Vec::new();
    if let Some(item) = root.get("worker") {
        for (t, span) in r.tables(item, "[[worker]]") {
            let tbl = Tbl { t, span: &span };
            r.check_keys(tbl, WORKER_KEYS, "[[worker]]");
            let name = named(&mut r, tbl, "[[worker]]");
            let token = r.string(tbl, "token_file", "[[worker]]");
            if let Some((name, nspan)) = name {
                if unique(&mut r, "worker", &name, &nspan) {
                    workers.push(WorkerDef { name, token_file: token.map(|t| t.0) });
                }
            }
        }
    }

    let mut targets = Vec::new();
    if let Some(item) = root.get("target") {
        for (t, span) in r.tables(item, "[[target]]") {
            let tbl = Tbl { t, span: &span };
            r.check_keys(tbl, TARGET_KEYS, "[[target]]");
            let name = named(&mut r, tbl, "[[target]]");
            let family = r.required_string(tbl, "family", "[[target]]").and_then(|(f, fspan)| match f.as_str() {
                "deb" => Some(Family::Deb),
                "rpm" => Some(Family::Rpm),
                other => {
                    r.err(&fspan, format!("unknown family {other:?}; known families: deb, rpm"));
                    None
                }
            });
            let word = |r: &mut Reader<'_>, key: &str| {
                let (v, vspan) = r.string(tbl, key, "[[target]]")?;
                match check_name(&v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        r.err(&vspan, format!("`{key}` of [[target]]: {e}"));
                        None
                    }
                }
            };
            let suite = word(&mut r, "suite");
            let arch = word(&mut r, "arch");
            let mirror = repo_url(&mut r, tbl, "mirror", "[[target]]");
            let components = archive_components(&mut r, tbl, "[[target]]");
            let max_age = duration_key(&mut r, tbl, "max_age", "[[target]]").unwrap_or(Duration::from_secs(15 * 86400));
            let executor = match r.string(tbl, "executor", "[[target]]") {
                None => Some(Executor::Bwrap),
                Some((e, espan)) => {
                    let executor = match e.as_str() {
                        "bwrap" => Some(Executor::Bwrap),
                        "host" => Some(Executor::Host),
                        "sbuild" => Some(Executor::Sbuild),
                        "mock" => Some(Executor::Mock),
                        other => {
                            r.err(
                                &espan,
                                format!("unknown executor {other:?}; known executors: bwrap, sbuild, mock, host"),
                            );
                            None
                        }
                    };
                    let fits = match (executor, family) {
                        (Some(Executor::Sbuild), Some(Family::Rpm)) => Err("sbuild builds deb targets only"),
                        (Some(Executor::Mock), Some(Family::Deb)) => Err("mock builds rpm targets only"),
                        _ => Ok(()),
                    };
                    match fits {
                        Ok(()) => executor,
                        Err(why) => {
                            r.err(&espan, format!("`executor = {e:?}` of [[target]]: {why}"));
                            None
                        }
                    }
                }
            };
            let mut repositories = Vec::new();
            if let Some(item) = t.get("repositories") {
                if family == Some(Family::Rpm) {
                    r.err(&item.span(), "`repositories` of [[target]] are apt repositories, for deb targets only");
                }
                for (rt, rspan) in r.tables(item, "`repositories` of [[target]]") {
                    let rtbl = Tbl { t: rt, span: &rspan };
                    let what = "a repository of [[target]]";
                    r.check_keys(rtbl, REPOSITORY_KEYS, what);
                    let url = repo_url(&mut r, rtbl, "url", what);
                    let suite = r.required_string(rtbl, "suite", what).and_then(|(s, sspan)| match check_name(&s) {
                        Ok(()) => Some(s),
                        Err(e) => {
                            r.err(&sspan, format!("`suite` of {what}: {e}"));
                            None
                        }
                    });
                    let components = archive_components(&mut r, rtbl, what);
                    let key = r.required_string(rtbl, "key", what).and_then(|(k, kspan)| {
                        if k.trim().is_empty() {
                            r.err(&kspan, format!("`key` of {what} must name the repository's key file"));
                            return None;
                        }
                        Some(k)
                    });
                    if url.is_none() && !rtbl.t.contains_key("url") {
                        r.err(&rspan, format!("{what} needs `url`"));
                    }
                    if let (Some(url), Some(suite), Some(key)) = (url, suite, key) {
                        repositories.push(AptRepository { url, suite, components, key });
                    }
                }
            }
            let mock_config = r.string(tbl, "mock_config", "[[target]]").and_then(|(m, mspan)| {
                let ok = !m.is_empty()
                    && !m.starts_with('-')
                    && m.chars().all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
                if !ok {
                    r.err(
                        &mspan,
                        format!(
                            "`mock_config` of [[target]] must name a mock config like \"rocky-9-x86_64\", got {m:?}"
                        ),
                    );
                }
                ok.then_some(m)
            });
            if let Some((name, nspan)) = name {
                if unique(&mut r, "target", &name, &nspan) {
                    if let (Some(family), Some(executor)) = (family, executor) {
                        targets.push(Target {
                            name,
                            family,
                            suite,
                            arch,
                            mirror,
                            components,
                            max_age,
                            executor,
                            repositories,
                            mock_config,
                        });
                    }
                }
            }
        }
    }

    let mut components = Vec::new();
    // Spans of each component's `depends_on` entries and `targets` entries,
    // kept for the cross-reference checks below.
    let mut dep_spans: HashMap<String, Vec<(String, Span)>> = HashMap::new();
    let mut component_spans: HashMap<String, Span> = HashMap::new();
    if let Some(item) = root.get("component") {
        for (t, span) in r.tables(item, "[[component]]") {
            let tbl = Tbl { t, span: &span };
            r.check_keys(tbl, COMPONENT_KEYS, "[[component]]");
            let Some((name, nspan)) = named(&mut r, tbl, "[[component]]") else {
                continue;
            };
            let what = format!("component {name:?}");
            let source = read_source(&mut r, tbl, &what);
            let depends = r.string_list(tbl, "depends_on", &what).unwrap_or_default();
            let target_names = r.string_list(tbl, "targets", &what);
            if let Some(list) = &target_names {
                for (tname, tspan) in list {
                    if !targets.iter().any(|t: &Target| &t.name == tname) {
                        let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                        r.err(tspan, format!("{what}: unknown target {tname:?}; known targets: {}", known.join(", ")));
                    }
                }
                if list.is_empty() {
                    let s = tbl.t.get("targets").and_then(|i| i.span());
                    r.err(&s, format!("{what}: `targets` is empty; leave it out to build on every target"));
                }
            }
            let properties = r
                .string_map(tbl, "properties", &what)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v, s)| match check_property_name(&k) {
                    Ok(()) => Some((k, v)),
                    Err(e) => {
                        r.err(&s, format!("{what}: {e}"));
                        None
                    }
                })
                .collect();
            let steps = read_steps(&mut r, tbl, &what, "steps");
            // Steps around the standard pipeline (a component without `steps`).
            let before = read_steps(&mut r, tbl, &what, "before");
            let after = read_steps(&mut r, tbl, &what, "after");
            if !steps.is_empty() && (!before.is_empty() || !after.is_empty()) {
                r.err(
                    &span,
                    format!("{what}: `before` and `after` wrap the standard pipeline; a component with `steps` runs only those"),
                );
            }
            for s in before.iter().chain(&after) {
                if STEP_NAMES.contains(&s.name.as_str())
                    || before.iter().chain(&after).filter(|o| o.name == s.name).count() > 1
                {
                    r.err(
                        &span,
                        format!(
                            "{what}: step {:?} of `before`/`after` must differ from the others and from the pipeline's ({})",
                            s.name,
                            STEP_NAMES.join(", ")
                        ),
                    );
                }
            }
            let artifacts = r.string_list(tbl, "artifacts", &what).unwrap_or_default();
            let timeout = duration_key(&mut r, tbl, "timeout", &what);
            let no_output_timeout = duration_key(&mut r, tbl, "no_output_timeout", &what);
            let memory = r.string(tbl, "memory", &what).and_then(|(m, mspan)| match crate::size::parse_size(&m) {
                Ok(n) if n >= 1 << 20 => Some(n),
                Ok(_) => {
                    r.err(&mspan, format!("{what}: `memory` must be at least 1MiB"));
                    None
                }
                Err(e) => {
                    r.err(&mspan, format!("{what}: `memory`: {e}"));
                    None
                }
            });
            let millicpus = tbl.t.get("cpus").and_then(|item| {
                let v = item.as_float().or_else(|| item.as_integer().map(|i| i as f64));
                match v {
                    Some(c) if (0.01..=1024.0).contains(&c) => Some((c * 1000.0).round() as u32),
                    _ => {
                        r.err(&item.span(), format!("{what}: `cpus` must be a number of CPUs above 0, like 2 or 0.5"));
                        None
                    }
                }
            });
            let spec = r.string(tbl, "spec", &what).and_then(|(p, pspan)| {
                if p.starts_with('/') || p.split('/').any(|seg| seg == "..") || !p.ends_with(".spec") {
                    r.err(&pspan, format!("{what}: `spec` must be a .spec path inside the source tree, got {p:?}"));
                    None
                } else {
                    Some(p)
                }
            });
            for (pattern, pspan) in &artifacts {
                if let Err(e) = crate::glob::Pattern::new(pattern) {
                    r.err(pspan, format!("{what}: artifact pattern {pattern:?}: {e}"));
                }
            }
            if !unique(&mut r, "component", &name, &nspan) {
                continue;
            }
            let collapse = r.boolean(tbl, "collapse", &what).unwrap_or(false);
            let mut rebuild_after = Vec::new();
            for (dep, dspan) in r.string_list(tbl, "rebuild_after", &what).unwrap_or_default() {
                if depends.iter().any(|(d, _)| d == &dep) {
                    rebuild_after.push(dep);
                } else {
                    r.err(&dspan, format!("{what}: `rebuild_after` names {dep:?}, which is not in its `depends_on`"));
                }
            }
            let secrets = triggers::read_step_secrets(&mut r, tbl, &what);
            dep_spans.insert(name.clone(), depends.clone());
            component_spans.insert(name.clone(), nspan.clone());
            components.push(Component {
                name,
                source,
                depends_on: depends.into_iter().map(|d| d.0).collect(),
                targets: target_names.map(|l| l.into_iter().map(|t| t.0).collect()),
                steps,
                before,
                after,
                properties,
                artifacts: artifacts.into_iter().map(|a| a.0).collect(),
                spec,
                timeout,
                no_output_timeout,
                memory,
                millicpus,
                collapse,
                rebuild_after,
                secrets,
            });
        }
    }

    // Cross references: dependencies name known components, and form no cycle.
    for c in &components {
        for (dep, span) in dep_spans.get(&c.name).map(Vec::as_slice).unwrap_or_default() {
            if dep == &c.name {
                r.err(span, format!("component {:?} depends on itself", c.name));
            } else if !components.iter().any(|o| &o.name == dep) {
                let known: Vec<&str> = components.iter().map(|o| o.name.as_str()).collect();
                r.err(
                    span,
                    format!(
                        "component {:?} depends on unknown component {dep:?}; known components: {}",
                        c.name,
                        known.join(", ")
                    ),
                );
            }
        }
    }
    for c in components.iter().filter(|c| c.steps.is_empty()) {
        for t in targets.iter().filter(|t| c.targets.as_ref().is_none_or(|names| names.contains(&t.name))) {
            if t.family == Family::Deb && (t.suite.is_none() || t.mirror.is_none()) {
                let span = component_spans.get(&c.name).cloned().flatten();
                r.err(
                    &span,
                    format!(
                        "component {:?} has no `steps`, so it builds with the standard deb pipeline, \
                         which needs `suite` and `mirror` on target {:?}",
                        c.name, t.name
                    ),
                );
            }
        }
    }
    for cycle in dependency_cycles(&components) {
        let first = &cycle[0];
        let span = dep_spans
            .get(first)
            .and_then(|deps| deps.iter().find(|(d, _)| cycle.contains(d)))
            .and_then(|(_, s)| s.clone());
        let mut path = cycle.clone();
        path.push(first.clone());
        r.err(&span, format!("dependency cycle: {}", path.join(" -> ")));
    }

    let channels = read_channels(&mut r, root.get("channel"));

    let mut schedules: Vec<Schedule> = Vec::new();
    if let Some(item) = root.get("schedule") {
        for (t, span) in r.tables(item, "[[schedule]]") {
            let tbl = Tbl { t, span: &span };
            r.check_keys(tbl, SCHEDULE_KEYS, "[[schedule]]");
            let Some((name, nspan)) = named(&mut r, tbl, "[[schedule]]") else { continue };
            let what = format!("schedule {name:?}");
            if schedules.iter().any(|s| s.name == name) {
                r.err(&nspan, format!("duplicate schedule name {name:?}"));
                continue;
            }
            let cron =
                r.required_string(tbl, "cron", &what).and_then(|(c, cspan)| match crate::cron::CronSpec::parse(&c) {
                    Ok(spec) => Some((spec, c)),
                    Err(e) => {
                        r.err(&cspan, format!("`cron` of {what}: {e}"));
                        None
                    }
                });
            let timezone = r.string(tbl, "timezone", &what).map(|t| t.0);
            let mut wanted = Vec::new();
            for (c, cspan) in r.string_list(tbl, "components", &what).unwrap_or_default() {
                if c == "*" {
                    continue;
                }
                if components.iter().any(|x: &Component| x.name == c) {
                    wanted.push(c);
                } else {
                    r.err(&cspan, format!("{what}: unknown component {c:?}"));
                }
            }
            let mut on = Vec::new();
            for (t, tspan) in r.string_list(tbl, "targets", &what).unwrap_or_default() {
                if targets.iter().any(|x: &Target| x.name == t) {
                    on.push(t);
                } else {
                    r.err(&tspan, format!("{what}: unknown target {t:?}"));
                }
            }
            let properties = r
                .string_map(tbl, "properties", &what)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect();
            let only_if_changed = r.boolean(tbl, "only_if_changed", &what).unwrap_or(false);
            if let Some((cron, cron_text)) = cron {
                schedules.push(Schedule {
                    name,
                    cron,
                    cron_text,
                    timezone,
                    components: wanted,
                    targets: on,
                    only_if_changed,
                    properties,
                });
            }
        }
    }

    let mut notifiers: Vec<Notifier> = Vec::new();
    if let Some(item) = root.get("notify") {
        for (t, span) in r.tables(item, "[[notify]]") {
            let tbl = Tbl { t, span: &span };
            r.check_keys(tbl, triggers::NOTIFY_KEYS, "[[notify]]");
            let Some((name, _)) = named(&mut r, tbl, "[[notify]]") else { continue };
            if let Some(n) = triggers::read_notifier(&mut r, tbl, name, &span) {
                notifiers.push(n);
            }
        }
    }
    let hooks = triggers::read_hooks(&mut r, root.get("hooks"));
    let smtp = triggers::read_smtp(&mut r, root.get("smtp"));
    let irc = triggers::read_irc(&mut r, root.get("irc"));
    if smtp.is_none() && notifiers.iter().any(|n| matches!(n.via, NotifyVia::Email { .. })) {
        r.err(&root_span, "a notifier sends mail but there is no [smtp] section saying how");
    }
    if irc.is_none() && notifiers.iter().any(|n| matches!(n.via, NotifyVia::Irc { .. })) {
        r.err(&root_span, "a notifier posts to IRC but there is no [irc] section naming the server");
    }

    if r.diags.is_empty() {
        Ok(FarmConfig {
            master: master.unwrap_or_default(),
            workers,
            targets,
            components,
            channels,
            schedules,
            notifiers,
            hooks,
            smtp,
            irc,
        })
    } else {
        r.diags.sort_by_key(|d| (d.line, d.col));
        Err(ConfigErrors { diagnostics: r.diags })
    }
}

fn named(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<(String, Span)> {
    let (name, span) = r.required_string(tbl, "name", what)?;
    if let Err(e) = check_name(&name) {
        r.err(&span, format!("{what}: {e}"));
        return None;
    }
    Some((name, span))
}

fn duration_key(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str, what: &str) -> Option<Duration> {
    if let Some(item) = tbl.t.get(key) {
        if let Some(i) = item.as_integer() {
            if i < 0 {
                r.err(&item.span(), format!("`{key}` in {what} may not be negative"));
                return None;
            }
            return Some(Duration::from_secs(i as u64));
        }
    }
    let (text, span) = r.string(tbl, key, what)?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            r.err(&span, format!("`{key}` in {what}: {e}"));
            None
        }
    }
}

/// A package repository's URL (`mirror` of a target, `url` of one of its
/// repositories): http(s) or file, nothing a shell or apt line could split.
fn repo_url(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str, what: &str) -> Option<String> {
    let (m, mspan) = r.string(tbl, key, what)?;
    let scheme_ok = ["http://", "https://", "file:/"].iter().any(|p| m.starts_with(p));
    if scheme_ok && !m.chars().any(|c| c.is_whitespace() || "'\"\\`$[]".contains(c)) {
        Some(m)
    } else {
        r.err(&mspan, format!("`{key}` of {what} must be an http(s):// or file:/ URL, got {m:?}"));
        None
    }
}

/// The archive components of a mirror or repository (default `main`).
fn archive_components(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Vec<String> {
    r.string_list(tbl, "components", what)
        .map(|l| {
            l.into_iter()
                .filter_map(|(c, cspan)| match check_name(&c) {
                    Ok(()) => Some(c),
                    Err(e) => {
                        r.err(&cspan, format!("`components` of {what}: {e}"));
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| vec!["main".to_string()])
}

/// `cert`, `key` and an optional `client_ca`: PEM files.
fn tls_files(r: &mut Reader<'_>, item: Option<&toml_edit::Item>, what: &str) -> Option<TlsFiles> {
    let item = item?;
    let span = item.span();
    let Some(tt) = item.as_table_like() else {
        r.err(&span, format!("{what} must be a table with `cert` and `key`"));
        return None;
    };
    let tls = Tbl { t: tt, span: &span };
    r.check_keys(tls, &["cert", "key", "client_ca"], what);
    let cert = r.required_string(tls, "cert", what);
    let key = r.required_string(tls, "key", what);
    let client_ca = r.string(tls, "client_ca", what).map(|c| c.0);
    Some(TlsFiles { cert: cert?.0, key: key?.0, client_ca })
}

fn read_master(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Option<MasterSection> {
    let mut m = MasterSection::default();
    let Some(item) = item else { return Some(m) };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[master] must be a table");
        return None;
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, MASTER_KEYS, "[master]");
    let addr = |r: &mut Reader<'_>, key: &str, into: &mut SocketAddr| {
        if let Some((s, sspan)) = r.string(tbl, key, "[master]") {
            match s.parse::<SocketAddr>() {
                Ok(a) => *into = a,
                Err(_) => r.err(
                    &sspan,
                    format!(
                        "`{key}` must be an address with a port, like \"127.0.0.1:8010\" or \"[::1]:8010\"; got {s:?}"
                    ),
                ),
            }
        }
    };
    addr(r, "listen", &mut m.listen);
    addr(r, "worker_listen", &mut m.worker_listen);
    if let Some((d, _)) = r.string(tbl, "data_dir", "[master]") {
        m.data_dir = d;
    }
    if let Some((db, dspan)) = r.string(tbl, "database", "[master]") {
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://") || db.starts_with("sqlite:")) {
            r.err(&dspan, "`database` must be a postgres:// URL or an sqlite: URL");
        }
        m.database = Some(db);
    }
    let errors_before = r.diags.len();
    if let Some(d) = duration_key(r, tbl, "worker_timeout", "[master]") {
        m.worker_timeout = d;
    }
    if let Some(d) = duration_key(r, tbl, "heartbeat", "[master]") {
        m.heartbeat = d;
    }
    let timings_ok = r.diags.len() == errors_before;
    if let Some(d) = duration_key(r, tbl, "kill_grace", "[master]") {
        m.kill_grace = d;
    }
    if let Some(d) = duration_key(r, tbl, "header_timeout", "[master]") {
        m.header_timeout = d.max(Duration::from_millis(100));
    }
    if let Some((text, sspan)) = r.string(tbl, "max_artifact_size", "[master]") {
        match crate::size::parse_size(&text) {
            Ok(n) => m.max_artifact_size = n,
            Err(e) => r.err(&sspan, format!("`max_artifact_size` in [master]: {e}")),
        }
    }
    if let Some(b) = r.boolean(tbl, "anonymous_read", "[master]") {
        m.anonymous_read = b;
    }
    if let Some((u, uspan)) = r.string(tbl, "url", "[master]") {
        let ok = (u.starts_with("http://") || u.starts_with("https://"))
            && !u.chars().any(|c| c.is_whitespace() || "'\"\\`$".contains(c));
        if ok {
            m.url = Some(u);
        } else {
            r.err(&uspan, format!("`url` in [master] must be an http:// or https:// URL, got {u:?}"));
        }
    }
    m.worker_tls = tls_files(r, t.get("worker_tls"), "[master.worker_tls]");
    m.tls = tls_files(r, t.get("tls"), "[master.tls]");
    if timings_ok && (m.heartbeat.is_zero() || m.heartbeat >= m.worker_timeout) {
        r.err(&span, "`heartbeat` must be shorter than `worker_timeout` and above zero");
    }
    Some(m)
}

fn read_channels(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<Channel> {
    let Some(item) = item else { return Channel::defaults() };
    let mut channels: Vec<(Channel, Vec<(String, Span)>)> = Vec::new();
    for (t, span) in r.tables(item, "[[channel]]") {
        let tbl = Tbl { t, span: &span };
        r.check_keys(tbl, CHANNEL_KEYS, "[[channel]]");
        let Some((name, nspan)) = named(r, tbl, "[[channel]]") else { continue };
        let what = format!("channel {name:?}");
        if channels.iter().any(|(c, _)| c.name == name) {
            r.err(&nspan, format!("duplicate channel name {name:?}"));
            continue;
        }
        let key = r.string(tbl, "key", &what).map(|k| k.0);
        let passphrase = triggers::read_secret(r, tbl, "passphrase", &what);
        if passphrase.is_some() && key.is_none() {
            r.err(&nspan, format!("{what} has a `passphrase` but no `key`"));
        }
        let accepts = match r.string(tbl, "accepts", &what) {
            None => Accepts::Promoted,
            Some((a, aspan)) => match a.as_str() {
                "nightly" => Accepts::Nightly,
                "release" => Accepts::Release,
                "promoted" => Accepts::Promoted,
                other => {
                    r.err(&aspan, format!("`accepts` of {what}: unknown {other:?}; known: nightly, release, promoted"));
                    Accepts::Promoted
                }
            },
        };
        let promote_to = r.string_list(tbl, "promote_to", &what).unwrap_or_default();
        let keep = tbl.t.get("keep").and_then(|item| match item.as_integer() {
            Some(n) if n >= 1 && n <= u32::MAX as i64 => Some(n as u32),
            _ => {
                r.err(&item.span(), format!("`keep` of {what} must be a whole number of versions, at least 1"));
                None
            }
        });
        let component = match r.string(tbl, "component", &what) {
            Some((c, cspan)) => {
                if check_name(&c).is_err() {
                    r.err(&cspan, format!("`component` of {what} must be a plain name like \"main\""));
                }
                c
            }
            None => "main".to_string(),
        };
        let description = r.string(tbl, "description", &what).map(|d| d.0).unwrap_or_default();
        let sign_debs = r.boolean(tbl, "sign_debs", &what).unwrap_or(false);
        let names = promote_to.iter().map(|(n, _)| n.clone()).collect();
        channels.push((
            Channel { name, key, passphrase, accepts, promote_to: names, keep, component, description, sign_debs },
            promote_to,
        ));
    }
    for (c, targets) in &channels {
        for (t, tspan) in targets {
            if !channels.iter().any(|(o, _)| &o.name == t) || t == &c.name {
                let known: Vec<&str> = channels.iter().map(|(o, _)| o.name.as_str()).collect();
                r.err(
                    tspan,
                    format!(
                        "channel {:?} promotes to unknown channel {t:?}; known channels: {}",
                        c.name,
                        known.join(", ")
                    ),
                );
            }
        }
    }
    channels.into_iter().map(|(c, _)| c).collect()
}

fn read_source(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<Source> {
    let item = tbl.t.get("source")?;
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, format!("`source` of {what} must be a table, like {{ path = \"src/NAME\" }}"));
        return None;
    };
    let st = Tbl { t, span: &span };
    if t.get("git").is_some() {
        return triggers::read_git_source(r, st, what).map(Source::Git);
    }
    r.check_keys(st, SOURCE_KEYS, &format!("the source of {what}"));
    let (path, _) = r.required_string(st, "path", &format!("the source of {what}"))?;
    Some(Source::Path(path))
}

/// A component's own steps; none means its family's standard pipeline.
fn read_steps(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str, key: &str) -> Vec<StepSpec> {
    let Some(item) = tbl.t.get(key) else {
        return Vec::new();
    };
    let mut steps: Vec<StepSpec> = Vec::new();
    let tables = r.tables(item, &format!("the `{key}` steps of {what}"));
    if tables.is_empty() {
        r.err(&item.span(), format!("{what} has an empty `{key}` list"));
    }
    for (t, span) in tables {
        let st = Tbl { t, span: &span };
        let swhat = format!("a step of {what}");
        r.check_keys(st, STEP_KEYS, &swhat);
        let name = named(r, st, &swhat);
        let run = r.required_string(st, "run", &swhat);
        let set_property = r.string(st, "set_property", &swhat).and_then(|(p, pspan)| match check_property_name(&p) {
            Ok(()) => Some(p),
            Err(e) => {
                r.err(&pspan, format!("{swhat}: {e}"));
                None
            }
        });
        let timeout = duration_key(r, st, "timeout", &swhat);
        let no_output_timeout = duration_key(r, st, "no_output_timeout", &swhat);
        let env = r.string_map(st, "env", &swhat).unwrap_or_default().into_iter().map(|(k, v, _)| (k, v)).collect();
        let halt_on_failure = r.boolean(st, "halt_on_failure", &swhat).unwrap_or(true);
        let always_run = r.boolean(st, "always_run", &swhat).unwrap_or(false);
        if let (Some((name, nspan)), Some((run, _))) = (name, run) {
            if steps.iter().any(|s| s.name == name) {
                r.err(&nspan, format!("duplicate step name {name:?} in {what}"));
                continue;
            }
            steps.push(StepSpec {
                name,
                run,
                set_property,
                timeout,
                no_output_timeout,
                env,
                halt_on_failure,
                always_run,
            });
        }
    }
    steps
}

/// Each dependency cycle once, as the list of its members in order.
fn dependency_cycles(components: &[Component]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = components.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let edges: Vec<Vec<usize>> = components
        .iter()
        .map(|c| c.depends_on.iter().filter(|d| *d != &c.name).filter_map(|d| index.get(d.as_str()).copied()).collect())
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; components.len()];
    let mut cycles = Vec::new();
    fn visit(n: usize, edges: &[Vec<usize>], mark: &mut [u8], stack: &mut Vec<usize>, cycles: &mut Vec<Vec<usize>>) {
        mark[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if mark[m] == 1 {
                if let Some(pos) = stack.iter().position(|&s| s == m) {
                    cycles.push(stack[pos..].to_vec());
                }
            } else if mark[m] == 0 {
                visit(m, edges, mark, stack, cycles);
            }
        }
        stack.pop();
        mark[n] = 2;
    }
    let mut found = Vec::new();
    for n in 0..components.len() {
        if mark[n] == 0 {
            visit(n, &edges, &mut mark, &mut Vec::new(), &mut found);
        }
    }
    for c in found {
        cycles.push(c.into_iter().map(|i| components[i].name.clone()).collect());
    }
    cycles
}

#[cfg(test)]
mod tests;
