//! Following a request's builds until they all finish: an indicatif display
//! on a terminal, one plain line per change otherwise.

use crate::output::{activity, build_line, current_step, elapsed, human_secs};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_client::{BuildQuery, Client};
use kiln_core::BuildState;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(250);

/// Running builds whose last log line the terminal display shows.
const TAILED: usize = 8;

/// The last line a running build's current step printed (from its log's
/// last 2 KiB), for the terminal display.
async fn last_log_line(client: &Client, b: &kiln_proto::api::Build) -> Option<String> {
    let step = b.steps.iter().find(|s| s.state == kiln_core::StepState::Running)?;
    let from = (step.log_size as u64).saturating_sub(2048);
    let chunk = client.log(b.id, &step.index.to_string(), from).await.ok()?;
    let line = chunk.data.lines().rev().find(|l| !l.trim().is_empty())?;
    // No escape sequences from a build onto the user's terminal.
    Some(crate::output::terminal_safe(line).chars().filter(|c| *c != '\t').take(80).collect())
}

/// For a client command: as [`follow_request`], and Ctrl-C stops following
/// (the builds go on on the farm) and says so.
pub async fn follow_request_from_client(client: &Client, request_id: i64, json: bool) -> anyhow::Result<bool> {
    tokio::select! {
        followed = follow_request(client, request_id, json) => followed,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nstopped following; the builds of request #{request_id} go on (kiln builds to see them, kiln cancel ID to stop one)");
            std::process::exit(130);
        }
    }
}

/// Returns whether every build succeeded.
pub async fn follow_request(client: &Client, request_id: i64, json: bool) -> anyhow::Result<bool> {
    let tty = std::io::stderr().is_terminal() && !json;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<i64, ProgressBar> = HashMap::new();
    let mut last: HashMap<i64, String> = HashMap::new();
    loop {
        let page =
            client.builds(&BuildQuery { request: Some(request_id), limit: Some(1000), ..Default::default() }).await?;
        let builds = page.builds;
        for b in &builds {
            let step = current_step(b).unwrap_or("-").to_string();
            let key = format!("{} {}", b.state, if b.state == BuildState::Running { step.as_str() } else { "" });
            if tty {
                let bar = bars.entry(b.id).or_insert_with(|| {
                    let pb = multi.add(ProgressBar::new_spinner());
                    pb.set_style(style.clone());
                    pb.enable_steady_tick(Duration::from_millis(120));
                    pb
                });
                let dur =
                    elapsed(b.started_at.as_deref(), b.finished_at.as_deref()).map(human_secs).unwrap_or_default();
                let mut msg = format!(
                    "#{:<6} {:<10} {:<24} {:<20} {:>8}  {}",
                    b.id,
                    b.state.as_str(),
                    b.component,
                    b.target,
                    dur,
                    activity(b, &builds)
                );
                let tailed =
                    builds.iter().filter(|x| x.state == BuildState::Running).take(TAILED).any(|x| x.id == b.id);
                if tailed {
                    if let Some(line) = last_log_line(client, b).await {
                        msg.push_str(&format!("  │ {line}"));
                    }
                }
                if b.state.is_finished() {
                    if !bar.is_finished() {
                        bar.finish_with_message(msg);
                    }
                } else {
                    bar.set_message(msg);
                }
            } else if !json && last.get(&b.id) != Some(&key) {
                println!("{}", build_line(b));
            }
            last.insert(b.id, key);
        }
        if !builds.is_empty() && builds.iter().all(|b| b.state.is_finished()) {
            if json {
                println!("{}", serde_json::to_string_pretty(&builds)?);
            }
            let ok = builds.iter().all(|b| b.state == BuildState::Succeeded);
            let failed = builds.iter().filter(|b| b.state != BuildState::Succeeded).count();
            if !json {
                if ok {
                    eprintln!("all {} builds succeeded", builds.len());
                } else {
                    eprintln!("{failed} of {} builds did not succeed", builds.len());
                }
            }
            return Ok(ok);
        }
        tokio::time::sleep(POLL).await;
    }
}
