//! Debian packages as an APT index sees them: the control file inside a
//! `.deb` (an `ar` archive holding `control.tar.{gz,xz,zst}`) and the
//! `.dsc` of a source package, each turned once into the stanza its index
//! (`Packages`, `Sources`) lists, so regenerating an index never re-reads a
//! package.

use crate::hash::Sums;
use crate::{RepoError, Result};
use kiln_core::deb822::{parse_paragraph, parse_source_upload, Paragraph};
use std::io::Read;
use std::path::Path;

/// A binary package's `Packages` stanza and identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebEntry {
    pub name: String,
    pub version: String,
    /// `all` or a Debian architecture.
    pub arch: String,
    /// The source package it was built from (for the pool directory).
    pub source: String,
    /// The stanza without its trailing blank line.
    pub stanza: String,
}

impl DebEntry {
    /// Whether this is a package of debug symbols (what dh_strip makes as
    /// `NAME-dbgsym`): it goes to the `debug` component, as Debian's debug
    /// archive keeps them apart from what users install.
    pub fn is_debug_symbols(&self) -> bool {
        // Asked of every package on every publish: most packages are told
        // apart by one search, without going through their lines.
        if !self.name.ends_with("-dbgsym") && !self.stanza.contains("Auto-Built-Package:") {
            return false;
        }
        let field = |name: &str| {
            self.stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(str::trim))
        };
        kiln_core::debuginfo::is_debug_symbols_deb(&self.name, field("Auto-Built-Package"), field("Section"))
    }
}

/// A source package's `Sources` stanza and identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DscEntry {
    pub name: String,
    pub version: String,
    /// The files the `.dsc` lists (tarballs, diffs), besides the `.dsc` itself.
    pub files: Vec<String>,
    pub stanza: String,
}

/// The pool directory of a source package, as Debian lays it out:
/// `pool/main/h/hello`, `pool/main/libg/libgrace`.
pub fn pool_dir(component: &str, source: &str) -> String {
    let first = source.chars().next().map_or(0, char::len_utf8);
    let len = if source.starts_with("lib") && source.len() > 3 { 4 } else { first };
    let prefix = source.get(..len).unwrap_or(source);
    format!("pool/{component}/{prefix}/{source}")
}

fn field<'a>(p: &'a Paragraph, name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads the control file of the `.deb` at `path`.
pub fn read_control(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| RepoError::io(path, e))?;
    control_of(&bytes).map_err(|reason| RepoError::bad(path, reason))
}

/// One member of an `ar` archive (what a `.deb` is): its name, its 60-byte
/// header as written, and its data.
pub(crate) struct ArMember<'a> {
    pub name: String,
    pub header: &'a [u8],
    pub data: &'a [u8],
}

/// The members of an `ar` archive, checked for corrupt headers and truncation.
pub(crate) fn ar_members(bytes: &[u8]) -> std::result::Result<Vec<ArMember<'_>>, String> {
    let mut rest = bytes.strip_prefix(b"!<arch>\n").ok_or("not an ar archive")?;
    let mut out = Vec::new();
    while rest.len() >= 60 {
        let (header, body) = rest.split_at(60);
        if &header[58..60] != b"`\n" {
            return Err("corrupt ar member header".into());
        }
        let name = String::from_utf8_lossy(&header[..16]).trim_end().trim_end_matches('/').to_string();
        let size: usize = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| format!("ar member {name}: bad size"))?;
        let data = body.get(..size).ok_or_else(|| format!("ar member {name} is truncated"))?;
        out.push(ArMember { name, header, data });
        // Members are padded to an even length.
        rest = body.get(size + (size & 1)..).unwrap_or_default();
    }
    Ok(out)
}

/// The `control` file inside a `.deb`'s bytes.
fn control_of(deb: &[u8]) -> std::result::Result<String, String> {
    for m in ar_members(deb)? {
        if let Some(compression) = m.name.strip_prefix("control.tar") {
            let data = m.data;
            let reader: Box<dyn Read + '_> = match compression {
                "" => Box::new(data),
                ".gz" => Box::new(flate2::read::GzDecoder::new(data)),
                ".xz" => Box::new(liblzma::read::XzDecoder::new(data)),
                ".zst" => Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| e.to_string())?),
                other => return Err(format!("unsupported control archive compression {other:?}")),
            };
            return control_in_tar(reader);
        }
    }
    Err("no control.tar member".into())
}

/// Largest control file accepted; real ones are a few KiB.
const MAX_CONTROL: u64 = 1 << 20;

fn control_in_tar(reader: impl Read) -> std::result::Result<String, String> {
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(|e| format!("control archive: {e}"))? {
        let entry = entry.map_err(|e| format!("control archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("control archive: {e}"))?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "control" {
            let mut text = String::new();
            entry.take(MAX_CONTROL).read_to_string(&mut text).map_err(|e| format!("control file: {e}"))?;
            return Ok(text);
        }
    }
    Err("the control archive has no control file".into())
}

/// Reads a `.deb` and renders its `Packages` stanza for a pool file named
/// `filename` (relative to the repository root) with checksums `sums`.
pub fn inspect_deb(path: &Path, filename: &str, sums: &Sums) -> Result<DebEntry> {
    let control = read_control(path)?;
    entry_from_control(&control, filename, sums).map_err(|reason| RepoError::bad(path, reason))
}

/// The entry of a package whose control file is `control`.
pub fn entry_from_control(control: &str, filename: &str, sums: &Sums) -> std::result::Result<DebEntry, String> {
    let p = parse_paragraph(control).map_err(|e| format!("control file: {e}"))?;
    let get = |name: &'static str| field(&p, name).filter(|v| !v.is_empty()).ok_or(format!("control file: no {name}"));
    let name = get("Package")?.to_string();
    let version = get("Version")?.to_string();
    let arch = get("Architecture")?.to_string();
    let source = field(&p, "Source").and_then(|s| s.split_whitespace().next()).unwrap_or(name.as_str()).to_string();
    // Names become pool directories and index entries: Debian's grammars first.
    let bad = |e: kiln_core::names::PackageNameError| format!("control file: {e}");
    kiln_core::names::check_deb_name("Package", &name).map_err(bad)?;
    kiln_core::names::check_deb_name("Source", &source).map_err(bad)?;
    kiln_core::names::check_deb_version(&version).map_err(bad)?;
    kiln_core::names::check_deb_arch(&arch).map_err(bad)?;
    // The control text as written (field order and continuation lines
    // intact), then where the file is and what it hashes to.
    // Fields that say where the file is and what it hashes to are the
    // repository's to write, never the package's.
    let ours = ["filename", "size", "md5sum", "sha1", "sha256", "sha512"];
    let mut stanza = String::with_capacity(control.len() + 256);
    let mut skipping = false;
    for line in control.lines() {
        if line.trim().is_empty() {
            break;
        }
        if !line.starts_with([' ', '\t']) {
            let name = line.split(':').next().unwrap_or_default().to_ascii_lowercase();
            skipping = ours.contains(&name.as_str());
        }
        if !skipping {
            stanza.push_str(line);
            stanza.push('\n');
        }
    }
    stanza.push_str(&format!(
        "Filename: {filename}\nSize: {}\nMD5sum: {}\nSHA1: {}\nSHA256: {}",
        sums.size, sums.md5, sums.sha1, sums.sha256
    ));
    Ok(DebEntry { name, version, arch, source, stanza })
}

/// Reads a `.dsc` (whose own checksums are `sums`) and renders its `Sources`
/// stanza for a pool directory `directory`.
pub fn inspect_dsc(path: &Path, dsc_name: &str, directory: &str, sums: &Sums) -> Result<DscEntry> {
    let text = std::fs::read_to_string(path).map_err(|e| RepoError::io(path, e))?;
    dsc_entry(&text, dsc_name, directory, sums).map_err(|reason| RepoError::bad(path, reason))
}

fn dsc_entry(text: &str, dsc_name: &str, directory: &str, sums: &Sums) -> std::result::Result<DscEntry, String> {
    let upload = parse_source_upload(text).map_err(|e| e.to_string())?;
    let p = parse_paragraph(text).map_err(|e| e.to_string())?;
    let mut stanza = format!("Package: {}\n", upload.source);
    let listed = ["source", "files", "checksums-sha1", "checksums-sha256", "checksums-md5"];
    for (k, v) in &p {
        if listed.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        stanza.push_str(k);
        stanza.push(':');
        for (i, line) in v.split('\n').enumerate() {
            stanza.push_str(if i == 0 { " " } else { "\n " });
            stanza.push_str(if line.is_empty() && i > 0 { "." } else { line });
        }
        stanza.push('\n');
    }
    stanza.push_str(&format!("Directory: {directory}\n"));
    let mut files = Vec::new();
    type Pick = fn(&kiln_core::deb822::ListedFile) -> Option<&String>;
    let sections: [(&str, Pick, &String); 3] = [
        ("Files", |f| f.md5.as_ref(), &sums.md5),
        ("Checksums-Sha1", |f| f.sha1.as_ref(), &sums.sha1),
        ("Checksums-Sha256", |f| f.sha256.as_ref(), &sums.sha256),
    ];
    for (title, sum_of, dsc_sum) in sections {
        stanza.push_str(title);
        stanza.push_str(":\n");
        stanza.push_str(&format!(" {dsc_sum} {} {dsc_name}\n", sums.size));
        for f in &upload.files {
            let sum = sum_of(f).ok_or(format!("{}: no {title} checksum", f.name))?;
            stanza.push_str(&format!(" {sum} {} {}\n", f.size, f.name));
        }
    }
    for f in &upload.files {
        files.push(f.name.clone());
    }
    let stanza = stanza.trim_end().to_string();
    Ok(DscEntry { name: upload.source, version: upload.version, files, stanza })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", name, 0, 0, 0, 100644, data.len()).as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn control_tar_gz(control: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_size(control.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "./control", control.as_bytes()).expect("append");
        tar.into_inner().expect("tar").finish().expect("gz")
    }

    #[test]
    fn stanza_from_deb() {
        let control = "Package: libgrace1\nSource: libgrace (1.4.2-1)\nVersion: 1.4.2-1\nArchitecture: amd64\nDescription: grace\n a library\n .\n more\n";
        let deb =
            ar(&[("debian-binary", b"2.0\n"), ("control.tar.gz", &control_tar_gz(control)), ("data.tar.xz", b"x")]);
        let got = control_of(&deb).expect("control");
        assert_eq!(got, control);
        let sums = crate::hash::sums(&deb);
        let e = entry_from_control(&got, "pool/main/libg/libgrace/libgrace1_1.4.2-1_amd64.deb", &sums).expect("entry");
        assert_eq!(
            (e.name.as_str(), e.version.as_str(), e.arch.as_str(), e.source.as_str()),
            ("libgrace1", "1.4.2-1", "amd64", "libgrace")
        );
        assert!(e.stanza.starts_with("Package: libgrace1\nSource: libgrace (1.4.2-1)\n"));
        assert!(e.stanza.contains("Description: grace\n a library\n .\n more\nFilename: pool/main/libg/libgrace/"));
        assert!(e.stanza.ends_with(&format!("SHA256: {}", sums.sha256)));
    }

    #[test]
    fn broken_debs_are_clear_errors() {
        assert_eq!(control_of(b"PK\x03\x04").expect_err("must fail"), "not an ar archive");
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar.xz", b"x")]);
        assert_eq!(control_of(&deb).expect_err("must fail"), "no control.tar member");
        let mut cut = ar(&[("control.tar.gz", &control_tar_gz("Package: a\n"))]);
        cut.truncate(cut.len() - 10);
        assert!(control_of(&cut).expect_err("must fail").contains("truncated"));
        let sums = crate::hash::sums(b"");
        assert!(entry_from_control("Package: a\nVersion: 1\n", "f", &sums)
            .expect_err("must fail")
            .contains("no Architecture"));
        assert!(entry_from_control("Package: ../a\nVersion: 1\nArchitecture: all\n", "f", &sums)
            .expect_err("must fail")
            .contains("Package \"../a\" is not valid"));
        let traversal = "Package: ab\nSource: ../../../../tmp/x\nVersion: 1\nArchitecture: all\n";
        assert!(entry_from_control(traversal, "f", &sums).expect_err("must fail").contains("Source \"../"));
    }

    #[test]
    fn where_a_package_lives_is_the_repositorys_to_say() {
        let sums = crate::hash::sums(b"x");
        let control = "Package: ab\nVersion: 1\nArchitecture: all\nFilename: pool/main/o/openssl/evil.deb\nSHA256: 00\n  continued\nDescription: d\n";
        let e = entry_from_control(control, "pool/main/a/ab/ab_1_all.deb", &sums).expect("entry");
        assert_eq!(e.stanza.matches("Filename:").count(), 1, "{}", e.stanza);
        assert!(
            e.stanza.contains("Filename: pool/main/a/ab/ab_1_all.deb") && !e.stanza.contains("evil"),
            "{}",
            e.stanza
        );
        assert!(!e.stanza.contains("continued") && e.stanza.contains("Description: d"), "{}", e.stanza);
        assert!(
            entry_from_control("Package: ab\npackage: openssl\nVersion: 1\nArchitecture: all\n", "f", &sums).is_err()
        );
    }

    #[test]
    fn stanza_from_dsc() {
        let dsc = "Format: 3.0 (quilt)\nSource: hello\nBinary: hello\nVersion: 2.10-3\nFiles:\n 11 5 hello_2.10.orig.tar.gz\n 22 6 hello_2.10-3.debian.tar.xz\nChecksums-Sha256:\n aa 5 hello_2.10.orig.tar.gz\n bb 6 hello_2.10-3.debian.tar.xz\nChecksums-Sha1:\n a1 5 hello_2.10.orig.tar.gz\n b1 6 hello_2.10-3.debian.tar.xz\n";
        let sums = crate::hash::sums(dsc.as_bytes());
        let e = dsc_entry(dsc, "hello_2.10-3.dsc", "pool/main/h/hello", &sums).expect("dsc");
        assert_eq!(e.name, "hello");
        assert_eq!(e.files, vec!["hello_2.10-3.debian.tar.xz", "hello_2.10.orig.tar.gz"]);
        assert!(e.stanza.starts_with("Package: hello\n"));
        assert!(e.stanza.contains("Directory: pool/main/h/hello\nFiles:\n"));
        assert!(e.stanza.contains(&format!(" {} {} hello_2.10-3.dsc\n", sums.sha256, sums.size)));
        assert!(e.stanza.contains(" bb 6 hello_2.10-3.debian.tar.xz"));
    }

    #[test]
    fn pool_dirs() {
        assert_eq!(pool_dir("main", "hello"), "pool/main/h/hello");
        assert_eq!(pool_dir("main", "libgrace"), "pool/main/libg/libgrace");
    }
}
