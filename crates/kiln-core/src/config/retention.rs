//! `[retention]`: how long a farm keeps build logs, artifacts and uploads,
//! when the master cleans up by itself, and when it warns of a full disk.
//! [`crate::retention`] decides what goes by these rules.

use crate::toml_reader::{Reader, Span, Tbl};
use std::collections::BTreeMap;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// What is kept of a builder's builds: a build's logs and artifacts go
/// once it is older than `max_age` or has `keep_last` newer builds of its
/// builder (either rule alone, when only one is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepRule {
    pub keep_last: Option<u32>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The rule for every component without its own.
    pub builds: KeepRule,
    /// Components' own rules (`[retention.component.NAME]`), by name.
    pub components: BTreeMap<String, KeepRule>,
    /// Rejected uploads (`DATA_DIR/rejected/`) go after this long.
    pub rejected_uploads: Option<Duration>,
    /// Accepted uploads' files (`DATA_DIR/uploads/`) go after this long,
    /// unless a queued or running build still takes its source from them.
    pub uploads: Option<Duration>,
    /// When the master cleans up each day (`HH:MM`, UTC), or never (`"off"`).
    pub daily_at: Option<(u8, u8)>,
    /// Warn when the data dir's file system is fuller than this (percent).
    pub disk_warn_percent: u8,
}

/// Without `[retention]`, a farm keeps its builds' files and accepted
/// uploads for ever (removing history is the operator's choice, never an
/// upgrade's) and drops rejected uploads, which are only kept for a look,
/// after two weeks.
impl Default for Retention {
    fn default() -> Self {
        Retention {
            builds: KeepRule { keep_last: None, max_age: None },
            components: BTreeMap::new(),
            rejected_uploads: Some(14 * DAY),
            uploads: None,
            daily_at: Some((3, 0)),
            disk_warn_percent: 90,
        }
    }
}

impl Retention {
    /// The rule for `component`.
    pub fn rule_for(&self, component: &str) -> KeepRule {
        self.components.get(component).copied().unwrap_or(self.builds)
    }
}

const RETENTION_KEYS: &[&str] =
    &["keep_last", "max_age", "rejected_uploads", "uploads", "daily_at", "disk_warn", "component"];
const RULE_KEYS: &[&str] = &["keep_last", "max_age"];

/// `[retention]`, and the spans of the component names it has rules for
/// (checked against the components by `validate`).
pub(super) fn read_retention(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> (Retention, Vec<(String, Span)>) {
    let mut out = Retention::default();
    let mut named = Vec::new();
    let Some(item) = item else { return (out, named) };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[retention] must be a table");
        return (out, named);
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, RETENTION_KEYS, "[retention]");
    out.builds = read_rule(r, tbl, "[retention]", out.builds);
    for (key, field) in [("rejected_uploads", &mut out.rejected_uploads), ("uploads", &mut out.uploads)] {
        if let Some(v) = read_age(r, tbl, key, "[retention]") {
            *field = v;
        }
    }
    if let Some((text, tspan)) = r.string(tbl, "daily_at", "[retention]") {
        match parse_time_of_day(&text) {
            Ok(at) => out.daily_at = at,
            Err(e) => r.err(&tspan, format!("`daily_at` in [retention]: {e}")),
        }
    }
    if let Some(item) = t.get("disk_warn") {
        match item.as_integer() {
            Some(p @ 1..=100) => out.disk_warn_percent = p as u8,
            _ => r.err(&item.span(), "`disk_warn` in [retention] must be a percentage from 1 to 100"),
        }
    }
    if let Some(components) = t.get("component") {
        match components.as_table_like() {
            None => r.err(&components.span(), "[retention.component] must hold one table per component"),
            Some(ct) => {
                for (name, item) in ct.iter() {
                    let what = format!("[retention.component.{name}]");
                    let ispan = item.span();
                    let Some(rt) = item.as_table_like() else {
                        r.err(&ispan, format!("{what} must be a table"));
                        continue;
                    };
                    let rtbl = Tbl { t: rt, span: &ispan };
                    r.check_keys(rtbl, RULE_KEYS, &what);
                    let rule = read_rule(r, rtbl, &what, out.builds);
                    out.components.insert(name.to_string(), rule);
                    named.push((name.to_string(), ispan));
                }
            }
        }
    }
    (out, named)
}

/// `keep_last` and `max_age` of a table, each falling back to `base`'s.
fn read_rule(r: &mut Reader<'_>, t: Tbl<'_>, what: &str, base: KeepRule) -> KeepRule {
    let mut rule = base;
    if let Some(item) = t.t.get("keep_last") {
        match item.as_integer() {
            Some(0) => rule.keep_last = None,
            Some(n @ 1..=1_000_000) => rule.keep_last = Some(n as u32),
            _ => r.err(&item.span(), format!("`keep_last` in {what} must be a count of builds (0: no limit)")),
        }
    }
    if let Some(v) = read_age(r, t, "max_age", what) {
        rule.max_age = v;
    }
    rule
}

/// A duration, or `"forever"` (none).
fn read_age(r: &mut Reader<'_>, t: Tbl<'_>, key: &str, what: &str) -> Option<Option<Duration>> {
    if t.t.get(key).and_then(|i| i.as_str()) == Some("forever") {
        return Some(None);
    }
    r.duration(t, key, what).map(Some)
}

/// `HH:MM` (UTC), or `off`.
fn parse_time_of_day(text: &str) -> Result<Option<(u8, u8)>, String> {
    if text == "off" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a time of day as HH:MM (UTC), nor \"off\"");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || text.len() != 5 {
        return Err(bad());
    }
    Ok(Some((h, m)))
}
