//! The IRC bot: one client connection to the `[irc]` server, in the
//! channels the config and the IRC notifiers name. It says what notifiers
//! hand it (failures, fixes) and answers `status` (`kiln: status` in a
//! channel, `!status`, or `status` in a private message). It reconnects
//! with backoff when the server goes away and when `[irc]` changes; it
//! never holds up a build (messages go through a queue, dropped with a
//! warning while there is no connection).

use crate::events::Say;
use crate::shared::Shared;
use futures::{SinkExt, StreamExt};
use kiln_core::config::{Irc, NotifyVia};
use kiln_core::BuildState;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_util::codec::{Framed, LinesCodec};

/// Servers cut lines at 512 bytes including the prefix they add.
const MAX_TEXT: usize = 400;
/// Queued lines kept while not connected or not yet joined.
const MAX_PENDING: usize = 100;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What a session was started with; a change means reconnecting.
#[derive(PartialEq)]
struct Setup {
    irc: Irc,
    channels: BTreeSet<String>,
}

fn setup(shared: &Shared) -> Option<Setup> {
    let farm = shared.farm();
    let irc = farm.cfg.irc.clone()?;
    let mut channels: BTreeSet<String> = irc.channels.iter().cloned().collect();
    for n in &farm.cfg.notifiers {
        if let NotifyVia::Irc { channel } = &n.via {
            channels.insert(channel.clone());
        }
    }
    Some(Setup { irc, channels })
}

pub async fn run(shared: Arc<Shared>) {
    let Some(mut rx) = shared.chat_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    let mut pending: VecDeque<Say> = VecDeque::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(setup) = setup(&shared) else {
            // No bot configured: drop what arrives, look at the config again later.
            let _ = tokio::time::timeout(Duration::from_secs(10), async { while rx.recv().await.is_some() {} }).await;
            continue;
        };
        match session(&shared, &setup, &mut rx, &mut pending).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(server = %setup.irc.server, error = %e, "IRC connection lost; reconnecting in {}s", backoff.as_secs());
                let until = tokio::time::Instant::now() + backoff;
                // Keep taking (and queueing) messages while waiting.
                while let Ok(Some(say)) = tokio::time::timeout_at(until, rx.recv()).await {
                    queue(&mut pending, say);
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

fn queue(pending: &mut VecDeque<Say>, say: Say) {
    if pending.len() >= MAX_PENDING {
        tracing::warn!("IRC queue full; dropping the oldest message");
        pending.pop_front();
    }
    pending.push_back(say);
}

async fn connect(irc: &Irc) -> anyhow::Result<Box<dyn Stream>> {
    use anyhow::Context;
    let tcp = tokio::time::timeout(Duration::from_secs(15), tokio::net::TcpStream::connect(&irc.server))
        .await
        .context("timed out connecting")??;
    if !irc.tls {
        return Ok(Box::new(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = irc.server.rsplit_once(':').map(|(h, _)| h).unwrap_or(&irc.server);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok(Box::new(tls))
}

/// One line, safe to send: no line breaks, at most [`MAX_TEXT`] bytes.
fn clean(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_TEXT {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// A parsed server line: prefix nick, command, params (trailing included).
fn parse(line: &str) -> Option<(Option<&str>, &str, Vec<&str>)> {
    let mut rest = line.trim_end_matches('\r');
    let mut prefix = None;
    if let Some(r) = rest.strip_prefix(':') {
        let (p, r) = r.split_once(' ')?;
        prefix = Some(p.split('!').next().unwrap_or(p));
        rest = r;
    }
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut params = Vec::new();
    while !rest.is_empty() {
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
        if !p.is_empty() {
            params.push(p);
        }
        rest = r;
    }
    Some((prefix, command, params))
}

async fn session(
    shared: &Arc<Shared>,
    setup: &Setup,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Say>,
    pending: &mut VecDeque<Say>,
) -> anyhow::Result<()> {
    let irc = &setup.irc;
    let stream = connect(irc).await?;
    let mut conn = Framed::new(stream, LinesCodec::new_with_max_length(8192));
    let farm = shared.farm();
    if let Some(p) = &irc.password {
        let pass = farm.secret(p, "[irc] password")?;
        conn.send(format!("PASS {pass}")).await?;
    }
    let mut nick = irc.nick.clone();
    conn.send(format!("NICK {nick}")).await?;
    conn.send(format!("USER {nick} 0 * :kiln build farm")).await?;
    let mut joined: BTreeSet<String> = BTreeSet::new();
    let mut check = tokio::time::interval(Duration::from_secs(10));
    let mut last_sent = tokio::time::Instant::now();
    loop {
        // Say what is queued for channels already joined, gently (servers
        // disconnect clients that flood).
        while let Some(i) = pending.iter().position(|s| joined.contains(&s.channel)) {
            let Some(say) = pending.remove(i) else { break };
            let gap = Duration::from_millis(400);
            if last_sent.elapsed() < gap {
                tokio::time::sleep(gap - last_sent.elapsed()).await;
            }
            conn.send(format!("PRIVMSG {} :{}", say.channel, clean(&say.text))).await?;
            last_sent = tokio::time::Instant::now();
        }
        tokio::select! {
            line = conn.next() => {
                let line = match line {
                    Some(l) => l?,
                    None => anyhow::bail!("the server closed the connection"),
                };
                let Some((from, command, params)) = parse(&line) else { continue };
                match command {
                    "PING" => conn.send(format!("PONG :{}", params.first().copied().unwrap_or(""))).await?,
                    "001" => {
                        tracing::info!(server = %irc.server, nick = %nick, "IRC connected");
                        for c in &setup.channels {
                            conn.send(format!("JOIN {c}")).await?;
                        }
                    }
                    // Nickname in use: take another.
                    "433" => {
                        nick.push('_');
                        anyhow::ensure!(nick.len() <= 30, "no free nickname");
                        conn.send(format!("NICK {nick}")).await?;
                    }
                    "JOIN" if from == Some(nick.as_str()) => {
                        if let Some(c) = params.first() {
                            joined.insert(c.to_string());
                        }
                    }
                    "ERROR" => anyhow::bail!("server error: {}", params.join(" ")),
                    "PRIVMSG" => {
                        let (Some(target), Some(text), Some(from)) = (params.first(), params.get(1), from) else { continue };
                        let text = text.trim();
                        let private = target.eq_ignore_ascii_case(&nick);
                        let asked = if private {
                            text.eq_ignore_ascii_case("status") || text.eq_ignore_ascii_case("!status")
                        } else {
                            text.eq_ignore_ascii_case("!status")
                                || text
                                    .strip_prefix(nick.as_str())
                                    .map(|r| r.trim_start_matches([':', ',']).trim())
                                    .is_some_and(|r| r.eq_ignore_ascii_case("status"))
                        };
                        if asked {
                            let reply_to = if private { from.to_string() } else { target.to_string() };
                            let text = status_line(shared).await;
                            conn.send(format!("PRIVMSG {reply_to} :{}", clean(&text))).await?;
                            last_sent = tokio::time::Instant::now();
                        }
                    }
                    _ => {}
                }
            }
            say = rx.recv() => {
                match say {
                    Some(say) => queue(pending, say),
                    None => return Ok(()),
                }
            }
            _ = check.tick() => {
                if self::setup(shared).as_ref() != Some(setup) {
                    let _ = conn.send("QUIT :configuration changed".to_string()).await;
                    return Ok(());
                }
            }
        }
    }
}

/// One line about the farm: builders by last result, what runs and waits.
pub async fn status_line(shared: &Shared) -> String {
    let stats = shared.builder_stats().await;
    let mut failed: Vec<String> = Vec::new();
    let (mut ok, mut running, mut queued) = (0, 0, 0);
    for b in stats.iter() {
        match b.last_state {
            BuildState::Succeeded => ok += 1,
            BuildState::Failed => failed.push(format!("{}/{}", b.component, b.target)),
            _ => {}
        }
        running += b.running;
        queued += b.queued;
    }
    let mut line =
        format!("{} builders: {ok} green, {} failing, {running} building, {queued} queued", stats.len(), failed.len());
    if !failed.is_empty() {
        let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
        line.push_str(&format!(" — failing: {}", shown.join(", ")));
        if failed.len() > 5 {
            line.push_str(&format!(" and {} more", failed.len() - 5));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_are_parsed() {
        assert_eq!(
            parse(":ann!a@127.0.0.1 PRIVMSG #builds :kiln: status"),
            Some((Some("ann"), "PRIVMSG", vec!["#builds", "kiln: status"]))
        );
        assert_eq!(parse("PING :irc.test"), Some((None, "PING", vec!["irc.test"])));
        assert_eq!(parse(":irc.test 001 kiln :Welcome"), Some((Some("irc.test"), "001", vec!["kiln", "Welcome"])));
        assert_eq!(clean("a\r\nPRIVMSG #x :evil"), "a  PRIVMSG #x :evil");
        assert!(clean(&"é".repeat(400)).len() <= MAX_TEXT + 3);
    }
}
