//! The farm configuration (`farm.toml`): its model, parsing and validation.
//!
//! A builder is a component × a target. The config names components and
//! targets once each; [`crate::matrix`] expands them, so 70 components on 20
//! targets are 1,400 builders from a few dozen lines.
//!
//! Parsing is pure: it takes the file's text and returns either the model or
//! every problem found, each with its line and column. It goes in two
//! stages, from as written to ready to use. `read` takes each table as written (`written`), checks what can be
//! checked inside it, and keeps the span of every name it refers to
//! elsewhere; `validate` checks what is only known across tables
//! (references, dependency cycles, step names) and reports it at those
//! spans. Only a config with no problem at all becomes the model (`model`),
//! ready to use.

pub use crate::channel::{Accepts, Channel, SecretRef};
pub use crate::toml_reader::Diagnostic;
pub use errors::ConfigErrors;
pub use model::{
    AptRepository, AptSuite, Component, Executor, Family, FarmConfig, MasterSection, Schedule, Source, StepSpec,
    Target, TlsFiles, UploadsSection, WorkerDef, DEFAULT_LISTS_MAX_AGE, HOST_MIRROR, STEP_NAMES,
};
pub use packaging::{check_maintainer, default_maintainer, mail_host_is_qualified, OrigRule, OrigSource};
pub use retention::{KeepRule, Retention};
pub use triggers::{
    check_branch, check_git_url, check_hg_url, check_revision, check_vcs_url, ForgeHook, Hooks, Irc, Notifier,
    NotifyVia, Smtp, SmtpSecurity, Vcs, VcsSource,
};

use crate::toml_reader::Reader;

mod errors;
mod model;
mod packaging;
mod read;
mod relations;
mod retention;
pub mod rotate;
mod tables;
mod targets;
mod triggers;
mod uploads;
mod validate;
mod written;

/// Parses and validates a farm config.
pub fn parse(text: &str) -> Result<FarmConfig, ConfigErrors> {
    let mut r = Reader::new(text);
    if let Some(written) = read::farm(&mut r, text) {
        validate::farm(&mut r, &written);
        if r.diags.is_empty() {
            return Ok(written.into_config());
        }
    }
    r.diags.sort_by_key(|d| (d.line, d.col));
    Err(ConfigErrors { diagnostics: r.diags })
}

/// What is allowed but likely a mistake, for `kiln checkconfig` and the
/// master's log: a target that no `[[worker]]` lists in its `targets` (its
/// builds would wait for ever), once any worker lists its targets.
pub fn warnings(cfg: &FarmConfig) -> Vec<String> {
    let mut out = lease_warnings(cfg);
    out.extend(target_warnings(cfg));
    out
}

/// Masters sharing a database: one that went silent must be fenced (within
/// about `lease` and a third, plus a renewal period) before its workers'
/// fence (two thirds of `worker_timeout`) stops their builds, or a failover
/// loses running builds.
fn lease_warnings(cfg: &FarmConfig) -> Vec<String> {
    let shared = cfg.master.database.as_deref().is_some_and(|d| d.starts_with("postgres"));
    let (lease, timeout) = (cfg.master.lease, cfg.master.worker_timeout);
    if shared && lease * 5 > timeout * 2 {
        return vec![format!(
            "[master] lease ({lease:?}) is over two fifths of worker_timeout ({timeout:?}): when a master sharing \
             the database goes silent, its workers may stop their builds before another master takes them over"
        )];
    }
    Vec::new()
}

fn target_warnings(cfg: &FarmConfig) -> Vec<String> {
    let declared: Vec<&Vec<String>> = cfg.workers.iter().filter_map(|w| w.targets.as_ref()).collect();
    if cfg.workers.is_empty() || cfg.workers.iter().any(|w| w.targets.is_none()) {
        // A worker that lists no targets serves whatever it claims.
        return Vec::new();
    }
    cfg.targets
        .iter()
        .filter(|t| !declared.iter().any(|ts| ts.contains(&t.name)))
        .map(|t| {
            format!(
                "target {:?}: no [[worker]] lists it in `targets`, so its builds would wait for a worker for ever",
                t.name
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
