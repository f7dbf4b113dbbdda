//! `[[target]]`: where builds happen (suite and mirror, architecture,
//! executor, the build root's extra suites and repositories), read as
//! written and checked inside the table.

use super::model::{AptRepository, AptSuite, Executor, Family, Target, DEFAULT_LISTS_MAX_AGE, HOST_MIRROR};
use super::tables::{named, Names};
use crate::names::check_name;
use crate::toml_reader::{Reader, Tbl};
use std::time::Duration;

const TARGET_KEYS: &[&str] = &[
    "name",
    "family",
    "suite",
    "suites",
    "arch",
    "mirror",
    "components",
    "max_age",
    "lists_max_age",
    "executor",
    "repositories",
    "mock_config",
    "check_build_depends",
];
const SUITE_KEYS: &[&str] = &["suite", "mirror"];
const REPOSITORY_KEYS: &[&str] = &["url", "suite", "components", "key"];
pub(super) fn read_targets(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Vec<Target> {
    let mut targets = Vec::new();
    let Some(item) = item else { return targets };
    let mut names = Names::new("target");
    for (t, span) in r.tables(item, "[[target]]") {
        targets.extend(read_target(r, Tbl { t, span: &span }, &mut names));
    }
    targets
}

/// One `[[target]]`; `None` when it cannot be used.
fn read_target(r: &mut Reader<'_>, tbl: Tbl<'_>, names: &mut Names) -> Option<Target> {
    r.check_keys(tbl, TARGET_KEYS, "[[target]]");
    let name = named(r, tbl, "[[target]]");
    let family = r.required_string(tbl, "family", "[[target]]").and_then(|(f, fspan)| match f.as_str() {
        "deb" => Some(Family::Deb),
        "rpm" => Some(Family::Rpm),
        other => {
            r.err(&fspan, format!("unknown family {other:?}; known families: deb, rpm"));
            None
        }
    });
    let mut suite = target_word(r, tbl, "suite");
    let arch = target_word(r, tbl, "arch");
    let mut mirror = mirror_url(r, tbl, "[[target]]");
    let mut suites = read_suites(r, tbl, family, mirror.as_deref());
    // `suites = ["bookworm", "bookworm-updates"]` alone: the first is the
    // target's suite, on the first's mirror.
    if suite.is_none() && !tbl.t.contains_key("suite") && !suites.is_empty() {
        let first = suites.remove(0);
        mirror = mirror.or(Some(first.mirror));
        suite = Some(first.suite);
    }
    if let (Some(suite), Some(mirror)) = (&suite, &mirror) {
        suites.retain(|s| !(&s.suite == suite && &s.mirror == mirror));
    }
    let components = archive_components(r, tbl, "[[target]]");
    let max_age = r.duration(tbl, "max_age", "[[target]]").unwrap_or(Duration::from_secs(15 * 86400));
    let lists_max_age = r.duration(tbl, "lists_max_age", "[[target]]").unwrap_or(DEFAULT_LISTS_MAX_AGE);
    let executor = read_executor(r, tbl, family);
    let repositories = read_repositories(r, tbl, family);
    let mock_config = read_mock_config(r, tbl);
    let check_build_depends = r.boolean(tbl, "check_build_depends", "[[target]]").unwrap_or(true);
    let (name, nspan) = name?;
    if family == Some(Family::Rpm) && name.ends_with(crate::debuginfo::DEBUGINFO_SUFFIX) {
        let suffix = crate::debuginfo::DEBUGINFO_SUFFIX;
        r.err(&nspan, format!("[[target]] {name:?}: an rpm target's name may not end in {suffix:?}, the name of its debuginfo repository"));
        return None;
    }
    if !names.take(r, &name, &nspan) {
        return None;
    }
    Some(Target {
        name,
        family: family?,
        suite,
        arch,
        mirror,
        components,
        max_age,
        executor: executor?,
        suites,
        lists_max_age,
        repositories,
        mock_config,
        check_build_depends,
    })
}

/// A plain word of a `[[target]]` (`suite`, `arch`).
fn target_word(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str) -> Option<String> {
    let (v, vspan) = r.string(tbl, key, "[[target]]")?;
    match check_name(&v) {
        Ok(()) => Some(v),
        Err(e) => {
            r.err(&vspan, format!("`{key}` of [[target]]: {e}"));
            None
        }
    }
}

/// A target's `executor` (bwrap when absent), which must suit its family.
fn read_executor(r: &mut Reader<'_>, tbl: Tbl<'_>, family: Option<Family>) -> Option<Executor> {
    let Some((e, espan)) = r.string(tbl, "executor", "[[target]]") else {
        return Some(Executor::Bwrap);
    };
    let executor = match e.as_str() {
        "bwrap" => Some(Executor::Bwrap),
        "host" => Some(Executor::Host),
        "sbuild" => Some(Executor::Sbuild),
        "mock" => Some(Executor::Mock),
        other => {
            r.err(&espan, format!("unknown executor {other:?}; known executors: bwrap, sbuild, mock, host"));
            None
        }
    };
    let fits = match (executor, family) {
        (Some(Executor::Sbuild), Some(Family::Rpm)) => Err("sbuild builds deb targets only"),
        (Some(Executor::Mock), Some(Family::Deb)) => Err("mock builds rpm targets only"),
        _ => Ok(()),
    };
    match fits {
        Ok(()) => executor,
        Err(why) => {
            r.err(&espan, format!("`executor = {e:?}` of [[target]]: {why}"));
            None
        }
    }
}

/// A deb target's `suites`: each a suite name on the target's `mirror`, or
/// a table `{ suite, mirror }` for one served elsewhere (Debian's security
/// suites are).
fn read_suites(r: &mut Reader<'_>, tbl: Tbl<'_>, family: Option<Family>, mirror: Option<&str>) -> Vec<AptSuite> {
    let mut suites = Vec::new();
    let Some(item) = tbl.t.get("suites") else { return suites };
    let what = "`suites` of [[target]]";
    if family == Some(Family::Rpm) {
        r.err(&item.span(), format!("{what} are apt suites, for deb targets only"));
    }
    let Some(list) = item.as_array() else {
        r.err(&item.span(), format!("{what} must be a list of suite names or {{ suite, mirror }} tables"));
        return suites;
    };
    for entry in list.iter() {
        let span = entry.span();
        let (suite, own_mirror) = if let Some(name) = entry.as_str() {
            (Some((name.to_string(), span.clone())), None)
        } else if let Some(t) = entry.as_inline_table() {
            let st = Tbl { t, span: &span };
            r.check_keys(st, SUITE_KEYS, what);
            (r.required_string(st, "suite", what), mirror_url(r, st, what))
        } else {
            r.err(&span, format!("each entry of {what} must be a suite name or a {{ suite, mirror }} table"));
            continue;
        };
        let Some((suite, sspan)) = suite else { continue };
        if let Err(e) = check_name(&suite) {
            r.err(&sspan, format!("{what}: {e}"));
            continue;
        }
        match own_mirror.or_else(|| mirror.map(str::to_string)) {
            Some(mirror) => suites.push(AptSuite { suite, mirror }),
            None => r.err(&sspan, format!("{what}: suite {suite:?} needs a `mirror`, and the target has none")),
        }
    }
    suites
}

/// A deb target's extra package `repositories`, each a table of its own.
fn read_repositories(r: &mut Reader<'_>, tbl: Tbl<'_>, family: Option<Family>) -> Vec<AptRepository> {
    let mut repositories = Vec::new();
    let Some(item) = tbl.t.get("repositories") else { return repositories };
    if family == Some(Family::Rpm) {
        r.err(&item.span(), "`repositories` of [[target]] are apt repositories, for deb targets only");
    }
    for (rt, rspan) in r.tables(item, "`repositories` of [[target]]") {
        let rtbl = Tbl { t: rt, span: &rspan };
        let what = "a repository of [[target]]";
        r.check_keys(rtbl, REPOSITORY_KEYS, what);
        let url = repo_url(r, rtbl, "url", what);
        let suite = r.required_string(rtbl, "suite", what).and_then(|(s, sspan)| match check_name(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                r.err(&sspan, format!("`suite` of {what}: {e}"));
                None
            }
        });
        let components = archive_components(r, rtbl, what);
        let key = r.required_string(rtbl, "key", what).and_then(|(k, kspan)| {
            if k.trim().is_empty() {
                r.err(&kspan, format!("`key` of {what} must name the repository's key file"));
                return None;
            }
            Some(k)
        });
        if url.is_none() && !rtbl.t.contains_key("url") {
            r.err(&rspan, format!("{what} needs `url`"));
        }
        if let (Some(url), Some(suite), Some(key)) = (url, suite, key) {
            repositories.push(AptRepository { url, suite, components, key });
        }
    }
    repositories
}

/// The `mock_config` of a target: a name `mock -r` takes, never an option.
fn read_mock_config(r: &mut Reader<'_>, tbl: Tbl<'_>) -> Option<String> {
    let (m, mspan) = r.string(tbl, "mock_config", "[[target]]")?;
    let ok =
        !m.is_empty() && !m.starts_with('-') && m.chars().all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
    if !ok {
        r.err(
            &mspan,
            format!("`mock_config` of [[target]] must name a mock config like \"rocky-9-x86_64\", got {m:?}"),
        );
    }
    ok.then_some(m)
}

/// A package repository's URL (`mirror` of a target, `url` of one of its
/// repositories): http(s) or file, nothing a shell or apt line could split.
fn repo_url(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str, what: &str) -> Option<String> {
    let (m, mspan) = r.string(tbl, key, what)?;
    let scheme_ok = ["http://", "https://", "file:/"].iter().any(|p| m.starts_with(p));
    if scheme_ok && !m.chars().any(|c| c.is_whitespace() || "'\"\\`$[]".contains(c)) {
        Some(m)
    } else {
        let or_host = if key == "mirror" { " (or \"host\": each worker's own)" } else { "" };
        r.err(&mspan, format!("`{key}` of {what} must be an http(s):// or file:/ URL{or_host}, got {m:?}"));
        None
    }
}

/// A `mirror`: a repository URL, or `host` (each worker's own mirror).
fn mirror_url(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<String> {
    match tbl.t.get("mirror").and_then(|i| i.as_str()) {
        Some(HOST_MIRROR) => Some(HOST_MIRROR.to_string()),
        _ => repo_url(r, tbl, "mirror", what),
    }
}

/// The archive components of a mirror or repository (default `main`).
fn archive_components(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Vec<String> {
    r.string_list(tbl, "components", what)
        .map(|l| {
            l.into_iter()
                .filter_map(|(c, cspan)| match check_name(&c) {
                    Ok(()) => Some(c),
                    Err(e) => {
                        r.err(&cspan, format!("`components` of {what}: {e}"));
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| vec!["main".to_string()])
}
