//! Reading RPM headers: the lead, then the signature header and the main
//! header, each an index of tags over a data store, read with every offset
//! and count checked (RPM headers are untrusted input). Missing or malformed
//! tags read as absent, invalid UTF-8 is replaced, and the main header's
//! byte range is known for `<rpm:header-range>`. Also the package's files,
//! as the main header lists them.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use rpm::{FileFlags, IndexTag};

use crate::{RepoError, Result};

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
const TYPE_BIN: u32 = 7;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

#[derive(Clone, Copy)]
struct IndexEntry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// One RPM header (signature or main): its index and data store, read with every
/// offset and count checked. Missing or malformed tags read as absent.
pub(super) struct RawHeader {
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

    /// Every entry's data lies inside the store, as its type and count say
    /// (what librpm checks before it believes a header). The reader below
    /// tolerates a bad entry as an absent tag; a program that trusts every
    /// entry (the `rpm` crate, when it signs a package) needs this first.
    fn check_entries(&self) -> std::result::Result<(), String> {
        let len = self.store.len();
        for e in &self.entries {
            let bad = |why: &str| Err(format!("tag {} (type {}): {why}", e.tag, e.kind));
            let Some(rest) = self.store.get(e.offset as usize..) else {
                return bad(&format!("offset {} is past the {len}-byte data store", e.offset));
            };
            let count = e.count as usize;
            let fits = match e.kind {
                0 => true,
                TYPE_BIN => count <= rest.len(),
                TYPE_STRING => count == 1 && rest.contains(&0),
                TYPE_STRING_ARRAY | TYPE_I18NSTRING => rest.iter().filter(|&&b| b == 0).count() >= count,
                kind => match int_width(kind) {
                    Some(width) => count.checked_mul(width).is_some_and(|n| n <= rest.len()),
                    None => return bad("not a known type"),
                },
            };
            if !fits {
                return bad(&format!("{} items do not fit in the data store after offset {}", e.count, e.offset));
            }
        }
        Ok(())
    }

    fn find(&self, tag: impl Into<u32>) -> Option<IndexEntry> {
        let tag = tag.into();
        self.entries.iter().find(|e| e.tag == tag).copied()
    }

    pub(super) fn has(&self, tag: impl Into<u32>) -> bool {
        self.find(tag).is_some()
    }

    /// The store from an entry's offset on (None for an offset outside the store).
    fn data(&self, e: &IndexEntry) -> Option<&[u8]> {
        self.store.get(e.offset as usize..)
    }

    /// All strings of a string, string-array or i18n-string tag (text that
    /// is not UTF-8 read as Latin-1: see [`text`]).
    pub(super) fn strings(&self, tag: impl Into<u32>) -> Vec<Cow<'_, str>> {
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
            out.push(text(&rest[..nul]));
            rest = &rest[nul + 1..];
        }
        out
    }

    /// The first string of a string tag ("" when absent or malformed). For i18n
    /// strings this is the untranslated ("C") one.
    pub(super) fn string(&self, tag: impl Into<u32>) -> Cow<'_, str> {
        let Some(e) = self.find(tag) else { return Cow::Borrowed("") };
        if !matches!(e.kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || e.count == 0 {
            return Cow::Borrowed("");
        }
        let Some(rest) = self.data(&e) else { return Cow::Borrowed("") };
        match rest.iter().position(|&b| b == 0) {
            Some(nul) => text(&rest[..nul]),
            None => Cow::Borrowed(""),
        }
    }

    /// All numbers of an integer tag, widened to u64 (empty when absent or malformed).
    pub(super) fn ints(&self, tag: impl Into<u32>) -> Vec<u64> {
        let Some(e) = self.find(tag) else { return Vec::new() };
        let Some(width) = int_width(e.kind) else { return Vec::new() };
        let Some(len) = (e.count as usize).checked_mul(width) else { return Vec::new() };
        let Some(bytes) = self.data(&e).and_then(|d| d.get(..len)) else { return Vec::new() };
        bytes.chunks_exact(width).map(be_uint).collect()
    }

    /// The first number of an integer tag.
    pub(super) fn int(&self, tag: impl Into<u32>) -> Option<u64> {
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
pub(super) struct RpmHeaders {
    pub(super) signature: RawHeader,
    pub(super) main: RawHeader,
    /// Byte offsets of the main header in the file: `<rpm:header-range start end>`.
    pub(super) header_start: u64,
    pub(super) header_end: u64,
}

pub(super) fn read_headers(path: &Path) -> Result<RpmHeaders> {
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

/// Checks that an RPM file's headers are well formed throughout: the lead,
/// both headers within the file and within librpm's limits, and every
/// entry's data inside its header. Run before anything that trusts the
/// headers blindly reads the package.
pub fn check_rpm(path: &Path) -> Result<()> {
    let h = read_headers(path)?;
    for (what, header) in [("signature header", &h.signature), ("main header", &h.main)] {
        header.check_entries().map_err(|why| RepoError::bad(path, format!("{what}: {why}")))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Package contents
// ---------------------------------------------------------------------------

const S_IFMT: u64 = 0o170000;
const S_IFDIR: u64 = 0o040000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum FileKind {
    Plain,
    Dir,
    Ghost,
}

pub(super) struct PkgFile {
    pub(super) path: String,
    pub(super) kind: FileKind,
}

pub(super) fn package_files(h: &RawHeader) -> Vec<PkgFile> {
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

/// Header text as UTF-8: as it is when it is UTF-8, else read as Latin-1
/// (every byte the character of that number), as createrepo_c converts it,
/// so `dnf search café` finds a summary an old spec wrote in ISO-8859-1.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rpm::{DependencyFlags, IndexSignatureTag};
    use sha2::{Digest, Sha256};
    use std::path::PathBuf;

    // The rpm crate's PackageBuilder needs its "payload" feature, which this crate
    // does not enable, so the tests write RPM files by hand: a lead, a signature
    // header, a main header and a stand-in payload. inspect_rpm reads only headers,
    // and every file is cross-checked with rpm::PackageMetadata. The tests of
    // the other yum modules build their packages here too.

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

    pub(crate) struct Spec {
        pub(crate) summary: Vec<u8>,
        pub(crate) epoch: Option<u32>,
        pub(crate) source: bool,
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

    pub(crate) struct Built {
        _dir: tempfile::TempDir,
        pub(crate) path: PathBuf,
        pub(crate) bytes: Vec<u8>,
        pub(crate) sha256: String,
    }

    pub(crate) fn build(spec: &Spec) -> Built {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hello.rpm");
        let bytes = rpm_bytes(spec);
        std::fs::write(&path, &bytes).expect("write test rpm");
        Built { _dir: dir, path, sha256: hex::encode(Sha256::digest(&bytes)), bytes }
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
    fn text_that_is_not_utf8_is_read_as_latin1() {
        assert_eq!(super::text(b"Caf\xe9 cr\xe8me"), "Café crème");
        assert_eq!(super::text("Café".as_bytes()), "Café");
        assert_eq!(super::text(b""), "");
    }
}
