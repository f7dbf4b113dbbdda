//! APT indexes for one distribution (`dists/SUITE/`): `Packages` per
//! architecture, `Sources`, each plain, gzip and xz, and the `Release` that
//! lists them with MD5/SHA-1/SHA-256/SHA-512 (and, when the channel asks,
//! the `Valid-Until` apt enforces against replayed old indexes). Debug symbol packages are listed in a
//! component of their own, `COMPONENT/debug`, which users add to their
//! sources line when they want them. Signing and writing are the caller's
//! (the `publish` module's); this module only renders bytes.

use crate::deb::{DebEntry, DscEntry};
use crate::hash::ReleaseSums;
use crate::pieces::{self, PieceCache};
use std::collections::BTreeSet;

/// What a channel says about itself in every `Release`.
#[derive(Debug, Clone)]
pub struct ReleaseMeta {
    pub origin: String,
    pub label: String,
    pub description: String,
    /// `Valid-Until` (RFC 2822), after which apt refuses the `Release`.
    pub valid_until: Option<String>,
}

/// One distribution of a channel: a suite, its component and what it holds.
#[derive(Debug, Clone)]
pub struct Dist<'a> {
    pub suite: String,
    pub component: String,
    /// Every architecture configured for the suite, even with no package yet,
    /// so `apt update` succeeds on an empty repository.
    pub archs: BTreeSet<String>,
    pub binaries: Vec<&'a DebEntry>,
    pub sources: Vec<&'a DscEntry>,
}

/// One rendered file, its path relative to `dists/SUITE/`.
#[derive(Debug, Clone)]
pub struct IndexFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// gzip level for indexes: fast, since indexes are rebuilt on every publish.
const GZIP_LEVEL: u32 = 6;
/// xz preset: level 1 compresses Packages files nearly as well as 6, many times faster.
const XZ_PRESET: u32 = 1;

/// An index in its three encodings. The compressed forms are assembled from
/// cached pieces (see [`crate::pieces`]); what is not cached yet is
/// compressed on two threads at once.
fn with_compressed(path: &str, pieces: &[Vec<u8>], cache: &PieceCache) -> [IndexFile; 3] {
    let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    // Each piece hashed once for both caches.
    let keys = pieces::keys(&refs);
    let (gz, xz) = std::thread::scope(|s| {
        let x = s.spawn(|| pieces::xz_keyed(&refs, &keys, XZ_PRESET, cache));
        let g = pieces::gzip_keyed(&refs, &keys, GZIP_LEVEL, cache);
        // A panic is the publish's failure, never an empty index signed.
        (g, x.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    [
        IndexFile { path: format!("{path}.gz"), bytes: gz },
        IndexFile { path: format!("{path}.xz"), bytes: xz },
        IndexFile { path: path.to_string(), bytes: pieces.concat() },
    ]
}

/// Stanzas as index pieces, each stanza followed by a blank line.
fn stanza_pieces<'e>(entries: impl Iterator<Item = (&'e str, &'e str)>) -> Vec<Vec<u8>> {
    pieces::cut(entries.map(|(key, stanza)| (key, stanza.as_bytes())), b"\n\n")
}

/// The per-index `Release` file apt reads for pinning.
fn component_release(meta: &ReleaseMeta, suite: &str, component: &str, arch: &str) -> Vec<u8> {
    format!(
        "Archive: {suite}\nOrigin: {}\nLabel: {}\nComponent: {component}\nArchitecture: {arch}\n",
        meta.origin, meta.label
    )
    .into_bytes()
}

/// Renders every index of `dist` and its unsigned `Release`, whose `Date`
/// is `date` (RFC 2822, e.g. `Sun, 22 Nov 2026 10:00:00 UTC`). The
/// `Release` comes last.
pub fn render_dist(meta: &ReleaseMeta, dist: &Dist<'_>, date: &str, cache: &PieceCache) -> Vec<IndexFile> {
    let mut files = render_indexes(meta, dist, cache);
    let release = render_release(meta, dist, date, &files);
    files.push(release);
    files
}

/// The indexes of `dist` ([`render_dist`] without the `Release`), so a
/// caller may write them while the `Release` is hashed.
pub fn render_indexes(meta: &ReleaseMeta, dist: &Dist<'_>, cache: &PieceCache) -> Vec<IndexFile> {
    let mut files = Vec::new();
    let comp = &dist.component;
    let debug = format!("{comp}/debug");
    for arch in &dist.archs {
        // Architecture-independent packages are listed under every
        // architecture (No-Support-for-Architecture-all below says so).
        let mut entries: Vec<&DebEntry> =
            dist.binaries.iter().copied().filter(|e| &e.arch == arch || e.arch == "all").collect();
        entries.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        let (symbols, packages): (Vec<&DebEntry>, Vec<&DebEntry>) =
            entries.into_iter().partition(|e| e.is_debug_symbols());
        for (component, entries) in [(comp, packages), (&debug, symbols)] {
            let pieces = stanza_pieces(entries.iter().map(|e| (e.name.as_str(), e.stanza.as_str())));
            files.extend(with_compressed(&format!("{component}/binary-{arch}/Packages"), &pieces, cache));
            files.push(IndexFile {
                path: format!("{component}/binary-{arch}/Release"),
                bytes: component_release(meta, &dist.suite, component, arch),
            });
        }
    }
    let mut sources: Vec<&DscEntry> = dist.sources.clone();
    sources.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let pieces = stanza_pieces(sources.iter().map(|e| (e.name.as_str(), e.stanza.as_str())));
    files.extend(with_compressed(&format!("{comp}/source/Sources"), &pieces, cache));
    files.push(IndexFile {
        path: format!("{comp}/source/Release"),
        bytes: component_release(meta, &dist.suite, comp, "source"),
    });
    files
}

/// The unsigned `Release` of `dist` listing `files` (its indexes), dated `date`.
pub fn render_release(meta: &ReleaseMeta, dist: &Dist<'_>, date: &str, files: &[IndexFile]) -> IndexFile {
    let (comp, debug) = (&dist.component, format!("{}/debug", dist.component));
    let contents: Vec<&[u8]> = files.iter().map(|f| f.bytes.as_slice()).collect();
    let listed: Vec<(&str, ReleaseSums)> =
        files.iter().map(|f| f.path.as_str()).zip(crate::hash::release_sums(&contents)).collect();
    let archs: Vec<&str> = dist.archs.iter().map(String::as_str).collect();
    let mut release = format!(
        "Origin: {}\nLabel: {}\nSuite: {}\nCodename: {}\nDate: {date}\n{}Architectures: {}\nComponents: {comp} {debug}\nDescription: {}\nAcquire-By-Hash: yes\nNo-Support-for-Architecture-all: Packages\n",
        meta.origin,
        meta.label,
        dist.suite,
        dist.suite,
        meta.valid_until.as_ref().map(|v| format!("Valid-Until: {v}\n")).unwrap_or_default(),
        archs.join(" "),
        meta.description,
    );
    type Pick = fn(&ReleaseSums) -> &str;
    let sections: [(&str, Pick); 4] =
        [("MD5Sum", |s| &s.md5), ("SHA1", |s| &s.sha1), ("SHA256", |s| &s.sha256), ("SHA512", |s| &s.sha512)];
    for (title, pick) in sections {
        release.push_str(title);
        release.push_str(":\n");
        for (path, s) in &listed {
            release.push_str(&format!(" {} {:>16} {path}\n", pick(s), s.size));
        }
    }
    IndexFile { path: "Release".into(), bytes: release.into_bytes() }
}

/// The `SHA256` section of a `Release`: (hash, path) of every index it lists.
pub fn release_sha256(release: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end() == "SHA256:";
            continue;
        }
        if inside {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [hash, _size, path] = parts[..] {
                out.push((hash.to_string(), path.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, arch: &str) -> DebEntry {
        DebEntry {
            name: name.into(),
            version: "1.0-1".into(),
            arch: arch.into(),
            source: name.into(),
            stanza: format!("Package: {name}\nVersion: 1.0-1\nArchitecture: {arch}"),
        }
    }

    #[test]
    fn release_lists_every_index_with_matching_sums() {
        let meta = ReleaseMeta {
            origin: "kiln".into(),
            label: "kiln dev".into(),
            description: "nightly".into(),
            valid_until: Some("Sun, 29 Nov 2026 10:00:00 UTC".into()),
        };
        let (a, b, c) = (entry("alpha", "amd64"), entry("beta", "all"), entry("gamma", "arm64"));
        let mut symbols = entry("alpha-dbgsym", "amd64");
        symbols.stanza.push_str("\nAuto-Built-Package: debug-symbols\nSection: debug");
        let dist = Dist {
            suite: "bookworm".into(),
            component: "main".into(),
            archs: ["amd64".to_string(), "arm64".to_string()].into(),
            binaries: vec![&a, &b, &c, &symbols],
            sources: vec![],
        };
        let files = render_dist(&meta, &dist, "Sun, 22 Nov 2026 10:00:00 UTC", &PieceCache::new(None));
        let get = |p: &str| files.iter().find(|f| f.path == p).map(|f| String::from_utf8_lossy(&f.bytes).into_owned());
        let amd = get("main/binary-amd64/Packages").expect("amd64 Packages");
        assert_eq!(amd, "Package: alpha\nVersion: 1.0-1\nArchitecture: amd64\n\nPackage: beta\nVersion: 1.0-1\nArchitecture: all\n\n");
        let arm = get("main/binary-arm64/Packages").expect("arm64 Packages");
        assert!(arm.contains("Package: beta") && arm.contains("Package: gamma") && !arm.contains("alpha"));
        assert_eq!(get("main/source/Sources").as_deref(), Some(""));
        // Debug symbols are apart, in main/debug, for those who add it.
        let debug = get("main/debug/binary-amd64/Packages").expect("debug Packages");
        assert!(debug.starts_with("Package: alpha-dbgsym\n"), "{debug}");
        assert_eq!(get("main/debug/binary-arm64/Packages").as_deref(), Some(""));
        assert!(get("main/debug/binary-amd64/Release").is_some_and(|r| r.contains("Component: main/debug\n")));

        let release = get("Release").expect("Release");
        assert!(release.contains("Suite: bookworm\n") && release.contains("Architectures: amd64 arm64\n"));
        assert!(release.contains("Components: main main/debug\n"), "{release}");
        assert!(release.contains("Date: Sun, 22 Nov 2026 10:00:00 UTC\nValid-Until: Sun, 29 Nov 2026 10:00:00 UTC\n"));
        let sha512 = release.split("SHA512:\n").nth(1).expect("a SHA512 section");
        for f in files.iter().filter(|f| f.path != "Release") {
            let line = format!(" {} {:>16} {}\n", crate::hash::sha512(&f.bytes), f.bytes.len(), f.path);
            assert!(sha512.contains(&line), "{line}");
        }
        let listed = release_sha256(&release);
        assert_eq!(listed.len(), files.len() - 1);
        for (hash, path) in listed {
            let f = files.iter().find(|f| f.path == path).expect("listed file exists");
            assert_eq!(hash, crate::hash::sha256(&f.bytes), "{path}");
        }
        // The compressed forms decompress to the plain index.
        let gz = files.iter().find(|f| f.path == "main/binary-amd64/Packages.gz").expect("gz");
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.bytes[..]), &mut plain).expect("gunzip");
        assert_eq!(plain, amd);
        let xz = files.iter().find(|f| f.path == "main/binary-amd64/Packages.xz").expect("xz");
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut liblzma::read::XzDecoder::new(&xz.bytes[..]), &mut plain).expect("unxz");
        assert_eq!(plain, amd);
    }
}
