//! The first stage of parsing: each table of `farm.toml` read as written.
//!
//! There is one reader per table: `[master]`, `[[worker]]`, `[[target]]`,
//! `[[component]]`, `[[channel]]`, `[[schedule]]` and `[[notify]]` here;
//! `[[target]]` in `targets`, `[hooks]`, `[smtp]` and `[irc]` in `triggers`, `[uploads]` in `uploads`. Each checks what can be
//! checked inside its table (keys, types, values, names, duplicates) and
//! reports it at its line and column. A name that refers to another table
//! (a component's targets and dependencies, a channel's promotions, a
//! schedule's components and targets) is kept with its span (`written`),
//! for `validate` to check once every table is read.

use super::model::{Component, MasterSection, Source, StepSpec, TlsFiles, WorkerDef};
use super::tables::{named, Names};
use super::triggers::{self, Notifier};
use super::written::{ChannelAsWritten, ComponentAsWritten, FarmAsWritten, ScheduleAsWritten, WorkerAsWritten};
use super::{packaging, relations, retention, targets, uploads};
use crate::channel::{Accepts, Channel};
use crate::cron::CronSpec;
use crate::names::{check_name, check_property_name};
use crate::toml_reader::{Reader, Span, Tbl};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const MASTER_KEYS: &[&str] = &[
    "listen",
    "worker_listen",
    "data_dir",
    "database",
    "worker_timeout",
    "heartbeat",
    "lease",
    "kill_grace",
    "worker_tls",
    "tls",
    "header_timeout",
    "max_artifact_size",
    "url",
    "anonymous_read",
    "changelog_maintainer",
];
const TOP_KEYS: &[&str] = &[
    "master",
    "worker",
    "target",
    "component",
    "channel",
    "schedule",
    "notify",
    "hooks",
    "smtp",
    "irc",
    "uploads",
    "retention",
];
const SCHEDULE_KEYS: &[&str] = &["name", "cron", "timezone", "components", "targets", "properties", "only_if_changed"];
const CHANNEL_KEYS: &[&str] = &[
    "name",
    "key",
    "key_type",
    "passphrase",
    "accepts",
    "promote_to",
    "keep",
    "component",
    "description",
    "sign_debs",
    "valid_until",
    "keep_old_indexes",
    "previous_key",
];
const WORKER_KEYS: &[&str] = &["name", "token_file", "targets"];
const COMPONENT_KEYS: &[&str] = &[
    "name",
    "source",
    "depends_on",
    "targets",
    "steps",
    "properties",
    "artifacts",
    "artifacts_on_failure",
    "spec",
    "timeout",
    "no_output_timeout",
    "memory",
    "cpus",
    "collapse",
    "takes_uploads",
    "rebuild_after",
    "secrets",
    "before",
    "after",
    "adopts",
    "orig",
    "upstream_tag",
];
const SOURCE_KEYS: &[&str] = &["path"];
const STEP_KEYS: &[&str] =
    &["name", "run", "set_property", "timeout", "no_output_timeout", "env", "halt_on_failure", "always_run"];

/// Reads every table of `text`; `None` when it is not TOML at all.
pub(super) fn farm(r: &mut Reader<'_>, text: &str) -> Option<FarmAsWritten> {
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span();
            let msg = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
            r.err(&span, format!("invalid TOML: {msg}"));
            return None;
        }
    };
    let root = doc.as_table();
    let root_span: Span = Some(0..0);
    r.check_keys(Tbl { t: root, span: &root_span }, TOP_KEYS, "the config file");
    Some(FarmAsWritten {
        master: read_master(r, root.get("master")),
        workers: read_workers(r, root.get("worker")),
        targets: targets::read_targets(r, root.get("target")),
        components: read_components(r, root.get("component")),
        channels: read_channels(r, root.get("channel")),
        schedules: read_schedules(r, root.get("schedule")),
        notifiers: read_notifiers(r, root.get("notify")),
        hooks: triggers::read_hooks(r, root.get("hooks")),
        smtp: triggers::read_smtp(r, root.get("smtp")),
        irc: triggers::read_irc(r, root.get("irc")),
        uploads: uploads::read_uploads(r, root.get("uploads")),
        retention: retention::read_retention(r, root.get("retention")),
    })
}

fn read_workers(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<WorkerAsWritten> {
    let mut workers = Vec::new();
    let Some(item) = item else { return workers };
    let mut names = Names::new("worker");
    for (t, span) in r.tables(item, "[[worker]]") {
        let tbl = Tbl { t, span: &span };
        r.check_keys(tbl, WORKER_KEYS, "[[worker]]");
        let name = named(r, tbl, "[[worker]]");
        let token = r.string(tbl, "token_file", "[[worker]]");
        let targets = r.string_list(tbl, "targets", "[[worker]]");
        if let Some((name, nspan)) = name {
            if names.take(r, &name, &nspan) {
                let def = WorkerDef {
                    name,
                    token_file: token.map(|t| t.0),
                    targets: targets.as_ref().map(|ts| ts.iter().map(|t| t.0.clone()).collect()),
                };
                workers.push(WorkerAsWritten { def, targets: targets.unwrap_or_default() });
            }
        }
    }
    workers
}

fn read_components(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<ComponentAsWritten> {
    let mut components = Vec::new();
    let Some(item) = item else { return components };
    let mut names = Names::new("component");
    for (t, span) in r.tables(item, "[[component]]") {
        components.extend(read_component(r, Tbl { t, span: &span }, &mut names));
    }
    components
}

/// One `[[component]]`; `None` when it has no valid name.
fn read_component(r: &mut Reader<'_>, tbl: Tbl<'_>, names: &mut Names) -> Option<ComponentAsWritten> {
    r.check_keys(tbl, COMPONENT_KEYS, "[[component]]");
    let (name, nspan) = named(r, tbl, "[[component]]")?;
    let what = format!("component {name:?}");
    let source = read_source(r, tbl, &what);
    let depends_on = r.string_list(tbl, "depends_on", &what).unwrap_or_default();
    let targets = r.string_list(tbl, "targets", &what);
    if targets.as_ref().is_some_and(Vec::is_empty) {
        let s = tbl.t.get("targets").and_then(|i| i.span());
        r.err(&s, format!("{what}: `targets` is empty; leave it out to build on every target"));
    }
    let properties = read_properties(r, tbl, &what);
    let steps = read_steps(r, tbl, &what, "steps");
    // Steps around the standard pipeline (a component without `steps`).
    let before = read_steps(r, tbl, &what, "before");
    let after = read_steps(r, tbl, &what, "after");
    if !steps.is_empty() && (!before.is_empty() || !after.is_empty()) {
        r.err(
            tbl.span,
            format!(
                "{what}: `before` and `after` wrap the standard pipeline; a component with `steps` runs only those"
            ),
        );
    }
    let artifacts = r.string_list(tbl, "artifacts", &what).unwrap_or_default();
    let on_failure = r.string_list(tbl, "artifacts_on_failure", &what).unwrap_or_default();
    let adopts = relations::read_adopts(r, tbl, &what);
    let timeout = r.duration(tbl, "timeout", &what);
    let no_output_timeout = r.duration(tbl, "no_output_timeout", &what);
    let memory = read_memory(r, tbl, &what);
    let millicpus = read_cpus(r, tbl, &what);
    let spec = read_spec(r, tbl, &what);
    let orig = packaging::read_orig(r, tbl, &what);
    for (pattern, pspan) in artifacts.iter().chain(&on_failure) {
        if let Err(e) = crate::glob::Pattern::new(pattern) {
            r.err(pspan, format!("{what}: artifact pattern {pattern:?}: {e}"));
        }
    }
    let duplicate = !names.take(r, &name, &nspan);
    let mut component = Component {
        name,
        source,
        depends_on: depends_on.iter().map(|d| d.0.clone()).collect(),
        targets: targets.as_ref().map(|l| l.iter().map(|t| t.0.clone()).collect()),
        steps,
        before,
        after,
        properties,
        artifacts: artifacts.into_iter().map(|a| a.0).collect(),
        artifacts_on_failure: on_failure.into_iter().map(|a| a.0).collect(),
        adopts,
        spec,
        orig,
        timeout,
        no_output_timeout,
        memory,
        millicpus,
        collapse: false,
        takes_uploads: false,
        rebuild_after: Vec::new(),
        secrets: BTreeMap::new(),
    };
    if !duplicate {
        component.collapse = r.boolean(tbl, "collapse", &what).unwrap_or(false);
        component.takes_uploads = r.boolean(tbl, "takes_uploads", &what).unwrap_or(false);
        component.rebuild_after = relations::read_rebuild_after(r, tbl, &what, &depends_on);
        component.secrets = triggers::read_step_secrets(r, tbl, &what);
    }
    Some(ComponentAsWritten { component, span: tbl.span.clone(), name_span: nspan, depends_on, targets, duplicate })
}

/// The properties every build of a component starts with.
fn read_properties(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> BTreeMap<String, String> {
    r.string_map(tbl, "properties", what)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v, s)| match check_property_name(&k) {
            Ok(()) => Some((k, v)),
            Err(e) => {
                r.err(&s, format!("{what}: {e}"));
                None
            }
        })
        .collect()
}

/// A component's `memory` limit, in bytes (at least 1MiB).
fn read_memory(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<u64> {
    let (m, mspan) = r.string(tbl, "memory", what)?;
    match crate::size::parse_size(&m) {
        Ok(n) if n >= 1 << 20 => Some(n),
        Ok(_) => {
            r.err(&mspan, format!("{what}: `memory` must be at least 1MiB"));
            None
        }
        Err(e) => {
            r.err(&mspan, format!("{what}: `memory`: {e}"));
            None
        }
    }
}

/// A component's `cpus` limit, in thousandths of a CPU.
fn read_cpus(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<u32> {
    let item = tbl.t.get("cpus")?;
    let v = item.as_float().or_else(|| item.as_integer().map(|i| i as f64));
    match v {
        Some(c) if (0.01..=1024.0).contains(&c) => Some((c * 1000.0).round() as u32),
        _ => {
            r.err(&item.span(), format!("{what}: `cpus` must be a number of CPUs above 0, like 2 or 0.5"));
            None
        }
    }
}

/// A component's `spec`: a `.spec` path inside its source tree.
fn read_spec(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<String> {
    let (p, pspan) = r.string(tbl, "spec", what)?;
    if p.starts_with('/') || p.split('/').any(|seg| seg == "..") || !p.ends_with(".spec") {
        r.err(&pspan, format!("{what}: `spec` must be a .spec path inside the source tree, got {p:?}"));
        None
    } else {
        Some(p)
    }
}

fn read_channels(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<ChannelAsWritten> {
    let Some(item) = item else {
        return Channel::defaults()
            .into_iter()
            .map(|channel| ChannelAsWritten { channel, promote_to: Vec::new() })
            .collect();
    };
    let mut channels: Vec<ChannelAsWritten> = Vec::new();
    for (t, span) in r.tables(item, "[[channel]]") {
        let tbl = Tbl { t, span: &span };
        r.check_keys(tbl, CHANNEL_KEYS, "[[channel]]");
        let Some((name, nspan)) = named(r, tbl, "[[channel]]") else { continue };
        let what = format!("channel {name:?}");
        if channels.iter().any(|c| c.channel.name == name) {
            r.err(&nspan, format!("duplicate channel name {name:?}"));
            continue;
        }
        let key = r.string(tbl, "key", &what).map(|k| k.0);
        let passphrase = triggers::read_secret(r, tbl, "passphrase", &what);
        if passphrase.is_some() && key.is_none() {
            r.err(&nspan, format!("{what} has a `passphrase` but no `key`"));
        }
        let accepts = match r.string(tbl, "accepts", &what) {
            None => Accepts::Promoted,
            Some((a, aspan)) => match a.as_str() {
                "nightly" => Accepts::Nightly,
                "release" => Accepts::Release,
                "promoted" => Accepts::Promoted,
                other => {
                    r.err(&aspan, format!("`accepts` of {what}: unknown {other:?}; known: nightly, release, promoted"));
                    Accepts::Promoted
                }
            },
        };
        let promote_to = r.string_list(tbl, "promote_to", &what).unwrap_or_default();
        let keep = tbl.t.get("keep").and_then(|item| match item.as_integer() {
            Some(n) if n >= 1 && n <= u32::MAX as i64 => Some(n as u32),
            _ => {
                r.err(&item.span(), format!("`keep` of {what} must be a whole number of versions, at least 1"));
                None
            }
        });
        let component = match r.string(tbl, "component", &what) {
            Some((c, cspan)) => {
                if check_name(&c).is_err() {
                    r.err(&cspan, format!("`component` of {what} must be a plain name like \"main\""));
                }
                c
            }
            None => "main".to_string(),
        };
        let description = r.string(tbl, "description", &what).map(|d| d.0).unwrap_or_default();
        let sign_debs = r.boolean(tbl, "sign_debs", &what).unwrap_or(false);
        let key_type = match r.string(tbl, "key_type", &what) {
            None => crate::channel::KeyAlgorithm::default(),
            Some((t, tspan)) => {
                if key.is_some() {
                    r.err(&tspan, format!("{what} has a `key` file: `key_type` only chooses a generated key's kind"));
                }
                crate::channel::KeyAlgorithm::parse(&t).unwrap_or_else(|e| {
                    r.err(&tspan, format!("`key_type` of {what}: {e}"));
                    crate::channel::KeyAlgorithm::default()
                })
            }
        };
        let valid_until = r.string(tbl, "valid_until", &what).and_then(|(v, vspan)| {
            match crate::duration::parse_duration(&v) {
                // The master signs again at half the time; a few minutes
                // would keep it signing.
                Ok(d) if d >= std::time::Duration::from_secs(3600) => Some(d),
                Ok(_) => {
                    r.err(&vspan, format!("`valid_until` of {what} must be at least an hour"));
                    None
                }
                Err(e) => {
                    r.err(&vspan, format!("`valid_until` of {what}: {e}"));
                    None
                }
            }
        });
        let keep_old_indexes = match r.string(tbl, "keep_old_indexes", &what) {
            None => crate::channel::DEFAULT_KEEP_OLD_INDEXES,
            Some((v, vspan)) => crate::duration::parse_duration(&v).unwrap_or_else(|e| {
                r.err(&vspan, format!("`keep_old_indexes` of {what}: {e}"));
                crate::channel::DEFAULT_KEEP_OLD_INDEXES
            }),
        };
        let previous_key = read_previous_key(r, tbl, &what);
        if previous_key.is_some() && key.is_none() {
            r.err(&nspan, format!("{what} has a `previous_key` but no `key`: name the key it moves to"));
        }
        let names = promote_to.iter().map(|(n, _)| n.clone()).collect();
        channels.push(ChannelAsWritten {
            channel: Channel {
                name,
                key,
                passphrase,
                accepts,
                promote_to: names,
                keep,
                component,
                description,
                sign_debs,
                key_type,
                valid_until,
                keep_old_indexes,
                previous_key,
            },
            promote_to,
        });
    }
    channels
}

/// `previous_key = { key = "...", passphrase = {...}, until = "2027-01-15" }`:
/// the key a channel is rotating away from, which signs its indexes beside
/// the new one until then.
fn read_previous_key(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<crate::channel::PreviousKey> {
    let item = tbl.t.get("previous_key")?;
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(
            &span,
            format!(
                "`previous_key` of {what} must be a table like {{ key = \"keys/old.asc\", until = \"2027-01-15\" }}"
            ),
        );
        return None;
    };
    let pk = Tbl { t, span: &span };
    let inner = format!("`previous_key` of {what}");
    r.check_keys(pk, &["key", "passphrase", "until"], &inner);
    let key = r.string(pk, "key", &inner).map(|k| k.0);
    let passphrase = triggers::read_secret(r, pk, "passphrase", &inner);
    let until = match t.get("until") {
        None => None,
        Some(u) => {
            // A TOML date (`until = 2027-01-15`) or a string.
            let text = u.as_str().map(str::to_string).or_else(|| u.as_datetime().map(|d| d.to_string()));
            match text.as_deref().map(crate::date::parse_date) {
                Some(Ok(at)) => Some(at),
                Some(Err(e)) => {
                    r.err(&u.span(), format!("`until` of {inner}: {e}"));
                    return None;
                }
                None => {
                    r.err(&u.span(), format!("`until` of {inner} must be a date like \"2027-01-15\""));
                    return None;
                }
            }
        }
    };
    match (key, until) {
        (Some(key), Some(until)) => Some(crate::channel::PreviousKey { key, passphrase, until }),
        _ => {
            r.err(&span, format!("{inner} needs `key` (the old key file) and `until` (when it stops signing)"));
            None
        }
    }
}

fn read_schedules(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<ScheduleAsWritten> {
    let mut schedules: Vec<ScheduleAsWritten> = Vec::new();
    let Some(item) = item else { return schedules };
    for (t, span) in r.tables(item, "[[schedule]]") {
        let tbl = Tbl { t, span: &span };
        r.check_keys(tbl, SCHEDULE_KEYS, "[[schedule]]");
        let Some((name, nspan)) = named(r, tbl, "[[schedule]]") else { continue };
        let what = format!("schedule {name:?}");
        // Only a schedule that can run takes its name.
        if schedules.iter().any(|s| s.cron.is_some() && s.name == name) {
            r.err(&nspan, format!("duplicate schedule name {name:?}"));
            continue;
        }
        let cron = r.required_string(tbl, "cron", &what).and_then(|(c, cspan)| match CronSpec::parse(&c) {
            Ok(spec) => Some((spec, c)),
            Err(e) => {
                r.err(&cspan, format!("`cron` of {what}: {e}"));
                None
            }
        });
        let timezone = r.string(tbl, "timezone", &what).map(|t| t.0);
        let mut components = r.string_list(tbl, "components", &what).unwrap_or_default();
        components.retain(|(c, _)| c != "*");
        let targets = r.string_list(tbl, "targets", &what).unwrap_or_default();
        let properties =
            r.string_map(tbl, "properties", &what).unwrap_or_default().into_iter().map(|(k, v, _)| (k, v)).collect();
        let only_if_changed = r.boolean(tbl, "only_if_changed", &what).unwrap_or(false);
        schedules.push(ScheduleAsWritten { name, cron, timezone, components, targets, properties, only_if_changed });
    }
    schedules
}

fn read_notifiers(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<Notifier> {
    let mut notifiers = Vec::new();
    let Some(item) = item else { return notifiers };
    for (t, span) in r.tables(item, "[[notify]]") {
        let tbl = Tbl { t, span: &span };
        r.check_keys(tbl, triggers::NOTIFY_KEYS, "[[notify]]");
        let Some((name, _)) = named(r, tbl, "[[notify]]") else { continue };
        if let Some(n) = triggers::read_notifier(r, tbl, name, &span) {
            notifiers.push(n);
        }
    }
    notifiers
}

/// `cert`, `key` and an optional `client_ca`: PEM files.
fn tls_files(r: &mut Reader<'_>, item: Option<&toml_edit::Item>, what: &str) -> Option<TlsFiles> {
    let item = item?;
    let span = item.span();
    let Some(tt) = item.as_table_like() else {
        r.err(&span, format!("{what} must be a table with `cert` and `key`"));
        return None;
    };
    let tls = Tbl { t: tt, span: &span };
    r.check_keys(tls, &["cert", "key", "client_ca"], what);
    let cert = r.required_string(tls, "cert", what);
    let key = r.required_string(tls, "key", what);
    let client_ca = r.string(tls, "client_ca", what).map(|c| c.0);
    Some(TlsFiles { cert: cert?.0, key: key?.0, client_ca })
}

fn read_master(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Option<MasterSection> {
    let mut m = MasterSection::default();
    let Some(item) = item else { return Some(m) };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[master] must be a table");
        return None;
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, MASTER_KEYS, "[master]");
    let addr = |r: &mut Reader<'_>, key: &str, into: &mut SocketAddr| {
        if let Some((s, sspan)) = r.string(tbl, key, "[master]") {
            match s.parse::<SocketAddr>() {
                Ok(a) => *into = a,
                Err(_) => r.err(
                    &sspan,
                    format!(
                        "`{key}` must be an address with a port, like \"127.0.0.1:8010\" or \"[::1]:8010\"; got {s:?}"
                    ),
                ),
            }
        }
    };
    addr(r, "listen", &mut m.listen);
    addr(r, "worker_listen", &mut m.worker_listen);
    if let Some((d, _)) = r.string(tbl, "data_dir", "[master]") {
        m.data_dir = d;
    }
    if let Some((db, dspan)) = r.string(tbl, "database", "[master]") {
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://") || db.starts_with("sqlite:")) {
            r.err(&dspan, "`database` must be a postgres:// URL or an sqlite: URL");
        }
        m.database = Some(db);
    }
    let errors_before = r.diags.len();
    if let Some(d) = r.duration(tbl, "worker_timeout", "[master]") {
        m.worker_timeout = d;
    }
    if let Some(d) = r.duration(tbl, "heartbeat", "[master]") {
        m.heartbeat = d;
    }
    if let Some(d) = r.duration(tbl, "lease", "[master]") {
        m.lease = d;
    }
    let timings_ok = r.diags.len() == errors_before;
    if let Some(d) = r.duration(tbl, "kill_grace", "[master]") {
        m.kill_grace = d;
    }
    if let Some(d) = r.duration(tbl, "header_timeout", "[master]") {
        m.header_timeout = d.max(Duration::from_millis(100));
    }
    if let Some((text, sspan)) = r.string(tbl, "max_artifact_size", "[master]") {
        match crate::size::parse_size(&text) {
            Ok(n) => m.max_artifact_size = n,
            Err(e) => r.err(&sspan, format!("`max_artifact_size` in [master]: {e}")),
        }
    }
    if let Some(b) = r.boolean(tbl, "anonymous_read", "[master]") {
        m.anonymous_read = b;
    }
    if let Some((u, uspan)) = r.string(tbl, "url", "[master]") {
        let ok = (u.starts_with("http://") || u.starts_with("https://"))
            && !u.chars().any(|c| c.is_whitespace() || "'\"\\`$".contains(c));
        if ok {
            m.url = Some(u);
        } else {
            r.err(&uspan, format!("`url` in [master] must be an http:// or https:// URL, got {u:?}"));
        }
    }
    if let Some((who, wspan)) = r.string(tbl, "changelog_maintainer", "[master]") {
        match packaging::check_maintainer(&who) {
            Ok(()) => m.changelog_maintainer = Some(who),
            Err(e) => r.err(&wspan, format!("`changelog_maintainer` in [master]: {e}")),
        }
    }
    m.worker_tls = tls_files(r, t.get("worker_tls"), "[master.worker_tls]");
    m.tls = tls_files(r, t.get("tls"), "[master.tls]");
    if timings_ok && (m.heartbeat.is_zero() || m.heartbeat >= m.worker_timeout) {
        r.err(&span, "`heartbeat` must be shorter than `worker_timeout` and above zero");
    }
    Some(m)
}

fn read_source(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<Source> {
    let item = tbl.t.get("source")?;
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, format!("`source` of {what} must be a table, like {{ path = \"src/NAME\" }}"));
        return None;
    };
    let st = Tbl { t, span: &span };
    if t.get("git").is_some() {
        return triggers::read_vcs_source(r, st, what, triggers::Vcs::Git).map(Source::Vcs);
    }
    if t.get("hg").is_some() {
        return triggers::read_vcs_source(r, st, what, triggers::Vcs::Hg).map(Source::Vcs);
    }
    r.check_keys(st, SOURCE_KEYS, &format!("the source of {what}"));
    let (path, _) = r.required_string(st, "path", &format!("the source of {what}"))?;
    Some(Source::Path(path))
}

/// A component's own steps; none means its family's standard pipeline.
fn read_steps(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str, key: &str) -> Vec<StepSpec> {
    let Some(item) = tbl.t.get(key) else {
        return Vec::new();
    };
    let mut steps: Vec<StepSpec> = Vec::new();
    let tables = r.tables(item, &format!("the `{key}` steps of {what}"));
    if tables.is_empty() {
        r.err(&item.span(), format!("{what} has an empty `{key}` list"));
    }
    for (t, span) in tables {
        let st = Tbl { t, span: &span };
        let swhat = format!("a step of {what}");
        r.check_keys(st, STEP_KEYS, &swhat);
        let name = named(r, st, &swhat);
        let run = r.required_string(st, "run", &swhat);
        let set_property = r.string(st, "set_property", &swhat).and_then(|(p, pspan)| match check_property_name(&p) {
            Ok(()) if crate::props::is_reserved(&p) => {
                r.err(
                    &pspan,
                    format!("{swhat}: `set_property = {p:?}`: only requests and changes set {p:?}, not steps"),
                );
                None
            }
            Ok(()) => Some(p),
            Err(e) => {
                r.err(&pspan, format!("{swhat}: {e}"));
                None
            }
        });
        let timeout = r.duration(st, "timeout", &swhat);
        let no_output_timeout = r.duration(st, "no_output_timeout", &swhat);
        let env = r.string_map(st, "env", &swhat).unwrap_or_default().into_iter().map(|(k, v, _)| (k, v)).collect();
        let halt_on_failure = r.boolean(st, "halt_on_failure", &swhat).unwrap_or(true);
        let always_run = r.boolean(st, "always_run", &swhat).unwrap_or(false);
        if let (Some((name, nspan)), Some((run, _))) = (name, run) {
            if steps.iter().any(|s| s.name == name) {
                r.err(&nspan, format!("duplicate step name {name:?} in {what}"));
                continue;
            }
            steps.push(StepSpec {
                name,
                run,
                set_property,
                timeout,
                no_output_timeout,
                env,
                halt_on_failure,
                always_run,
            });
        }
    }
    steps
}
