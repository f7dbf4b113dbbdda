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
                let msg =
                    format!("#{} {}@{}  {}  {}  {}", b.id, b.component, b.target, b.state, activity(b, &builds), dur);
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
