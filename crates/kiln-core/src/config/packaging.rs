//! What a `[[component]]` says about how its packages are made, beyond its
//! steps: where a `3.0 (quilt)` tree's upstream tarball comes from (`orig`,
//! `upstream_tag`). And the identity kiln signs its own changelog entries
//! with (`[master] changelog_maintainer`).

use crate::debian::{upstream_tag, UPSTREAM_TAG_VERSION};
use crate::toml_reader::{Reader, Tbl};

/// Where the upstream tarball of a `3.0 (quilt)` tree comes from, as
/// git-buildpackage finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrigSource {
    /// The first of the others that has this version, in their order.
    #[default]
    Auto,
    /// `pristine-tar checkout` from the repository's `pristine-tar` branch.
    PristineTar,
    /// `git archive` of the upstream tag (`upstream_tag`).
    UpstreamTag,
    /// The tree itself without `debian/` (path sources, trees with no
    /// upstream history); a nightly then gets a version of its own upstream.
    Tree,
}

impl OrigSource {
    pub const ALL: [OrigSource; 4] =
        [OrigSource::Auto, OrigSource::PristineTar, OrigSource::UpstreamTag, OrigSource::Tree];

    pub fn as_str(self) -> &'static str {
        match self {
            OrigSource::Auto => "auto",
            OrigSource::PristineTar => "pristine-tar",
            OrigSource::UpstreamTag => "upstream-tag",
            OrigSource::Tree => "tree",
        }
    }

    pub fn parse(s: &str) -> Option<OrigSource> {
        OrigSource::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// How a component's upstream tarball is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrigRule {
    pub source: OrigSource,
    /// The upstream tag, `%(version)s` standing for the upstream version
    /// (git-buildpackage's `upstream-tag` syntax).
    pub upstream_tag: String,
}

impl Default for OrigRule {
    fn default() -> Self {
        OrigRule { source: OrigSource::Auto, upstream_tag: format!("upstream/{UPSTREAM_TAG_VERSION}") }
    }
}

pub(super) fn read_orig(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> OrigRule {
    let mut rule = OrigRule::default();
    if let Some((s, span)) = r.string(tbl, "orig", what) {
        match OrigSource::parse(&s) {
            Some(o) => rule.source = o,
            None => r.err(
                &span,
                format!(
                    "`orig` of {what} must be one of \"auto\", \"pristine-tar\", \"upstream-tag\", \"tree\"; got {s:?}"
                ),
            ),
        }
    }
    if let Some((pattern, span)) = r.string(tbl, "upstream_tag", what) {
        let example = upstream_tag(&pattern, "1.0");
        if pattern.matches(UPSTREAM_TAG_VERSION).count() != 1 {
            r.err(&span, format!("`upstream_tag` of {what} must contain {UPSTREAM_TAG_VERSION} once, like \"upstream/{UPSTREAM_TAG_VERSION}\""));
        } else if let Err(e) = super::check_branch(&example) {
            r.err(&span, format!("`upstream_tag` of {what} does not make a valid tag name: {e}"));
        } else {
            rule.upstream_tag = pattern;
        }
    }
    rule
}

/// `[master] changelog_maintainer`: `Name <address>` on one line, with an
/// address whose host is a qualified domain (lintian's `bogus-mail-host`
/// otherwise).
pub fn check_maintainer(who: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{who:?} {why}; write it as \"Example Builds <builds@example.org>\""));
    let Some((name, rest)) = who.split_once('<') else { return bad("has no <address>") };
    let Some(address) = rest.strip_suffix('>') else { return bad("does not end with the >") };
    if name.trim().is_empty() || who.chars().any(char::is_control) || address.contains(['<', '>', ' ']) {
        return bad("is not `Name <address>`");
    }
    match address.split_once('@') {
        Some((local, host)) if !local.is_empty() && mail_host_is_qualified(host) => Ok(()),
        _ => bad("needs an address at a qualified domain"),
    }
}

/// The identity of kiln's changelog entries when the config names none:
/// `kiln` at the host of the master's URL, else at the host's own name,
/// whichever is a qualified domain first; `None` when neither is.
pub fn default_maintainer(url: Option<&str>, hostname: &str) -> Option<String> {
    let url_host = url.and_then(|u| u.split_once("://")).map(|(_, rest)| {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        host.rsplit_once(':').filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h)
    });
    [url_host, Some(hostname.trim())]
        .into_iter()
        .flatten()
        .find(|h| mail_host_is_qualified(h))
        .map(|h| format!("kiln <kiln@{}>", h.to_ascii_lowercase()))
}

/// Whether `host` is a domain lintian takes for a real mail host: dotted,
/// not `localhost`/`localdomain`, not an `.invalid`/`.local` name.
pub fn mail_host_is_qualified(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h.contains('.')
        && !h.starts_with('.')
        && !h.ends_with('.')
        && !h.starts_with("localhost")
        && ![".localdomain", ".local", ".invalid", ".localhost"].iter().any(|s| h.ends_with(s))
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !h.split('.').all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintainers() {
        assert!(check_maintainer("Example Builds <builds@example.org>").is_ok());
        for bad in ["kiln <kiln@localhost>", "builds@example.org", "<a@example.org>", "A <a@host>", "A <a@10.0.0.1>"] {
            assert!(check_maintainer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_maintainers() {
        assert_eq!(
            default_maintainer(Some("https://builds.example.org:8443/kiln"), "box").as_deref(),
            Some("kiln <kiln@builds.example.org>")
        );
        assert_eq!(
            default_maintainer(Some("http://127.0.0.1:8010"), "farm.example.net\n").as_deref(),
            Some("kiln <kiln@farm.example.net>")
        );
        assert_eq!(default_maintainer(None, "localhost"), None);
    }

    #[test]
    fn orig_rules() {
        let cfg = crate::config::parse(
            "[[component]]\nname = \"a\"\norig = \"pristine-tar\"\nupstream_tag = \"v%(version)s\"\n[[component]]\nname = \"b\"\n",
        )
        .expect("parses");
        assert_eq!(
            cfg.components[0].orig,
            OrigRule { source: OrigSource::PristineTar, upstream_tag: "v%(version)s".into() }
        );
        assert_eq!(cfg.components[1].orig, OrigRule::default());
        let err = crate::config::parse("[[component]]\nname = \"a\"\norig = \"tarball\"\nupstream_tag = \"v\"\n")
            .expect_err("bad");
        let text = err.to_string();
        assert!(text.contains("`orig` of component \"a\" must be one of"), "{text}");
        assert!(text.contains("`upstream_tag` of component \"a\" must contain %(version)s once"), "{text}");
        let err =
            crate::config::parse("[master]\nchangelog_maintainer = \"kiln <kiln@localhost>\"\n").expect_err("bad");
        assert!(err.to_string().contains("needs an address at a qualified domain"), "{err}");
    }
}
