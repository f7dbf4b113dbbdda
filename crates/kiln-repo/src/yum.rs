//! YUM/DNF repository metadata (`repodata/`) for RPM packages.
//!
//! This renders the same files `createrepo_c --unique-md-filenames` writes and
//! that dnf, librepo and libsolv read:
//!
//! * `repodata/<sha256>-primary.xml.gz`: names, versions, checksums, locations,
//!   dependencies and the "primary" files (under `/etc/`, containing `bin/`, or
//!   `/usr/lib/sendmail`) of every package;
//! * `repodata/<sha256>-filelists.xml.gz`: every file of every package;
//! * `repodata/<sha256>-other.xml.gz`: changelogs (the newest
//!   [`CHANGELOG_LIMIT`] entries of each package);
//! * `repodata/repomd.xml`: the index of the three, with the sha256 of each
//!   file as stored (`checksum`) and decompressed (`open-checksum`).
//!
//! The work is split in two so that regenerating a repository never re-reads
//! package files. [`inspect_rpm`] reads an RPM's headers once, when the package
//! is published, and renders its three XML fragments into an [`RpmEntry`] that
//! the caller stores (as JSON). [`render_repodata`] then only concatenates
//! stored fragments and compresses them. Signing `repomd.xml` is the caller's
//! business.
//!
//! RPM headers are untrusted input. They are parsed here by a small,
//! bounds-checked reader rather than through the `rpm` crate's getters: that
//! reader never panics or over-allocates on a malformed header, replaces invalid
//! UTF-8 instead of rejecting the package, and gives the exact byte range of the
//! main header that `<rpm:header-range>` needs. The tag numbers and flag bits
//! come from the `rpm` crate. All text is XML-escaped, and characters that XML
//! 1.0 cannot carry at all (most C0 controls) are dropped.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::pieces::PieceCache;
use flate2::Compression;
use rpm::{DependencyFlags, FileFlags, IndexSignatureTag, IndexTag};
use sha2::{Digest, Sha256};

use crate::{RepoError, Result};

/// gzip level of the `.xml.gz` files (6 is zlib's and createrepo_c's default).
pub const GZIP_LEVEL: Compression = Compression::new(6);

/// How many changelog entries (the newest) of each package go into `other.xml`,
/// as createrepo_c's default `--changelog-limit`.
pub const CHANGELOG_LIMIT: usize = 10;

/// Above this many packages, `filelists.xml.gz` is compressed on a second thread
/// while `primary.xml.gz` and `other.xml.gz` are compressed on the calling one.
const PARALLEL_THRESHOLD: usize = 64;

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const NS_COMMON: &str = "http://linux.duke.edu/metadata/common";
const NS_RPM: &str = "http://linux.duke.edu/metadata/rpm";
const NS_FILELISTS: &str = "http://linux.duke.edu/metadata/filelists";
const NS_OTHER: &str = "http://linux.duke.edu/metadata/other";
const NS_REPO: &str = "http://linux.duke.edu/metadata/repo";

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

/// One file of repodata: its path relative to the repo root (e.g. "repodata/<sha256>-primary.xml.gz"),
/// and its bytes.
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

// ---------------------------------------------------------------------------
// Reading RPM headers
// ---------------------------------------------------------------------------

const RPM_LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const RPM_LEAD_SIZE: u64 = 96;
/// Header magic (3 bytes) and header version 1.
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// Limits librpm itself enforces on a header (`hdrchkTags`, `hdrchkData`).
const HEADER_MAX_TAGS: u32 = 0xffff;
const HEADER_MAX_DATA: u32 = 0x0fff_ffff;

const TYPE_CHAR: u32 = 1;
const TYPE_INT8: u32 = 2;
const TYPE_INT16: u32 = 3;
const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

const S_IFMT: u64 = 0o170000;
const S_IFDIR: u64 = 0o040000;

#[derive(Clone, Copy)]
struct IndexEntry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// One RPM header (signature or main): its index and data store, read with every
/// offset and count checked. Missing or malformed tags read as absent.
struct RawHeader {
    entries: Vec<IndexEntry>,
    store: Vec<u8>,
    /// Size in the file: 16-byte intro + index + data store (no padding).
    size: u64,
}

fn be32(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
}

fn read_bytes(reader: &mut impl Read, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            RepoError::bad(path, format!("file ends inside the {what}"))
        } else {
            RepoError::io(path, e)
        }
    })
}

impl RawHeader {
    /// Reads a header that starts at byte `at` of a file of `file_len` bytes.
    fn read(reader: &mut impl Read, path: &Path, at: u64, file_len: u64, what: &str) -> Result<Self> {
        let mut intro = [0u8; 16];
        read_bytes(reader, &mut intro, path, what)?;
        if intro[..4] != HEADER_MAGIC {
            return Err(RepoError::bad(path, format!("{what} at byte {at} has no header magic")));
        }
        let count = be32(&intro[8..12]);
        let data_len = be32(&intro[12..16]);
        if count > HEADER_MAX_TAGS || data_len > HEADER_MAX_DATA {
            return Err(RepoError::bad(path, format!("{what} is too large ({count} tags, {data_len} data bytes)")));
        }
        let size = 16 + u64::from(count) * 16 + u64::from(data_len);
        if at.saturating_add(size) > file_len {
            return Err(RepoError::bad(path, format!("file ends inside the {what}")));
        }
        let mut index = vec![0u8; count as usize * 16];
        read_bytes(reader, &mut index, path, what)?;
        let mut store = vec![0u8; data_len as usize];
        read_bytes(reader, &mut store, path, what)?;
        let entries = index
            .chunks_exact(16)
            .map(|e| IndexEntry {
                tag: be32(&e[0..4]),
                kind: be32(&e[4..8]),
                offset: be32(&e[8..12]),
                count: be32(&e[12..16]),
            })
            .collect();
        Ok(RawHeader { entries, store, size })
    }

    fn find(&self, tag: impl Into<u32>) -> Option<IndexEntry> {
        let tag = tag.into();
        self.entries.iter().find(|e| e.tag == tag).copied()
    }

    fn has(&self, tag: impl Into<u32>) -> bool {
        self.find(tag).is_some()
    }

    /// The store from an entry's offset on (None for an offset outside the store).
    fn data(&self, e: &IndexEntry) -> Option<&[u8]> {
        self.store.get(e.offset as usize..)
    }

    /// All strings of a string, string-array or i18n-string tag (invalid UTF-8 replaced).
    fn strings(&self, tag: impl Into<u32>) -> Vec<Cow<'_, str>> {
        let Some(e) = self.find(tag) else { return Vec::new() };
        let n = match e.kind {
            TYPE_STRING => 1,
            TYPE_STRING_ARRAY | TYPE_I18NSTRING => e.count as usize,
            _ => return Vec::new(),
        };
        let Some(mut rest) = self.data(&e) else { return Vec::new() };
        let mut out = Vec::with_capacity(n.min(rest.len()));
        for _ in 0..n {
            let Some(nul) = rest.iter().position(|&b| b == 0) else { break };
            out.push(String::from_utf8_lossy(&rest[..nul]));
            rest = &rest[nul + 1..];
        }
        out
    }

    /// The first string of a string tag ("" when absent or malformed). For i18n
    /// strings this is the untranslated ("C") one.
    fn string(&self, tag: impl Into<u32>) -> Cow<'_, str> {
        let Some(e) = self.find(tag) else { return Cow::Borrowed("") };
        if !matches!(e.kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || e.count == 0 {
            return Cow::Borrowed("");
        }
        let Some(rest) = self.data(&e) else { return Cow::Borrowed("") };
        match rest.iter().position(|&b| b == 0) {
            Some(nul) => String::from_utf8_lossy(&rest[..nul]),
            None => Cow::Borrowed(""),
        }
    }

    /// All numbers of an integer tag, widened to u64 (empty when absent or malformed).
    fn ints(&self, tag: impl Into<u32>) -> Vec<u64> {
        let Some(e) = self.find(tag) else { return Vec::new() };
        let Some(width) = int_width(e.kind) else { return Vec::new() };
        let Some(len) = (e.count as usize).checked_mul(width) else { return Vec::new() };
        let Some(bytes) = self.data(&e).and_then(|d| d.get(..len)) else { return Vec::new() };
        bytes.chunks_exact(width).map(be_uint).collect()
    }

    /// The first number of an integer tag.
    fn int(&self, tag: impl Into<u32>) -> Option<u64> {
        let e = self.find(tag)?;
        let width = int_width(e.kind)?;
        if e.count == 0 {
            return None;
        }
        self.data(&e)?.get(..width).map(be_uint)
    }
}

/// Bytes per item of an integer tag type.
fn int_width(kind: u32) -> Option<usize> {
    match kind {
        TYPE_CHAR | TYPE_INT8 => Some(1),
        TYPE_INT16 => Some(2),
        TYPE_INT32 => Some(4),
        TYPE_INT64 => Some(8),
        _ => None,
    }
}

fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// The signature and main header of an RPM file, and where the main header lies.
struct RpmHeaders {
    signature: RawHeader,
    main: RawHeader,
    /// Byte offsets of the main header in the file: `<rpm:header-range start end>`.
    header_start: u64,
    header_end: u64,
}

fn read_headers(path: &Path) -> Result<RpmHeaders> {
    let file = File::open(path).map_err(|e| RepoError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| RepoError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut lead = [0u8; RPM_LEAD_SIZE as usize];
    read_bytes(&mut reader, &mut lead, path, "RPM lead")?;
    if lead[..4] != RPM_LEAD_MAGIC {
        return Err(RepoError::bad(path, "not an RPM file (no lead magic)"));
    }
    let signature = RawHeader::read(&mut reader, path, RPM_LEAD_SIZE, file_len, "signature header")?;
    // The signature header is padded to a multiple of 8 bytes; the lead (96) and
    // the intro and index (multiples of 16) are already aligned.
    let padding = (8 - signature.size % 8) % 8;
    let mut pad = [0u8; 8];
    read_bytes(&mut reader, &mut pad[..padding as usize], path, "signature header")?;
    let header_start = RPM_LEAD_SIZE + signature.size + padding;
    let main = RawHeader::read(&mut reader, path, header_start, file_len, "main header")?;
    let header_end = header_start + main.size;
    Ok(RpmHeaders { signature, main, header_start, header_end })
}

// ---------------------------------------------------------------------------
// XML helpers
// ---------------------------------------------------------------------------

/// Whether XML 1.0 can carry `c` at all (even as a character reference).
fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `s` escaped for use between tags (`attr == false`) or inside a
/// double-quoted attribute value (`attr == true`). Characters XML cannot carry
/// are dropped; in attributes, tabs and line breaks become character
/// references so that attribute-value normalisation keeps them.
fn push_escaped(out: &mut String, s: &str, attr: bool) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attr => "&quot;",
            '\r' => "&#13;",
            '\n' if attr => "&#10;",
            '\t' if attr => "&#9;",
            c if !xml_char_ok(c) => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(rep);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

fn push_text(out: &mut String, s: &str) {
    push_escaped(out, s, false);
}

fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

/// `<name>text</name>` (or `<name/>` when empty) on its own line.
fn push_text_element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    if text.is_empty() {
        out.push_str("/>\n");
    } else {
        out.push('>');
        push_text(out, text);
        out.push_str("</");
        out.push_str(name);
        out.push_str(">\n");
    }
}

fn push_num(out: &mut String, n: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
}

fn push_version(out: &mut String, indent: &str, epoch: u32, version: &str, release: &str) {
    out.push_str(indent);
    out.push_str("<version epoch=\"");
    push_num(out, u64::from(epoch));
    out.push('"');
    push_attr(out, "ver", version);
    push_attr(out, "rel", release);
    out.push_str("/>\n");
}

/// `<file>`, `<file type="dir">` or `<file type="ghost">`.
fn push_file(out: &mut String, indent: &str, file: &PkgFile) {
    out.push_str(indent);
    out.push_str("<file");
    match file.kind {
        FileKind::Plain => {}
        FileKind::Dir => out.push_str(" type=\"dir\""),
        FileKind::Ghost => out.push_str(" type=\"ghost\""),
    }
    out.push('>');
    push_text(out, &file.path);
    out.push_str("</file>\n");
}

// ---------------------------------------------------------------------------
// Package contents
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FileKind {
    Plain,
    Dir,
    Ghost,
}

struct PkgFile {
    path: String,
    kind: FileKind,
}

/// Whether createrepo_c lists `path` in primary.xml as well as in filelists.xml.
pub fn is_primary_file(path: &str) -> bool {
    path.starts_with("/etc/") || path.contains("bin/") || path == "/usr/lib/sendmail"
}

fn package_files(h: &RawHeader) -> Vec<PkgFile> {
    let modes = h.ints(IndexTag::RPMTAG_FILEMODES);
    let flags = h.ints(IndexTag::RPMTAG_FILEFLAGS);
    let kind = |i: usize| {
        let mode = modes.get(i).copied().unwrap_or(0);
        let flag = flags.get(i).copied().unwrap_or(0);
        if mode & S_IFMT == S_IFDIR {
            FileKind::Dir
        } else if flag & u64::from(FileFlags::GHOST.bits()) != 0 {
            FileKind::Ghost
        } else {
            FileKind::Plain
        }
    };
    let basenames = h.strings(IndexTag::RPMTAG_BASENAMES);
    if basenames.is_empty() {
        // Packages from before compressed file names (rpm < 4) list full paths.
        return h
            .strings(IndexTag::RPMTAG_OLDFILENAMES)
            .into_iter()
            .enumerate()
            .map(|(i, p)| PkgFile { path: p.into_owned(), kind: kind(i) })
            .collect();
    }
    let dirindexes = h.ints(IndexTag::RPMTAG_DIRINDEXES);
    let dirnames = h.strings(IndexTag::RPMTAG_DIRNAMES);
    let mut files = Vec::with_capacity(basenames.len());
    for (i, base) in basenames.iter().enumerate() {
        let dir = dirindexes.get(i).and_then(|&d| usize::try_from(d).ok()).and_then(|d| dirnames.get(d));
        let Some(dir) = dir else { continue };
        let mut path = String::with_capacity(dir.len() + base.len());
        path.push_str(dir);
        path.push_str(base);
        files.push(PkgFile { path, kind: kind(i) });
    }
    files
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

// ---------------------------------------------------------------------------
// Rendering repodata
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Section {
    Primary,
    Filelists,
    Other,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Primary => "primary",
            Section::Filelists => "filelists",
            Section::Other => "other",
        }
    }

    fn open(self, packages: usize) -> String {
        let (root, ns) = match self {
            Section::Primary => ("metadata", NS_COMMON),
            Section::Filelists => ("filelists", NS_FILELISTS),
            Section::Other => ("otherdata", NS_OTHER),
        };
        let rpm_ns = match self {
            Section::Primary => format!(" xmlns:rpm=\"{NS_RPM}\""),
            _ => String::new(),
        };
        format!("{XML_DECL}<{root} xmlns=\"{ns}\"{rpm_ns} packages=\"{packages}\">\n")
    }

    fn close(self) -> &'static str {
        match self {
            Section::Primary => "</metadata>\n",
            Section::Filelists => "</filelists>\n",
            Section::Other => "</otherdata>\n",
        }
    }

    fn fragment(self, entry: &RpmEntry) -> &str {
        match self {
            Section::Primary => &entry.primary,
            Section::Filelists => &entry.filelists,
            Section::Other => &entry.other,
        }
    }
}

/// One compressed metadata file and what repomd.xml says about it.
struct Compressed {
    section: Section,
    bytes: Vec<u8>,
    checksum: String,
    open_checksum: String,
    open_size: u64,
}

/// Streams a section through gzip while hashing and counting the uncompressed
/// bytes, so that the uncompressed document is never held in memory.
fn compress(section: Section, entries: &[&RpmEntry], cache: &PieceCache) -> Compressed {
    // The document's opening (which counts the packages) and closing are
    // pieces of their own; the package fragments are cut at content-defined
    // points, so one new package changes one cached piece.
    let mut pieces = vec![section.open(entries.len()).into_bytes()];
    pieces.extend(crate::pieces::cut(entries.iter().map(|e| (e.sha256.as_str(), section.fragment(e).as_bytes())), b""));
    pieces.push(section.close().as_bytes().to_vec());
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for p in &pieces {
        hasher.update(p);
        size += p.len() as u64;
    }
    let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    let bytes = crate::pieces::gzip(&refs, GZIP_LEVEL.level(), cache);
    Compressed {
        section,
        checksum: hex::encode(Sha256::digest(&bytes)),
        open_checksum: hex::encode(hasher.finalize()),
        open_size: size,
        bytes,
    }
}

/// Renders primary/filelists/other (.xml.gz, file names prefixed with their sha256 as createrepo_c does
/// with --unique-md-filenames) and repomd.xml (revision = `revision`, each <data> with checksum,
/// open-checksum, location, timestamp, size, open-size). Returns the data files and, last, repomd.xml
/// (path "repodata/repomd.xml"). The caller signs repomd.xml (writes repomd.xml.asc) — not your job.
/// `entries` may be empty: the result must still be a valid, empty repository that dnf accepts.
///
/// Packages appear in the order of `entries`. Every `<timestamp>` is `revision`
/// too (createrepo_c also defaults the revision to the generation time), so pass
/// a Unix time. The output depends only on the arguments (the gzip headers carry
/// no time), so rendering the same entries twice gives the same bytes.
pub fn render_repodata(entries: &[&RpmEntry], revision: u64) -> Vec<RepoFile> {
    render_repodata_cached(entries, revision, &PieceCache::new(None))
}

/// [`render_repodata`], reusing compressed pieces from `cache`.
pub fn render_repodata_cached(entries: &[&RpmEntry], revision: u64, cache: &PieceCache) -> Vec<RepoFile> {
    let (primary, filelists, other) = std::thread::scope(|scope| {
        // filelists is usually the largest: compress it beside the other two.
        let spawned = if entries.len() > PARALLEL_THRESHOLD {
            std::thread::Builder::new()
                .name("yum-filelists".into())
                .spawn_scoped(scope, || compress(Section::Filelists, entries, cache))
                .ok()
        } else {
            None
        };
        let primary = compress(Section::Primary, entries, cache);
        let other = compress(Section::Other, entries, cache);
        let filelists = match spawned {
            Some(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => compress(Section::Filelists, entries, cache),
        };
        (primary, filelists, other)
    });

    let mut repomd = String::with_capacity(2048);
    repomd.push_str(XML_DECL);
    let _ = writeln!(repomd, "<repomd xmlns=\"{NS_REPO}\" xmlns:rpm=\"{NS_RPM}\">");
    let _ = writeln!(repomd, "  <revision>{revision}</revision>");
    let mut files = Vec::with_capacity(4);
    for data in [primary, filelists, other] {
        let name = data.section.name();
        let path = format!("repodata/{}-{name}.xml.gz", data.checksum);
        let _ = write!(
            repomd,
            "  <data type=\"{name}\">\n    <checksum type=\"sha256\">{}</checksum>\n    \
             <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{path}\"/>\n    \
             <timestamp>{revision}</timestamp>\n    <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
            data.checksum,
            data.open_checksum,
            data.bytes.len(),
            data.open_size,
        );
        files.push(RepoFile { path, bytes: data.bytes });
    }
    repomd.push_str("</repomd>\n");
    files.push(RepoFile { path: "repodata/repomd.xml".to_owned(), bytes: repomd.into_bytes() });
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    // The rpm crate's PackageBuilder needs its "payload" feature, which this crate
    // does not enable, so the tests write RPM files by hand: a lead, a signature
    // header, a main header and a stand-in payload. inspect_rpm reads only headers,
    // and every file is cross-checked with rpm::PackageMetadata.

    enum V {
        S(Vec<u8>),
        A(Vec<Vec<u8>>),
        I18n(Vec<u8>),
        N16(Vec<u16>),
        N32(Vec<u32>),
    }

    fn s(text: &str) -> V {
        V::S(text.as_bytes().to_vec())
    }

    fn a(items: &[&str]) -> V {
        V::A(items.iter().map(|i| i.as_bytes().to_vec()).collect())
    }

    fn tag(t: IndexTag) -> u32 {
        t as u32
    }

    /// A header: magic, index, data store (items aligned as rpm aligns them).
    fn header(mut tags: Vec<(u32, V)>) -> Vec<u8> {
        tags.sort_by_key(|(t, _)| *t);
        let mut index = Vec::new();
        let mut store = Vec::new();
        for (t, v) in &tags {
            let nul = |b: &Vec<u8>| [b.as_slice(), &[0]].concat();
            let (kind, align, count, bytes) = match v {
                V::S(b) => (TYPE_STRING, 1, 1, nul(b)),
                V::I18n(b) => (TYPE_I18NSTRING, 1, 1, nul(b)),
                V::A(items) => (TYPE_STRING_ARRAY, 1, items.len(), items.iter().flat_map(nul).collect()),
                V::N16(n) => (TYPE_INT16, 2, n.len(), n.iter().flat_map(|x| x.to_be_bytes()).collect()),
                V::N32(n) => (TYPE_INT32, 4, n.len(), n.iter().flat_map(|x| x.to_be_bytes()).collect()),
            };
            while store.len() % align != 0 {
                store.push(0);
            }
            index.extend(t.to_be_bytes());
            index.extend(kind.to_be_bytes());
            index.extend((store.len() as u32).to_be_bytes());
            index.extend((count as u32).to_be_bytes());
            store.extend(bytes);
        }
        let mut out = HEADER_MAGIC.to_vec();
        out.extend([0; 4]);
        out.extend((tags.len() as u32).to_be_bytes());
        out.extend((store.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    }

    struct Spec {
        summary: Vec<u8>,
        epoch: Option<u32>,
        source: bool,
    }

    impl Default for Spec {
        fn default() -> Self {
            Spec { summary: b"Says hello".to_vec(), epoch: None, source: false }
        }
    }

    const DEP_LT: u32 = 2;
    const DEP_EQ: u32 = 8;
    const DEP_GE: u32 = 12;

    fn rpm_bytes(spec: &Spec) -> Vec<u8> {
        let mut out = RPM_LEAD_MAGIC.to_vec();
        out.extend([3, 0, 0, 0, 0, 1]);
        let mut name = b"hello-2.12-1.el9".to_vec();
        name.resize(66, 0);
        out.extend(name);
        out.extend([0, 1, 0, 5]);
        out.extend([0; 16]);
        // A signature header whose store is not a multiple of 8 bytes (76), so it is padded.
        out.extend(header(vec![
            (IndexSignatureTag::RPMSIGTAG_SHA256 as u32, s(&"ab".repeat(32))),
            (IndexSignatureTag::RPMSIGTAG_SIZE as u32, V::N32(vec![4096])),
            (IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE as u32, V::N32(vec![4321])),
        ]));
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let mut tags = vec![
            (tag(IndexTag::RPMTAG_NAME), s("hello")),
            (tag(IndexTag::RPMTAG_VERSION), s("2.12")),
            (tag(IndexTag::RPMTAG_RELEASE), s("1.el9")),
            (tag(IndexTag::RPMTAG_SUMMARY), V::I18n(spec.summary.clone())),
            (tag(IndexTag::RPMTAG_DESCRIPTION), V::I18n(b"Prints a greeting.".to_vec())),
            (tag(IndexTag::RPMTAG_BUILDTIME), V::N32(vec![1_690_000_000])),
            (tag(IndexTag::RPMTAG_BUILDHOST), s("builder.example.com")),
            (tag(IndexTag::RPMTAG_SIZE), V::N32(vec![12345])),
            (tag(IndexTag::RPMTAG_LICENSE), s("GPL-3.0-or-later")),
            (tag(IndexTag::RPMTAG_GROUP), V::I18n(b"Unspecified".to_vec())),
            (tag(IndexTag::RPMTAG_URL), s("https://example.com/hello")),
            (tag(IndexTag::RPMTAG_ARCH), s("x86_64")),
            (tag(IndexTag::RPMTAG_ENCODING), s("utf-8")),
            (tag(IndexTag::RPMTAG_FILEMODES), V::N16(vec![0o100755, 0o100644, 0o040755, 0o100644, 0o100644])),
            (
                tag(IndexTag::RPMTAG_FILEFLAGS),
                V::N32(vec![0, FileFlags::CONFIG.bits(), 0, FileFlags::DOC.bits(), FileFlags::GHOST.bits()]),
            ),
            (tag(IndexTag::RPMTAG_BASENAMES), a(&["hello", "hello.conf", "hello.d", "README", "hello.log"])),
            (tag(IndexTag::RPMTAG_DIRINDEXES), V::N32(vec![0, 1, 1, 2, 3])),
            (tag(IndexTag::RPMTAG_DIRNAMES), a(&["/usr/bin/", "/etc/", "/usr/share/doc/hello/", "/var/log/"])),
            (tag(IndexTag::RPMTAG_PROVIDENAME), a(&["hello", "hello(x86-64)", "hello-cli"])),
            (tag(IndexTag::RPMTAG_PROVIDEFLAGS), V::N32(vec![DEP_EQ, DEP_EQ, DEP_EQ])),
            (tag(IndexTag::RPMTAG_PROVIDEVERSION), a(&["2.12-1.el9", "2.12-1.el9", "2.12"])),
            (
                tag(IndexTag::RPMTAG_REQUIRENAME),
                a(&["bash", "coreutils", "/usr/bin/hello", "rpmlib(CompressedFileNames)", "/bin/sh", "bash"]),
            ),
            (
                tag(IndexTag::RPMTAG_REQUIREFLAGS),
                V::N32(vec![
                    DEP_GE,
                    0,
                    0,
                    DEP_LT | DEP_EQ | DependencyFlags::RPMLIB.bits(),
                    DependencyFlags::SCRIPT_PRE.bits(),
                    DEP_GE,
                ]),
            ),
            (tag(IndexTag::RPMTAG_REQUIREVERSION), a(&["1:4.0-2", "", "", "3.0.4-1", "", "1:4.0-2"])),
            (tag(IndexTag::RPMTAG_CONFLICTNAME), a(&["hello-old"])),
            (tag(IndexTag::RPMTAG_CONFLICTFLAGS), V::N32(vec![DEP_LT])),
            (tag(IndexTag::RPMTAG_CONFLICTVERSION), a(&["2.0"])),
            (tag(IndexTag::RPMTAG_RECOMMENDNAME), a(&["hello-extras"])),
            (tag(IndexTag::RPMTAG_RECOMMENDFLAGS), V::N32(vec![0])),
            (tag(IndexTag::RPMTAG_RECOMMENDVERSION), a(&[""])),
            (tag(IndexTag::RPMTAG_CHANGELOGTIME), V::N32(vec![1_700_000_000, 1_600_000_000])),
            (
                tag(IndexTag::RPMTAG_CHANGELOGNAME),
                a(&["Jane Doe <jane@example.com> - 2.12-1", "Jane Doe <jane@example.com> - 2.11-1"]),
            ),
            (tag(IndexTag::RPMTAG_CHANGELOGTEXT), a(&["- New upstream <release> & fixes", "- Older release"])),
        ];
        if let Some(epoch) = spec.epoch {
            tags.push((tag(IndexTag::RPMTAG_EPOCH), V::N32(vec![epoch])));
        }
        if !spec.source {
            tags.push((tag(IndexTag::RPMTAG_SOURCERPM), s("hello-2.12-1.el9.src.rpm")));
        }
        out.extend(header(tags));
        out.extend(b"stand-in payload");
        out
    }

    struct Built {
        _dir: tempfile::TempDir,
        path: PathBuf,
        bytes: Vec<u8>,
        sha256: String,
    }

    fn build(spec: &Spec) -> Built {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hello.rpm");
        let bytes = rpm_bytes(spec);
        std::fs::write(&path, &bytes).expect("write test rpm");
        Built { _dir: dir, path, sha256: hex::encode(Sha256::digest(&bytes)), bytes }
    }

    fn inspect(built: &Built) -> RpmEntry {
        let location = "Packages/h/hello-2.12-1.el9.x86_64.rpm";
        inspect_rpm(&built.path, location, &built.sha256, built.bytes.len() as u64, 1_234_567)
            .expect("inspect test rpm")
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut out).expect("gunzip");
        out
    }

    /// Parses `xml` completely (checking that it is well-formed) and returns the text
    /// of every element and attribute value, unescaped, for content checks.
    fn well_formed(xml: &str) -> Vec<String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut values = Vec::new();
        let mut depth = 0i32;
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    depth += 1;
                    values.extend(
                        e.attributes()
                            .map(|a| a.expect("attribute").unescape_value().expect("attribute value").into_owned()),
                    );
                }
                Event::Empty(e) => {
                    values.extend(
                        e.attributes()
                            .map(|a| a.expect("attribute").unescape_value().expect("attribute value").into_owned()),
                    );
                }
                Event::End(_) => depth -= 1,
                Event::Text(t) => values.push(t.decode().expect("text decodes").into_owned()),
                Event::GeneralRef(r) => {
                    let c = match r.decode().expect("entity decodes").as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    };
                    values.push(c.to_owned());
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unbalanced XML");
        values
    }

    /// Where `needle` first occurs in `hay` (failing the test if it does not).
    fn pos(hay: &str, needle: &str) -> usize {
        hay.find(needle).unwrap_or_else(|| panic!("{needle:?} not found in:\n{hay}"))
    }

    /// The text of `<tag ...>text</tag>` inside `block`.
    fn element<'a>(block: &'a str, tag: &str) -> &'a str {
        let start = pos(block, &format!("<{tag}"));
        let after = start + pos(&block[start..], ">") + 1;
        let end = after + pos(&block[after..], &format!("</{tag}>"));
        &block[after..end]
    }

    fn data_block<'a>(repomd: &'a str, kind: &str) -> &'a str {
        let start = pos(repomd, &format!("<data type=\"{kind}\">"));
        let end = start + pos(&repomd[start..], "</data>");
        &repomd[start..end]
    }

    fn attr<'a>(block: &'a str, name: &str) -> &'a str {
        let key = format!("{name}=\"");
        let start = pos(block, &key) + key.len();
        &block[start..start + pos(&block[start..], "\"")]
    }

    /// Checks repomd.xml against the data files and returns the decompressed
    /// primary, filelists and other documents.
    fn check_repo(files: &[RepoFile], revision: u64) -> [String; 3] {
        assert_eq!(files.len(), 4);
        let repomd_file = &files[3];
        assert_eq!(repomd_file.path, "repodata/repomd.xml");
        let repomd = std::str::from_utf8(&repomd_file.bytes).expect("repomd.xml is UTF-8");
        well_formed(repomd);
        assert!(repomd.contains(
            "<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">"
        ));
        assert_eq!(element(repomd, "revision"), revision.to_string());
        let mut docs = Vec::new();
        for (file, kind) in files[..3].iter().zip(["primary", "filelists", "other"]) {
            let block = data_block(repomd, kind);
            let checksum = hex::encode(Sha256::digest(&file.bytes));
            assert_eq!(file.path, format!("repodata/{checksum}-{kind}.xml.gz"));
            assert_eq!(element(block, "checksum"), checksum);
            assert!(block.contains("<checksum type=\"sha256\">"));
            assert!(block.contains("<open-checksum type=\"sha256\">"));
            assert_eq!(attr(block, "href"), file.path);
            assert_eq!(element(block, "size"), file.bytes.len().to_string());
            assert_eq!(element(block, "timestamp"), revision.to_string());
            let xml = gunzip(&file.bytes);
            assert_eq!(element(block, "open-checksum"), hex::encode(Sha256::digest(xml.as_bytes())));
            assert_eq!(element(block, "open-size"), xml.len().to_string());
            assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
            well_formed(&xml);
            docs.push(xml);
        }
        let other = docs.pop().expect("three docs");
        let filelists = docs.pop().expect("three docs");
        let primary = docs.pop().expect("three docs");
        [primary, filelists, other]
    }

    #[test]
    fn yum_test_rpm_agrees_with_rpm_crate() {
        let built = build(&Spec::default());
        let meta = rpm::PackageMetadata::open(&built.path).expect("rpm crate reads test rpm");
        assert_eq!(meta.get_name().expect("name"), "hello");
        assert_eq!(meta.get_summary().expect("summary"), "Says hello");
        assert_eq!(meta.get_requires().expect("requires").len(), 6);
        assert_eq!(meta.get_file_paths().expect("file paths").len(), 5);
        let offsets = meta.get_package_segment_offsets();
        let headers = read_headers(&built.path).expect("read headers");
        assert_eq!((headers.header_start, headers.header_end), (offsets.header, offsets.payload));
        assert_eq!(built.bytes.len() as u64 - offsets.payload, b"stand-in payload".len() as u64);
    }

    #[test]
    fn yum_repo_with_one_package() {
        let built = build(&Spec::default());
        let entry = inspect(&built);
        assert_eq!(entry.nevra(), "hello-2.12-1.el9.x86_64");
        assert_eq!((entry.name.as_str(), entry.epoch, entry.arch.as_str()), ("hello", 0, "x86_64"));
        assert_eq!((entry.version.as_str(), entry.release.as_str()), ("2.12", "1.el9"));
        assert_eq!(entry.sha256, built.sha256);
        assert_eq!(entry.location, "Packages/h/hello-2.12-1.el9.x86_64.rpm");
        let json = serde_json::to_string(&entry).expect("serialize entry");
        assert_eq!(serde_json::from_str::<RpmEntry>(&json).expect("deserialize entry"), entry);

        let [primary, filelists, other] = check_repo(&render_repodata(&[&entry], 1_700_000_123), 1_700_000_123);

        assert!(primary.contains(
            "<metadata xmlns=\"http://linux.duke.edu/metadata/common\" \
             xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"1\">"
        ));
        assert!(primary.contains("<package type=\"rpm\">\n  <name>hello</name>\n  <arch>x86_64</arch>\n"));
        assert!(primary.contains("<version epoch=\"0\" ver=\"2.12\" rel=\"1.el9\"/>"));
        assert!(primary.contains(&format!("<checksum type=\"sha256\" pkgid=\"YES\">{}</checksum>", built.sha256)));
        assert!(primary.contains("<summary>Says hello</summary>"));
        assert!(primary.contains("<description>Prints a greeting.</description>"));
        assert!(primary.contains("<packager/>"));
        assert!(primary.contains("<url>https://example.com/hello</url>"));
        assert!(primary.contains("<time file=\"1234567\" build=\"1690000000\"/>"));
        let size = built.bytes.len();
        assert!(primary.contains(&format!("<size package=\"{size}\" installed=\"12345\" archive=\"4321\"/>")));
        assert!(primary.contains("<location href=\"Packages/h/hello-2.12-1.el9.x86_64.rpm\"/>"));
        assert!(primary.contains("<rpm:license>GPL-3.0-or-later</rpm:license>"));
        assert!(primary.contains("<rpm:vendor/>"));
        assert!(primary.contains("<rpm:group>Unspecified</rpm:group>"));
        assert!(primary.contains("<rpm:buildhost>builder.example.com</rpm:buildhost>"));
        assert!(primary.contains("<rpm:sourcerpm>hello-2.12-1.el9.src.rpm</rpm:sourcerpm>"));
        let offsets =
            rpm::PackageMetadata::open(&built.path).expect("rpm crate reads test rpm").get_package_segment_offsets();
        let range = format!("<rpm:header-range start=\"{}\" end=\"{}\"/>", offsets.header, offsets.payload);
        assert!(primary.contains(&range), "{range} not in {primary}");

        // Dependencies: split EVR, flags only with a version, no rpmlib(), no
        // requirement on the package's own primary file, no duplicates, pre="1".
        let provides = element(&primary, "rpm:provides");
        assert!(provides.contains("<rpm:entry name=\"hello\" flags=\"EQ\" epoch=\"0\" ver=\"2.12\" rel=\"1.el9\"/>"));
        assert!(provides
            .contains("<rpm:entry name=\"hello(x86-64)\" flags=\"EQ\" epoch=\"0\" ver=\"2.12\" rel=\"1.el9\"/>"));
        assert!(provides.contains("<rpm:entry name=\"hello-cli\" flags=\"EQ\" epoch=\"0\" ver=\"2.12\"/>"));
        let requires = element(&primary, "rpm:requires");
        assert_eq!(
            requires,
            "\n      <rpm:entry name=\"bash\" flags=\"GE\" epoch=\"1\" ver=\"4.0\" rel=\"2\"/>\
             \n      <rpm:entry name=\"coreutils\"/>\
             \n      <rpm:entry name=\"/bin/sh\" pre=\"1\"/>\n    "
        );
        assert!(!primary.contains("rpmlib("));
        assert!(primary.contains(
            "<rpm:conflicts>\n      <rpm:entry name=\"hello-old\" flags=\"LT\" epoch=\"0\" ver=\"2.0\"/>\n    </rpm:conflicts>"
        ));
        assert!(primary.contains("<rpm:recommends>\n      <rpm:entry name=\"hello-extras\"/>\n    </rpm:recommends>"));
        assert!(!primary.contains("rpm:obsoletes") && !primary.contains("rpm:suggests"));
        // The element order createrepo_c uses.
        let order =
            ["<rpm:header-range", "<rpm:provides>", "<rpm:requires>", "<rpm:conflicts>", "<rpm:recommends>", "<file"];
        let positions: Vec<usize> = order.iter().map(|o| pos(&primary, o)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

        // Only primary files, directories marked.
        assert!(primary.contains(
            "    <file>/usr/bin/hello</file>\n    <file>/etc/hello.conf</file>\n    \
             <file type=\"dir\">/etc/hello.d</file>\n  </format>\n</package>\n</metadata>\n"
        ));
        assert!(!primary.contains("README"));
        assert!(!primary.contains("/var/log/hello.log"));
        assert_eq!(primary.matches("<file").count(), 3);

        assert!(filelists.contains("<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"1\">"));
        assert!(filelists.contains(&format!(
            "<package pkgid=\"{}\" name=\"hello\" arch=\"x86_64\">\n  <version epoch=\"0\" ver=\"2.12\" rel=\"1.el9\"/>\n\
             \x20 <file>/usr/bin/hello</file>\n  <file>/etc/hello.conf</file>\n  <file type=\"dir\">/etc/hello.d</file>\n\
             \x20 <file>/usr/share/doc/hello/README</file>\n  <file type=\"ghost\">/var/log/hello.log</file>\n\
             </package>\n</filelists>\n",
            built.sha256
        )));

        assert!(other.contains("<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"1\">"));
        assert!(other.contains(&format!("<package pkgid=\"{}\" name=\"hello\" arch=\"x86_64\">", built.sha256)));
        let newer = pos(
            &other,
            "<changelog author=\"Jane Doe &lt;jane@example.com&gt; - 2.12-1\" date=\"1700000000\">\
             - New upstream &lt;release&gt; &amp; fixes</changelog>",
        );
        let older = pos(&other, "date=\"1600000000\">- Older release</changelog>");
        assert!(older < newer, "changelogs go oldest first");

        // Rendering is deterministic.
        let once = render_repodata(&[&entry], 1_700_000_123);
        let twice = render_repodata(&[&entry], 1_700_000_123);
        for (x, y) in once.iter().zip(&twice) {
            assert_eq!((&x.path, &x.bytes), (&y.path, &y.bytes));
        }
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
    fn yum_empty_repo() {
        let files = render_repodata(&[], 42);
        let [primary, filelists, other] = check_repo(&files, 42);
        assert_eq!(
            primary,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" \
             xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"0\">\n</metadata>\n"
        );
        assert!(filelists.contains("<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"0\">"));
        assert!(other.contains("<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"0\">"));
        assert!(files[0].path.ends_with("-primary.xml.gz"));
        assert!(files[1].path.ends_with("-filelists.xml.gz"));
        assert!(files[2].path.ends_with("-other.xml.gz"));
    }

    #[test]
    fn yum_many_packages_keep_their_order() {
        let first = inspect(&build(&Spec::default()));
        let mut entries = Vec::new();
        for i in 0..(PARALLEL_THRESHOLD + 5) {
            let mut e = first.clone();
            e.name = format!("hello{i}");
            e.primary = e.primary.replace("<name>hello</name>", &format!("<name>hello{i}</name>"));
            e.filelists = e.filelists.replace("name=\"hello\"", &format!("name=\"hello{i}\""));
            e.other = e.other.replace("name=\"hello\"", &format!("name=\"hello{i}\""));
            entries.push(e);
        }
        let refs: Vec<&RpmEntry> = entries.iter().collect();
        let [primary, filelists, other] = check_repo(&render_repodata(&refs, 7), 7);
        let n = entries.len();
        assert!(primary.contains(&format!("packages=\"{n}\"")));
        assert!(filelists.contains(&format!("packages=\"{n}\"")));
        assert_eq!(primary.matches("<package type=\"rpm\">").count(), n);
        assert_eq!(filelists.matches("<package ").count(), n);
        assert_eq!(other.matches("<package ").count(), n);
        for (doc, needle) in [(&primary, "<name>hello"), (&filelists, "name=\"hello"), (&other, "name=\"hello")] {
            let p3 = pos(doc, &format!("{needle}3"));
            let p40 = pos(doc, &format!("{needle}40"));
            assert!(p3 < p40);
        }
    }

    #[test]
    fn yum_escapes_untrusted_text() {
        let spec = Spec { summary: "a <b> & \"c\" 'd' \u{1}bell\ttab".as_bytes().to_vec(), ..Spec::default() };
        let entry = inspect(&build(&spec));
        assert!(
            entry.primary.contains("<summary>a &lt;b&gt; &amp; \"c\" 'd' bell\ttab</summary>"),
            "{}",
            entry.primary
        );
        let [primary, _, _] = check_repo(&render_repodata(&[&entry], 1), 1);
        assert!(well_formed(&primary).concat().contains("a <b> & \"c\" 'd' bell\ttab"));

        let mut out = String::new();
        push_attr(&mut out, "x", "q\"<&>\n\r\t\u{0}\u{FFFF}ok");
        assert_eq!(out, " x=\"q&quot;&lt;&amp;&gt;&#10;&#13;&#9;ok\"");
        well_formed(&format!("<a{out}/>"));
    }

    #[test]
    fn yum_invalid_utf8_is_replaced() {
        let spec = Spec { summary: b"Summary \xff\xfe\xc3( here".to_vec(), ..Spec::default() };
        let built = build(&spec);
        assert!(rpm::PackageMetadata::open(&built.path).expect("rpm crate reads test rpm").get_summary().is_err());
        let entry = inspect(&built);
        assert!(
            entry.primary.contains("<summary>Summary \u{FFFD}\u{FFFD}\u{FFFD}( here</summary>"),
            "{}",
            entry.primary
        );
        check_repo(&render_repodata(&[&entry], 1), 1);
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
