//! The kiln master: loads the farm config, opens the store, and serves the
//! web port (API, hooks, pages, repositories) and the worker port, with one
//! dispatcher deciding what runs where and one publisher writing channels.
//!
//! Code map: [`ops`] is every operation, whatever door it comes in by;
//! [`http`] is the web port; [`dispatch`] owns the queue; [`publish`]
//! writes the repositories; [`workers`] speaks the worker protocol;
//! [`triggers`] and [`reporters`] are the master's own tasks; [`events`]
//! and [`caller`] are the leaves everything shares. `start` only wires.

mod artifacts;
mod auth;
pub mod backup;
mod buildable;
mod caller;
mod clock;
mod dispatch;
mod events;
pub mod farm;
mod http;
mod lease;
pub mod logs;
mod metrics;
mod mirrors;
mod news;
mod ops;
mod plan;
mod publish;
mod reload;
mod reporters;
pub mod service_manager;
mod shared;
mod source;
mod triggers;
mod uploads;
mod workers;

use anyhow::Context;
use farm::LoadedFarm;
use kiln_db::Store;
use shared::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::rustls;

/// A master started in this process.
pub struct RunningMaster {
    pub http_addr: SocketAddr,
    pub worker_addr: SocketAddr,
    pub admin_token_path: PathBuf,
    pub admin_token: String,
    tasks: JoinSet<()>,
    store: Store,
}

impl RunningMaster {
    /// Runs until a task ends (they do not, short of a failure).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }

    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        self.store.close().await;
    }
}

fn load(config: &Path) -> anyhow::Result<LoadedFarm> {
    LoadedFarm::load(config).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Applies pending database migrations and returns how many ran.
pub async fn upgrade(config: &Path) -> anyhow::Result<usize> {
    let farm = load(config)?;
    std::fs::create_dir_all(farm.data_dir())
        .with_context(|| format!("cannot create data_dir {}", farm.data_dir().display()))?;
    let (store, n) = open_store(&farm, None).await?;
    store.close().await;
    Ok(n)
}

/// Opens the database and brings its schema to this kiln's version, unless
/// it is newer or a live master sharing it knows only an older one
/// ([`kiln_core::schema::plan`]); returns the store and how many
/// migrations ran. `me`: this master's id, whose own earlier lease is not
/// another master's.
async fn open_store(farm: &LoadedFarm, me: Option<&str>) -> anyhow::Result<(Store, usize)> {
    use kiln_core::schema::{plan, LiveMaster, SchemaPlan};
    let store = Store::connect_as(&farm.database_url(), me).await.context("cannot open the database")?;
    let found = store.found_schema_version().await.context("cannot read the database's schema version")?;
    let now = clock::now_us();
    let live: Vec<LiveMaster> = store
        .leases(found)
        .await
        .context("cannot read the leases of masters sharing the database")?
        .into_iter()
        .filter(|(id, heartbeat, _)| Some(id.as_str()) != me && lease::alive(*heartbeat, farm.cfg.master.lease, now))
        .map(|(id, _, knows)| LiveMaster { id, knows })
        .collect();
    let ran = match plan(found, kiln_db::latest_schema_version(), &live)? {
        SchemaPlan::Use => 0,
        SchemaPlan::Migrate { .. } => store.migrate().await.context("migration failed")?,
    };
    Ok((store, ran))
}

/// Each worker and each web client holds a connection: a farm of a
/// thousand workers needs more than the usual soft limit of 1,024 open
/// files, so the master takes what the hard limit allows (an unlimited
/// hard limit is left alone: the kernel refuses an unlimited soft one).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = rustix::process::Rlimit { current: Some(maximum), maximum: Some(maximum) };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "cannot raise the open file limit");
            }
        }
    }
}

/// Starts a master from a config file: binds both ports, recovers the queue
/// and begins serving.
pub async fn start(config: &Path) -> anyhow::Result<RunningMaster> {
    let farm = load(config)?;
    raise_open_file_limit();
    let data_dir = farm.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let logs = logs::LogStore::new(&data_dir).context("cannot create the log directory")?;
    let (token, token_path, created) = auth::admin_token(&data_dir).context("cannot read or create the admin token")?;
    if created {
        tracing::info!(path = %token_path.display(), "wrote a new admin API token");
    }
    let http = TcpListener::bind(farm.cfg.master.listen)
        .await
        .with_context(|| format!("cannot listen on {}", farm.cfg.master.listen))?;
    let wl = TcpListener::bind(farm.cfg.master.worker_listen)
        .await
        .with_context(|| format!("cannot listen for workers on {}", farm.cfg.master.worker_listen))?;
    let tls = match &farm.cfg.master.worker_tls {
        Some(files) => {
            let client_ca = files.client_ca.as_ref().map(|c| farm.resolve(c));
            Some(tls_acceptor(&farm.resolve(&files.cert), &farm.resolve(&files.key), client_ca.as_deref())?)
        }
        None => None,
    };
    let web_tls = match &farm.cfg.master.tls {
        Some(files) => {
            let client_ca = files.client_ca.as_ref().map(|c| farm.resolve(c));
            Some(tls_acceptor(&farm.resolve(&files.cert), &farm.resolve(&files.key), client_ca.as_deref())?)
        }
        None => None,
    };
    let header_timeout = farm.cfg.master.header_timeout;
    let (http_addr, worker_addr) = (http.local_addr()?, wl.local_addr()?);
    // Masters sharing the database know each other by their leases; the
    // builds this one claims are its own.
    let master_id = lease::master_id(http_addr.port());
    let farm_lease = farm.cfg.master.lease;
    // Before the lease: generating a channel's RSA key takes seconds, and
    // a lease taken before it could lapse before it is first renewed.
    let (keys, public_keys) = {
        let farm = farm.clone();
        tokio::task::spawn_blocking(move || publish::KeyCache::load(&farm))
            .await
            .context("loading the channels' keys")??
    };
    let (store, _) = open_store(&farm, Some(&master_id)).await?;
    let store = store.for_master(&master_id);
    let epoch =
        lease::take(&store, &http_addr.to_string()).await.context("cannot take this master's lease in the database")?;
    tracing::info!(master = %master_id, epoch, "holding this master's lease");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let artifacts = artifacts::ArtifactStore::new(&data_dir, &master_id, farm.cfg.master.max_artifact_size)
        .context("cannot create the artifact store")?;
    triggers::schedule::check(&farm.cfg)?;
    let (publish_tx, publish_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared =
        Arc::new(Shared::new(store.clone(), logs, artifacts, farm, token.clone(), tx, publish_tx, public_keys));
    let mut publisher = publish::Publisher::new(shared.clone(), keys);
    publisher.catch_up_locked().await;
    let mut dispatcher = dispatch::Dispatcher::new(shared.clone());
    let (check_tx, check_rx) = tokio::sync::mpsc::unbounded_channel();
    dispatcher.check_build_deps_with(check_tx);
    dispatcher.recover().await.context("cannot load the queue from the database")?;

    let mut tasks = JoinSet::new();
    tasks.spawn(lease::keep(shared.clone(), http_addr.to_string(), farm_lease));
    tasks.spawn(news::listen(shared.clone()));
    tasks.spawn(buildable::run(shared.clone(), check_rx));
    tasks.spawn(dispatcher.run(rx));
    tasks.spawn(publisher.run(publish_rx));
    tasks.spawn(workers::serve(wl, tls, shared.clone()));
    tasks.spawn(reload::watch(shared.clone()));
    tasks.spawn(triggers::schedule::run(shared.clone()));
    tasks.spawn(triggers::poller::run(shared.clone()));
    tasks.spawn(triggers::incoming::run(shared.clone()));
    tasks.spawn(triggers::retention::run(shared.clone()));
    tasks.spawn(reporters::irc::run(shared.clone()));
    // Spans name the path, never the query: a token may be in it.
    let app = http::router(shared.clone()).layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |req: &axum::http::Request<_>| {
            let target = kiln_core::redact::target_for_logs(req.uri().path(), req.uri().query());
            tracing::debug_span!("request", method = %req.method(), target = %target)
        },
    ));
    tasks.spawn(serve_http(http, web_tls, header_timeout, app));
    tracing::info!(%http_addr, %worker_addr, "kiln master running");
    Ok(RunningMaster { http_addr, worker_addr, admin_token_path: token_path, admin_token: token, tasks, store })
}

/// Serves the web pages and API on `listener`, over TLS when `tls` is set.
/// A client gets `deadline` to send a request's headers (and to finish a
/// TLS handshake): slow clients cannot hold connections open for ever.
async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    deadline: std::time::Duration,
    app: axum::Router,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the web port");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(deadline);
            // An HTTP/2 peer that stops answering pings is dropped, and it
            // may not open streams without bound.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(deadline))
                .keep_alive_timeout(deadline)
                .max_concurrent_streams(64);
            // Each request knows the address it came from (failed logins
            // are counted by it).
            let peer_addr = caller::PeerAddr(addr.ip());
            let app =
                tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer_addr);
                    req
                });
            let served = match tls {
                None => builder.serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(app)).await,
                Some(acceptor) => match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // A verified client certificate (from the users' CA) names its user.
                        let peer = caller::PeerCertificate(
                            stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| workers::common_name(c)),
                        );
                        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                            app,
                            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                                req.extensions_mut().insert(peer.clone());
                                req
                            },
                        ));
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed on the web port");
                        return;
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "web connection ended with an error");
            }
        });
    }
}

/// A TLS acceptor for the certificate and key; with `client_ca`, clients
/// may present a certificate from that CA (and only that CA), which then
/// names them (mutual TLS). Clients without one still connect (a token).
fn tls_acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = kiln_proto::tls::certificates(cert)?;
    let key = kiln_proto::tls::private_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = kiln_proto::tls::roots(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("cannot use {} as a client CA", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("the TLS certificate {} and its key do not fit together", cert.display()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
