//! Debian source package details: reading and writing `debian/changelog`
//! entries, and the nightly version scheme.
//!
//! Where a nightly sorts is read from the changelog, as git-buildpackage's
//! snapshots do: a head entry still `UNRELEASED` names a version being
//! made, so its nightly `1.4.2-1~nightly20261122.17` (date, then build id)
//! sorts below that release; a head entry with a distribution names a
//! version already released (its upload may be in the channel), so the
//! tree is past it and its nightly `1.4.2-1+nightly20261122.17` sorts above
//! it and below any later version. Later nightlies sort above earlier ones.

/// The first entry's package name, version and distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogHead {
    pub package: String,
    pub version: String,
    pub distribution: String,
}

/// Reads the first line of a `debian/changelog`: `name (version) dist; urgency=...`.
pub fn changelog_head(text: &str) -> Result<ChangelogHead, String> {
    let line = text.lines().find(|l| !l.trim().is_empty()).ok_or("debian/changelog is empty")?;
    // The file is the source tree's: never quote it (a changelog that is
    // a link to a secret would print the secret into a public log).
    let bad = || "debian/changelog: the first entry is not `name (version) distribution; urgency=...`".to_string();
    let (package, rest) = line.split_once(" (").ok_or_else(bad)?;
    let (version, rest) = rest.split_once(')').ok_or_else(bad)?;
    let distribution = rest.trim().split(';').next().unwrap_or("").trim().to_string();
    if package.is_empty() || version.is_empty() || package.contains(char::is_whitespace) {
        return Err(bad());
    }
    let unquoted =
        |e: crate::names::PackageNameError| format!("debian/changelog: the {} is not valid: {}", e.what, e.rule);
    crate::names::check_deb_name("package name", package).map_err(unquoted)?;
    crate::names::check_deb_version(version).map_err(unquoted)?;
    Ok(ChangelogHead { package: package.to_string(), version: version.to_string(), distribution })
}

/// Where a nightly of a changelog's head version sorts against that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NightlyPlace {
    /// Below it: the head is `UNRELEASED`, the nightly leads to the release.
    BeforeRelease,
    /// Above it: the head was released, the tree has moved on since.
    AfterRelease,
}

impl NightlyPlace {
    /// `UNRELEASED` (or no distribution) at the head means the version is
    /// still to be released; any distribution means it was.
    pub fn of(head: &ChangelogHead) -> Self {
        if head.distribution.is_empty() || head.distribution == "UNRELEASED" {
            NightlyPlace::BeforeRelease
        } else {
            NightlyPlace::AfterRelease
        }
    }

    /// `~` sorts below anything in dpkg, also below the end of a version;
    /// `+` sorts above the end and below `.`, digits and letters, so
    /// `1.0-1+nightly…` lies between `1.0-1` and `1.0-1.1` or `1.0-2`.
    fn mark(self) -> char {
        match self {
            NightlyPlace::BeforeRelease => '~',
            NightlyPlace::AfterRelease => '+',
        }
    }
}

/// The nightly version of `version` for a build on `date` (YYYYMMDD).
pub fn nightly_version(version: &str, place: NightlyPlace, date: &str, build_id: i64) -> String {
    format!("{version}{}nightly{date}.{build_id}", place.mark())
}

/// The upstream part of a Debian version (no epoch, no revision); `None`
/// for a native version (no revision), which has no upstream tarball.
pub fn upstream_version(version: &str) -> Option<&str> {
    let no_epoch = version.split_once(':').map_or(version, |(_, v)| v);
    no_epoch.rsplit_once('-').map(|(upstream, _)| upstream)
}

/// The nightly version of `version` when the upstream tarball itself is made
/// from the tree: the nightly mark goes into the upstream part
/// (`1.4.2-1` becomes `1.4.2~nightly20261122.17-1`), so each nightly names
/// a tarball of its own and sorts as `place` says.
pub fn nightly_upstream_version(version: &str, place: NightlyPlace, date: &str, build_id: i64) -> String {
    match version.rsplit_once('-') {
        Some((upstream, revision)) => format!("{upstream}{}nightly{date}.{build_id}-{revision}", place.mark()),
        None => nightly_version(version, place, date, build_id),
    }
}

/// The git tag of upstream version `upstream` under `pattern`, where
/// `%(version)s` stands for the version mangled as DEP-14 (and
/// git-buildpackage) do for characters git refuses: `~` → `_`, `:` → `%`,
/// `..` → `.#.`, and a trailing `.` or `.lock` escaped with `#`.
pub fn upstream_tag(pattern: &str, upstream: &str) -> String {
    let mut v = upstream.replace('~', "_").replace(':', "%");
    while v.contains("..") {
        v = v.replace("..", ".#.");
    }
    if v.ends_with('.') {
        v.push('#');
    }
    if let Some(stem) = v.strip_suffix(".lock") {
        v = format!("{stem}.#lock");
    }
    pattern.replace(UPSTREAM_TAG_VERSION, &v)
}

/// What stands for the version in an upstream tag pattern.
pub const UPSTREAM_TAG_VERSION: &str = "%(version)s";

/// A new changelog entry to put on top of `debian/changelog`.
/// `date` is in RFC 2822 form, as dpkg wants it.
/// The entry names `distribution` (the target's suite) when given, else
/// the head's.
pub fn changelog_entry(
    head: &ChangelogHead,
    version: &str,
    change: &str,
    maintainer: &str,
    date: &str,
    distribution: Option<&str>,
) -> String {
    let dist = match distribution {
        Some(d) => d,
        None if head.distribution.is_empty() => "UNRELEASED",
        None => &head.distribution,
    };
    format!("{} ({version}) {dist}; urgency=medium\n\n  * {change}\n\n -- {maintainer}  {date}\n\n", head.package)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "libgrace (1.4.2-1) bookworm; urgency=medium\n\n  * New upstream release.\n\n -- A <a@example.org>  Sun, 22 Nov 2026 00:00:00 +0000\n";

    #[test]
    fn head_and_nightly_entry() {
        let head = changelog_head(LOG).expect("head");
        assert_eq!(
            head,
            ChangelogHead { package: "libgrace".into(), version: "1.4.2-1".into(), distribution: "bookworm".into() }
        );
        assert_eq!(NightlyPlace::of(&head), NightlyPlace::AfterRelease);
        let v = nightly_version(&head.version, NightlyPlace::BeforeRelease, "20261122", 17);
        assert_eq!(v, "1.4.2-1~nightly20261122.17");
        let who = "Builds <builds@example.org>";
        let date = "Sun, 22 Nov 2026 03:00:00 +0000";
        let entry = changelog_entry(&head, &v, "Nightly build 17.", who, date, None);
        assert!(entry
            .starts_with("libgrace (1.4.2-1~nightly20261122.17) bookworm; urgency=medium\n\n  * Nightly build 17.\n"));
        assert!(entry.contains("\n -- Builds <builds@example.org>  Sun, 22 Nov 2026 03:00:00 +0000\n"));
        let entry = changelog_entry(&head, &v, "Nightly build 17.", who, date, Some("trixie"));
        assert!(entry.starts_with("libgrace (1.4.2-1~nightly20261122.17) trixie; "));
        assert!(changelog_head("garbage").is_err());
        assert!(changelog_head("").is_err());
    }

    #[test]
    fn an_unreleased_head_leads_to_its_release_and_a_released_one_is_passed() {
        let unreleased = changelog_head(&LOG.replace(") bookworm;", ") UNRELEASED;")).expect("head");
        assert_eq!(NightlyPlace::of(&unreleased), NightlyPlace::BeforeRelease);
        let released = changelog_head(LOG).expect("head");
        let v = nightly_version(&released.version, NightlyPlace::of(&released), "20261122", 17);
        assert_eq!(v, "1.4.2-1+nightly20261122.17");
        assert!(crate::names::check_deb_version(&v).is_ok(), "{v}");
    }

    #[test]
    fn upstream_versions_and_tags() {
        assert_eq!(upstream_version("1.4.2-1"), Some("1.4.2"));
        assert_eq!(upstream_version("2:1.4-2-1ubuntu1"), Some("1.4-2"));
        assert_eq!(upstream_version("7"), None);
        assert_eq!(upstream_version("1:7"), None);
        let before = NightlyPlace::BeforeRelease;
        assert_eq!(nightly_upstream_version("1.4.2-1", before, "20261122", 17), "1.4.2~nightly20261122.17-1");
        assert_eq!(nightly_upstream_version("2:1.4-1", before, "20261122", 17), "2:1.4~nightly20261122.17-1");
        assert_eq!(nightly_upstream_version("7", before, "20261122", 17), "7~nightly20261122.17");
        let after = NightlyPlace::AfterRelease;
        assert_eq!(nightly_upstream_version("1.4.2-1", after, "20261122", 17), "1.4.2+nightly20261122.17-1");
        assert_eq!(upstream_tag("upstream/%(version)s", "1.0~rc1"), "upstream/1.0_rc1");
        assert_eq!(upstream_tag("v%(version)s", "1..2."), "v1.#.2.#");
        assert_eq!(upstream_tag("upstream/%(version)s", "1.lock"), "upstream/1.#lock");
    }
}
