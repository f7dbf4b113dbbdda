//! What a failed standard-pipeline build leaves for its maintainer: the
//! build tree's logs (`config.log`, CMake's and meson's logs, test-suite
//! logs, and a component's own `artifacts_on_failure`), copied into the
//! work dir's failure dir, which the worker keeps as the build's
//! artifacts. The copy runs as the build user in the sandbox: the tree
//! is the build's own, and a link in it reaches nothing the build could
//! not read itself.

use super::env_path;
use crate::tree_files::{files_under, open_plain, Unreadable};
use anyhow::Context;
use kiln_core::pipeline::{DEFAULT_FAILURE_LOGS, FAILURE_DIR};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// At most this many files are copied...
const FILES_MAX: usize = 100;
/// ...none larger than this...
const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// ...and no more than this together.
const TOTAL_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// The walk of the tree looks at no more entries than this.
const ENTRIES_MAX: usize = 200_000;

/// After a failed build command: runs `kiln internal keep-logs` over
/// `tree` with the component's `patterns`. What it cannot copy it says;
/// the build's own failure is what the caller reports.
pub(super) fn keep_after_failure(tree: &Path, patterns: &[String]) {
    let kept = std::env::current_exe().context("cannot find kiln's own executable").and_then(|exe| {
        let mut cmd = Command::new(exe);
        cmd.args(["internal", "keep-logs", "--from"]).arg(tree);
        for p in patterns {
            cmd.arg("--pattern").arg(p);
        }
        let status = cmd.status().context("cannot run keep-logs")?;
        anyhow::ensure!(status.success(), "keep-logs failed ({status})");
        Ok(())
    });
    if let Err(e) = kept {
        eprintln!("kiln: the failed build's logs are not kept: {e:#}");
    }
}

/// `keep-logs`: copies the files of `from` that match the default log
/// patterns or `patterns` into the work dir's failure dir, keeping their
/// paths. Reruns itself in the sandbox first.
pub fn keep_logs(from: &Path, patterns: &[String]) -> anyhow::Result<()> {
    let to = env_path("KILN_BUILD_DIR")?.join(FAILURE_DIR);
    if !crate::sandbox::in_sandbox() {
        // Root hands both places to the build user next: neither may be a
        // link the build left to somewhere else.
        let scratch = env_path("KILN_SCRATCH")?.canonicalize().context("the scratch dir")?;
        let is_dir = fs::symlink_metadata(from).is_ok_and(|m| m.is_dir());
        let inside = from.canonicalize().is_ok_and(|real| real.starts_with(&scratch));
        anyhow::ensure!(is_dir && inside, "the build tree {} is not a directory of this build", from.display());
        match fs::symlink_metadata(&to) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&to)?,
            Ok(_) => fs::remove_file(&to)?,
            Err(_) => {}
        }
        fs::create_dir(&to).with_context(|| format!("cannot create {FAILURE_DIR}"))?;
    }
    if crate::sandbox::rerun_in_sandbox(from, &[&to])? {
        return Ok(());
    }
    let globs = DEFAULT_FAILURE_LOGS
        .iter()
        .map(|p| p.to_string())
        .chain(patterns.iter().cloned())
        .map(|p| kiln_core::glob::Pattern::new(&p).map_err(|e| anyhow::anyhow!("pattern {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut kept = Vec::new();
    let mut bytes = 0u64;
    let files = files_under(from, ENTRIES_MAX, Unreadable::Skip).map_err(anyhow::Error::msg)?;
    let matching: Vec<&(String, std::path::PathBuf)> =
        files.iter().filter(|(rel, _)| globs.iter().any(|g| g.matches(rel))).collect();
    if matching.len() > FILES_MAX {
        eprintln!("kiln: {} files match; the first {FILES_MAX} are kept", matching.len());
    }
    for (rel, path) in matching.into_iter().take(FILES_MAX) {
        match copy_plain(path, &to.join(rel), TOTAL_BYTES_MAX - bytes) {
            Ok(n) => {
                bytes += n;
                kept.push(rel.as_str());
            }
            Err(err) => eprintln!("kiln: {rel} is not kept: {err:#}"),
        }
    }
    kept.sort();
    if kept.is_empty() {
        eprintln!("kiln: the failed build left none of the logs kiln keeps");
    } else {
        eprintln!("kiln: kept {} log file(s) of the failed build: {}", kept.len(), kept.join(", "));
    }
    Ok(())
}

/// Copies the regular file `from` (never through a link) to `to`, when it
/// is no larger than [`FILE_BYTES_MAX`] and `room`; returns its size.
fn copy_plain(from: &Path, to: &Path, room: u64) -> anyhow::Result<u64> {
    let (mut src, size) = open_plain(from).context("cannot open it")?;
    anyhow::ensure!(size <= FILE_BYTES_MAX, "larger than {} MiB", FILE_BYTES_MAX >> 20);
    anyhow::ensure!(size <= room, "the logs kept so far take the room there is");
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut dst = fs::File::create(to)?;
    let n = std::io::copy(&mut std::io::Read::take(&mut src, size), &mut dst)?;
    dst.flush()?;
    Ok(n)
}
