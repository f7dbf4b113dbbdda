//! deb822 control files as uploads bring them: `.dsc` and `.changes`,
//! possibly clear-signed. Parsing only; checking files is the master's.
//!
//! A hand-written reader: the format needed here is small (one paragraph,
//! a few multi-line fields), and this keeps the pure domain free of
//! dependencies and easy to fuzz.

use crate::names::valid_artifact_name;
use std::collections::BTreeMap;

/// One paragraph: field names (case as written) to values; continuation
/// lines are kept, joined with `\n`.
pub type Paragraph = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("line {0}: expected `Field: value` or a continuation line")]
    BadLine(usize),
    #[error("no fields")]
    Empty,
    #[error("line {0}: the field {1} appears twice (field names compare without case)")]
    Duplicate(usize, String),
    #[error("the clear-signed message is not terminated")]
    UnterminatedSignature,
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field}: bad entry {entry:?}")]
    BadEntry { field: &'static str, entry: String },
    #[error("file {0:?} has an invalid name")]
    BadName(String),
    #[error(transparent)]
    BadValue(#[from] crate::names::PackageNameError),
    #[error("file {name}: the size differs between {a} and {b}")]
    SizeDisagrees { name: String, a: &'static str, b: &'static str },
}

/// The text inside a clear-signed message (or the text itself).
fn strip_signature(text: &str) -> Result<String, ControlError> {
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Ok(text.to_string());
    }
    let mut lines = text.lines().skip(1);
    // Armor headers ("Hash: SHA256") up to the first blank line.
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
    }
    let mut out = String::new();
    for l in lines {
        if l.starts_with("-----BEGIN PGP SIGNATURE-----") {
            return Ok(out);
        }
        out.push_str(l.strip_prefix("- ").unwrap_or(l));
        out.push('\n');
    }
    Err(ControlError::UnterminatedSignature)
}

/// Parses the first paragraph of a control file.
pub fn parse_paragraph(text: &str) -> Result<Paragraph, ControlError> {
    let body = strip_signature(text)?;
    let mut p = Paragraph::new();
    let mut last: Option<String> = None;
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            if p.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(key) = &last else { return Err(ControlError::BadLine(i + 1)) };
            let v = p.entry(key.clone()).or_default();
            v.push('\n');
            v.push_str(line.trim());
            continue;
        }
        let (k, v) = line.split_once(':').ok_or(ControlError::BadLine(i + 1))?;
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(ControlError::BadLine(i + 1));
        }
        // As dpkg: a field given twice (`Package` and `package`) would let
        // kiln and apt read different values.
        if p.keys().any(|known| known.eq_ignore_ascii_case(k)) {
            let shown: String = k.chars().take(64).collect();
            return Err(ControlError::Duplicate(i + 1, shown));
        }
        p.insert(k.to_string(), v.trim().to_string());
        last = Some(k.to_string());
    }
    if p.is_empty() {
        return Err(ControlError::Empty);
    }
    Ok(p)
}

/// A file a `.dsc` or `.changes` lists, with every checksum it gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub size: u64,
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// What the master needs from an uploaded `.dsc` or `.changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUpload {
    pub source: String,
    pub version: String,
    pub files: Vec<ListedFile>,
}

fn field<'a>(p: &'a Paragraph, name: &'static str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Records one kind of checksum on a listed file.
type SetChecksum = fn(&mut ListedFile, String);

/// Reads `Files`, `Checksums-Sha1` and `Checksums-Sha256` of a `.dsc` or
/// `.changes` (whose `Files` lines carry section and priority too).
pub fn parse_source_upload(text: &str) -> Result<SourceUpload, ControlError> {
    let p = parse_paragraph(text)?;
    let source = field(&p, "Source").ok_or(ControlError::Missing("Source"))?;
    // A .changes may say "Source: name (version)".
    let source = source.split_whitespace().next().unwrap_or_default().to_string();
    let version = field(&p, "Version").ok_or(ControlError::Missing("Version"))?.to_string();
    if source.is_empty() || version.is_empty() {
        return Err(ControlError::Missing("Source"));
    }
    // Both become parts of pool paths and file names.
    crate::names::check_deb_name("Source", &source)?;
    crate::names::check_deb_version(&version)?;
    let mut files: BTreeMap<String, ListedFile> = BTreeMap::new();
    let lists: [(&'static str, SetChecksum); 3] = [
        ("Files", |f, c| f.md5 = Some(c)),
        ("Checksums-Sha1", |f, c| f.sha1 = Some(c)),
        ("Checksums-Sha256", |f, c| f.sha256 = Some(c)),
    ];
    for (name, set) in lists {
        let Some(value) = field(&p, name) else { continue };
        for entry in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = entry.split_whitespace().collect();
            let bad = || ControlError::BadEntry { field: name, entry: entry.to_string() };
            // "sum size name", or in a .changes' Files "sum size section priority name".
            let (sum, size, file) = match words.as_slice() {
                [sum, size, file] | [sum, size, _, _, file] => (*sum, *size, *file),
                _ => return Err(bad()),
            };
            if !sum.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let size: u64 = size.parse().map_err(|_| bad())?;
            if !valid_artifact_name(file) {
                return Err(ControlError::BadName(file.to_string()));
            }
            let f = files.entry(file.to_string()).or_insert_with(|| ListedFile {
                name: file.to_string(),
                size,
                ..Default::default()
            });
            if f.size != size {
                return Err(ControlError::SizeDisagrees { name: file.to_string(), a: "Files", b: name });
            }
            set(f, sum.to_ascii_lowercase());
        }
    }
    if files.is_empty() {
        return Err(ControlError::Missing("Files"));
    }
    Ok(SourceUpload { source, version, files: files.into_values().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSC: &str = "-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Format: 3.0 (native)
Source: kiln-hello
Binary: kiln-hello
Version: 1.0
Checksums-Sha1:
 da39a3ee5e6b4b0d3255bfef95601890afd80709 768 kiln-hello_1.0.tar.xz
Checksums-Sha256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 768 kiln-hello_1.0.tar.xz
Files:
 d41d8cd98f00b204e9800998ecf8427e 768 kiln-hello_1.0.tar.xz
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
";

    #[test]
    fn reads_a_signed_dsc() {
        let u = parse_source_upload(DSC).expect("parses");
        assert_eq!((u.source.as_str(), u.version.as_str()), ("kiln-hello", "1.0"));
        assert_eq!(u.files.len(), 1);
        let f = &u.files[0];
        assert_eq!((f.name.as_str(), f.size), ("kiln-hello_1.0.tar.xz", 768));
        assert_eq!(f.md5.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(f.sha1.is_some() && f.sha256.is_some());
    }

    #[test]
    fn reads_changes_files_lines() {
        let changes = "Source: kiln-hello (1.0)\nVersion: 1.0\nFiles:\n d41d8cd98f00b204e9800998ecf8427e 12 misc optional kiln-hello_1.0.dsc\n";
        let u = parse_source_upload(changes).expect("parses");
        assert_eq!(u.source, "kiln-hello");
        assert_eq!(u.files[0].name, "kiln-hello_1.0.dsc");
    }

    #[test]
    fn rejects_what_is_malformed() {
        assert_eq!(parse_source_upload(""), Err(ControlError::Empty));
        assert_eq!(
            parse_paragraph("Package: mine\nVersion: 1\npackage: openssl\n"),
            Err(ControlError::Duplicate(3, "package".into()))
        );
        assert_eq!(parse_source_upload("Version: 1\nFiles:\n aa 1 x\n"), Err(ControlError::Missing("Source")));
        assert_eq!(parse_source_upload("Source: xy\nVersion: 1\n"), Err(ControlError::Missing("Files")));
        assert!(matches!(
            parse_source_upload("Source: xy\nVersion: 1\nFiles:\n zz 1 x.tar\n"),
            Err(ControlError::BadEntry { .. })
        ));
        assert!(matches!(
            parse_source_upload("Source: xy\nVersion: 1\nFiles:\n aa 1 ../etc/passwd\n"),
            Err(ControlError::BadName(_))
        ));
        assert!(matches!(
            parse_source_upload("Source: xy\nVersion: 1\nFiles:\n aa 1 a.tar\nChecksums-Sha256:\n bb 2 a.tar\n"),
            Err(ControlError::SizeDisagrees { .. })
        ));
        assert_eq!(parse_paragraph(" leading continuation\n"), Err(ControlError::BadLine(1)));
        assert_eq!(
            parse_paragraph("-----BEGIN PGP SIGNED MESSAGE-----\n\nSource: xy\n"),
            Err(ControlError::UnterminatedSignature)
        );
        // The source name and version become pool paths: traversal is refused.
        assert!(matches!(
            parse_source_upload("Source: ../../../../tmp/x\nVersion: 1\nFiles:\n aa 1 x.tar\n"),
            Err(ControlError::BadValue(_))
        ));
        assert!(matches!(
            parse_source_upload("Source: xy\nVersion: 1/../../x\nFiles:\n aa 1 x.tar\n"),
            Err(ControlError::BadValue(_))
        ));
    }
}
