//! The worker port: accepts connections (plain TCP or TLS), admits a
//! worker by its hello (protocol version, then a certificate from the
//! workers' CA naming it, or its token), hands it to the dispatcher, then
//! relays messages both ways. Log output goes straight to the log store so
//! it never waits behind the queue.

use crate::caller::tokens_match;
use crate::events::Event;
use crate::shared::Shared;
use futures::{SinkExt, StreamExt};
use kiln_proto::wire::{self, Hello, MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the worker port");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let address = addr.to_string();
            match tls {
                Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        // A verified client certificate (from the workers' CA) names its worker.
                        let certified =
                            s.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c));
                        connection(s, address, certified, shared).await
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(address, error = %e, "TLS handshake with a worker failed")
                    }
                    Err(_) => tracing::warn!(address, "TLS handshake with a worker timed out"),
                },
                None => connection(stream, address, None, shared).await,
            }
        });
    }
}

/// The common name of a certificate's subject.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    address: String,
    certified: Option<String>,
    shared: Arc<Shared>,
) {
    // Small frames until the worker is known (its hello is a few hundred bytes).
    let mut framed = Framed::new(stream, wire::hello_codec());
    let first = tokio::time::timeout(Duration::from_secs(10), framed.next()).await;
    let hello = match first {
        Ok(Some(Ok(frame))) => match wire::decode::<WorkerMsg>(&frame) {
            Ok(WorkerMsg::Hello(h)) => h,
            Ok(_) => return refuse(&mut framed, "the first message must be a hello").await,
            Err(e) => return refuse(&mut framed, &e.to_string()).await,
        },
        _ => return,
    };
    if let Err(reason) = admit(&shared, &hello, certified.as_deref(), &address) {
        return refuse(&mut framed, &reason).await;
    }
    framed.codec_mut().set_max_frame_length(wire::MAX_FRAME);
    let name = hello.name.clone();
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<MasterMsg>();
    let (reply_tx, reply_rx) = oneshot::channel();
    shared.send(Event::Hello { conn, hello: Box::new(hello), address, tx, reply: reply_tx });
    // Not taken here now: closing sends the worker to another master.
    let Ok(Some(abandon)) = reply_rx.await else { return };
    let master_cfg = shared.farm().cfg.master.clone();
    let heartbeat = master_cfg.heartbeat;
    // Workers fence themselves well before the master re-queues their builds.
    let fence_ms = (master_cfg.worker_timeout.as_millis() as u64 * 2 / 3).max(heartbeat.as_millis() as u64 * 2);
    let welcome = MasterMsg::Welcome { heartbeat_ms: heartbeat.as_millis() as u64, fence_ms, abandon };
    if framed.send(wire::encode(&welcome)).await.is_err() {
        shared.send(Event::Gone { conn, worker: name });
        return;
    }
    let (mut sink, mut stream) = framed.split();
    let writer = async {
        let mut ping = tokio::time::interval(heartbeat);
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = ping.tick() => MasterMsg::Ping,
            };
            if sink.send(wire::encode(&msg)).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        // Log output and artifact pieces bypass the dispatcher; they still
        // show the worker is alive (a big upload over a slow link can keep
        // its heartbeats queued for longer than the timeout).
        let mut noted = tokio::time::Instant::now();
        while let Some(Ok(frame)) = stream.next().await {
            if noted.elapsed() >= Duration::from_secs(1) {
                noted = tokio::time::Instant::now();
                shared.send(Event::Seen { conn, worker: name.clone() });
            }
            match wire::decode::<WorkerMsg>(&frame) {
                Ok(WorkerMsg::Log { build_id, step, offset, data }) => {
                    if let Err(e) = shared.logs.append(build_id, &name, step, offset, &data) {
                        tracing::error!(build = build_id, error = %e, "cannot store log output");
                    }
                }
                Ok(WorkerMsg::ArtifactChunk { build_id, name: file, offset, data }) => {
                    if shared.logs.is_running_on(build_id, &name) {
                        tokio::task::block_in_place(|| shared.artifacts.chunk(conn, build_id, &file, offset, &data));
                    }
                }
                Ok(WorkerMsg::ArtifactDone { build_id, name: file, size, sha256 }) => {
                    if !shared.logs.is_running_on(build_id, &name) {
                        continue;
                    }
                    let stored =
                        tokio::task::block_in_place(|| shared.artifacts.done(conn, build_id, &file, size, &sha256));
                    if let Some(st) = stored {
                        let row =
                            kiln_db::ArtifactRow { build_id, name: file, size: st.size as i64, sha256: st.sha256 };
                        if let Err(e) = shared.store.add_artifact(&row).await {
                            tracing::error!(build = build_id, error = %e, "cannot record an artifact");
                        }
                    }
                }
                Ok(msg) => shared.send(Event::FromWorker { conn, worker: name.clone(), msg }),
                Err(e) => {
                    tracing::warn!(worker = %name, error = %e, "closing connection after a malformed message");
                    break;
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    shared.send(Event::Gone { conn, worker: name });
}

/// Whether a worker may connect: it speaks this master's protocol, is
/// declared in the config, and shows a certificate from the workers' CA
/// that names it or its token. A certificate naming another worker is
/// refused outright. The reason goes back to the worker.
fn admit(shared: &Shared, hello: &Hello, certified: Option<&str>, address: &str) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported; this master speaks {PROTOCOL_VERSION}",
            hello.protocol
        ));
    }
    let farm = shared.farm();
    let declared = farm.cfg.workers.iter().any(|w| w.name == hello.name);
    let by_cert = certified == Some(hello.name.as_str());
    let by_token = farm.worker_tokens.get(&hello.name).is_some_and(|t| tokens_match(t, &hello.token));
    if let Some(other) = certified.filter(|c| *c != hello.name) {
        tracing::warn!(worker = %hello.name, certificate = other, address = %address, "refused a worker: its certificate names another");
        return Err(format!("the certificate names worker {other}, not {}", hello.name));
    }
    if !(declared && (by_cert || by_token)) {
        tracing::warn!(worker = %hello.name, address = %address, "refused a worker: unknown name or wrong token");
        return Err("unknown worker or wrong token".into());
    }
    Ok(())
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    reason: &str,
) {
    let _ = framed.send(wire::encode(&MasterMsg::Refused { reason: reason.to_string() })).await;
}
