//! Build properties: named string values that come from the request
//! (`-p release=true`), from the config, and from steps (`set_property`).
//! Steps see them as `KILN_PROP_<NAME>` variables and through Buildbot's
//! `%(prop:NAME)s` interpolation, so existing Buildbot configs port easily.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest property value accepted from a request or a step (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Where a property's value came from, shown next to it in the API and UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertySource {
    Config,
    Request,
    Step,
    Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub value: String,
    pub source: PropertySource,
}

/// A build's properties, ordered by name.
pub type Properties = BTreeMap<String, Property>;

/// The environment variable a property is exposed as: `KILN_PROP_` and the
/// name upper-cased, with every character that is not a letter or digit as `_`.
pub fn env_name(prop: &str) -> String {
    let mut s = String::from("KILN_PROP_");
    s.extend(prop.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    s
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("property {0:?} is not set (use %({0}:-default)s to give a default)")]
    Missing(String),
    #[error("unterminated interpolation starting at byte {0}: expected `%(prop:NAME)s`")]
    Unterminated(usize),
    #[error("unsupported interpolation %({0})s: only `prop:NAME` is known")]
    Unsupported(String),
}

/// Replaces every `%(prop:NAME)s` (or `%(prop:NAME:-default)s`) in `text`
/// with the property's value; `%%` is a literal `%`.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            consumed += pos + 2;
            rest = tail;
            continue;
        }
        let Some(inner_start) = after.strip_prefix('(') else {
            // A lone `%` (e.g. `date +%Y`) passes through unchanged.
            out.push('%');
            consumed += pos + 1;
            rest = after;
            continue;
        };
        let Some(close) = inner_start.find(")s") else {
            return Err(InterpolateError::Unterminated(consumed + pos));
        };
        let inner = &inner_start[..close];
        let Some(spec) = inner.strip_prefix("prop:") else {
            return Err(InterpolateError::Unsupported(inner.to_string()));
        };
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(v) => out.push_str(&v),
            None => return Err(InterpolateError::Missing(name.to_string())),
        }
        let used = pos + 2 + close + 2;
        consumed += used;
        rest = &rest[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `KEY=VALUE` as given on a command line.
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    crate::names::check_property_name(k)?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(name: &str) -> Option<String> {
        match name {
            "version" => Some("1.4.2".into()),
            "release" => Some("true".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolates_like_buildbot() {
        assert_eq!(
            interpolate("packaging %(prop:version)s release=%(prop:release)s", props).as_deref(),
            Ok("packaging 1.4.2 release=true")
        );
        assert_eq!(interpolate("100%% of %(prop:nope:-none)s", props).as_deref(), Ok("100% of none"));
        assert_eq!(interpolate("date +%Y", props).as_deref(), Ok("date +%Y"));
        assert_eq!(interpolate("%(prop:nope)s", props), Err(InterpolateError::Missing("nope".into())));
        assert_eq!(interpolate("x %(prop:version", props), Err(InterpolateError::Unterminated(2)));
        assert!(matches!(interpolate("%(src:x)s", props), Err(InterpolateError::Unsupported(_))));
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("release"), "KILN_PROP_RELEASE");
        assert_eq!(env_name("git.rev-1"), "KILN_PROP_GIT_REV_1");
    }

    #[test]
    fn assignments() {
        assert_eq!(parse_assignment("release=true"), Ok(("release".into(), "true".into())));
        assert_eq!(parse_assignment("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_assignment("novalue").is_err());
        assert!(parse_assignment("bad key=1").is_err());
    }
}
