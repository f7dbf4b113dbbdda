//! Debian source package details: reading and writing `debian/changelog`
//! entries, and the nightly version scheme.
//!
//! A nightly build of `1.4.2-1` becomes `1.4.2-1~nightly20261122.17` (date,
//! then build id): `~` sorts before anything, so every nightly sorts below
//! the release it leads to, and later nightlies sort above earlier ones.

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

/// The nightly version of `version` for a build on `date` (YYYYMMDD).
pub fn nightly_version(version: &str, date: &str, build_id: i64) -> String {
    format!("{version}~nightly{date}.{build_id}")
}

/// A new changelog entry to put on top of `debian/changelog`.
/// `date` is in RFC 2822 form, as dpkg wants it.
pub fn changelog_entry(head: &ChangelogHead, version: &str, change: &str, maintainer: &str, date: &str) -> String {
    let dist = if head.distribution.is_empty() { "UNRELEASED" } else { &head.distribution };
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
        let v = nightly_version(&head.version, "20261122", 17);
        assert_eq!(v, "1.4.2-1~nightly20261122.17");
        let entry =
            changelog_entry(&head, &v, "Nightly build 17.", "kiln <kiln@localhost>", "Sun, 22 Nov 2026 03:00:00 +0000");
        assert!(entry
            .starts_with("libgrace (1.4.2-1~nightly20261122.17) bookworm; urgency=medium\n\n  * Nightly build 17.\n"));
        assert!(changelog_head("garbage").is_err());
        assert!(changelog_head("").is_err());
    }
}
