//! Build properties: named string values that come from the request
//! (`-p release=true`), from the config, and from steps (`set_property`).
//! Steps see them as `KILN_PROP_<NAME>` variables and through Buildbot's
//! `%(prop:NAME)s` interpolation, so existing Buildbot configs port easily.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest property value accepted from a request or a step (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Most properties one request may set.
pub const MAX_PROPERTIES: usize = 100;

/// The property that records the upload a build takes its source from
/// ([`crate::job::BuildSource`]). Requests may not set it; only an accepted
/// upload does.
pub const UPLOAD_PROPERTY: &str = "upload";

/// The property that records the fingerprint of the OpenPGP key that signed
/// the upload a build takes its source from. Requests may not set it; only
/// an accepted signed upload does.
pub const SIGNED_BY_PROPERTY: &str = "signed_by";

/// Whether only kiln sets property `name`, never a request: what it says
/// about an upload must not be claimable by a requester.
pub fn kiln_only(name: &str) -> bool {
    name == UPLOAD_PROPERTY || name == SIGNED_BY_PROPERTY
}

/// The property that orders the queue: an integer, higher first (see
/// `schedule::dispatch_order`).
pub const PRIORITY_PROPERTY: &str = "priority";
/// Priorities lie within this range.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Why properties given with a request were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("too many properties ({0}); at most {MAX_PROPERTIES}")]
    TooMany(usize),
    #[error("{0}")]
    BadName(String),
    #[error("the property `{0}` is reserved: kiln sets it on builds of uploads (the upload, the key that signed it)")]
    Reserved(String),
    #[error("property {0:?} is {1} bytes long; at most {MAX_VALUE_LEN}")]
    TooLong(String, usize),
    #[error("property {0:?} holds a NUL byte, which no step could be given")]
    Nul(String),
    #[error("property `priority` must be a whole number from -1000 to 1000, got {0:?}")]
    BadPriority(String),
    #[error("property `{0}` would reach steps as {1}, the variable of kiln's own `{2}`; name it otherwise")]
    Alias(String, String, String),
}

/// Checks properties given with a request (by a user, a change or a
/// schedule) and marks them with `source`: valid names, bounded values
/// without NUL (steps see them as environment variables), and none of the
/// names kiln reserves for itself.
pub fn request_properties(
    given: &BTreeMap<String, String>,
    source: PropertySource,
) -> Result<Properties, PropertyError> {
    if given.len() > MAX_PROPERTIES {
        return Err(PropertyError::TooMany(given.len()));
    }
    let mut out = Properties::new();
    for (k, v) in given {
        crate::names::check_property_name(k).map_err(PropertyError::BadName)?;
        if kiln_only(k) {
            return Err(PropertyError::Reserved(k.clone()));
        }
        // Steps see `fetch-ref` as KILN_PROP_FETCH_REF too: a name must not
        // pass for one kiln reads.
        let var = env_name(k);
        if let Some(own) = RESERVED.iter().chain([&PRIORITY_PROPERTY]).find(|r| **r != k.as_str() && env_name(r) == var)
        {
            return Err(PropertyError::Alias(k.clone(), var, own.to_string()));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(PropertyError::TooLong(k.clone(), v.len()));
        }
        if v.contains('\0') {
            return Err(PropertyError::Nul(k.clone()));
        }
        if k == PRIORITY_PROPERTY && !v.trim().parse::<i64>().is_ok_and(|p| PRIORITY_RANGE.contains(&p)) {
            return Err(PropertyError::BadPriority(v.clone()));
        }
        out.insert(k.clone(), Property { value: v.clone(), source });
    }
    Ok(out)
}

/// The properties a build's request gave it (from the user, or from the
/// change it builds: revision, branch, repository), with their sources,
/// and the `revision` it built (a checkout step sets `got_revision` to the
/// commit it checked out): what a rebuild of it asks for again, so the rebuild builds
/// the same commit, not its branch's tip. The upload a build takes its
/// source from is not among them ([`crate::job::BuildSource`] carries it),
/// nor who signed it (only a build of that same upload may say so).
pub fn requested(properties: &Properties) -> Properties {
    let mut out: Properties = properties
        .iter()
        .filter(|(k, p)| matches!(p.source, PropertySource::Request | PropertySource::Change) && !kiln_only(k))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    // A build of a branch's tip is rebuilt at the commit it checked out. A
    // worker reports that commit, so it never replaces a revision the
    // request or change named, and counts as asked for (commit statuses go
    // only to a change's own revision).
    if let Some(built) = properties.get(GOT_REVISION).filter(|p| p.source == PropertySource::Step) {
        if !out.contains_key(REVISION) {
            out.insert(REVISION.to_string(), Property { value: built.value.clone(), source: PropertySource::Request });
        }
    }
    out
}

/// The property naming the commit a git source is built at.
pub const REVISION: &str = "revision";

/// The property kiln's checkout step sets to the commit it checked out
/// (Buildbot's name). A worker reports it; `revision` stays the master's.
pub const GOT_REVISION: &str = "got_revision";

/// Properties that only requests, changes and the master set: what decides
/// where a build's packages go (`release`, `replace`), what it builds
/// (`revision`, `branch`, `repository`, `upload`) and where its status is
/// reported (`project`, `change_source`). A step may not be declared to set
/// one, and a worker's report of one is ignored, so a build cannot promote
/// itself into a release or aim a commit status elsewhere.
pub const RESERVED: &[&str] = &[
    "release",
    "replace",
    REVISION,
    "branch",
    "repository",
    UPLOAD_PROPERTY,
    SIGNED_BY_PROPERTY,
    "project",
    "change_source",
    "changed_by",
    AUTHOR,
    "published",
    PULL_REQUEST,
    FETCH_REF,
    HEAD_REPOSITORY,
    BASE_BRANCH,
    FORK,
];

/// The property naming the pull (merge) request a test build builds. A
/// build that has it is never published: see [`is_test_build`].
pub const PULL_REQUEST: &str = "pull_request";
/// The ref a test build's revision is fetched from
/// ([`crate::change::check_fetch_ref`]).
pub const FETCH_REF: &str = "fetch_ref";
/// The repository a pull request's commits come from.
pub const HEAD_REPOSITORY: &str = "head_repository";
/// The branch a pull request would be merged into.
pub const BASE_BRANCH: &str = "base_branch";
/// `true` when a pull request comes from another repository (a fork).
pub const FORK: &str = "fork";
/// The author of the commit a change builds.
pub const AUTHOR: &str = "author";

/// Whether a build is a test of a proposed change (a pull or merge
/// request), whose packages no channel takes: any build that names a pull
/// request, or a pull request's ref to fetch its revision from, is,
/// whoever named it.
pub fn is_test_build(properties: &Properties) -> bool {
    properties.contains_key(PULL_REQUEST) || properties.contains_key(FETCH_REF)
}

/// Whether a build may be given its component's secrets: not a test build,
/// unless a verified forge hook said the pull request comes from the
/// repository itself (whose writers the farm trusts), not from a fork.
pub fn may_have_secrets(properties: &Properties) -> bool {
    if !is_test_build(properties) {
        return true;
    }
    properties.get(FORK).is_some_and(|p| p.source == PropertySource::Change && p.value == "false")
}

/// Whether only the master may set property `name` (see [`RESERVED`]).
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

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
/// with the property's value; `%%` is a literal `%`. For values that are
/// data as they stand (a step's `env`); a shell script takes
/// [`interpolate_shell`].
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    interpolate_with(text, lookup, |v, out| out.push_str(v))
}

/// [`interpolate`] for a `run` script: each value goes in as one shell
/// word, single-quoted, so a property (which a requester or a change hook
/// may set) is data and never shell syntax. A script that wants the shell
/// to split or expand a value says so with `$KILN_PROP_NAME`.
pub fn interpolate_shell(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    interpolate_with(text, lookup, |v, out| out.push_str(&sh_quote(v)))
}

/// Quotes a word for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn interpolate_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
    insert: impl Fn(&str, &mut String),
) -> Result<String, InterpolateError> {
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
            Some(v) => insert(&v, &mut out),
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

    #[test]
    fn request_properties_are_checked_and_marked() {
        let given = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let ok = request_properties(&given(&[("release", "true")]), PropertySource::Request).expect("ok");
        assert_eq!(ok["release"], Property { value: "true".into(), source: PropertySource::Request });
        assert_eq!(
            request_properties(&given(&[("upload", "x")]), PropertySource::Request),
            Err(PropertyError::Reserved("upload".into()))
        );
        assert_eq!(
            request_properties(&given(&[("signed_by", "F00D")]), PropertySource::Request),
            Err(PropertyError::Reserved("signed_by".into()))
        );
        assert_eq!(
            request_properties(&given(&[("a", "x\0y")]), PropertySource::Request).map_err(|e| e.to_string()),
            Err("property \"a\" holds a NUL byte, which no step could be given".to_string())
        );
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        assert!(matches!(
            request_properties(&given(&[("a", &long)]), PropertySource::Request),
            Err(PropertyError::TooLong(_, _))
        ));
        let many: BTreeMap<String, String> = (0..=MAX_PROPERTIES).map(|i| (format!("p{i}"), String::new())).collect();
        assert_eq!(request_properties(&many, PropertySource::Request), Err(PropertyError::TooMany(101)));
        assert!(matches!(
            request_properties(&given(&[("../x", "")]), PropertySource::Request),
            Err(PropertyError::BadName(_))
        ));
    }

    #[test]
    fn a_rebuild_asks_for_what_the_request_and_the_change_gave() {
        let mut p = Properties::new();
        let mut put = |k: &str, source| p.insert(k.into(), Property { value: k.to_uppercase(), source });
        put("release", PropertySource::Request);
        put("revision", PropertySource::Change);
        put("version", PropertySource::Step);
        put("arch", PropertySource::Config);
        put(UPLOAD_PROPERTY, PropertySource::Request);
        put(SIGNED_BY_PROPERTY, PropertySource::Request);
        let again = requested(&p);
        assert_eq!(again.keys().map(String::as_str).collect::<Vec<_>>(), ["release", "revision"]);
        assert_eq!(again["revision"].source, PropertySource::Change);
        // The commit a checkout resolved (set by its step) is built again too.
        p.remove("revision");
        p.insert(GOT_REVISION.into(), Property { value: "c0ffee".into(), source: PropertySource::Step });
        assert_eq!(requested(&p)["revision"], Property { value: "c0ffee".into(), source: PropertySource::Request });
        // Never over a revision the change named, and never as the change's.
        p.insert("branch".into(), Property { value: "main".into(), source: PropertySource::Change });
        assert_eq!(requested(&p)["revision"].source, PropertySource::Request);
        p.insert("revision".into(), Property { value: "feed".into(), source: PropertySource::Change });
        assert_eq!(requested(&p)["revision"], Property { value: "feed".into(), source: PropertySource::Change });
    }

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
    fn shell_interpolation_inserts_one_quoted_word() {
        let hostile = |name: &str| match name {
            "branch" => Some("main'; cat /etc/shadow; echo '".into()),
            "msg" => Some("$(id) `id` ${HOME}".into()),
            _ => None,
        };
        assert_eq!(
            interpolate_shell("git log %(prop:branch)s", hostile).as_deref(),
            Ok(r#"git log 'main'\''; cat /etc/shadow; echo '\'''"#)
        );
        assert_eq!(interpolate_shell("echo %(prop:msg)s", hostile).as_deref(), Ok("echo '$(id) `id` ${HOME}'"));
        assert_eq!(interpolate_shell("echo %(prop:x:-a b)s", hostile).as_deref(), Ok("echo 'a b'"));
        // The raw form stays for values that are not shell text.
        assert_eq!(interpolate("%(prop:msg)s", hostile).as_deref(), Ok("$(id) `id` ${HOME}"));
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

    #[test]
    fn test_builds_are_never_published_and_get_secrets_only_from_the_repository_itself() {
        let mut p = Properties::new();
        assert!(!is_test_build(&p) && may_have_secrets(&p));
        let set = |p: &mut Properties, k: &str, v: &str, source| {
            p.insert(k.to_string(), Property { value: v.to_string(), source });
        };
        set(&mut p, PULL_REQUEST, "7", PropertySource::Request);
        assert!(is_test_build(&p) && !may_have_secrets(&p));
        // A requester cannot vouch for a pull request; only a forge's hook can.
        set(&mut p, FORK, "false", PropertySource::Request);
        assert!(!may_have_secrets(&p));
        set(&mut p, FORK, "true", PropertySource::Change);
        assert!(!may_have_secrets(&p));
        set(&mut p, FORK, "false", PropertySource::Change);
        assert!(may_have_secrets(&p) && is_test_build(&p));
        assert!(is_reserved(PULL_REQUEST) && is_reserved(FORK) && is_reserved(FETCH_REF));
        // A pull request's ref alone makes a test build too.
        let mut fetching = Properties::new();
        set(&mut fetching, FETCH_REF, "refs/pull/7/head", PropertySource::Request);
        assert!(is_test_build(&fetching) && !may_have_secrets(&fetching));
        // Names that reach steps as kiln's own variables are refused.
        for alias in ["fetch-ref", "FETCH.REF", "Pull_Request", "PRIORITY"] {
            let given = BTreeMap::from([(alias.to_string(), "1".to_string())]);
            assert!(
                matches!(request_properties(&given, PropertySource::Request), Err(PropertyError::Alias(..))),
                "{alias}"
            );
        }
    }
}
