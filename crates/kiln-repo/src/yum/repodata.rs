//! Rendering `repodata/`: the primary, filelists and other documents from
//! stored entries' fragments, compressed from cached pieces, and the
//! `repomd.xml` that indexes them.

use std::fmt::Write as _;

use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::pieces::PieceCache;
use crate::yum::entry::RpmEntry;
use crate::yum::xml::{NS_COMMON, NS_FILELISTS, NS_OTHER, NS_REPO, NS_RPM, XML_DECL};

/// gzip level of the `.xml.gz` files (6 is zlib's and createrepo_c's default).
pub const GZIP_LEVEL: Compression = Compression::new(6);

/// Above this many packages, `filelists.xml.gz` is compressed on a second thread
/// while `primary.xml.gz` and `other.xml.gz` are compressed on the calling one.
const PARALLEL_THRESHOLD: usize = 64;

/// One file of repodata: its path relative to the repo root (e.g. "repodata/<sha256>-primary.xml.gz"),
/// and its bytes.
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

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
    render_repodata_cached(entries, revision, &PieceCache::new(None), None)
}

/// [`render_repodata`], reusing compressed pieces from `cache`; with
/// `updateinfo` (an `updateinfo.xml` document), that too.
pub fn render_repodata_cached(
    entries: &[&RpmEntry],
    revision: u64,
    cache: &PieceCache,
    updateinfo: Option<&str>,
) -> Vec<RepoFile> {
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
    let mut files = Vec::with_capacity(5);
    let updateinfo = updateinfo.map(|xml| {
        let bytes = crate::pieces::gzip(&[xml.as_bytes()], GZIP_LEVEL.level(), cache);
        (
            "updateinfo",
            Compressed {
                section: Section::Other,
                checksum: hex::encode(Sha256::digest(&bytes)),
                open_checksum: hex::encode(Sha256::digest(xml.as_bytes())),
                open_size: xml.len() as u64,
                bytes,
            },
        )
    });
    let sections = [primary, filelists, other].into_iter().map(|d| (d.section.name(), d));
    for (name, data) in sections.chain(updateinfo) {
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
    use crate::yum::entry::tests::inspect;
    use crate::yum::rpmhead::tests::{build, Spec};
    use crate::yum::xml::push_attr;
    use crate::yum::xml::tests::well_formed;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut out).expect("gunzip");
        out
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
    fn yum_text_that_is_not_utf8_is_read_as_latin1() {
        // An old spec's ISO-8859-1 summary, as createrepo_c converts it.
        let spec = Spec { summary: b"Caf\xe9 cr\xe8me \xff\xfe\xc3( here".to_vec(), ..Spec::default() };
        let built = build(&spec);
        assert!(rpm::PackageMetadata::open(&built.path).expect("rpm crate reads test rpm").get_summary().is_err());
        let entry = inspect(&built);
        assert!(entry.primary.contains("<summary>Café crème ÿþÃ( here</summary>"), "{}", entry.primary);
        check_repo(&render_repodata(&[&entry], 1), 1);
    }
}
