//! `kiln bench-roots`: the setup overhead of a deb build root, as the
//! standard pipeline pays it per build: the `root` step (an overlay on the
//! cached, extracted root; or unpacking the tarball where overlays cannot
//! be mounted) and `apt-get update` inside it. The first run makes the
//! cached root if there is none (reported apart). Writes JSON.

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Args)]
pub struct BenchRootsArgs {
    /// The Debian mirror (default: the host's own, from its apt sources).
    #[arg(long)]
    pub mirror: Option<String>,
    /// The suite (default: the host's).
    #[arg(long)]
    pub suite: Option<String>,
    /// Builds to time; the report gives median and worst.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where cached roots live (as `kiln worker --root-cache`).
    #[arg(long, default_value = "bench-roots/cache")]
    pub cache: PathBuf,
    #[arg(long, default_value = "bench-roots")]
    pub dir: PathBuf,
    #[arg(long, default_value = "bench-roots.json")]
    pub out: PathBuf,
}

fn helper(exe: &Path, scratch: &Path, args: &BenchRootsArgs, what: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("internal")
        .args(what)
        .env("KILN_SCRATCH", scratch)
        .env("KILN_WORKER_DIR", &args.dir)
        .env("KILN_ROOT_CACHE", &args.cache)
        .output()
        .with_context(|| format!("cannot run kiln internal {}", what[0]))?;
    if !out.status.success() {
        bail!("kiln internal {} failed: {}", what[0], String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(args: BenchRootsArgs) -> anyhow::Result<ExitCode> {
    let (mirror, suite) = match (&args.mirror, &args.suite) {
        (Some(m), Some(s)) => (m.clone(), s.clone()),
        _ => {
            let (m, s) = kiln_worker::pipeline::host_debian_mirror()
                .context("the host's apt sources name no Debian mirror; pass --mirror and --suite")?;
            (args.mirror.clone().unwrap_or(m), args.suite.clone().unwrap_or(s))
        }
    };
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&args.dir)?;
    std::fs::create_dir_all(&args.cache)?;
    let root_args = ["deb-root", "--suite", &suite, "--mirror", &mirror, "--components", "main"];
    // Make (or reuse) the cached root first, timed apart.
    let prime = args.dir.join("prime");
    let _ = std::fs::remove_dir_all(&prime);
    std::fs::create_dir_all(&prime)?;
    let cold = helper(&exe, &prime, &args, &root_args)?;
    kiln_worker::process::unmount_under(&prime);
    std::fs::remove_dir_all(&prime)?;
    let (mut roots, mut updates, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs.max(1) {
        let scratch = args.dir.join(format!("run-{i}"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let root = helper(&exe, &scratch, &args, &root_args);
        let update = root.as_ref().ok().map(|_| helper(&exe, &scratch, &args, &["root-update"]));
        kiln_worker::process::unmount_under(&scratch);
        std::fs::remove_dir_all(&scratch).with_context(|| format!("cannot remove {}", scratch.display()))?;
        let (root, update) = (root?, update.context("no root")??);
        eprintln!("run {}: root {root:.2}s, apt-get update {update:.2}s", i + 1);
        roots.push(root);
        updates.push(update);
        totals.push(root + update);
    }
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let report = json!({
        "suite": suite,
        "mirror": mirror,
        "runs": args.runs,
        "first_root_seconds": cold,
        "root_step_seconds": { "median": median(roots.clone()), "worst": worst(&roots) },
        "apt_update_seconds": { "median": median(updates.clone()), "worst": worst(&updates) },
        "setup_seconds": { "median": median(totals.clone()), "worst": worst(&totals) },
        "aim_seconds": 5.0,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
