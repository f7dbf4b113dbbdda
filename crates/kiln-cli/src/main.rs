//! `kiln`: the one binary. `kiln master` and `kiln worker` run the farm;
//! the other commands talk to a master over its HTTP API.

mod bench;
mod bench_farm;
mod bench_history;
mod bench_logs;
mod bench_masters;
mod bench_repo;
mod bench_roots;
mod bench_ui;
mod cert_cmds;
mod client_cmds;
mod demo;
mod follow;
mod key_cmds;
mod output;
mod release;
mod repo_cmds;
mod user_cmds;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "A build farm for Linux packages", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the master is and how to authenticate, for client commands.
#[derive(Args, Clone)]
pub struct Remote {
    /// The master's web/API address.
    #[arg(long, env = "KILN_URL", default_value = "http://127.0.0.1:8010", global = true)]
    pub url: String,
    /// File holding an API token (the master writes DATA_DIR/admin.token).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust this CA certificate (PEM) for an https:// master with a private CA.
    #[arg(long, env = "KILN_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

impl Remote {
    pub fn client(&self) -> anyhow::Result<kiln_client::Client> {
        let token = match &self.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the token file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        match &self.ca_cert {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
                Ok(kiln_client::Client::with_ca(&self.url, token, &pem)?)
            }
            None => Ok(kiln_client::Client::new(&self.url, token)?),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the master in the foreground.
    Master {
        #[arg(long, short)]
        config: PathBuf,
        /// Run even as root (not recommended: the master needs no privileges).
        #[arg(long)]
        allow_root: bool,
    },
    /// Run a worker that dials the master and builds.
    Worker {
        /// A master's worker port, HOST:PORT. Give it once per master of a
        /// farm whose masters share a database: the worker talks to one and
        /// moves to another when it goes, its running builds with it.
        #[arg(long, required = true)]
        master: Vec<String>,
        #[arg(long)]
        name: String,
        /// File holding this worker's token (as named in the master's config);
        /// not needed with a client certificate.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Targets this worker builds, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Builds run at once.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Where builds run.
        #[arg(long, default_value = "kiln-worker")]
        workdir: PathBuf,
        /// Connect over TLS, trusting this CA certificate (PEM).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Log in with this client certificate (PEM, from the workers' CA; needs --tls-ca and --tls-key).
        #[arg(long, requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Make every target's build root again instead of using the cached ones.
        #[arg(long)]
        refresh_roots: bool,
        /// The user the components' own steps run as when the worker runs as
        /// root (default `nobody`; `root` keeps them root, for trusted farms only).
        #[arg(long)]
        build_user: Option<String>,
        /// Keep cached build roots here instead of under the work dir;
        /// workers on one host may share the dir (they take turns making a root).
        #[arg(long)]
        root_cache: Option<PathBuf>,
        /// A root worker's range of uids for builds, `FIRST-LAST` (unused by
        /// any account): each running build gets one of its own. It must
        /// hold at least one uid per slot.
        #[arg(long)]
        build_uids: Option<String>,
        /// Serve Prometheus metrics (step durations, caches) on this
        /// address, e.g. 127.0.0.1:9102.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Build roots and repository mirrors unused this long are removed.
        #[arg(long, default_value = "30d", value_parser = kiln_core::duration::parse_duration)]
        cache_max_age: std::time::Duration,
    },
    /// Check a farm config; print every problem as file:line:col.
    Checkconfig { config: PathBuf },
    /// Copy a farm's database (consistently, while the master runs) and its
    /// data dir into DIR, with a manifest of checksums.
    Backup {
        dir: PathBuf,
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Restore a backup into the config's empty (or new) data dir.
    Restore {
        dir: PathBuf,
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply database migrations and exit.
    Upgrade {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Request builds.
    Build(client_cmds::BuildArgs),
    /// List builds, newest first.
    Builds(client_cmds::BuildsArgs),
    /// Show one build with its steps and properties.
    Show {
        build: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a build's log (all steps, or one).
    Log(client_cmds::LogArgs),
    /// Cancel a queued or running build.
    Cancel {
        build: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Keep a build's logs and artifacts whatever the retention rules say.
    Pin {
        build: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Let the retention rules remove a pinned build's files again.
    Unpin {
        build: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove old builds' logs and artifacts, old uploads and rejected
    /// uploads by the master's [retention] rules; print what was freed.
    Gc {
        /// Say what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Build a build again: the same component, target, request properties
    /// and source (the same revision of a change, the same upload).
    Rebuild {
        build: i64,
        /// Follow the new build until it finishes; exit non-zero unless it succeeds.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Download a build's artifacts into a directory (checked by SHA-256).
    Fetch {
        build: i64,
        /// Where to put them (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Upload a source package (.changes, .dsc with its files, or .src.rpm) to build.
    Upload(client_cmds::UploadArgs),
    /// The farm at a glance: version, builders, queue, and the masters sharing the database.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// List workers; drain one for maintenance (it finishes what it runs and takes nothing new), or resume it.
    Workers {
        #[command(subcommand)]
        action: Option<client_cmds::WorkersAction>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Release-build everything (or the named components) with release=true, in dependency order, with a summary.
    Release(release::ReleaseArgs),
    /// Repositories: list, promote, remove, snapshot, roll back, export.
    #[command(subcommand)]
    Repo(repo_cmds::RepoCommand),
    /// Signing keys.
    #[command(subcommand)]
    Key(key_cmds::KeyCommand),
    /// Certificates for TLS: a CA, and certificates for workers, users and the master.
    #[command(subcommand)]
    Cert(cert_cmds::CertCommand),
    /// Users and their permissions: add, list, remove.
    #[command(subcommand)]
    User(user_cmds::UserCommand),
    /// API tokens: create, list, revoke.
    #[command(subcommand)]
    Token(user_cmds::TokenCommand),
    /// Start a demo farm (master + two workers) and build the example components.
    Demo(demo::DemoArgs),
    /// Measure throughput, latency and memory with real processes; writes JSON.
    Bench(bench::BenchArgs),
    /// Time repository index generation against apt-ftparchive, reprepro and createrepo_c; writes JSON.
    BenchRepo(bench_repo::BenchRepoArgs),
    /// Time trivial builds with 1, 2, 3 masters sharing PostgreSQL, and a takeover after kill -9; writes JSON.
    BenchMasters(bench_masters::BenchMastersArgs),
    /// Time the web pages of a big farm (1,400 builders, 100,000 builds); writes JSON.
    BenchUi(bench_ui::BenchUiArgs),
    /// Time a deb build root's setup per build (root step + apt-get update); writes JSON.
    BenchRoots(bench_roots::BenchRootsArgs),
    /// Helpers the standard pipelines' steps run on a worker.
    #[command(subcommand, hide = true)]
    Internal(Internal),
}

#[derive(Subcommand)]
enum Internal {
    /// Make the source package (nightly version unless release=true); print its version.
    DebSource {
        /// The distribution kiln's changelog entry names (the target's suite).
        #[arg(long)]
        distribution: Option<String>,
        /// Where a 3.0 (quilt) tree's upstream tarball comes from: auto, pristine-tar, upstream-tag, tree.
        #[arg(long, default_value = "auto")]
        orig: String,
        /// The upstream tag, %(version)s standing for the upstream version.
        #[arg(long)]
        upstream_tag: Option<String>,
    },
    /// Make or reuse the cached build root and unpack a fresh copy.
    DebRoot {
        #[arg(long)]
        suite: String,
        #[arg(long)]
        mirror: String,
        #[arg(long, default_value = "main")]
        components: String,
        /// A further suite of the archive, `MIRROR SUITE` (repeatable).
        #[arg(long)]
        also: Vec<String>,
        #[arg(long)]
        arch: Option<String>,
        /// Seconds after which the cached root is made again.
        #[arg(long, default_value_t = 15 * 86400)]
        max_age: u64,
        /// Only make sure the cached tarball is fresh (sbuild unpacks it).
        #[arg(long)]
        tarball_only: bool,
    },
    /// Install build dependencies into the root.
    DebDeps {
        /// Seconds the cached package lists of the archive serve.
        #[arg(long, default_value_t = kiln_core::config::DEFAULT_LISTS_MAX_AGE.as_secs())]
        lists_max_age: u64,
    },
    /// `apt-get update` inside the unpacked root (what `deb-deps` starts with).
    RootUpdate,
    /// Build the package.
    DebBuild {
        #[arg(long, default_value = "bwrap")]
        executor: String,
        /// The distribution (sbuild).
        #[arg(long)]
        suite: Option<String>,
        /// The architecture to build for (sbuild).
        #[arg(long)]
        arch: Option<String>,
        /// Files of the build tree to keep when the build fails (repeatable).
        #[arg(long)]
        keep_on_failure: Vec<String>,
    },
    /// Make the source RPM (nightly release unless release=true); print VERSION-RELEASE.
    RpmSource {
        #[arg(long)]
        spec: Option<String>,
    },
    /// Rebuild the source RPM into binary RPMs.
    RpmBuild {
        #[arg(long, default_value = "bwrap")]
        executor: String,
        /// The mock configuration (`mock -r`) for the mock executor.
        #[arg(long)]
        mock_config: Option<String>,
        /// Files of the build tree to keep when the build fails (repeatable).
        #[arg(long)]
        keep_on_failure: Vec<String>,
    },
    /// Copy a failed build's logs from its build tree into the work dir.
    KeepLogs {
        #[arg(long)]
        from: std::path::PathBuf,
        /// More files to keep than the default logs (repeatable).
        #[arg(long)]
        pattern: Vec<String>,
    },
    /// Check a Mercurial revision out into the work dir; print the node id.
    HgCheckout {
        #[arg(long)]
        url: String,
        #[arg(long)]
        branch: String,
        #[arg(long)]
        subdir: Option<String>,
    },
    /// Check a git revision out into the work dir; print the commit id.
    GitCheckout {
        #[arg(long)]
        url: String,
        #[arg(long)]
        branch: String,
        #[arg(long)]
        subdir: Option<String>,
        #[arg(long)]
        submodules: bool,
    },
}

/// Gives SIGPIPE its default action back (Rust ignores it, so a write to a
/// closed pipe would be an error report instead).
#[allow(unsafe_code)]
fn end_quietly_at_closed_pipe() {
    // SAFETY: called first thing in main, before any other thread exists;
    // setting a signal's disposition to its default touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A client command whose output goes to a pipe that closes (`| head`)
    // ends quietly, as other tools do, instead of reporting a write error.
    // Not the master, the worker or what runs them in-process: a peer
    // closing a socket must not end those.
    let serves = matches!(
        cli.command,
        Command::Master { .. }
            | Command::Worker { .. }
            | Command::Internal(_)
            | Command::Demo(_)
            | Command::Bench(_)
            | Command::BenchRepo(_)
            | Command::BenchMasters(_)
            | Command::BenchUi(_)
            | Command::BenchRoots(_)
    );
    if !serves {
        end_quietly_at_closed_pipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The OpenPGP crate warns about packet details of keys it reads
        // fine; that is not for users.
        let default = match cli.command {
            Command::Master { .. } | Command::Worker { .. } => "info,pgp=error",
            _ => "warn,pgp=error",
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A worker waits on its master and its steps' output; one thread does
    // that with fewer wake-ups between threads on the way from a job's
    // arrival to its first step (and a step's spawn does not stall others
    // for long: its report goes out first, see `runner`).
    let rt = if matches!(cli.command, Command::Worker { .. }) {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Master { config, allow_root } => {
            if !allow_root && running_as_root() {
                anyhow::bail!(
                    "kiln master refuses to run as root: it needs no privileges (its own ports, its data dir), \
                     and a root master is a risk and fails in subtle ways (files other users cannot change). \
                     Run it as its own user, or pass --allow-root if you really must"
                );
            }
            let mut m = kiln_master::start(&config).await?;
            eprintln!("kiln master: web and API on http://{}, workers on {}", m.http_addr, m.worker_addr);
            eprintln!("kiln master: admin token in {}", m.admin_token_path.display());
            kiln_master::service_manager::notify(&format!("READY=1\nSTATUS=serving on http://{}", m.http_addr));
            tokio::select! {
                _ = m.wait() => anyhow::bail!("the master stopped unexpectedly"),
                _ = shutdown_signal() => {
                    kiln_master::service_manager::notify("STOPPING=1");
                    eprintln!("kiln master: shutting down; running builds continue on their workers");
                    m.shutdown().await;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            master,
            name,
            token_file,
            targets,
            slots,
            workdir,
            tls_ca,
            tls_cert,
            tls_key,
            refresh_roots,
            root_cache,
            build_user,
            build_uids,
            metrics,
            cache_max_age,
        } => {
            // A root worker runs build steps as an unprivileged user; every
            // worker runs them in a sandbox that hides the worker's own files,
            // unless a root worker is told to run them as root.
            let sandbox = if running_as_root() {
                let name = build_user.as_deref().unwrap_or("nobody");
                let user = kiln_worker::process::BuildUser::named(name)
                    .with_context(|| format!("the build user {name:?} is not in /etc/passwd"))?;
                (user.uid != 0).then_some(Some(user))
            } else {
                Some(None)
            };
            let private: Vec<PathBuf> = token_file.iter().chain(&tls_key).cloned().collect();
            let build_uids = match &build_uids {
                None => Vec::new(),
                Some(_) if !running_as_root() => anyhow::bail!("--build-uids needs a worker running as root"),
                Some(range) => {
                    let uids = parse_uid_range(range)?;
                    if let Some((id, who)) = id_in_use(&uids) {
                        anyhow::bail!(
                            "--build-uids {range}: {id} belongs to {who}; give a range no account or group uses"
                        );
                    }
                    if uids.len() < slots.max(1) as usize {
                        anyhow::bail!("--build-uids {range} holds {} uids; {} slots need one each", uids.len(), slots);
                    }
                    uids
                }
            };
            let sandbox = sandbox.map(|user| kiln_worker::sandbox::Sandbox {
                hide: kiln_worker::sandbox::hidden_paths(&workdir, root_cache.as_deref(), &private),
                user,
            });
            if let Some(f) = &token_file {
                warn_if_others_can_read(f);
            }
            let token = match &token_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the token file {}", f.display()))?
                    .trim()
                    .to_string(),
                None if tls_cert.is_some() => String::new(),
                None => anyhow::bail!("a worker needs --token-file, or --tls-cert and --tls-key"),
            };
            let opts = kiln_worker::WorkerOptions {
                masters: master,
                name,
                token,
                targets,
                slots: slots.max(1),
                workdir,
                tls_ca,
                tls_identity: tls_cert.zip(tls_key),
                refresh_roots,
                root_cache,
                sandbox,
                build_uids,
                metrics,
                cache_max_age,
            };
            tokio::select! {
                r = kiln_worker::run(opts) => r?,
                _ = shutdown_signal() => eprintln!("kiln worker: shutting down"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkconfig { config } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {}", config.display()))?;
            match kiln_core::config::parse(&text) {
                Ok(cfg) => {
                    let builders = kiln_core::matrix::builders(&cfg).count();
                    println!(
                        "config is good: {} components × {} targets = {builders} builders, {} workers",
                        cfg.components.len(),
                        cfg.targets.len(),
                        cfg.workers.len()
                    );
                    for w in kiln_core::config::warnings(&cfg) {
                        eprintln!("warning: {w}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}", e.render(&config.display().to_string()));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Backup { dir, config } => {
            let c = kiln_master::backup::backup(&config, &dir).await?;
            println!(
                "backed up {} files ({}) into {}{}",
                c.files,
                kiln_core::size::format_bytes(c.bytes),
                dir.display(),
                if c.database {
                    ", the database included"
                } else {
                    "; the database is PostgreSQL: back it up with pg_dump"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { dir, config } => {
            let c = kiln_master::backup::restore(&dir, &config).await?;
            println!(
                "restored {} files ({}) from {}; start the master (it upgrades the database if it is older)",
                c.files,
                kiln_core::size::format_bytes(c.bytes),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Upgrade { config } => {
            let n = kiln_master::upgrade(&config).await?;
            println!("applied {n} migration(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => client_cmds::build(args).await,
        Command::Builds(args) => client_cmds::builds(args).await,
        Command::Show { build, remote } => client_cmds::show(build, &remote).await,
        Command::Log(args) => client_cmds::log(args).await,
        Command::Cancel { build, remote } => client_cmds::cancel(build, &remote).await,
        Command::Pin { build, remote } => client_cmds::pin(build, true, &remote).await,
        Command::Unpin { build, remote } => client_cmds::pin(build, false, &remote).await,
        Command::Gc { dry_run, remote } => client_cmds::gc(dry_run, &remote).await,
        Command::Rebuild { build, follow, remote } => client_cmds::rebuild(build, follow, &remote).await,
        Command::Workers { action, remote } => client_cmds::workers(action, &remote).await,
        Command::Status { remote } => client_cmds::status(&remote).await,
        Command::Upload(args) => client_cmds::upload(args).await,
        Command::Fetch { build, dir, remote } => client_cmds::fetch(build, &dir, &remote).await,
        Command::Release(args) => release::release(args).await,
        Command::Repo(cmd) => repo_cmds::repo(cmd).await,
        Command::Key(cmd) => key_cmds::key(cmd).await,
        Command::Cert(cmd) => cert_cmds::cert(cmd),
        Command::User(cmd) => user_cmds::user(cmd).await,
        Command::Token(cmd) => user_cmds::token(cmd).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchMasters(args) => bench_masters::run(args).await,
        Command::BenchUi(args) => bench_ui::run(args).await,
        Command::BenchRoots(args) => tokio::task::spawn_blocking(move || bench_roots::run(args)).await?,
        Command::BenchRepo(args) => tokio::task::spawn_blocking(move || bench_repo::run(args)).await?,
        Command::Internal(cmd) => {
            use kiln_worker::pipeline;
            match cmd {
                Internal::DebSource { distribution, orig, upstream_tag } => {
                    let source = kiln_core::config::OrigSource::parse(&orig)
                        .with_context(|| format!("--orig {orig:?}: not auto, pristine-tar, upstream-tag or tree"))?;
                    let mut rule = kiln_core::config::OrigRule { source, ..Default::default() };
                    if let Some(tag) = upstream_tag {
                        rule.upstream_tag = tag;
                    }
                    pipeline::deb_source(&pipeline::SourceOptions { distribution, orig: rule })?
                }
                Internal::DebRoot { suite, mirror, components, also, arch, max_age, tarball_only } => {
                    let max_age = std::time::Duration::from_secs(max_age);
                    let o = pipeline::RootOptions { suite, mirror, components, also, arch, max_age, tarball_only };
                    pipeline::deb_root(&o)?
                }
                Internal::DebDeps { lists_max_age } => {
                    pipeline::deb_deps(std::time::Duration::from_secs(lists_max_age))?
                }
                Internal::RootUpdate => pipeline::root_update()?,
                Internal::DebBuild { executor, suite, arch, keep_on_failure } => {
                    pipeline::deb_build(&executor, suite.as_deref(), arch.as_deref(), &keep_on_failure)?
                }
                Internal::RpmSource { spec } => pipeline::rpm_source(spec.as_deref())?,
                Internal::RpmBuild { executor, mock_config, keep_on_failure } => {
                    pipeline::rpm_build(&executor, mock_config.as_deref(), &keep_on_failure)?
                }
                Internal::KeepLogs { from, pattern } => pipeline::keep_logs(&from, &pattern)?,
                Internal::HgCheckout { url, branch, subdir } => {
                    kiln_worker::hg_checkout::hg_checkout(&url, &branch, subdir.as_deref())?
                }
                Internal::GitCheckout { url, branch, subdir, submodules } => {
                    kiln_worker::checkout::git_checkout(&url, &branch, subdir.as_deref(), submodules)?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether `tool` is a file in one of `PATH`'s directories.
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Warns when a file holding a secret (a worker's token) can be read by
/// users other than its owner: whoever reads it can act as that worker.
fn warn_if_others_can_read(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:o}"),
                "the token file can be read by other users, who could then act as this worker; chmod 600 it"
            );
        }
    }
}

/// The first id of `ids` that an account (`/etc/passwd`) or a group
/// (`/etc/group`) has, with its name: builds take the gid of their uid too.
fn id_in_use(ids: &[u32]) -> Option<(u32, String)> {
    let (lo, hi) = (*ids.first()?, *ids.last()?);
    ["/etc/passwd", "/etc/group"].iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id: u32 = f.get(2)?.parse().ok()?;
            (lo..=hi).contains(&id).then(|| (id, f[0].to_string()))
        })
    })
}

/// `FIRST-LAST` as the uids in it; ids under 1000 (system accounts) and
/// ranges over 65,536 are refused.
fn parse_uid_range(range: &str) -> anyhow::Result<Vec<u32>> {
    let bad = || anyhow::anyhow!("--build-uids {range:?}: expected FIRST-LAST from 1000 up, e.g. 100000-100063");
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let (first, last): (u32, u32) = (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?);
    if first < 1000 || last < first || last - first >= 65_536 {
        return Err(bad());
    }
    Ok((first..=last).collect())
}

#[cfg(test)]
mod tests {
    use super::parse_uid_range;

    #[test]
    fn uid_ranges_are_first_to_last() {
        assert_eq!(parse_uid_range("100000-100002").expect("range"), [100000, 100001, 100002]);
        // nobody's id (65534) is an account's: not a build uid.
        assert!(super::id_in_use(&[65530, 65531, 65532, 65533, 65534]).is_some_and(|(id, _)| id == 65534));
        for bad in ["", "5", "0-3", "9-3", "a-b", "1000-70000", "100000-", "30-60"] {
            assert!(parse_uid_range(bad).is_err(), "{bad}");
        }
    }
}
