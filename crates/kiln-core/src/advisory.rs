//! Advisories a channel publishes for its RPMs (YUM's `updateinfo.xml`):
//! what `dnf updateinfo` lists and `dnf upgrade --security` acts on. What
//! an operator gives is checked here; the packages are resolved against
//! the channel's rows by the publisher.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvisoryKind {
    Security,
    Bugfix,
    Enhancement,
    Newpackage,
}

impl AdvisoryKind {
    pub fn parse(s: &str) -> Result<Self, AdvisoryError> {
        match s {
            "security" => Ok(AdvisoryKind::Security),
            "bugfix" => Ok(AdvisoryKind::Bugfix),
            "enhancement" => Ok(AdvisoryKind::Enhancement),
            "newpackage" => Ok(AdvisoryKind::Newpackage),
            other => Err(AdvisoryError::Kind(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdvisoryKind::Security => "security",
            AdvisoryKind::Bugfix => "bugfix",
            AdvisoryKind::Enhancement => "enhancement",
            AdvisoryKind::Newpackage => "newpackage",
        }
    }
}

/// Severities as RHEL's advisories spell them (dnf's `--sec-severity`).
pub const SEVERITIES: &[&str] = &["Critical", "Important", "Moderate", "Low"];

/// A reference an advisory carries: a CVE, a bug, or a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub href: String,
    pub id: String,
    /// `cve`, `bugzilla` or `other`.
    pub kind: String,
}

impl Reference {
    /// A reference from a URL, its kind and id read from it: a CVE named
    /// in it, a Bugzilla `show_bug.cgi?id=N`, or any other page.
    pub fn from_url(url: &str) -> Result<Reference, AdvisoryError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.chars().any(char::is_whitespace) {
            return Err(AdvisoryError::Reference(url.to_string()));
        }
        let cve = url.split(['/', '=', '?', '&', '#']).find(|part| {
            let mut p = part.split('-');
            matches!((p.next(), p.next(), p.next(), p.next()), (Some("CVE"), Some(y), Some(n), None)
                if y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) && n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if let Some(id) = cve {
            return Ok(Reference { href: url.into(), id: id.into(), kind: "cve".into() });
        }
        if let Some((_, query)) = url.split_once("show_bug.cgi?") {
            if let Some(id) = query.split('&').find_map(|kv| kv.strip_prefix("id=")) {
                return Ok(Reference { href: url.into(), id: id.into(), kind: "bugzilla".into() });
            }
        }
        Ok(Reference { href: url.into(), id: String::new(), kind: "other".into() })
    }
}

/// One package an advisory names, as the channel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvisoryPackage {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// The RPM's file name.
    pub filename: String,
    /// The YUM repository (target) it is in.
    pub repository: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    pub kind: AdvisoryKind,
    pub severity: Option<String>,
    pub title: String,
    pub description: String,
    /// Unix seconds.
    pub issued: u64,
    pub references: Vec<Reference>,
    pub packages: Vec<AdvisoryPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvisoryError {
    #[error("advisory id {0:?}: use letters, digits and . _ : - (at most 64), e.g. KILN-2026-0001")]
    Id(String),
    #[error("advisory type {0:?}: known are security, bugfix, enhancement, newpackage")]
    Kind(String),
    #[error("severity {0:?}: known are Critical, Important, Moderate, Low")]
    Severity(String),
    #[error("reference {0:?} is not an http(s) URL")]
    Reference(String),
    #[error("an advisory needs a title")]
    NoTitle,
    #[error("an advisory needs at least one package")]
    NoPackages,
    #[error("{0:?} is not a package name, or NAME-VERSION-RELEASE[.ARCH]")]
    Package(String),
    #[error("the channel holds no binary RPM {0}")]
    NotHeld(String),
    #[error("an advisory's {what} is too long (at most {max})")]
    TooLong { what: &'static str, max: usize },
}

pub fn check_id(id: &str) -> Result<(), AdvisoryError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AdvisoryError::Id(id.to_string()))
    }
}

/// A severity as written, in RHEL's spelling (`important` → `Important`).
pub fn parse_severity(s: &str) -> Result<String, AdvisoryError> {
    SEVERITIES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(s))
        .map(|k| k.to_string())
        .ok_or_else(|| AdvisoryError::Severity(s.to_string()))
}

/// What `--package` may say: a name (its newest version in the channel),
/// or `NAME-[EPOCH:]VERSION-RELEASE` with an optional `.ARCH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub name: String,
    pub evr: Option<(u32, String, String)>,
    pub arch: Option<String>,
}

impl PackageSpec {
    /// Reads `text`; `is_name` says whether a string is a package name the
    /// channel holds (a name may itself contain dashes).
    pub fn parse(text: &str, is_name: impl Fn(&str) -> bool) -> Result<PackageSpec, AdvisoryError> {
        let bad = || AdvisoryError::Package(text.to_string());
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        if is_name(text) {
            return Ok(PackageSpec { name: text.into(), evr: None, arch: None });
        }
        let (rest, arch) = match text.rsplit_once('.') {
            Some((rest, arch)) if KNOWN_ARCHES.contains(&arch) => (rest, Some(arch.to_string())),
            _ => (text, None),
        };
        let (nv, release) = rest.rsplit_once('-').ok_or_else(bad)?;
        let (name, ev) = nv.rsplit_once('-').ok_or_else(bad)?;
        let (epoch, version) = match ev.split_once(':') {
            Some((e, v)) => (e.parse().map_err(|_| bad())?, v),
            None => (0, ev),
        };
        if name.is_empty() || version.is_empty() || release.is_empty() {
            return Err(bad());
        }
        Ok(PackageSpec { name: name.into(), evr: Some((epoch, version.into(), release.into())), arch })
    }
}

/// An advisory as an operator asks for it, before its packages are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryRequest {
    pub id: String,
    pub kind: String,
    pub severity: Option<String>,
    pub title: String,
    pub description: String,
    /// Package names or `NAME-VERSION-RELEASE[.ARCH]`.
    pub packages: Vec<String>,
    /// URLs.
    pub references: Vec<String>,
}

/// Builds the advisory `req` asks for from the binary RPMs a channel holds
/// (`held`, in publish order): a package given by name means its latest
/// published version, in each architecture.
pub fn resolve(req: &AdvisoryRequest, held: &[AdvisoryPackage], now: u64) -> Result<Advisory, AdvisoryError> {
    check_id(&req.id)?;
    let kind = AdvisoryKind::parse(&req.kind)?;
    let severity = req.severity.as_deref().map(parse_severity).transpose()?;
    if req.title.trim().is_empty() {
        return Err(AdvisoryError::NoTitle);
    }
    if req.packages.is_empty() {
        return Err(AdvisoryError::NoPackages);
    }
    for (what, len, max) in [
        ("title", req.title.chars().count(), MAX_TITLE),
        ("description", req.description.len(), MAX_DESCRIPTION),
        ("packages", req.packages.len(), MAX_LIST),
        ("references", req.references.len(), MAX_LIST),
    ] {
        if len > max {
            return Err(AdvisoryError::TooLong { what, max });
        }
    }
    let references = req.references.iter().map(|u| Reference::from_url(u)).collect::<Result<Vec<_>, _>>()?;
    let binary = |p: &&AdvisoryPackage| p.arch != "src";
    let mut packages: Vec<AdvisoryPackage> = Vec::new();
    for text in &req.packages {
        let spec = PackageSpec::parse(text, |n| held.iter().filter(binary).any(|p| p.name == n))?;
        let named = held
            .iter()
            .filter(binary)
            .filter(|p| p.name == spec.name && spec.arch.as_ref().is_none_or(|a| &p.arch == a));
        let chosen: Vec<&AdvisoryPackage> = match &spec.evr {
            Some((e, v, r)) => named.filter(|p| p.epoch == *e && &p.version == v && &p.release == r).collect(),
            // The latest published in each repository and architecture:
            // an el8 and an el9 build differ in release, and both are fixed.
            None => {
                let mut latest: Vec<&AdvisoryPackage> = Vec::new();
                for p in named {
                    latest.retain(|l| (&l.repository, &l.arch) != (&p.repository, &p.arch));
                    latest.push(p);
                }
                latest
            }
        };
        if chosen.is_empty() {
            return Err(AdvisoryError::NotHeld(text.clone()));
        }
        for p in chosen {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
    }
    Ok(Advisory {
        id: req.id.clone(),
        kind,
        severity,
        title: req.title.trim().to_string(),
        description: req.description.clone(),
        issued: now,
        references,
        packages,
    })
}

/// Limits on what an advisory says: characters of the title, bytes of the
/// description, entries of each list.
const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 64 * 1024;
const MAX_LIST: usize = 1000;

/// What of `advisories` still applies to a channel holding `held` (its
/// binary RPMs, with when each was published, Unix seconds): a package is
/// listed while the channel holds it, or holds a build of the same name
/// and architecture published after the advisory (a newer fix; retention
/// may have dropped the named one). An advisory none of whose packages
/// remain (removed, or rolled back past) is left out.
pub fn in_effect(advisories: &[Advisory], held: &[(AdvisoryPackage, u64)]) -> Vec<Advisory> {
    advisories
        .iter()
        .filter_map(|a| {
            let packages: Vec<AdvisoryPackage> = a
                .packages
                .iter()
                .filter(|p| {
                    held.iter().any(|(h, published)| {
                        h == *p
                            || (h.name == p.name
                                && h.arch == p.arch
                                && h.repository == p.repository
                                && *published > a.issued)
                    })
                })
                .cloned()
                .collect();
            (!packages.is_empty()).then(|| Advisory { packages, ..a.clone() })
        })
        .collect()
}

/// Architectures a `.ARCH` suffix may name.
const KNOWN_ARCHES: &[&str] = &["noarch", "x86_64", "i686", "aarch64", "ppc64le", "s390x", "armv7hl", "riscv64", "src"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_from_their_urls() {
        let cve = Reference::from_url("https://www.cve.org/CVERecord?id=CVE-2026-12345").expect("cve");
        assert_eq!((cve.kind.as_str(), cve.id.as_str()), ("cve", "CVE-2026-12345"));
        let bug = Reference::from_url("https://bugzilla.example.org/show_bug.cgi?id=4242").expect("bug");
        assert_eq!((bug.kind.as_str(), bug.id.as_str()), ("bugzilla", "4242"));
        assert_eq!(Reference::from_url("https://example.org/notes").expect("page").kind, "other");
        assert!(Reference::from_url("javascript:alert(1)").is_err());
    }

    #[test]
    fn package_specs_by_name_or_full_version() {
        let held = |n: &str| n == "kiln-cafe";
        assert_eq!(
            PackageSpec::parse("kiln-cafe", held),
            Ok(PackageSpec { name: "kiln-cafe".into(), evr: None, arch: None })
        );
        assert_eq!(
            PackageSpec::parse("kiln-cafe-1:1.0-b3.noarch", held),
            Ok(PackageSpec {
                name: "kiln-cafe".into(),
                evr: Some((1, "1.0".into(), "b3".into())),
                arch: Some("noarch".into())
            })
        );
        assert_eq!(
            PackageSpec::parse("kiln-cafe-1.0-3.el9", held).map(|s| s.evr),
            Ok(Some((0, "1.0".into(), "3.el9".into())))
        );
        assert!(PackageSpec::parse("cafe", held).is_err());
        assert!(PackageSpec::parse("../x-1-2", held).is_err());
    }

    fn held(name: &str, release: &str, arch: &str) -> AdvisoryPackage {
        AdvisoryPackage {
            name: name.into(),
            epoch: 0,
            version: "1.0".into(),
            release: release.into(),
            arch: arch.into(),
            filename: format!("{name}-1.0-{release}.{arch}.rpm"),
            repository: "el-9-x86_64".into(),
        }
    }

    #[test]
    fn a_name_means_its_latest_version_in_every_arch() {
        let rows = [
            held("cafe", "1", "x86_64"),
            held("cafe", "2", "x86_64"),
            held("cafe", "2", "aarch64"),
            held("cafe", "2", "src"),
        ];
        let req = AdvisoryRequest {
            id: "KILN-1".into(),
            kind: "security".into(),
            severity: Some("low".into()),
            title: " Fix ".into(),
            description: String::new(),
            packages: vec!["cafe".into(), "cafe-1.0-2.x86_64".into()],
            references: vec![],
        };
        let a = resolve(&req, &rows, 7).expect("resolves");
        assert_eq!(a.packages, vec![rows[1].clone(), rows[2].clone()]);
        assert_eq!((a.severity.as_deref(), a.title.as_str(), a.issued), (Some("Low"), "Fix", 7));
        let old =
            resolve(&AdvisoryRequest { packages: vec!["cafe-1.0-1".into()], ..req.clone() }, &rows, 7).expect("old");
        assert_eq!(old.packages, vec![rows[0].clone()]);
        assert_eq!(
            resolve(&AdvisoryRequest { packages: vec!["cafe-1.0-9".into()], ..req.clone() }, &rows, 7),
            Err(AdvisoryError::NotHeld("cafe-1.0-9".into()))
        );
        assert_eq!(
            resolve(&AdvisoryRequest { packages: vec![], ..req.clone() }, &rows, 7),
            Err(AdvisoryError::NoPackages)
        );
        assert_eq!(
            resolve(&AdvisoryRequest { kind: "urgent".into(), ..req }, &rows, 7),
            Err(AdvisoryError::Kind("urgent".into()))
        );
    }

    #[test]
    fn a_name_covers_each_repository_and_what_is_gone_drops_out() {
        let el8 = AdvisoryPackage {
            repository: "el-8-x86_64".into(),
            release: "1.el8".into(),
            ..held("cafe", "x", "x86_64")
        };
        let el9 = AdvisoryPackage {
            repository: "el-9-x86_64".into(),
            release: "1.el9".into(),
            ..held("cafe", "x", "x86_64")
        };
        let req = AdvisoryRequest {
            id: "KILN-2".into(),
            kind: "bugfix".into(),
            severity: None,
            title: "t".into(),
            description: String::new(),
            packages: vec!["cafe".into()],
            references: vec![],
        };
        let a = resolve(&req, &[el8.clone(), el9.clone()], 100).expect("resolves");
        assert_eq!(a.packages, vec![el8.clone(), el9.clone()], "both distributions' builds");
        // el8's build removed: el9's stays listed; a newer el9 build published
        // later (the named one pruned) keeps it listed too.
        let newer = AdvisoryPackage { release: "2.el9".into(), ..el9.clone() };
        let kept = in_effect(std::slice::from_ref(&a), &[(newer.clone(), 200)]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].packages, vec![el9.clone()]);
        // Rolled back to a build from before the advisory: nothing applies.
        let older = AdvisoryPackage { release: "0.el9".into(), ..el9 };
        assert!(in_effect(&[a], &[(older, 50)]).is_empty());
        let long = AdvisoryRequest { title: "x".repeat(201), ..req };
        assert_eq!(resolve(&long, &[el8], 1), Err(AdvisoryError::TooLong { what: "title", max: 200 }));
    }

    #[test]
    fn ids_and_severities() {
        assert!(check_id("KILN-2026-0001").is_ok());
        for bad in ["", "-x", "a b", "x<y", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_severity("important"), Ok("Important".into()));
        assert!(parse_severity("urgent").is_err());
    }
}
