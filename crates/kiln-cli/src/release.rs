//! `kiln release`: release-build everything (or a selection) on all its
//! targets with `release=true`, in dependency order — each component
//! published before its dependents start, which the master enforces — with
//! a live display of the whole request and a summary table at the end.

use crate::output::{elapsed, human_secs};
use crate::Remote;
use clap::Args;
use kiln_client::BuildQuery;
use kiln_proto::api::BuildRequestBody;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReleaseArgs {
    /// Components to release (every component when none is named).
    pub components: Vec<String>,
    /// Only on these targets (repeatable).
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// A property, KEY=VALUE (repeatable); release=true is always set.
    #[arg(short = 'p', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Overwrite versions already released (property replace=true).
    #[arg(long)]
    pub replace: bool,
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn release(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let mut properties = BTreeMap::new();
    for p in &args.properties {
        let (k, v) = kiln_core::props::parse_assignment(p).map_err(|e| anyhow::anyhow!("-p {p}: {e}"))?;
        properties.insert(k, v);
    }
    properties.insert("release".into(), "true".into());
    if args.replace {
        properties.insert("replace".into(), "true".into());
    }
    let client = args.remote.client()?;
    let body = BuildRequestBody {
        all: args.components.is_empty(),
        components: args.components.clone(),
        all_targets: args.targets.is_empty(),
        targets: args.targets.clone(),
        properties,
        reason: Some(args.reason.clone().unwrap_or_else(|| "release".into())),
    };
    let created = client.create_builds(&body).await?;
    if !args.remote.json {
        eprintln!("release request #{}: {} builds in dependency order", created.request_id, created.builds.len());
    }
    let ok = crate::follow::follow_request_from_client(&client, created.request_id, args.remote.json).await?;
    if args.remote.json {
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let builds = client
        .builds(&BuildQuery { request: Some(created.request_id), limit: Some(1000), ..Default::default() })
        .await?
        .builds;
    println!();
    println!(
        "{:<7} {:<22} {:<20} {:<10} {:<24} {:<14} {:>8}",
        "BUILD", "COMPONENT", "TARGET", "STATE", "VERSION", "PUBLISHED", "TIME"
    );
    let mut ordered = builds.clone();
    ordered.sort_by_key(|b| b.id);
    for b in &ordered {
        let prop = |k: &str| b.properties.get(k).map(|p| p.value.clone()).unwrap_or_else(|| "-".into());
        let dur =
            elapsed(b.started_at.as_deref(), b.finished_at.as_deref()).map(human_secs).unwrap_or_else(|| "-".into());
        println!(
            "#{:<6} {:<22} {:<20} {:<10} {:<24} {:<14} {:>8}",
            b.id,
            b.component,
            b.target,
            b.state.as_str(),
            prop("version"),
            prop("published"),
            dur
        );
        if let Some(reason) = b.reason.as_deref().filter(|_| b.state != kiln_core::BuildState::Succeeded) {
            println!("        {reason}");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
