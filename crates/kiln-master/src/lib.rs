//! The kiln master: loads the farm config, opens the store, and serves the
//! HTTP API (with change hooks) and the worker port, with one dispatcher
//! deciding what runs where.
//!
//! Code map: [`farm`] loads the config from disk; [`dispatcher`] owns the
//! queue; [`workers`] speaks the worker protocol; [`api`] is the HTTP side;
//! [`logs`] stores step logs; [`reload`] applies config changes live.

pub mod api;
mod artifacts;
mod auth;
mod clock;
pub mod dispatcher;
pub mod farm;
mod hooks;
mod irc;
pub mod logs;
mod notify;
mod poller;
pub mod publisher;
mod reload;
mod repos;
pub mod scheduler;
mod shared;
mod source;
mod status;
pub mod uploads;
pub mod web;
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
    let store = Store::connect(&farm.database_url()).await.context("cannot open the database")?;
    let n = store.migrate().await.context("migration failed")?;
    store.close().await;
    Ok(n)
}

/// Starts a master from a config file: binds both ports, recovers the queue
/// and begins serving.
pub async fn start(config: &Path) -> anyhow::Result<RunningMaster> {
    let farm = load(config)?;
    let data_dir = farm.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let store = Store::open(&farm.database_url()).await.context("cannot open the database")?;
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
        Some(files) => Some(tls_acceptor(&farm.resolve(&files.cert), &farm.resolve(&files.key))?),
        None => None,
    };
    let (http_addr, worker_addr) = (http.local_addr()?, wl.local_addr()?);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let artifacts = artifacts::ArtifactStore::new(&data_dir, farm.cfg.master.max_artifact_size)
        .context("cannot create the artifact store")?;
    scheduler::check(&farm.cfg)?;
    let keys = publisher::load_keys(&farm)?;
    let public_keys =
        keys.iter().map(|(c, k)| Ok((c.clone(), k.public_armored()?))).collect::<Result<_, kiln_repo::RepoError>>()?;
    let (publish_tx, publish_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared =
        Arc::new(Shared::new(store.clone(), logs, artifacts, farm, token.clone(), tx, publish_tx, public_keys));
    let mut publisher = publisher::Publisher::new(shared.clone(), keys);
    publisher.catch_up().await;
    let mut dispatcher = dispatcher::Dispatcher::new(shared.clone());
    dispatcher.recover().await.context("cannot load the queue from the database")?;

    let mut tasks = JoinSet::new();
    tasks.spawn(dispatcher.run(rx));
    tasks.spawn(publisher.run(publish_rx));
    tasks.spawn(workers::serve(wl, tls, shared.clone()));
    tasks.spawn(reload::watch(shared.clone()));
    tasks.spawn(scheduler::run(shared.clone()));
    tasks.spawn(poller::run(shared.clone()));
    tasks.spawn(irc::run(shared.clone()));
    let app = api::router(shared.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    tasks.spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%http_addr, %worker_addr, "kiln master running");
    Ok(RunningMaster { http_addr, worker_addr, admin_token_path: token_path, admin_token: token, tasks, store })
}

fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("cannot open {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("cannot open {}", key.display()))?,
    ))
    .with_context(|| format!("cannot read the private key {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the worker TLS certificate and key do not fit together")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
