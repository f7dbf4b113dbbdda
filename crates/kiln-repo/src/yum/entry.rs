//! An RPM's index entry ([`RpmEntry`]): read from its headers once, when the
//! package is published, with its primary, filelists and other fragments
//! rendered as createrepo_c renders them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use rpm::{DependencyFlags, IndexSignatureTag, IndexTag};

use crate::yum::rpmhead::{package_files, read_headers, RawHeader, RpmHeaders};
use crate::yum::xml::{push_attr, push_file, push_num, push_text, push_text_element, push_version};
use crate::{RepoError, Result};

/// How many changelog entries (the newest) of each package go into `other.xml`,
/// as createrepo_c's default `--changelog-limit`.
pub const CHANGELOG_LIMIT: usize = 10;

/// One RPM's index data, computed once when the package is published and stored (as JSON) so that
/// regenerating a repository never re-reads package files.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RpmEntry {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// pkgid / checksum (of the whole file as published), lowercase hex.
    pub sha256: String,
    /// location href, relative to the repo root, e.g. "Packages/h/hello-2.12-1.el9.x86_64.rpm"
    pub location: String,
    /// The complete `<package type="rpm">...</package>` element for primary.xml.
    pub primary: String,
    /// The complete `<package pkgid=.. name=.. arch=..>...</package>` element for filelists.xml.
    pub filelists: String,
    /// The complete `<package ...>...</package>` element for other.xml (the newest
    /// [`CHANGELOG_LIMIT`] changelog entries, oldest first as createrepo_c writes them).
    pub other: String,
}

impl RpmEntry {
    /// `name-[epoch:]version-release.arch`; the epoch only when it is not 0.
    pub fn nevra(&self) -> String {
        if self.epoch == 0 {
            format!("{}-{}-{}.{}", self.name, self.version, self.release, self.arch)
        } else {
            format!("{}-{}:{}-{}.{}", self.name, self.epoch, self.version, self.release, self.arch)
        }
    }
}

/// Whether createrepo_c lists `path` in primary.xml as well as in filelists.xml.
pub fn is_primary_file(path: &str) -> bool {
    path.starts_with("/etc/") || path.contains("bin/") || path == "/usr/lib/sendmail"
}

/// The dependency lists of primary.xml, in createrepo_c's order:
/// (element, name tag, flags tag, version tag).
const DEPENDENCIES: [(&str, IndexTag, IndexTag, IndexTag); 8] = [
    ("rpm:provides", IndexTag::RPMTAG_PROVIDENAME, IndexTag::RPMTAG_PROVIDEFLAGS, IndexTag::RPMTAG_PROVIDEVERSION),
    ("rpm:requires", IndexTag::RPMTAG_REQUIRENAME, IndexTag::RPMTAG_REQUIREFLAGS, IndexTag::RPMTAG_REQUIREVERSION),
    ("rpm:conflicts", IndexTag::RPMTAG_CONFLICTNAME, IndexTag::RPMTAG_CONFLICTFLAGS, IndexTag::RPMTAG_CONFLICTVERSION),
    ("rpm:obsoletes", IndexTag::RPMTAG_OBSOLETENAME, IndexTag::RPMTAG_OBSOLETEFLAGS, IndexTag::RPMTAG_OBSOLETEVERSION),
    ("rpm:suggests", IndexTag::RPMTAG_SUGGESTNAME, IndexTag::RPMTAG_SUGGESTFLAGS, IndexTag::RPMTAG_SUGGESTVERSION),
    ("rpm:enhances", IndexTag::RPMTAG_ENHANCENAME, IndexTag::RPMTAG_ENHANCEFLAGS, IndexTag::RPMTAG_ENHANCEVERSION),
    (
        "rpm:recommends",
        IndexTag::RPMTAG_RECOMMENDNAME,
        IndexTag::RPMTAG_RECOMMENDFLAGS,
        IndexTag::RPMTAG_RECOMMENDVERSION,
    ),
    (
        "rpm:supplements",
        IndexTag::RPMTAG_SUPPLEMENTNAME,
        IndexTag::RPMTAG_SUPPLEMENTFLAGS,
        IndexTag::RPMTAG_SUPPLEMENTVERSION,
    ),
];

/// rpm's `_INSTALL_ONLY_MASK`: requirements needed before the package is installed.
const INSTALL_ONLY_MASK: u32 = DependencyFlags::SCRIPT_PRE.bits()
    | DependencyFlags::SCRIPT_POST.bits()
    | DependencyFlags::RPMLIB.bits()
    | DependencyFlags::KEYRING.bits()
    | DependencyFlags::PRETRANS.bits()
    | DependencyFlags::POSTTRANS.bits();

/// rpm's `_ALL_REQUIRES_MASK`, for recognising a legacy `PreReq:`.
const ALL_REQUIRES_MASK: u32 = DependencyFlags::INTERP.bits()
    | DependencyFlags::SCRIPT_PRE.bits()
    | DependencyFlags::SCRIPT_POST.bits()
    | DependencyFlags::SCRIPT_PREUN.bits()
    | DependencyFlags::SCRIPT_POSTUN.bits()
    | DependencyFlags::SCRIPT_VERIFY.bits()
    | DependencyFlags::FIND_REQUIRES.bits()
    | DependencyFlags::RPMLIB.bits()
    | DependencyFlags::KEYRING.bits()
    | DependencyFlags::PRETRANS.bits()
    | DependencyFlags::POSTTRANS.bits()
    | DependencyFlags::PREREQ.bits()
    | DependencyFlags::MISSINGOK.bits();

const SENSE_LT: u32 = DependencyFlags::LESS.bits();
const SENSE_GT: u32 = DependencyFlags::GREATER.bits();
const SENSE_EQ: u32 = DependencyFlags::EQUAL.bits();
const SENSE_MASK: u32 = SENSE_LT | SENSE_GT | SENSE_EQ;

/// The `flags` attribute for a dependency's comparison bits, if any.
fn dependency_flags(flags: u32) -> Option<&'static str> {
    match flags & SENSE_MASK {
        SENSE_EQ => Some("EQ"),
        SENSE_LT => Some("LT"),
        SENSE_GT => Some("GT"),
        x if x == SENSE_LT | SENSE_EQ => Some("LE"),
        x if x == SENSE_GT | SENSE_EQ => Some("GE"),
        _ => None,
    }
}

/// Splits `[epoch:]version[-release]` as createrepo_c does: a missing epoch is "0".
fn split_evr(evr: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, rest),
        Some(_) => ("0", evr),
        None => ("0", evr),
    };
    match rest.rsplit_once('-') {
        Some((version, release)) => (epoch, version, release),
        None => (epoch, rest, ""),
    }
}

fn push_dependencies(out: &mut String, h: &RawHeader, primary_files: &HashSet<&str>) {
    for (element, name_tag, flags_tag, version_tag) in DEPENDENCIES {
        let names = h.strings(name_tag);
        if names.is_empty() {
            continue;
        }
        let flags = h.ints(flags_tag);
        let versions = h.strings(version_tag);
        let requires = element == "rpm:requires";
        let mut seen: HashSet<(&str, u32, &str, bool)> = HashSet::with_capacity(names.len());
        let mut opened = false;
        for (i, name) in names.iter().enumerate() {
            let name: &str = name;
            let flag = flags.get(i).map_or(0, |&f| f as u32);
            let version: &str = versions.get(i).map_or("", |v| v);
            let mut pre = false;
            if requires {
                // rpmlib() features are rpm's business, and a package never needs
                // to ask for its own primary files (createrepo_c drops both).
                if name.starts_with("rpmlib(") || primary_files.contains(name) {
                    continue;
                }
                pre = flag & INSTALL_ONLY_MASK != 0 || flag & ALL_REQUIRES_MASK == DependencyFlags::PREREQ.bits();
            }
            let cmp = dependency_flags(flag);
            if !seen.insert((name, flag & SENSE_MASK, version, pre)) {
                continue;
            }
            if !opened {
                out.push_str("    <");
                out.push_str(element);
                out.push_str(">\n");
                opened = true;
            }
            out.push_str("      <rpm:entry");
            push_attr(out, "name", name);
            if let Some(cmp) = cmp {
                push_attr(out, "flags", cmp);
            }
            if !version.is_empty() {
                let (e, v, r) = split_evr(version);
                push_attr(out, "epoch", e);
                push_attr(out, "ver", v);
                if !r.is_empty() {
                    push_attr(out, "rel", r);
                }
            }
            if pre {
                out.push_str(" pre=\"1\"");
            }
            out.push_str("/>\n");
        }
        if opened {
            out.push_str("    </");
            out.push_str(element);
            out.push_str(">\n");
        }
    }
}

/// Reads the headers of the RPM at `path` (whose published bytes have `sha256` and `size`, file mtime `mtime` seconds)
/// and renders its index fragments. Errors name the file and the problem (RepoError::bad).
///
/// Fields filled as createrepo_c does: `<time file>` is `mtime`, `<size package>` is
/// `size`, `installed` the header's (LONG)SIZE and `archive` the uncompressed payload
/// size (0 if the package does not record it); a source package (one without a
/// SOURCERPM tag) gets arch `src`.
pub fn inspect_rpm(path: &Path, location: &str, sha256: &str, size: u64, mtime: u64) -> Result<RpmEntry> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!("{}: sha256 {sha256:?} is not 64 hex digits", path.display())));
    }
    if location.is_empty() {
        return Err(RepoError::Invalid(format!("{}: empty repository location", path.display())));
    }
    let sha256 = sha256.to_ascii_lowercase();
    let RpmHeaders { signature, main: h, header_start, header_end } = read_headers(path)?;

    let name = h.string(IndexTag::RPMTAG_NAME);
    let version = h.string(IndexTag::RPMTAG_VERSION);
    let release = h.string(IndexTag::RPMTAG_RELEASE);
    let is_source = !h.has(IndexTag::RPMTAG_SOURCERPM) || h.has(IndexTag::RPMTAG_SOURCEPACKAGE);
    let arch = if is_source { Cow::Borrowed("src") } else { h.string(IndexTag::RPMTAG_ARCH) };
    for (what, value) in [("name", &name), ("version", &version), ("release", &release), ("arch", &arch)] {
        if value.is_empty() {
            return Err(RepoError::bad(path, format!("header has no package {what}")));
        }
        // They become pool file names and index entries.
        kiln_core::names::check_rpm_field(what, value).map_err(|e| RepoError::bad(path, format!("header: {e}")))?;
    }
    let epoch = h.int(IndexTag::RPMTAG_EPOCH).and_then(|e| u32::try_from(e).ok()).unwrap_or(0);
    let installed = h.int(IndexTag::RPMTAG_LONGSIZE).or_else(|| h.int(IndexTag::RPMTAG_SIZE)).unwrap_or(0);
    let archive = h
        .int(IndexTag::RPMTAG_LONGARCHIVESIZE)
        .or_else(|| h.int(IndexTag::RPMTAG_ARCHIVESIZE))
        .or_else(|| signature.int(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE))
        .or_else(|| signature.int(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE))
        .or_else(|| h.int(IndexTag::RPMTAG_PAYLOADSIZEALT))
        .unwrap_or(0);
    let files = package_files(&h);
    let primary_files: HashSet<&str> = files.iter().map(|f| f.path.as_str()).filter(|p| is_primary_file(p)).collect();

    // primary.xml
    let mut primary = String::with_capacity(2048);
    primary.push_str("<package type=\"rpm\">\n");
    push_text_element(&mut primary, "  ", "name", &name);
    push_text_element(&mut primary, "  ", "arch", &arch);
    push_version(&mut primary, "  ", epoch, &version, &release);
    primary.push_str("  <checksum type=\"sha256\" pkgid=\"YES\">");
    primary.push_str(&sha256);
    primary.push_str("</checksum>\n");
    push_text_element(&mut primary, "  ", "summary", &h.string(IndexTag::RPMTAG_SUMMARY));
    push_text_element(&mut primary, "  ", "description", &h.string(IndexTag::RPMTAG_DESCRIPTION));
    push_text_element(&mut primary, "  ", "packager", &h.string(IndexTag::RPMTAG_PACKAGER));
    push_text_element(&mut primary, "  ", "url", &h.string(IndexTag::RPMTAG_URL));
    primary.push_str("  <time file=\"");
    push_num(&mut primary, mtime);
    primary.push_str("\" build=\"");
    push_num(&mut primary, h.int(IndexTag::RPMTAG_BUILDTIME).unwrap_or(0));
    primary.push_str("\"/>\n  <size package=\"");
    push_num(&mut primary, size);
    primary.push_str("\" installed=\"");
    push_num(&mut primary, installed);
    primary.push_str("\" archive=\"");
    push_num(&mut primary, archive);
    primary.push_str("\"/>\n  <location");
    push_attr(&mut primary, "href", location);
    primary.push_str("/>\n  <format>\n");
    push_text_element(&mut primary, "    ", "rpm:license", &h.string(IndexTag::RPMTAG_LICENSE));
    push_text_element(&mut primary, "    ", "rpm:vendor", &h.string(IndexTag::RPMTAG_VENDOR));
    push_text_element(&mut primary, "    ", "rpm:group", &h.string(IndexTag::RPMTAG_GROUP));
    push_text_element(&mut primary, "    ", "rpm:buildhost", &h.string(IndexTag::RPMTAG_BUILDHOST));
    let sourcerpm = if is_source { Cow::Borrowed("") } else { h.string(IndexTag::RPMTAG_SOURCERPM) };
    push_text_element(&mut primary, "    ", "rpm:sourcerpm", &sourcerpm);
    primary.push_str("    <rpm:header-range start=\"");
    push_num(&mut primary, header_start);
    primary.push_str("\" end=\"");
    push_num(&mut primary, header_end);
    primary.push_str("\"/>\n");
    push_dependencies(&mut primary, &h, &primary_files);
    for file in files.iter().filter(|f| is_primary_file(&f.path)) {
        push_file(&mut primary, "    ", file);
    }
    primary.push_str("  </format>\n</package>\n");

    // The opening tag shared by filelists.xml and other.xml.
    let mut open = String::with_capacity(256);
    open.push_str("<package");
    push_attr(&mut open, "pkgid", &sha256);
    push_attr(&mut open, "name", &name);
    push_attr(&mut open, "arch", &arch);
    open.push_str(">\n");
    push_version(&mut open, "  ", epoch, &version, &release);

    // filelists.xml
    let mut filelists = String::with_capacity(open.len() + 16 + files.iter().map(|f| f.path.len() + 32).sum::<usize>());
    filelists.push_str(&open);
    for file in &files {
        push_file(&mut filelists, "  ", file);
    }
    filelists.push_str("</package>\n");

    // other.xml: the header lists changelogs newest first; keep the newest
    // CHANGELOG_LIMIT and write them oldest first.
    let times = h.ints(IndexTag::RPMTAG_CHANGELOGTIME);
    let authors = h.strings(IndexTag::RPMTAG_CHANGELOGNAME);
    let texts = h.strings(IndexTag::RPMTAG_CHANGELOGTEXT);
    let changes = times.len().min(authors.len()).min(texts.len()).min(CHANGELOG_LIMIT);
    let mut other = open;
    for i in (0..changes).rev() {
        other.push_str("  <changelog");
        push_attr(&mut other, "author", &authors[i]);
        other.push_str(" date=\"");
        push_num(&mut other, times[i]);
        other.push_str("\">");
        push_text(&mut other, &texts[i]);
        other.push_str("</changelog>\n");
    }
    other.push_str("</package>\n");

    Ok(RpmEntry {
        name: name.into_owned(),
        epoch,
        version: version.into_owned(),
        release: release.into_owned(),
        arch: arch.into_owned(),
        sha256,
        location: location.to_owned(),
        primary,
        filelists,
        other,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::yum::rpmhead::tests::{build, Built, Spec};
    use crate::yum::xml::tests::well_formed;

    pub(crate) fn inspect(built: &Built) -> RpmEntry {
        let location = "Packages/h/hello-2.12-1.el9.x86_64.rpm";
        inspect_rpm(&built.path, location, &built.sha256, built.bytes.len() as u64, 1_234_567)
            .expect("inspect test rpm")
    }

    #[test]
    fn yum_epoch_and_source_packages() {
        let entry = inspect(&build(&Spec { epoch: Some(3), ..Spec::default() }));
        assert_eq!(entry.epoch, 3);
        assert_eq!(entry.nevra(), "hello-3:2.12-1.el9.x86_64");
        assert!(entry.primary.contains("<version epoch=\"3\" ver=\"2.12\" rel=\"1.el9\"/>"));
        assert!(entry.filelists.contains("<version epoch=\"3\" ver=\"2.12\" rel=\"1.el9\"/>"));

        let entry = inspect(&build(&Spec { source: true, ..Spec::default() }));
        assert_eq!(entry.arch, "src");
        assert_eq!(entry.nevra(), "hello-2.12-1.el9.src");
        assert!(entry.primary.contains("<arch>src</arch>"));
        assert!(entry.primary.contains("<rpm:sourcerpm/>"));
        assert!(entry.other.contains("arch=\"src\""));
    }

    #[test]
    fn yum_bad_input_is_an_error_not_a_panic() {
        let built = build(&Spec::default());
        let good = &built.bytes;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.rpm");
        let run = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write bad rpm");
            inspect_rpm(&path, "bad.rpm", &built.sha256, bytes.len() as u64, 0)
        };

        let err = run(b"definitely not an rpm").expect_err("malformed rpm is rejected").to_string();
        assert!(err.contains("bad.rpm") && err.contains("file ends inside the RPM lead"), "{err}");
        let err = run(&[0u8; 200]).expect_err("malformed rpm is rejected").to_string();
        assert!(err.contains("not an RPM"), "{err}");
        let header_end = read_headers(&built.path).expect("read headers").header_end as usize;
        let err = run(&good[..header_end - 1]).expect_err("malformed rpm is rejected").to_string();
        assert!(err.contains("file ends inside the main header"), "{err}");
        assert!(matches!(inspect_rpm(&built.path, "x.rpm", "nothex", 1, 0), Err(RepoError::Invalid(_))));
        assert!(matches!(inspect_rpm(&built.path, "", &built.sha256, 1, 0), Err(RepoError::Invalid(_))));
        assert!(matches!(
            inspect_rpm(&dir.path().join("missing.rpm"), "x.rpm", &built.sha256, 1, 0),
            Err(RepoError::Io { .. })
        ));

        // Corrupt the headers byte by byte: every result is Ok or Err, never a
        // panic, and whatever renders is well-formed XML.
        let mut rendered = 0;
        for i in 96..header_end {
            for value in [0xff, 0x00, 0x7f] {
                let mut bytes = good.clone();
                bytes[i] = value;
                if let Ok(entry) = run(&bytes) {
                    for xml in [&entry.primary, &entry.filelists, &entry.other] {
                        well_formed(xml);
                    }
                    rendered += 1;
                }
            }
        }
        assert!(rendered > 0);
    }
}
